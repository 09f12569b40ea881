"""`plm finetune DATA`: train a text classifier on a labelled file.

Usage:
    plm finetune reviews.csv
    plm finetune train.tsv --validation dev.tsv --epochs 1
    plm finetune tickets.jsonl --text-column body --label-column queue --model runs/pretrain
"""

import sys
from typing import Annotated, Optional

import typer

from plmcli import console
from plmcli.config import FinetuneConfig
from plmcli.options import (
    BaseModelOption,
    Device,
    DeviceOption,
    LabelColumnOption,
    MaxLengthOption,
    OverwriteOption,
    Precision,
    PrecisionOption,
    SeedOption,
    TextColumnOption,
)


def finetune(
    data: Annotated[
        str,
        typer.Argument(
            help="Labelled data: a CSV, TSV, JSON, JSONL or Parquet file.", show_default=False, metavar="DATA"
        ),
    ],
    model: BaseModelOption = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Directory to write the model to.")] = "runs/finetune",
    validation: Annotated[
        Optional[str], typer.Option(help="A labelled file to validate on (default: hold out --validation-split).")
    ] = None,
    validation_split: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of DATA held out for validation, stratified by label.")
    ] = 0.1,
    text_column: TextColumnOption = None,
    label_column: LabelColumnOption = None,
    max_length: MaxLengthOption = 128,
    epochs: Annotated[float, typer.Option(min=0.0, help="Passes over the training data.")] = 3.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per training step per device.")] = 32,
    lr: Annotated[
        Optional[float],
        typer.Option(
            min=0.0,
            help="Peak learning rate (AdamW, linear decay). [default: 1e-4 for encoders narrower than 768, "
            "5e-5 up to 1024, else 2e-5]",
        ),
    ] = None,
    seed: SeedOption = 42,
    max_train_samples: Annotated[
        Optional[int], typer.Option(min=1, help="Train on the first N training rows only (quick runs).")
    ] = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    overwrite: OverwriteOption = False,
) -> None:
    """Fine-tune a text classifier on a labelled file (text and label columns are detected)."""
    if validation is not None and validation == data:
        raise typer.BadParameter(
            "the validation file is the training file; pass another file.", param_hint="--validation"
        )
    config = FinetuneConfig(
        data=data,
        model=model,
        output=output,
        validation=validation,
        validation_split=validation_split,
        text_column=text_column,
        label_column=label_column,
        max_length=max_length,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        max_train_samples=max_train_samples,
        device=device.value,
        precision=precision.value,
        overwrite=overwrite,
        command=["plm", *sys.argv[1:]],
    )
    from plmcli.training import finetune as run_finetune

    console.out(summary(run_finetune(config)))


def summary(result) -> str:
    """The one-screen report of a finished run: metrics, where the model is, how to use it."""
    metrics = result.metrics
    train, validation = metrics["train"], metrics["validation"]
    rows = [
        [name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"]]
        for name, m in validation["per_class"].items()
    ]
    lines = [
        "",
        f"Trained on {train['samples']} rows in {train['runtime_seconds']:.1f} s "
        f"({train['samples_per_second']:.1f} samples/s, {metrics['device']}, {metrics['precision']}).",
        f"Validation ({metrics['validation_samples']} rows): accuracy {validation['accuracy']:.4f}, "
        f"macro-F1 {validation['macro_f1']:.4f}, loss {validation['loss']:.4f}",
        "",
        console.format_table(["label", "precision", "recall", "f1", "support"], rows),
        "",
        *result.notes,
        f"Model saved to {result.output}/ (metrics.json, README.md, loss_curve.png, confusion_matrix.png).",
        f'Predict with:  plm predict --model {result.output} "your text"',
    ]
    return "\n".join(lines)
