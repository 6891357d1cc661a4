"""Tile encoders: a registry of timm networks (UNI, ResNet-50, a demo ViT) loaded strictly from local weights
(:mod:`sequoia_clinic.weightio`), and batched streaming feature extraction with a background tile loader.

Import what you need from its module (``extract``, ``model``, ``registry``): this package imports nothing
itself, so that a light command never pays for a heavy stage (torch, timm, lifelines, matplotlib ... are
imported only by the modules that use them).
"""
