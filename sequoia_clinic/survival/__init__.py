"""Survival and risk: Cox risk models (calibrate, apply), cohort tables, Kaplan-Meier stratification.

Import what you need from its module (``cutoffs``, ``fit``, ``model``, ``records``): this package imports
nothing itself, so that a light command never pays for a heavy stage (torch, timm, lifelines, matplotlib ...
are imported only by the modules that use them).
"""
