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
from plmcli.config import EvaluateConfig, defaults
from plmcli.options import (
    AllowPickleOption,
    DeviceOption,
    DropInvalidOption,
    EncodingOption,
    LabelColumnOption,
    LabelledDataArgument,
    LongOption,
    OverwriteOption,
    PrecisionOption,
    TextColumnOption,
    TextPairColumnOption,
)

SHOWN_ERRORS = 10


DEFAULT = defaults(EvaluateConfig)


def evaluate(
    data: LabelledDataArgument,
    model: Annotated[
        str, typer.Option("--model", "-m", help="A fine-tuned model directory (or Hugging Face id).")
    ] = DEFAULT.model,
    output: Annotated[
        Optional[str],
        typer.Option("--output", "-o", help="Directory for the report files. [default: MODEL/eval]"),
    ] = DEFAULT.output,
    format: Annotated[str, typer.Option(help="What to print: table or json.", case_sensitive=False)] = DEFAULT.format,
    text_column: TextColumnOption = DEFAULT.text_column,
    text_pair_column: TextPairColumnOption = DEFAULT.text_pair_column,
    label_column: LabelColumnOption = DEFAULT.label_column,
    long: LongOption = DEFAULT.long,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = DEFAULT.batch_size,
    max_length: Annotated[
        Optional[int], typer.Option(min=8, help="Truncate texts to this many tokens. [default: the model's limit]")
    ] = DEFAULT.max_length,
    device: DeviceOption = DEFAULT.device,
    precision: PrecisionOption = DEFAULT.precision,
    overwrite: OverwriteOption = DEFAULT.overwrite,
    encoding: EncodingOption = DEFAULT.encoding,
    drop_invalid: DropInvalidOption = DEFAULT.drop_invalid,
    allow_pickle: AllowPickleOption = DEFAULT.allow_pickle,
    target_accuracy: Annotated[
        Optional[float],
        typer.Option(min=0, max=1, help="Say the lowest predict --min-score whose answered rows reach this accuracy."),
    ] = DEFAULT.target_accuracy,
) -> None:
    """Score a fine-tuned model on labelled data: metrics, confusion matrix (scatter plot), the rows it got wrong."""
    config = EvaluateConfig(
        data=data,
        model=model,
        output=output,
        format=format.lower(),
        text_column=text_column,
        label_column=label_column,
        text_pair_column=text_pair_column,
        long=long.value,
        batch_size=batch_size,
        max_length=max_length,
        device=device.value,
        precision=precision.value,
        overwrite=overwrite,
        encoding=encoding,
        drop_invalid=drop_invalid,
        allow_pickle=allow_pickle,
        target_accuracy=target_accuracy,
    )
    from plmcli.evaluation import evaluate as run_evaluate

    result = run_evaluate(config)
    console.out(json.dumps(result.metrics, indent=2) if config.format == "json" else summary(result))


def summary(result) -> str:
    """Metrics, per-class figures, the confusion matrix and the most confident mistakes, on one screen."""
    metrics = result.metrics
    from plmcli.tasks import use_side

    own = use_side(metrics["task"]).evaluate_summary(result)
    if own is not None:
        return own
    if metrics["task"] == "regression":
        return regression_summary(result)
    names = list(metrics["per_class"])
    per_class = [
        [name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"]]
        for name, m in metrics["per_class"].items()
    ]
    multi_label = metrics["task"] == "multi-label"
    predicted_names = [*names, "(none)"] if multi_label else names
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
    if multi_label:
        headline = (
            f"micro-F1 {metrics['micro_f1']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
            f"subset accuracy {metrics['subset_accuracy']:.4f} (every label of a row right)"
        )
        matrix_title = "Rows with each true label, by the labels predicted for them ((none): no label predicted):"
    else:
        headline = (
            f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
            f"weighted-F1 {metrics['weighted_f1']:.4f}"
        )
        matrix_title = "Confusion matrix (rows: true label, columns: predicted):"
    long = metrics["long_texts"]
    lines = [
        f"{metrics['samples']} rows: {headline}",
        "",
        console.format_table(["label", "precision", "recall", "f1", "support"], per_class),
        "",
        matrix_title,
        console.format_table(["true \\ predicted", *predicted_names], matrix),
        "",
        f"Misclassified: {metrics['misclassified']} of {metrics['samples']}"
        + (f"; the {len(mistakes)} most confident:" if mistakes else "."),
    ]
    if mistakes:
        lines.append(console.format_table(["text", "label", "predicted", "score"], mistakes))
    if long["count"]:
        how = "read in overlapping windows" if long["handling"] == "sliding" else "truncated"
        lines += ["", f"{long['count']} texts were longer than the model's input limit and were {how}."]
    if "calibration" in metrics:
        calibration = metrics["calibration"]
        before, after = calibration["before"], calibration["after"]
        from plmcli.calibration import Calibrator

        used = Calibrator.of(calibration).phrase()
        lines += [
            "",
            f"Scores: ECE {after['ece']:.4f} on this data with the model's {used} ({before['ece']:.4f} "
            f"without); mean top score "
            f"{after['mean_top_score']:.4f} at accuracy {after['accuracy']:.4f}. reliability.png shows both.",
        ]
    lines += _coverage_lines(metrics)
    files = "metrics.json, confusion_matrix.png, errors.csv"
    files += ", reliability.png, coverage.png" if "calibration" in metrics else ""
    lines += ["", f"Report: {result.output}/ ({files})"]
    return "\n".join(lines)


def _coverage_lines(metrics: dict) -> list[str]:
    """The coverage table (accuracy of the most confident rows) and the --target-accuracy answer, in plain words."""
    if "coverage" not in metrics:
        return []
    rows = [
        [f"{row['coverage']:.0%}", row["rows"], f"{row['accuracy']:.4f}", f"{row['min_score']:.4f}"]
        for row in metrics["coverage"]
    ]
    lines = [
        "",
        "Answering only confident rows (predict --min-score S leaves the rows scored below S to a person):",
        console.format_table(["rows answered", "count", "accuracy", "lowest score answered"], rows),
    ]
    target = metrics.get("target_accuracy")
    if target and target["min_score"] is None:
        lines.append(f"No --min-score reaches accuracy {target['target_accuracy']:g} on this data.")
    elif target:
        lines.append(
            f"To reach accuracy {target['target_accuracy']:g} on this data: --min-score {target['min_score']:.4f}, "
            f"which answers {target['coverage']:.0%} of the rows ({target['rows']}) "
            f"at accuracy {target['accuracy']:.4f}."
        )
    return lines


def regression_summary(result) -> str:
    """A regression model's figures in the target's units and its largest errors, on one screen."""
    metrics = result.metrics
    figures = ["rmse", "mae", "pearson", "spearman", "r2"]
    largest = [
        [row[metrics["text_column"]], row[metrics["label_column"]], f"{row['predicted_value']:.4g}"]
        for row in result.errors[:SHOWN_ERRORS]
    ]
    lines = [
        f"{metrics['samples']} rows, target '{metrics['label_column']}':",
        console.format_table(["RMSE", "MAE", "Pearson", "Spearman", "R²"], [[f"{metrics[k]:.4f}" for k in figures]]),
        "",
        f"The {len(largest)} largest errors:",
        console.format_table(["text", "true", "predicted"], largest),
    ]
    if metrics["long_texts"]["count"]:
        how = "read in overlapping windows" if metrics["long_texts"]["handling"] == "sliding" else "truncated"
        lines += [
            "",
            f"{metrics['long_texts']['count']} texts were longer than the model's input limit and were {how}.",
        ]
    lines += ["", f"Report: {result.output}/ (metrics.json, scatter.png, errors.csv)"]
    return "\n".join(lines)
