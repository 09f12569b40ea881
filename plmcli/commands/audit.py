"""`plm audit DATA`: find the rows of a labelled file whose label is likely wrong.

Usage:
    plm audit reviews.csv
    plm audit tickets.jsonl --text-column body --label-column queue --folds 5 --epochs 2
    plm audit reviews.csv --fix-out reviews-cleaned.csv
    plm audit reviews.csv --resume          # after an interruption: finished folds are reused
"""

import sys
from typing import Annotated, Optional

import typer

from plmcli import console
from plmcli.config import AuditConfig
from plmcli.options import (
    AllowChangedSettingsOption,
    AllowPickleOption,
    BaseModelOption,
    BatchSizeOption,
    ClassWeights,
    ClassWeightsOption,
    Device,
    DeviceOption,
    DropInvalidOption,
    EncodingOption,
    EpochsOption,
    LabelColumnOption,
    LabelledDataArgument,
    LearningRateOption,
    MaxLengthOption,
    OverwriteOption,
    Precision,
    PrecisionOption,
    RankBy,
    ResumeOption,
    SaveStepsOption,
    SeedOption,
    Task,
    TextColumnOption,
    TextPairColumnOption,
)


def audit(
    data: LabelledDataArgument,
    model: BaseModelOption = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Directory to write the report to.")] = "runs/audit",
    folds: Annotated[
        int, typer.Option(min=2, max=20, help="Cross-validation folds, stratified by label: each trains one model.")
    ] = 5,
    rank_by: Annotated[
        RankBy,
        typer.Option(
            help="How suspects are ordered: self_confidence (the out-of-fold probability of the given label) "
            "or normalized_margin (that probability minus the highest other one).",
            case_sensitive=False,
        ),
    ] = RankBy.self_confidence,
    fix_out: Annotated[
        Optional[str],
        typer.Option(
            metavar="FILE",
            help="Also write the input without the flagged rows to FILE (.csv, .tsv, .jsonl or .json), to retrain on.",
        ),
    ] = None,
    text_column: TextColumnOption = None,
    text_pair_column: TextPairColumnOption = None,
    label_column: LabelColumnOption = None,
    class_weights: ClassWeightsOption = ClassWeights.auto,
    max_length: MaxLengthOption = 128,
    epochs: EpochsOption = 3.0,
    batch_size: BatchSizeOption = 32,
    lr: LearningRateOption = None,
    seed: SeedOption = 42,
    device: DeviceOption = Device.auto,
    precision: PrecisionOption = Precision.auto,
    overwrite: OverwriteOption = False,
    resume: ResumeOption = False,
    allow_changed_settings: AllowChangedSettingsOption = False,
    save_steps: SaveStepsOption = 500,
    encoding: EncodingOption = "utf-8",
    drop_invalid: DropInvalidOption = False,
    allow_pickle: AllowPickleOption = False,
    multi_label: Annotated[bool, typer.Option("--multi-label", hidden=True)] = False,
    task: Annotated[Task, typer.Option(hidden=True, case_sensitive=False)] = Task.classification,
) -> None:
    """Cross-validate a classifier on a labelled file and list the rows whose label is likely wrong."""
    config = AuditConfig(
        data=data,
        model=model,
        output=output,
        folds=folds,
        rank_by=rank_by.value,
        fix_out=fix_out,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        multi_label=multi_label,
        task=task.value,
        class_weights=class_weights.value,
        max_length=max_length,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device.value,
        precision=precision.value,
        overwrite=overwrite,
        resume=resume,
        allow_changed_settings=allow_changed_settings,
        save_steps=save_steps,
        encoding=encoding,
        drop_invalid=drop_invalid,
        allow_pickle=allow_pickle,
        command=["plm", *sys.argv[1:]],
    )
    from plmcli.audit import audit as run_audit

    console.out(summary(run_audit(config)))


def summary(result) -> str:
    """The cross-validated figures, the top suspects, and where the report is."""
    metrics = result.metrics
    cv, suspects, estimated = metrics["cross_validation"], metrics["suspects"], metrics["estimated_label_errors"]
    top = result.shown
    rows = [[s["row"], s["given_label"], s["suggested_label"], f"{s['self_confidence']:.4f}", s["text"]] for s in top]
    lines = [
        "",
        f"Cross-validated ({metrics['folds']} folds, {metrics['rows']} rows, against the labels as given): accuracy "
        f"{cv['accuracy']['mean']:.4f} ± {cv['accuracy']['std']:.4f}, macro-F1 {cv['macro_f1']['mean']:.4f} ± "
        f"{cv['macro_f1']['std']:.4f}.",
        f"Suspects: {suspects['count']} rows ({suspects['share']:.1%}) flagged as likely mislabelled; cleanlab "
        f"estimates {estimated['count']} label errors ({estimated['share']:.1%}).",
    ]
    if top:
        lines += [
            f"The {len(top)} most suspect (row = data row in the file, 1 = first after the header):",
            "",
            console.format_table(["row", "given", "suggested", "self-conf.", "text"], rows),
        ]
    lines += [
        "",
        f"Report in {result.output}/ (suspects.csv, out_of_fold.csv, metrics.json, README.md).",
    ]
    if result.fix_out is not None:
        lines.append(f"Wrote {result.fix_out} without the {suspects['count']} flagged rows.")
    elif suspects["count"]:
        lines.append("Pass --fix-out FILE to also write the data without the flagged rows, to retrain on.")
    return "\n".join(lines)
