"""sequoia-clinic: H&E whole-slide image to a breast-cancer molecular risk report.

Pipeline stages live in their own sub-packages:
``slides`` (reading, tissue, tiles) → ``encoders`` (tile features) → ``features`` (cluster features)
→ ``aggregator`` (gene expression) → ``signatures`` → ``survival`` (Cox risk) → ``report``; ``bundles``
holds the models. ``pipeline`` chains the stages and ``cli`` is the command line. Imports run one way,
cli → pipeline → stages → shared utilities (``errors``, ``settings``, ``fileio``, ``weightio``, ...), with
no cycles (``tests/test_architecture.py``).

``__version__`` is the installed distribution's version (pyproject.toml); the package runs installed only
(``pip install -e .`` in a checkout), since its data files are found as package resources.
"""

from importlib.metadata import version

__version__ = version("sequoia-clinic")
