"""The shipped model bundles and risk models, installed as package data ``sequoia_clinic._models``.

pyproject.toml maps this folder to that package (``package-dir``), so ``sequoia_clinic/locations.py`` finds
it with importlib.resources in an editable install and in a wheel. No code lives here.
"""
