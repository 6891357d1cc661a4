"""Breast-cancer gene signatures (registry + user CSV files), mapped to SEQUOIA gene symbols.

Import what you need from its module (``mapping``, ``probes``, ``registry``): this package imports nothing
itself, so that a light command never pays for a heavy stage (torch, timm, lifelines, matplotlib ... are
imported only by the modules that use them).
"""
