"""sequoia-clinic: H&E whole-slide image to a breast-cancer molecular risk report.

Pipeline stages live in their own sub-packages:
``slides`` (reading, tissue, tiles) → ``encoders`` (tile features) → ``features`` (cluster features)
→ ``aggregator`` (gene expression) → ``signatures`` → ``survival`` (Cox risk) → ``report``.
"""

__version__ = "0.1.0"
