"""Building a bundle from a user's own files: tile-encoder weights plus downloaded SEQUOIA checkpoints.

Input: the encoder weights (for UNI the user's ``pytorch_model.bin``; UNI is gated, CC-BY-NC-ND and must
not be redistributed, so we never fetch or ship it) and one or more checkpoint folders as published on
Hugging Face (``gevaertlab/sequoia-<cancer>-<fold>``: ``config.json`` + ``model.safetensors``). Every file
is validated by loading it strictly before anything is written; the bundle is assembled in a temporary
folder, its manifest records the sha256 of every file, and it must pass :func:`verify_bundle` before it
is moved into place. Nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sequoia_clinic import __version__
from sequoia_clinic.aggregator.ensemble import load_fold
from sequoia_clinic.aggregator.registry import aggregator_kind
from sequoia_clinic.bundles.manifest import BUNDLE_FORMAT, MANIFEST_NAME, Bundle, file_entry, read_gene_list
from sequoia_clinic.bundles.store import verify_bundle
from sequoia_clinic.encoders.model import load_encoder
from sequoia_clinic.encoders.registry import get_encoder_spec
from sequoia_clinic.errors import BundleError, InputPathError, OptionError
from sequoia_clinic.fileio import atomic_dir, sha256_file, write_json_atomic
from sequoia_clinic.locations import sequoia_gene_list

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_HUB_DIR = re.compile(r"sequoia-([a-z]+)-(\d+)$")
_LICENCE_NOTE = (
    "SEQUOIA code and checkpoints: MIT (gevaertlab/sequoia-pub). UNI weights: CC-BY-NC-ND 4.0, gated, "
    "non-commercial research only; do not redistribute this bundle. The checkpoints were trained on UNI "
    "features, so UNI's terms may extend to them; seek legal review before any commercial use."
)
INTENDED_USE = (
    "Research use only. Predicts bulk RNA expression (the scale of the training data, reportedly "
    "log2(FPKM-UQ+1)) of the genes in genes.csv from an H&E whole-slide image of the stated cancer type. "
    "Not a medical device; not for diagnosis or treatment decisions."
)


def _checkpoint_files(folder: Path) -> tuple[Path, Path]:
    folder = Path(folder)
    config, weights = folder / "config.json", folder / "model.safetensors"
    if not folder.is_dir():
        raise InputPathError("not a folder", folder, fix="Pass a downloaded checkpoint folder.")
    for path in (config, weights):
        if not path.is_file():
            raise BundleError(
                f"checkpoint folder lacks {path.name}",
                folder,
                fix="Download config.json and model.safetensors.",
            )
    return config, weights


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"unreadable config ({exc})", path) from None
    if not isinstance(data, dict):
        raise BundleError("config.json is not a JSON object", path)
    return data


def _fold_numbers(folders: Sequence[Path]) -> list[int]:
    found = [_HUB_DIR.search(Path(f).resolve().name) for f in folders]
    numbers = [int(m.group(2)) for m in found if m]
    if len(numbers) == len(folders) and len(set(numbers)) == len(numbers):
        return numbers
    return list(range(len(folders)))


def _infer_cancer(folders: Sequence[Path]) -> str | None:
    found = {m.group(1) for f in folders if (m := _HUB_DIR.search(Path(f).resolve().name))}
    return found.pop() if len(found) == 1 else None


def import_bundle(
    name: str,
    sequoia_dirs: Sequence[Path],
    encoder_weights: Path,
    dest: Path,
    encoder: str = "uni",
    aggregator: str = "vis",
    cancer: str | None = None,
    version: str = "1.0.0",
    genes_csv: Path | None = None,
    trained: bool = True,
    symlink_encoder: bool = False,
) -> Bundle:
    """Validate the inputs, assemble ``dest/name`` with a checksummed manifest, verify it, return it."""
    if not _NAME.match(name):
        raise OptionError(
            f"invalid bundle name '{name}'", fix="Use lowercase letters, digits, '.', '_' or '-'."
        )
    if not sequoia_dirs:
        raise OptionError("no checkpoint folders given", fix="Pass --sequoia DIR once per fold.")
    target = Path(dest) / name
    if target.exists():
        raise BundleError(
            "a bundle folder of that name already exists", target, fix="Choose another --name or remove it."
        )
    spec = get_encoder_spec(encoder)
    kind = aggregator_kind(aggregator)
    encoder_weights = Path(encoder_weights)
    if not encoder_weights.is_file():
        raise InputPathError("encoder weights file not found", encoder_weights)

    folders = [Path(d) for d in sequoia_dirs]
    files = [_checkpoint_files(d) for d in folders]
    raw_configs = [_read_config(config) for config, _ in files]
    configs = [kind.parse(raw, str(path)) for raw, (path, _) in zip(raw_configs, files, strict=True)]
    if any(c != configs[0] for c in configs[1:]):
        raise BundleError(
            "the checkpoint folders have different configs",
            folders[0],
            fix="Import one model's folds together.",
        )
    config = configs[0]
    if spec.out_dim != config.input_dim:
        raise BundleError(
            f"encoder '{encoder}' gives {spec.out_dim}-d features but the checkpoints expect {config.input_dim}-d",
            files[0][0],
            fix="Choose the encoder the checkpoints were trained on (--encoder).",
        )
    cancer = cancer or _infer_cancer(folders)
    if cancer is None:
        raise OptionError(
            "cannot tell the cancer type from the folder names", fix="Pass --cancer (e.g. brca)."
        )
    genes_path = Path(genes_csv) if genes_csv is not None else sequoia_gene_list()
    genes = read_gene_list(genes_path)
    if len(genes) != config.num_outputs:
        raise BundleError(
            f"the gene list has {len(genes)} genes but the checkpoints predict {config.num_outputs}",
            genes_path,
            fix="Pass --genes with the checkpoints' gene list (one 'gene' column, in output order).",
        )

    # Validate every weights file by loading it strictly before writing anything.
    load_encoder(spec, encoder_weights, sha256=None, device="cpu")
    for _, weights in files:
        load_fold(aggregator, config, weights, sha256=None)

    numbers = _fold_numbers(folders)
    with atomic_dir(target) as tmp:
        enc_dir, fold_root = tmp / "encoder", tmp / "folds"
        enc_dir.mkdir()
        enc_target = enc_dir / encoder_weights.name
        if symlink_encoder:
            enc_target.symlink_to(encoder_weights.resolve())
        else:
            shutil.copyfile(encoder_weights, enc_target)
        shutil.copyfile(genes_path, tmp / "genes.csv")
        folds, sources = [], []
        for number, folder, (config_path, weights) in zip(numbers, folders, files, strict=True):
            fold_dir = fold_root / f"fold-{number}"
            fold_dir.mkdir(parents=True)
            shutil.copyfile(config_path, fold_dir / "config.json")
            shutil.copyfile(weights, fold_dir / "model.safetensors")
            fold_weights = file_entry(fold_dir / "model.safetensors", tmp)
            folds.append(
                {
                    "fold": number,
                    "source": folder.resolve().name,
                    "weights": fold_weights,
                }
            )
            sources.append(
                {
                    "folder": folder.resolve().name,
                    "config_sha256": sha256_file(config_path),
                    "model_sha256": fold_weights["sha256"],
                }
            )
        manifest = {
            "format": BUNDLE_FORMAT,
            "name": name,
            "version": version,
            "cancer": cancer,
            "trained": trained,
            "description": f"SEQUOIA {aggregator} aggregator ({len(folds)} folds) on {encoder} tile features",
            "intended_use": INTENDED_USE,
            "licence": _LICENCE_NOTE,
            "encoder": {"name": encoder, "weights": file_entry(enc_target, tmp)},
            "aggregator": {"kind": aggregator, "config": config.to_dict(), "folds": folds},
            "genes": {**file_entry(tmp / "genes.csv", tmp), "count": len(genes), "column": "gene"},
            "preprocessing": {
                "tile_px": 256,
                "target_mpp": 0.5,
                "max_tiles": 4000,
                "sample_seed": 99,
                "n_clusters": int(config.num_clusters),
                "kmeans_seed": 0,
                "kmeans_n_init": 1,
                "tile_order": "reference",  # the tiles and k-means order of the checkpoints' training data
            },
            "adequacy": {  # the tool's defaults (pipeline/clinical.py); edit the manifest to declare others
                "min_tissue_mm2": 4.0,
                "min_tiles": 100,
                "rationale": "100 kept tiles = SEQUOIA's 100 cluster tokens; 4 mm2 = Prosigna's minimum tumour area",
            },
            "provenance": {
                "imported_by": f"sequoia-clinic {__version__}",
                "imported_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "checkpoints": sources,
                "checkpoint_origin": "gevaertlab/sequoia-pub (Pizurica et al., Nat Commun 15:9886, 2024)",
                "encoder_file": encoder_weights.name,
                "encoder_symlinked": symlink_encoder,
                "gene_list": genes_path.name,
            },
        }
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
        report = verify_bundle(tmp)
        report.raise_for_errors()
    return verify_bundle(target).bundle
