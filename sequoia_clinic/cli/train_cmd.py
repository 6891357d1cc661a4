"""``sequoia-clinic train MANIFEST --expression EXPR --out BUNDLE_DIR``: train a bundle on your own cohort.

Parses the options, calls :func:`sequoia_clinic.pipeline.train.train_bundle` and prints a summary. The
recipe defaults are the reference's (AdamW lr 1e-3, batch 16, at most 200 epochs, patience 20,
``loss+corr`` checkpoint choice with delta 0.5, seed 99); ``--batch-size`` is the training batch.
``--config`` overrides aggregator config fields (a JSON object, inline or a .json file). Progress: a bar
for the cluster features and one per fold on stderr (nothing with ``--quiet``). Exit codes: 0 success,
2 user-caused error (one line, nothing written), 1 internal error.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from sequoia_clinic.cli.common import user_errors
from sequoia_clinic.cli.options import (
    AggregatorOpt,
    CacheDirOpt,
    Device,
    DeviceOpt,
    EncoderWeightsOpt,
    MaxTilesOpt,
    ModelsDirOpt,
    NoCacheOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    TransformChoice,
    build_settings,
    positive_number,
)
from sequoia_clinic.cli.output import progress_bar, stdout_console
from sequoia_clinic.errors import OptionError


class SelectionChoice(StrEnum):  # = sequoia_clinic.training.Selection
    LOSS_CORR = "loss+corr"
    LOSS = "loss"


def parse_config(text: str | None) -> dict[str, Any]:
    """``--config``: an inline JSON object or a path to a .json file."""
    if text is None:
        return {}
    source = text.strip()
    try:
        data = json.loads(source if source.startswith("{") else Path(source).read_text("utf-8"))
    except OSError as exc:
        raise OptionError(f"cannot read the config file ({exc.strerror})", source, option="config") from None
    except ValueError as exc:
        raise OptionError(f"the config is not valid JSON ({exc})", option="config") from None
    if not isinstance(data, dict):
        raise OptionError("the config must be a JSON object", option="config")
    return data


def register(app: typer.Typer) -> None:
    @app.command("train")
    @user_errors
    def train(
        manifest: Path = typer.Argument(
            ...,
            metavar="MANIFEST",
            help="Slides: CSV/Parquet with slide, patient_id [, slide_id, mpp, features].",
            show_default=False,
        ),
        expression: Path = typer.Option(
            ..., "--expression", help="Measured expression (rna_<GENE> reference table or a wide table)."
        ),
        out: Path = typer.Option(..., "--out", help="Bundle folder to create (new or empty; or --resume)."),
        transform: TransformChoice = typer.Option(
            ..., "--expression-transform", help="Applied to the table: log2p1 = log2(x + 1), or none."
        ),
        expression_unit: str = typer.Option(
            "as given", "--expression-unit", help="Unit of the table's values (recorded), e.g. FPKM-UQ."
        ),
        bundle: str | None = typer.Option(
            None,
            "--bundle",
            help="Bundle whose encoder and preprocessing make the features (default: --init-from, else the demo).",
        ),
        init_from: str | None = typer.Option(None, "--init-from", help="Fine-tune from this bundle's folds."),
        aggregator: AggregatorOpt = "vis",
        config: str | None = typer.Option(
            None, "--config", help="Aggregator config overrides (JSON or .json)."
        ),
        folds: int = typer.Option(5, "--folds", min=2, help="Patient-grouped folds."),
        fold_seed: int = typer.Option(0, "--fold-seed", help="Seed of the fold split (0 = the reference's)."),
        val_fraction: float = typer.Option(
            0.1,
            "--val-fraction",
            min=0.01,
            max=0.5,
            help="Share of each fold's training patients for validation.",
        ),
        splits: Path | None = typer.Option(
            None, "--splits", help="JSON splits: fold -> train/val/test patients."
        ),
        lr: float = typer.Option(
            1e-3, "--lr", parser=positive_number, metavar="FLOAT", help="AdamW learning rate."
        ),
        weight_decay: float = typer.Option(0.0, "--weight-decay", min=0.0, help="AdamW weight decay."),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="Training batch (slides)."),
        max_epochs: int = typer.Option(200, "--max-epochs", min=1, help="Epoch cap per fold."),
        patience: int = typer.Option(
            20, "--patience", min=1, help="Epochs without a new checkpoint before stopping."
        ),
        select: SelectionChoice = typer.Option(
            SelectionChoice.LOSS_CORR, "--select", help="Checkpoint choice on the validation set."
        ),
        delta: float = typer.Option(0.5, "--delta", min=0.0, help="MSE margin of loss+corr."),
        seed: int = typer.Option(99, "--seed", help="Seed of model init and data order."),
        name: str | None = typer.Option(
            None, "--name", help="Bundle name (default: the --out folder's name)."
        ),
        cancer: str | None = typer.Option(
            None, "--cancer", help="Cancer type (default: the features bundle's)."
        ),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
        keep_checkpoints: bool = typer.Option(
            False, "--keep-checkpoints", help="Keep OUT/checkpoints at the end."
        ),
        checkpoint_every: int = typer.Option(
            1, "--checkpoint-every", min=1, help="Epochs between checkpoints."
        ),
        device: DeviceOpt = Device.CPU,
        precision: PrecisionOpt = Precision.AUTO,
        max_tiles: MaxTilesOpt = None,
        cache_dir: CacheDirOpt = None,
        no_cache: NoCacheOpt = False,
        models_dir: ModelsDirOpt = None,
        encoder_weights: EncoderWeightsOpt = None,
        quiet: QuietOpt = False,
    ) -> None:
        """Train SEQUOIA (ViS or HE2RNA) on your cohort: a bundle, out-of-fold predictions and baselines."""
        from sequoia_clinic.pipeline.train import (
            Recipe,
            Selection,
            TrainRequest,
            Transform,
            plan_training,
            run_training,
        )

        settings = build_settings(
            device=device,
            precision=precision,
            max_tiles=max_tiles,
            cache_dir=cache_dir,
            no_cache=no_cache,
            models_dir=models_dir,
            encoder_weights=encoder_weights,
        )
        request = TrainRequest(
            manifest=manifest,
            expression=expression,
            out=out,
            transform=Transform(transform.value),
            expression_unit=expression_unit,
            features_bundle=bundle,
            init_from=init_from,
            aggregator=aggregator,
            config=parse_config(config),
            folds=folds,
            fold_seed=fold_seed,
            val_fraction=val_fraction,
            splits=splits,
            recipe=Recipe(
                lr=lr,
                weight_decay=weight_decay,
                batch_size=batch_size,
                max_epochs=max_epochs,
                patience=patience,
                selection=Selection(select.value),
                delta=delta,
                seed=seed,
            ),
            name=name,
            cancer=cancer,
            resume=resume,
            keep_checkpoints=keep_checkpoints,
            checkpoint_every=checkpoint_every,
        )
        plan = plan_training(request, settings)  # every check before the progress display starts
        with progress_bar(quiet) as progress:
            outcome = run_training(plan, settings, progress)
        console = stdout_console()
        summary = outcome.summary
        console.print(
            f"trained     {outcome.bundle.name}: {summary['n_patients']} patients, {summary['n_slides']} slides, "
            f"{summary['n_genes']:,} genes, {len(outcome.folds)} folds ({summary['device']}, {summary['precision']})"
        )
        for fold in summary["per_fold"]:
            console.print(
                f"fold {fold['fold']}      best epoch {fold['best_epoch']} of {fold['epochs_run']}: "
                f"validation MSE {fold['best_val_loss']:.4g}, mean r {fold['best_val_r']:.3f}"
            )
        handling = summary["expression"]["genes"]
        console.print(
            f"genes       {len(handling['renamed'])} renamed by the alias table, {len(handling['merged'])} merged "
            f"duplicates, {len(handling['constant_dropped'])} constant genes dropped"
        )
        console.print(
            f"wrote       {outcome.out} (bundle, oof.parquet, baselines, epochs.csv, training_curves.png)"
        )
        console.print(
            f"next        sequoia-clinic evaluate --bundle {outcome.out} --predictions {outcome.out / 'oof.parquet'} "
            f"--expression {expression} --out EVAL_DIR"
        )
