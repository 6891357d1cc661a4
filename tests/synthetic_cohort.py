"""A synthetic paired cohort for the training/evaluation tests (no paired slides + RNA-seq exist offline).

Each patient has a latent vector z (``LATENT`` standard normal factors). A slide's 100 × ``DIM`` cluster
features are ``z @ W + noise`` per token, so the mean-pooled features carry z linearly. Each gene has a
signal s_g = z · w_g (w_g a random unit vector, so s_g has unit variance) and measured expression

    y = mu_g + sd_g * (rho_g * s_g + sqrt(1 - rho_g²) * noise),

so rho_g is the correlation of the gene with a learnable function of the features: the best possible
out-of-sample r. Planted levels are :data:`LEVELS`; some patients have two slides (independent token noise,
the same expression, as in the reference table). Gene symbols are real SEQUOIA symbols (so a trained
bundle can be scored with the default risk model): the default risk model's genes are among them, each
with a planted level drawn at random.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from sequoia_clinic.locations import weights_cache_dir
from sequoia_clinic.settings import ModelSettings, Settings

LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8)
# The small ViS of the training tests: input DIM, 100 tokens, depth 1, 2 heads, 16-d mixers.
SMALL_VIS = {"depth": 1, "nheads": 2, "dimensions_f": 16, "dimensions_s": 16, "dimensions_c": 16}
LATENT = 4
DIM = 64  # the demo-vit encoder's width, so trained bundles run with the demo encoder
CLUSTERS = 100
ROOT = Path(__file__).resolve().parents[1]


def risk_model_genes() -> list[str]:
    model = json.loads((ROOT / "models" / "risk" / "gse7390-wang76.json").read_text())
    return list(model["genes"])


def gene_symbols(count: int) -> list[str]:
    """``count`` distinct SEQUOIA symbols, the default risk model's genes first."""
    first = risk_model_genes()
    listed = pd.read_csv(ROOT / "models" / "sequoia-brca-demo" / "genes.csv")["gene"].tolist()
    rest = [g for g in listed if g not in set(first)]
    return (first + rest)[:count]


@dataclass(frozen=True)
class Cohort:
    slide_ids: list[str]
    patients: list[str]  # one per slide
    features: np.ndarray  # (slides, CLUSTERS, DIM) float32
    genes: list[str]
    rho: np.ndarray  # planted correlation per gene
    expression: pd.DataFrame  # one row per patient: patient_id + genes

    def targets(self) -> np.ndarray:
        """Measured expression per slide (the patient's row), slides × genes."""
        table = self.expression.set_index("patient_id")
        return table.loc[self.patients, self.genes].to_numpy(dtype=np.float32)


def make_cohort(
    n_patients: int = 300,
    two_slide_share: float = 0.2,
    genes_per_level: int = 20,
    seed: int = 0,
    noise: float = 1.0,
) -> Cohort:
    rng = np.random.default_rng(seed)
    patients = [f"P{i:04d}" for i in range(n_patients)]
    z = rng.normal(size=(n_patients, LATENT))
    mixing = rng.normal(size=(LATENT, DIM)) / np.sqrt(LATENT)
    offsets = rng.normal(size=(CLUSTERS, DIM)) * 0.5  # cluster rows differ in their mean
    slide_ids, slide_patients, blocks = [], [], []
    for i, patient in enumerate(patients):
        n_slides = 2 if rng.random() < two_slide_share else 1
        for k in range(n_slides):
            tokens = offsets + z[i] @ mixing + noise * rng.normal(size=(CLUSTERS, DIM))
            blocks.append(tokens.astype(np.float32))
            slide_ids.append(f"{patient}-S{k}")
            slide_patients.append(patient)
    rho = np.repeat(np.asarray(LEVELS), genes_per_level)
    n_genes = len(rho)
    directions = rng.normal(size=(LATENT, n_genes))
    directions /= np.linalg.norm(directions, axis=0)
    signal = z @ directions  # unit variance per gene
    mu = rng.uniform(1.0, 6.0, size=n_genes)
    sd = rng.uniform(0.5, 1.5, size=n_genes)
    values = mu + sd * (rho * signal + np.sqrt(1.0 - rho**2) * rng.normal(size=(n_patients, n_genes)))
    # The default risk model's genes get a mix of planted levels (symbols in a seeded random order).
    genes = [str(g) for g in np.asarray(gene_symbols(n_genes))[rng.permutation(n_genes)]]
    expression = pd.concat(
        [pd.DataFrame({"patient_id": patients}), pd.DataFrame(values, columns=genes)], axis=1
    )
    return Cohort(slide_ids, slide_patients, np.stack(blocks), genes, rho, expression)


def settings_for(cache: Path) -> Settings:
    """Settings with ``cache`` as feature cache and generated-weights folder."""
    return Settings(models=ModelSettings(weights_cache_dir=weights_cache_dir(cache)), cache_dir=cache)


def write_cohort(cohort: Cohort, folder: Path) -> tuple[Path, Path]:
    """Reference-style feature files (<slide>.h5, dataset cluster_features), a manifest and the expression."""
    features = folder / "features"
    features.mkdir(parents=True)
    for slide_id, block in zip(cohort.slide_ids, cohort.features, strict=True):
        with h5py.File(features / f"{slide_id}.h5", "w") as handle:
            handle["cluster_features"] = block
    manifest = folder / "manifest.csv"
    pd.DataFrame(
        {"slide": [f"features/{s}.h5" for s in cohort.slide_ids], "patient_id": cohort.patients}
    ).to_csv(manifest, index=False)
    expression = folder / "expression.csv"
    cohort.expression.to_csv(expression, index=False)
    return manifest, expression
