"""SEQUOIA model input: the tile-order rules, k-means cluster features, and the per-slide feature cache.

Import what you need from its module (``cache``, ``clusters``, ``sampling``): this package imports nothing
itself, so that a light command never pays for a heavy stage (torch, timm, lifelines, matplotlib ... are
imported only by the modules that use them).
"""
