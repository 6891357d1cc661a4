"""What bfloat16 tile encoding changes in SEQUOIA predictions, next to what the k-means seed changes.

``--precision auto`` (the default of ``predict`` and ``score``) runs the tile encoder in bfloat16 where the
CPU or GPU has native bf16 arithmetic. This bench runs a bundle on each slide twice, fp32 and bf16, and
compares tile features, k-means partitions (adjusted Rand index), the predicted expression of every gene
and the linear predictor of the risk model (in SDs of the predictions over genes, and of the risk model's
calibration cohort). As a yardstick it re-clusters the fp32 features with other
k-means seeds: the reference method itself (one k-means run per slide) moves the prediction by that much
for a change of seed alone.

Run it with your own bundle (e.g. imported UNI + SEQUOIA weights) on your own slides to check bf16 there;
the default is the untrained demo bundle on the demo slide and, when present, the TCGA slide of
``../shared/data`` (assumed 0.5 um/px: it records no pixel size).

    .venv/bin/python benches/bench_precision.py [--bundle NAME|PATH] [--mpp X] [--seeds 3] [SLIDE ...]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from sequoia_clinic.bundles.store import load_bundle, load_bundle_ensemble
from sequoia_clinic.encoders.model import has_native_bf16
from sequoia_clinic.features.clusters import cluster_features
from sequoia_clinic.locations import default_cache_dir, default_risk_model, weights_cache_dir
from sequoia_clinic.pipeline.predict import Prediction, PredictRequest, run_prediction
from sequoia_clinic.settings import ModelSettings, Precision, Settings
from sequoia_clinic.survival.model import RiskModel

REPO = Path(__file__).resolve().parents[1]
DEMO_SLIDE = REPO / "sequoia_clinic" / "demo" / "CMU-1-Small-Region.svs"
SHARED_TCGA = REPO.parent / "shared" / "data" / "slides" / "TCGA-CR-7395-01A-01-TS1.svs"
RISK_MODEL = default_risk_model()


@dataclasses.dataclass(frozen=True)
class Change:
    """How far one prediction is from the fp32, k-means-seed-0 reference."""

    label: str
    ari: float  # adjusted Rand index of the tile partitions (1 = same clusters)
    r: float  # Pearson correlation over all genes
    max_gene: float  # max |difference| over genes, in SDs of the reference prediction over genes
    lp: float  # |difference| of the risk model's linear predictor, in SDs of its calibration cohort's


def compare(label: str, ref: Prediction, labels, expression, model: RiskModel, genes) -> Change:
    base = ref.expression
    lp = [
        model.apply({g: float(e[genes[g]]) for g in model.genes}).linear_predictor for e in (base, expression)
    ]
    return Change(
        label=label,
        ari=float(adjusted_rand_score(ref.clusters.labels, labels)),
        r=float(np.corrcoef(base, expression)[0, 1]),
        max_gene=float(np.abs(expression - base).max() / base.std()),
        lp=abs(lp[1] - lp[0]) / float(np.std(model.training_lp)),
    )


def slide_report(
    path: Path, mpp: float | None, bundle, settings: Settings, seeds: int, model: RiskModel
) -> None:
    ensemble = load_bundle_ensemble(bundle, torch.device("cpu"))
    runs = {
        p: run_prediction(
            PredictRequest(path, mpp=mpp), bundle, ensemble, dataclasses.replace(settings, precision=p)
        )
        for p in (Precision.FP32, Precision.BF16)
    }
    ref, low = runs[Precision.FP32], runs[Precision.BF16]
    genes = {g: i for i, g in enumerate(ref.genes)}
    a, b = ref.tile_features, low.tile_features
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    print(f"\n{path.name}: {len(ref.used_indices)} tiles, clusters by {ref.clusters.method}")
    print(f"  tile features bf16 vs fp32: min cosine {cosine.min():.6f}, relative L2 {rel:.2e}")
    changes = [
        compare("bf16 encoder (k-means seed 0)", ref, low.clusters.labels, low.expression, model, genes)
    ]
    f = bundle.preprocessing
    for seed in range(1, seeds + 1):
        clusters = cluster_features(a, f.n_clusters, seed, f.kmeans_n_init, settings.features.empty_row_fill)
        _, mean = ensemble.predict(clusters.features)
        changes.append(
            compare(f"fp32 encoder, k-means seed {seed}", ref, clusters.labels, mean[0], model, genes)
        )
    print(
        f"  {'vs fp32, k-means seed 0':34s} {'ARI':>6s} {'r genes':>9s} {'max |d| / SD':>13s} {'|d LP| / SD':>12s}"
    )
    for c in changes:
        print(f"  {c.label:34s} {c.ari:6.3f} {c.r:9.6f} {c.max_gene:13.4f} {c.lp:12.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slides", nargs="*", type=Path)
    parser.add_argument("--bundle", default="sequoia-brca-demo")
    parser.add_argument("--mpp", type=float, default=None, help="pixel size for slides that record none")
    parser.add_argument("--seeds", type=int, default=3, help="other k-means seeds to compare with")
    parser.add_argument("--risk-model", type=Path, default=RISK_MODEL)
    args = parser.parse_args()
    if not has_native_bf16(torch.device("cpu")):
        raise SystemExit("this CPU has no native bf16: --precision auto is fp32 here, nothing to compare")
    slides = [(p, args.mpp) for p in args.slides] or [(DEMO_SLIDE, None)] + (
        [(SHARED_TCGA, 0.5)] if SHARED_TCGA.exists() else []
    )
    cache = weights_cache_dir(default_cache_dir())  # demo weights: generated once into the user cache
    settings = Settings(models=ModelSettings(weights_cache_dir=cache))
    bundle = load_bundle(args.bundle, settings)
    model = RiskModel.load(args.risk_model)
    print(
        f"bundle {bundle.name} {bundle.version} ({'trained' if bundle.trained else 'NOT trained'}), encoder {bundle.encoder_name}"
    )
    for path, mpp in slides:
        slide_report(path, mpp, bundle, settings, args.seeds, model)


if __name__ == "__main__":
    main()
