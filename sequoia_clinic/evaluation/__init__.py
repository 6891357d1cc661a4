"""Evaluation stage: per-gene statistics of predicted vs measured expression and the "well predicted" rules.

- :mod:`.stats`: Pearson r/p, RMSE, Steiger's test of dependent correlations, Benjamini–Hochberg (vectorised);
- :mod:`.align`: predictions, baselines and measured values on one unit (patient or slide);
- :mod:`.rules`: the reference ``sequoia`` rule and the ``strict`` rule;
- :mod:`.genes`: every statistic per gene plus a summary that records the protocol;
- :mod:`.io`: the prediction-table layout shared with ``train``;
- :mod:`.figures`: r histogram and top-gene scatters.

Import what you need from its module (``align``, ``genes``, ``rules``): this package imports nothing itself,
so that a light command never pays for a heavy stage (torch, timm, lifelines, matplotlib ... are imported
only by the modules that use them).
"""
