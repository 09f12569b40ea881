"""`plm finetune DATA`: train a text classifier on a labelled file.

Usage:
    plm finetune reviews.csv
    plm finetune train.tsv --validation dev.tsv --epochs 1
    plm finetune tickets.jsonl --text-column body --label-column queue --model runs/pretrain
    plm finetune pairs.csv --text-column question --text-pair-column answer
    plm finetune news.csv --multi-label --label-separator ';' --epochs 20 --early-stopping 3
    plm finetune essays.csv --task regression --label-column score --early-stopping 2 --metric pearson
    plm finetune ../shared/data/conll2003/train.txt --task token-classification --validation valid.txt
"""

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from plmcli import console
from plmcli.config import FinetuneConfig, defaults
from plmcli.options import (
    AllowChangedSettingsOption,
    AllowPickleOption,
    BaseModelOption,
    BatchSizeOption,
    CalibrationOption,
    ClassWeightsOption,
    DeviceOption,
    DropInvalidOption,
    EncodingOption,
    EpochsOption,
    LabelColumnOption,
    LabelledDataArgument,
    LabelSeparatorOption,
    LearningRateOption,
    MaxLengthOption,
    Metric,
    MultiLabelOption,
    OverwriteOption,
    PrecisionOption,
    ReportToOption,
    ResumeOption,
    SaveStepsOption,
    SeedOption,
    Task,
    TextColumnOption,
    TextPairColumnOption,
    ValidationOption,
    ValidationSplitOption,
    WarmupRatioOption,
    WeightDecayOption,
)

DEFAULT = defaults(FinetuneConfig)


def finetune(
    data: LabelledDataArgument,
    model: BaseModelOption = DEFAULT.model,
    output: Annotated[str, typer.Option("--output", "-o", help="Directory to write the model to.")] = DEFAULT.output,
    validation: ValidationOption = DEFAULT.validation,
    validation_split: ValidationSplitOption = DEFAULT.validation_split,
    text_column: TextColumnOption = DEFAULT.text_column,
    text_pair_column: TextPairColumnOption = DEFAULT.text_pair_column,
    label_column: LabelColumnOption = DEFAULT.label_column,
    multi_label: MultiLabelOption = DEFAULT.multi_label,
    label_separator: LabelSeparatorOption = DEFAULT.label_separator,
    class_weights: ClassWeightsOption = DEFAULT.class_weights,
    calibration: CalibrationOption = DEFAULT.calibration,
    early_stopping: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            metavar="N",
            help="Evaluate every epoch; stop after N evaluations without a better --metric, and keep the best model.",
        ),
    ] = DEFAULT.early_stopping,
    metric: Annotated[
        Optional[Metric],
        typer.Option(
            help="What picks the best model for --early-stopping (micro_f1 with --multi-label only; rmse, pearson, "
            "spearman, mae, r2 with --task regression; f1 (entities), macro_f1, accuracy with --task "
            "token-classification). [default: macro_f1; rmse for regression; f1 for token-classification]",
            case_sensitive=False,
        ),
    ] = DEFAULT.metric,
    task: Annotated[
        Task,
        typer.Option(
            help="classification: labels (names or numbers); regression: one number per row, like a rating or "
            "a score (predict gives a value); token-classification: a tag per word, like named entities, from "
            "CoNLL files or token and tag lists (predict gives entities).",
            case_sensitive=False,
        ),
    ] = DEFAULT.task,
    max_length: MaxLengthOption = DEFAULT.max_length,
    stride: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="--task token-classification: tokens that two windows of a sentence longer than --max-length "
            "share. [default: a quarter of --max-length]",
        ),
    ] = DEFAULT.stride,
    epochs: EpochsOption = DEFAULT.epochs,
    batch_size: BatchSizeOption = DEFAULT.batch_size,
    lr: LearningRateOption = DEFAULT.lr,
    seed: SeedOption = DEFAULT.seed,
    max_train_samples: Annotated[
        Optional[int], typer.Option(min=1, help="Train on the first N training rows only (quick runs).")
    ] = DEFAULT.max_train_samples,
    device: DeviceOption = DEFAULT.device,
    precision: PrecisionOption = DEFAULT.precision,
    overwrite: OverwriteOption = DEFAULT.overwrite,
    resume: ResumeOption = DEFAULT.resume,
    allow_changed_settings: AllowChangedSettingsOption = DEFAULT.allow_changed_settings,
    save_steps: SaveStepsOption = DEFAULT.save_steps,
    warmup_ratio: WarmupRatioOption = DEFAULT.warmup_ratio,
    weight_decay: WeightDecayOption = DEFAULT.weight_decay,
    report_to: ReportToOption = DEFAULT.report_to,
    encoding: EncodingOption = DEFAULT.encoding,
    drop_invalid: DropInvalidOption = DEFAULT.drop_invalid,
    allow_pickle: AllowPickleOption = DEFAULT.allow_pickle,
) -> None:
    """Fine-tune a text classifier (or, with --task regression, a regressor) on a labelled file."""
    if validation is not None and Path(validation).resolve() == Path(data).resolve():
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
        text_pair_column=text_pair_column,
        multi_label=multi_label,
        label_separator=label_separator,
        class_weights=class_weights.value,
        calibration=calibration.value,
        early_stopping=early_stopping,
        metric=metric.value if metric else None,
        task=task.value,
        max_length=max_length,
        stride=stride,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        max_train_samples=max_train_samples,
        device=device.value,
        precision=precision.value,
        overwrite=overwrite,
        resume=resume,
        allow_changed_settings=allow_changed_settings,
        save_steps=save_steps,
        warmup_ratio=warmup_ratio,
        weight_decay=weight_decay,
        report_to=report_to.value,
        command=["plm", *sys.argv[1:]],
        encoding=encoding,
        drop_invalid=drop_invalid,
        allow_pickle=allow_pickle,
    )
    from plmcli.run import finetune as run_finetune

    console.out(summary(run_finetune(config)))


def summary(result) -> str:
    """The one-screen report of a finished run: metrics, where the model is, how to use it."""
    metrics = result.metrics
    from plmcli.tasks import use_side

    own = use_side(metrics["task"]).finetune_summary(result)
    if own is not None:
        return own
    if metrics["task"] == "regression":
        return regression_summary(result)
    train, validation = metrics["train"], metrics["validation"]
    multi_label = metrics["task"] == "multi-label"
    headers = ["label", "precision", "recall", "f1", "support"] + (["threshold"] if multi_label else [])
    rows = [
        [name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"]]
        + ([f"{m['threshold']:.2f}"] if multi_label else [])
        for name, m in validation["per_class"].items()
    ]
    if multi_label:
        half = validation["at_threshold_0.5"]
        headline = (
            f"micro-F1 {validation['micro_f1']:.4f}, macro-F1 {validation['macro_f1']:.4f}, "
            f"subset accuracy {validation['subset_accuracy']:.4f} with each label's tuned threshold "
            f"(at 0.5: micro-F1 {half['micro_f1']:.4f}, macro-F1 {half['macro_f1']:.4f}), "
            f"loss {validation['loss']:.4f}"
        )
    else:
        headline = (
            f"accuracy {validation['accuracy']:.4f}, macro-F1 {validation['macro_f1']:.4f}, "
            f"loss {validation['loss']:.4f}"
        )
    weighting = metrics["class_weights"]
    weights = (
        "Class weights: " + ", ".join(f"{name} {w:.2f}" for name, w in weighting["weights"].items())
        if weighting["weights"]
        else "Class weights: none"
    ) + f" ({weighting['reason']})."
    lines = [
        "",
        f"Trained on {train['samples']} rows in {result.timing['runtime_seconds']:.1f} s "
        f"({result.timing['samples_per_second']:.1f} samples/s, {metrics['device']}, {metrics['precision']}).",
        f"Validation ({metrics['validation_samples']} rows): {headline}",
        "",
        console.format_table(headers, rows),
        "",
        weights,
        *([_calibration_line(validation["calibration"])] if "calibration" in validation else []),
        *result.notes,
        f"Model saved to {result.output}/ (metrics.json, manifest.json, README.md, loss_curve.png, "
        f"confusion_matrix.png{'' if multi_label else ', reliability.png'}).",
        f"Predict with:  plm predict --model {shlex.quote(str(result.output))} "
        + (
            f"--file data.csv  (columns '{metrics['columns']['text']}' and '{metrics['columns']['pair']}')"
            if metrics["columns"]["pair"]
            else '"your text"'
        ),
    ]
    return "\n".join(lines)


def _calibration_line(calibration: dict) -> str:
    """What calibration did to the validation scores, in one line."""
    before, after = calibration["before"], calibration["after"]
    if calibration["fitted_on"] is None:
        return f"Scores: raw softmax, not calibrated; validation ECE {before['ece']:.4f}."
    from plmcli.calibration import Calibrator

    used = Calibrator.of(calibration).phrase()
    return (
        f"Scores: calibrated with {used}; validation ECE {before['ece']:.4f} "
        f"-> {after['ece']:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f} (measured on the rows it was fitted "
        "on, so optimistic: plm evaluate on other data gives the honest figure)."
    )


def regression_summary(result) -> str:
    """The one-screen report of a finished regression run: figures in the target's units."""
    metrics = result.metrics
    train, validation, target = metrics["train"], metrics["validation"], metrics["target"]
    figures = ["rmse", "mae", "pearson", "spearman", "r2"]
    lines = [
        "",
        f"Trained on {train['samples']} rows in {result.timing['runtime_seconds']:.1f} s "
        f"({result.timing['samples_per_second']:.1f} samples/s, {metrics['device']}, {metrics['precision']}).",
        f"Validation ({metrics['validation_samples']} rows), in the units of '{target['column']}' "
        f"(training mean {target['mean']:.4g}, standard deviation {target['std']:.4g}):",
        "",
        console.format_table(
            ["RMSE", "MAE", "Pearson", "Spearman", "R²"], [[f"{validation[k]:.4f}" for k in figures]]
        ),
        "",
        *result.notes,
        f"Model saved to {result.output}/ (metrics.json, manifest.json, README.md, loss_curve.png, scatter.png).",
        f'Predict with:  plm predict --model {shlex.quote(str(result.output))} "your text"',
    ]
    return "\n".join(lines)
