"""A bundle's stored evaluation: attaching ``evaluation.parquet`` (sha256 in the manifest) and reading the
per-gene reliability that reports and ``calibrate --reliable-genes-only`` use.

The evaluation file is the per-gene table ``evaluate`` writes (columns documented in
``sequoia_clinic/evaluation/genes.py``); reliability reads its ``gene``, ``r`` (cross-validated Pearson r)
and ``passes_strict`` (r ≥ 0.3 and BH q < 0.05) columns. Attaching writes the table under a
content-addressed name first, then the updated manifest (atomically), then removes the previous
evaluation file, so the folder is consistent at every moment.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sequoia_clinic.bundles.manifest import MANIFEST_NAME, Bundle, file_entry, parse_bundle
from sequoia_clinic.errors import BundleError
from sequoia_clinic.fileio import atomic_path, write_json_atomic
from sequoia_clinic.weightio import verify_sha256

if TYPE_CHECKING:  # pandas/pyarrow are imported where a table is read or written, not by every score
    import pandas as pd

RELIABILITY_RULE = "strict"
REQUIRED_COLUMNS = ("gene", "r", "passes_strict")


@dataclass(frozen=True)
class GeneReliability:
    """Cross-validated r and the strict-rule verdict per gene, with how they were measured."""

    r: Mapping[str, float]
    reliable: Mapping[str, bool]
    rule: str
    unit: str
    n_units: int

    def of(self, gene: str) -> tuple[float | None, bool | None]:
        """(cross-validated r, passes the rule) of ``gene``; (None, None) when it was not evaluated, and r
        None when it is undefined (a constant gene)."""
        if gene not in self.r:
            return None, None
        value = self.r[gene]
        return (value if math.isfinite(value) else None), self.reliable[gene]


def attach_evaluation(folder: Path, table: pd.DataFrame, record: Mapping[str, Any]) -> Bundle:
    """Store ``table`` as the bundle's evaluation and add its entry (plus ``record``) to the manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"evaluation table lacks {missing}")
    folder = Path(folder)
    manifest_path = folder / MANIFEST_NAME
    data = json.loads(manifest_path.read_text("utf-8"))
    previous = data.get("evaluation", {}).get("file")
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buffer)
    payload = buffer.getvalue().to_pybytes()
    name = f"evaluation-{hashlib.sha256(payload).hexdigest()[:12]}.parquet"
    with atomic_path(folder / name) as tmp:
        tmp.write_bytes(payload)
    entry = file_entry(folder / name, folder)
    data["evaluation"] = {
        **entry,
        **record,
        "reliability_rule": RELIABILITY_RULE,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    write_json_atomic(manifest_path, data)
    if previous and previous != name and (folder / previous).is_file():
        (folder / previous).unlink()
    return parse_bundle(folder)


def read_reliability(bundle: Bundle) -> GeneReliability | None:
    """The bundle's per-gene reliability (sha256-checked), or None when it stores no evaluation."""
    ref = bundle.evaluation
    if ref is None:
        return None
    path = bundle.path / ref.file.file
    verify_sha256(path, ref.file.sha256, what="evaluation table")
    import pandas as pd
    import pyarrow as pa

    try:
        frame = pd.read_parquet(path, columns=list(REQUIRED_COLUMNS))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise BundleError(f"cannot read the evaluation table ({type(exc).__name__})", path) from None
    genes = frame["gene"].astype(str).tolist()
    r = [float(v) for v in frame["r"]]
    reliable = [bool(v) for v in frame["passes_strict"].fillna(False)]
    return GeneReliability(
        r=dict(zip(genes, r, strict=True)),
        reliable=dict(zip(genes, reliable, strict=True)),
        rule=RELIABILITY_RULE,
        unit=ref.unit,
        n_units=ref.n_units,
    )
