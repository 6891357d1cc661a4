"""Multi-stage flows: each one pure function of (request, settings), callable without the CLI.

- :mod:`.predict`: slide -> predicted expression (``predict_slide``)
- :mod:`.score`: slide -> risk, report records and files (``score_slide``)
- :mod:`.inspect`: slide -> description, tile counts and thumbnail (``inspect_slide``)

Modules here import the stages (``slides``, ``encoders``, ``features``, ``aggregator``, ``signatures``,
``survival``, ``report``); no stage imports this package, and the CLI imports only this package and
``settings``/``errors``.
"""
