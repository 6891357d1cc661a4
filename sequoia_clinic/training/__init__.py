"""Training stage: SEQUOIA aggregators trained on a cohort's cluster features and measured expression.

- :mod:`.expression`: expression tables (reference ``rna_`` format or wide), symbols, transform, checks;
- :mod:`.folds`: patient-grouped K-fold with a validation split, or a splits file;
- :mod:`.data`: the in-memory training set and the recipe (reference defaults);
- :mod:`.model`: seeded models, fine-tuning initialisation, the fused ViS training pass;
- :mod:`.checkpoint`: resumable per-fold checkpoints (safetensors + JSON, sha256-checked);
- :mod:`.loop`: the per-fold loop, checkpoint selection, test predictions and baselines;
- :mod:`.outputs`: per-epoch log, training curves and out-of-fold tables.

Import what you need from its module (``data``, ``expression``, ``folds``, ``loop``): this package imports
nothing itself, so that a light command never pays for a heavy stage (torch, timm, lifelines, matplotlib ...
are imported only by the modules that use them).
"""
