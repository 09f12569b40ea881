"""`plm evaluate DATA`: score a fine-tuned classifier on labelled data.

Usage:
    plm evaluate test.csv
    plm evaluate ../shared/data/sst2/dev.tsv --model runs/sst2 --format json
    plm evaluate test.jsonl --output reports/test --overwrite
"""

import json
from typing import Annotated, Optional

import typer

from plmcli import console
from plmcli.config import EvaluateConfig
from plmcli.options import (
    Device,
    DeviceOption,
    LabelColumnOption,
    OverwriteOption,
    Precision,
    PrecisionOption,
    TextColumnOption,
)

SHOWN_ERRORS = 10


def evaluate(
    data: Annotated[
        str,
        typer.Argument(
            help="Labelled data: a CSV, TSV, JSON, JSONL or Parquet file.", show_default=False, metavar="DATA"
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="A fine-tuned model directory (or Hugging Face id).")
    ] = "runs/finetune",
    output: Annotated[
        Optional[str],
        typer.Option("--output", "-o", help="Directory for the report files. [default: MODEL/eval]"),
    ] = None,
    format: Annotated[str, typer.Option(help="What to print: table or json.", case_sensitive=False)] = "table",
    text_column: TextColumnOption = None,
    label_column: LabelColumnOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 64,
    max_length: Annotated[
        Optional[int], typer.Option(min=8, help="Truncate texts to this many tokens. [default: the model's limit]")
    ] = None,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    overwrite: OverwriteOption = False,
) -> None:
    """Score a fine-tuned classifier on labelled data: metrics, confusion matrix, misclassified rows."""
    config = EvaluateConfig(
        data=data,
        model=model,
        output=output,
        format=format.lower(),
        text_column=text_column,
        label_column=label_column,
        batch_size=batch_size,
        max_length=max_length,
        device=device.value,
        precision=precision.value,
        overwrite=overwrite,
    )
    from plmcli.evaluation import evaluate as run_evaluate

    result = run_evaluate(config)
    console.out(json.dumps(result.metrics, indent=2) if config.format == "json" else summary(result))


def summary(result) -> str:
    """Metrics, per-class figures, the confusion matrix and the most confident mistakes, on one screen."""
    metrics = result.metrics
    names = list(metrics["per_class"])
    per_class = [
        [name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"]]
        for name, m in metrics["per_class"].items()
    ]
    matrix = [[name, *row] for name, row in zip(names, metrics["confusion_matrix"])]
    mistakes = [
        [
            row[metrics["text_column"]],
            row[metrics["label_column"]],
            row["predicted_label"],
            f"{row['predicted_score']:.4f}",
        ]
        for row in result.errors[:SHOWN_ERRORS]
    ]
    lines = [
        f"{metrics['samples']} rows: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
        f"weighted-F1 {metrics['weighted_f1']:.4f}",
        "",
        console.format_table(["label", "precision", "recall", "f1", "support"], per_class),
        "",
        "Confusion matrix (rows: true label, columns: predicted):",
        console.format_table(["true \\ predicted", *names], matrix),
        "",
        f"Misclassified: {metrics['misclassified']} of {metrics['samples']}"
        + (f"; the {len(mistakes)} most confident:" if mistakes else "."),
    ]
    if mistakes:
        lines.append(console.format_table(["text", "label", "predicted", "score"], mistakes))
    lines += ["", f"Report: {result.output}/ (metrics.json, confusion_matrix.png, errors.csv)"]
    return "\n".join(lines)
