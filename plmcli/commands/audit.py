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
from plmcli.config import AuditConfig, defaults
from plmcli.options import (
    AllowChangedSettingsOption,
    AllowPickleOption,
    BaseModelOption,
    BatchSizeOption,
    ClassWeightsOption,
    DeviceOption,
    DropInvalidOption,
    EncodingOption,
    EpochsOption,
    LabelColumnOption,
    LabelledDataArgument,
    LearningRateOption,
    MaxLengthOption,
    OverwriteOption,
    PrecisionOption,
    RankBy,
    ResumeOption,
    SaveStepsOption,
    SeedOption,
    Task,
    TextColumnOption,
    TextPairColumnOption,
)

DEFAULT = defaults(AuditConfig)


def audit(
    data: LabelledDataArgument,
    model: BaseModelOption = DEFAULT.model,
    output: Annotated[str, typer.Option("--output", "-o", help="Directory to write the report to.")] = DEFAULT.output,
    folds: Annotated[
        int, typer.Option(min=2, max=20, help="Cross-validation folds, stratified by label: each trains one model.")
    ] = DEFAULT.folds,
    rank_by: Annotated[
        RankBy,
        typer.Option(
            help="How suspects are ordered: self_confidence (the out-of-fold probability of the given label) "
            "or normalized_margin (that probability minus the highest other one).",
            case_sensitive=False,
        ),
    ] = DEFAULT.rank_by,
    fix_out: Annotated[
        Optional[str],
        typer.Option(
            metavar="FILE",
            help="Also write the input without the flagged rows to FILE (.csv, .tsv, .jsonl or .json), to retrain on.",
        ),
    ] = DEFAULT.fix_out,
    text_column: TextColumnOption = DEFAULT.text_column,
    text_pair_column: TextPairColumnOption = DEFAULT.text_pair_column,
    label_column: LabelColumnOption = DEFAULT.label_column,
    class_weights: ClassWeightsOption = DEFAULT.class_weights,
    max_length: MaxLengthOption = DEFAULT.max_length,
    epochs: EpochsOption = DEFAULT.epochs,
    batch_size: BatchSizeOption = DEFAULT.batch_size,
    lr: LearningRateOption = DEFAULT.lr,
    seed: SeedOption = DEFAULT.seed,
    device: DeviceOption = DEFAULT.device,
    precision: PrecisionOption = DEFAULT.precision,
    overwrite: OverwriteOption = DEFAULT.overwrite,
    resume: ResumeOption = DEFAULT.resume,
    allow_changed_settings: AllowChangedSettingsOption = DEFAULT.allow_changed_settings,
    save_steps: SaveStepsOption = DEFAULT.save_steps,
    encoding: EncodingOption = DEFAULT.encoding,
    drop_invalid: DropInvalidOption = DEFAULT.drop_invalid,
    allow_pickle: AllowPickleOption = DEFAULT.allow_pickle,
    multi_label: Annotated[bool, typer.Option("--multi-label", hidden=True)] = DEFAULT.multi_label,
    task: Annotated[Task, typer.Option(hidden=True, case_sensitive=False)] = DEFAULT.task,
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
