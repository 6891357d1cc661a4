"""Finding, loading, verifying and materialising model bundles.

Bundles are looked up by folder path, or by name in the search folders: ``Settings.models.models_dir``
(when set) and then the shipped bundles (the repository's ``models/``, installed with the package). Loading
parses and cross-checks the manifest, checks the gene list's sha256, and generates any missing demo weights
from their recipe into ``Settings.models.weights_cache_dir`` (verifying the result); a bundle folder is only
read, never written. Every weights file is checked against its manifest sha256 immediately before it is read
(:func:`load_bundle_encoder`, :func:`load_bundle_ensemble`); :func:`verify_bundle` checks all files at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from sequoia_clinic.aggregator.ensemble import FoldEnsemble, load_ensemble
from sequoia_clinic.aggregator.registry import aggregator_kind
from sequoia_clinic.bundles.generate import RECIPES, write_generated
from sequoia_clinic.bundles.manifest import MANIFEST_NAME, Bundle, FileRef, parse_bundle
from sequoia_clinic.encoders.model import TileEncoder, create_network, load_encoder
from sequoia_clinic.errors import BundleError, SequoiaError
from sequoia_clinic.fileio import sha256_file
from sequoia_clinic.locations import models_dir
from sequoia_clinic.settings import Settings
from sequoia_clinic.weightio import HashMemo, verify_sha256

SHIPPED_MODELS = models_dir()  # the repository's models/, installed as package data (locations.py)


def search_dirs(settings: Settings | None = None) -> list[Path]:
    """Folders searched for bundles by name, first match wins."""
    dirs = []
    if settings is not None and settings.models.models_dir is not None:
        dirs.append(Path(settings.models.models_dir))
    dirs.append(SHIPPED_MODELS)
    return dirs


@dataclass(frozen=True)
class BundleListing:
    """One folder found in a search folder: its bundle, or why it could not be read."""

    path: Path
    bundle: Bundle | None
    error: str | None


def scan_bundles(settings: Settings | None = None) -> list[BundleListing]:
    seen: set[Path] = set()
    listings = []
    for root in search_dirs(settings):
        if not root.is_dir():
            continue
        for manifest in sorted(root.glob(f"*/{MANIFEST_NAME}")):
            folder = manifest.parent.resolve()
            if folder in seen:
                continue
            seen.add(folder)
            try:
                listings.append(BundleListing(manifest.parent, parse_bundle(manifest.parent), None))
            except (SequoiaError, OSError) as exc:  # a broken bundle is listed as broken; the scan goes on
                listings.append(BundleListing(manifest.parent, None, " ".join(str(exc).split())))
    return listings


def resolve_bundle_path(name_or_path: str | Path, settings: Settings | None = None) -> Path:
    """The folder of a bundle given by path or by name."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.name == MANIFEST_NAME and candidate.is_file():
        return candidate.parent
    if (candidate / MANIFEST_NAME).is_file():
        return candidate
    if os.sep in text or "/" in text or candidate.exists():
        raise BundleError(
            "not a bundle folder (no manifest.json)", candidate, fix="Point at a bundle folder."
        )
    for root in search_dirs(settings):
        if (root / text / MANIFEST_NAME).is_file():
            return root / text
    for item in scan_bundles(settings):
        if item.bundle is not None and item.bundle.name == text:
            return item.path
    names = sorted({item.bundle.name for item in scan_bundles(settings) if item.bundle is not None})
    raise BundleError(
        f"no bundle named '{text}'",
        fix=f"Available: {', '.join(names) or 'none'}; or pass a bundle folder path (see `models list`).",
    )


def _module_for(bundle: Bundle, ref: FileRef) -> torch.nn.Module:
    if ref == bundle.encoder_weights:
        return create_network(bundle.encoder_spec, meta=True)
    return aggregator_kind(bundle.aggregator).build(bundle.aggregator_config, True)


def materialize(bundle: Bundle) -> list[Path]:
    """Generate the bundle's missing recipe-made weight files (verifying each); returns those written."""
    written = []
    for _, ref in bundle.files():
        target = bundle.file(ref)
        if ref.generate is None or target.is_file():
            continue
        recipe, seed = ref.generate["recipe"], int(ref.generate["seed"])
        if recipe not in RECIPES:
            raise BundleError(f"unknown weights recipe '{recipe}'", bundle.path / MANIFEST_NAME)
        try:
            write_generated(_module_for(bundle, ref), recipe, seed, target, ref.sha256)
        except PermissionError:
            raise BundleError(
                "cannot write the bundle's generated weights to the cache folder",
                target.parent,
                fix="Set SEQUOIA_CLINIC_CACHE to a writable folder.",
            ) from None
        written.append(target)
    return written


def _weights_cache(settings: Settings | None) -> Path | None:
    return settings.models.weights_cache_dir if settings is not None else None


def load_bundle(name_or_path: str | Path, settings: Settings | None = None, generate: bool = True) -> Bundle:
    """Parse a bundle by name or path; generate missing demo weights (into the weights cache) when ``generate``."""
    bundle = parse_bundle(resolve_bundle_path(name_or_path, settings), _weights_cache(settings))
    if generate:
        materialize(bundle)
    return bundle


@dataclass(frozen=True)
class FileCheck:
    role: str
    file: str
    expected: str
    actual: str | None  # None = missing
    bytes: int | None

    @property
    def status(self) -> str:
        if self.actual is None:
            return "missing"
        return "ok" if self.actual == self.expected else "MISMATCH"


@dataclass(frozen=True)
class VerifyReport:
    bundle: Bundle
    checks: tuple[FileCheck, ...]
    generated: tuple[Path, ...]

    @property
    def ok(self) -> bool:
        return all(c.status == "ok" for c in self.checks)

    def raise_for_errors(self) -> None:
        bad = [c for c in self.checks if c.status != "ok"]
        if bad:
            first = bad[0]
            raise BundleError(
                f"{len(bad)} file(s) fail verification, first: {first.role} '{first.file}' is {first.status.lower()}",
                self.bundle.path,
                fix="Restore the files or re-import the bundle.",
            )


def verify_bundle(bundle: Bundle | str | Path, settings: Settings | None = None) -> VerifyReport:
    """sha256 of every file named by the manifest against its record (generating missing demo weights)."""
    if not isinstance(bundle, Bundle):
        bundle = parse_bundle(resolve_bundle_path(bundle, settings), _weights_cache(settings))
    generated = tuple(materialize(bundle))
    checks = []
    for role, ref in bundle.files():
        path = bundle.file(ref)
        present = path.is_file()
        checks.append(
            FileCheck(
                role=role,
                file=ref.file,
                expected=ref.sha256,
                actual=sha256_file(path) if present else None,
                bytes=path.stat().st_size if present else None,
            )
        )
    return VerifyReport(bundle=bundle, checks=tuple(checks), generated=generated)


def encoder_weights_path(bundle: Bundle, settings: Settings | None = None) -> Path:
    """The bundle's encoder weights, or the override ``Settings.models.encoder_weights`` (same sha256)."""
    if settings is not None and settings.models.encoder_weights is not None:
        return Path(settings.models.encoder_weights)
    return bundle.file(bundle.encoder_weights)


def verify_encoder_weights(bundle: Bundle, settings: Settings | None = None) -> None:
    """Check the encoder weights against the manifest without loading them (a feature-cache hit).

    The hash is memoised in the feature-cache folder by the file's identity (:class:`HashMemo`), so an
    unchanged 1.2 GB file costs a ``stat``, and a changed one is always re-hashed and refused.
    """
    cache_dir = settings.cache_dir if settings is not None else None
    verify_sha256(
        encoder_weights_path(bundle, settings),
        bundle.encoder_weights.sha256,
        what=f"{bundle.encoder_name} encoder weights",
        memo=HashMemo(Path(cache_dir)) if cache_dir is not None else None,
    )


def load_bundle_encoder(
    bundle: Bundle, device: torch.device, settings: Settings | None = None
) -> TileEncoder:
    """The bundle's tile encoder on ``device``, weights verified then loaded strictly."""
    path = encoder_weights_path(bundle, settings)
    precision = settings.precision if settings is not None else "auto"
    return load_encoder(
        bundle.encoder_spec, path, bundle.encoder_weights.sha256, device=device, precision=precision
    )


def load_bundle_ensemble(
    bundle: Bundle, device: torch.device, settings: Settings | None = None, deferred: bool = False
) -> FoldEnsemble:
    """Every fold of the bundle's aggregator on ``device``, each verified then loaded strictly.

    With a feature-cache folder in ``settings`` the folds' hashes are memoised there like the encoder's.
    ``deferred``: verified now, loaded at the first prediction (see ``aggregator/ensemble.py``)."""
    folds = [(bundle.file(f.weights), f.weights.sha256) for f in bundle.folds]
    cache_dir = settings.cache_dir if settings is not None else None
    memo = HashMemo(Path(cache_dir)) if cache_dir is not None else None
    return load_ensemble(bundle.aggregator, bundle.aggregator_config, folds, device, memo, deferred)
