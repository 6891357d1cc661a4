"""Model bundles: a folder with a checksummed manifest, encoder weights, aggregator folds and a gene list.

Public API: :func:`load_bundle`, :func:`scan_bundles`, :func:`verify_bundle`, :func:`import_bundle` and the
:class:`Bundle` record; :func:`load_bundle_encoder` / :func:`load_bundle_ensemble` give the runnable models.

Import what you need from its module (``importer``, ``manifest``, ``store``): this package imports nothing
itself, so that a light command never pays for a heavy stage (torch, timm, lifelines, matplotlib ... are
imported only by the modules that use them).
"""
