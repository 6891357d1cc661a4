"""Slide-level aggregators: SEQUOIA's ViS (checkpoint-compatible), the HE2RNA baseline, fold ensembles,
and the spatial (sliding-window) mode.

Import what you need from its module (``ensemble``, ``he2rna``, ``vis``): this package imports nothing
itself, so that a light command never pays for a heavy stage (torch, timm, lifelines, matplotlib ... are
imported only by the modules that use them).
"""
