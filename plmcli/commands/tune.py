"""`plm tune DATA`: the best fine-tuned model a time budget buys.

Usage:
    plm tune reviews.csv --budget 20m
    plm tune tickets.jsonl --text-column body --label-column queue --budget 1h --metric accuracy
    plm tune essays.csv --task regression --label-column score --trials 10
    plm tune reviews.csv --budget 20m --resume      # after an interruption: the study continues
"""

import sys
from typing import Annotated, Optional

import typer

from plmcli import console
from plmcli.config import TuneConfig, defaults
from plmcli.options import (
    AllowPickleOption,
    BaseModelOption,
    CalibrationOption,
    DeviceOption,
    DropInvalidOption,
    EncodingOption,
    LabelColumnOption,
    LabelledDataArgument,
    LabelSeparatorOption,
    Metric,
    MultiLabelOption,
    OverwriteOption,
    PrecisionOption,
    ReportToOption,
    SeedOption,
    Task,
    TextColumnOption,
    TextPairColumnOption,
    ValidationOption,
    ValidationSplitOption,
)

DEFAULT = defaults(TuneConfig)


def tune(
    data: LabelledDataArgument,
    budget: Annotated[
        str,
        typer.Option(
            help="Wall time for the whole search, like 90s, 20m or 1.5h: no trial starts that cannot end in it."
        ),
    ] = DEFAULT.budget,
    trials: Annotated[
        Optional[int],
        typer.Option(min=1, help="At most this many trials (the first trains with finetune's defaults)."),
    ] = DEFAULT.trials,
    metric: Annotated[
        Optional[Metric],
        typer.Option(
            help="The validation figure to optimise (micro_f1 with --multi-label only; rmse, pearson, spearman, mae, "
            "r2 with --task regression). [default: macro_f1; rmse for --task regression]",
            case_sensitive=False,
        ),
    ] = DEFAULT.metric,
    model: BaseModelOption = DEFAULT.model,
    output: Annotated[str, typer.Option("--output", "-o", help="Directory for the best model.")] = DEFAULT.output,
    validation: ValidationOption = DEFAULT.validation,
    validation_split: ValidationSplitOption = DEFAULT.validation_split,
    text_column: TextColumnOption = DEFAULT.text_column,
    text_pair_column: TextPairColumnOption = DEFAULT.text_pair_column,
    label_column: LabelColumnOption = DEFAULT.label_column,
    multi_label: MultiLabelOption = DEFAULT.multi_label,
    label_separator: LabelSeparatorOption = DEFAULT.label_separator,
    task: Annotated[
        Task,
        typer.Option(help="classification or regression (one number per row).", case_sensitive=False),
    ] = DEFAULT.task,
    max_length: Annotated[
        int, typer.Option(min=8, help="The longest --max-length a trial may use (the defaults trial uses it).")
    ] = DEFAULT.max_length,
    seed: SeedOption = DEFAULT.seed,
    device: DeviceOption = DEFAULT.device,
    precision: PrecisionOption = DEFAULT.precision,
    overwrite: OverwriteOption = DEFAULT.overwrite,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the search in --output (its study.db) with a new --budget.")
    ] = DEFAULT.resume,
    report_to: ReportToOption = DEFAULT.report_to,
    calibration: CalibrationOption = DEFAULT.calibration,
    encoding: EncodingOption = DEFAULT.encoding,
    drop_invalid: DropInvalidOption = DEFAULT.drop_invalid,
    allow_pickle: AllowPickleOption = DEFAULT.allow_pickle,
) -> None:
    """Search learning rate, epochs, batch size, warmup, ... within a time budget; keep the best model."""
    config = TuneConfig(
        data=data,
        budget=budget,
        trials=trials,
        metric=metric.value if metric else None,
        model=model,
        output=output,
        validation=validation,
        validation_split=validation_split,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        multi_label=multi_label,
        label_separator=label_separator,
        task=task.value,
        max_length=max_length,
        seed=seed,
        device=device.value,
        precision=precision.value,
        calibration=calibration.value,
        overwrite=overwrite,
        resume=resume,
        report_to=report_to.value,
        encoding=encoding,
        drop_invalid=drop_invalid,
        allow_pickle=allow_pickle,
        command=["plm", *sys.argv[1:]],
    )
    from plmcli.tuning import tune as run_tune

    console.out(summary(run_tune(config)))


def summary(result) -> str:
    """The trials in one table, the best settings, and the command that trains the best model again."""
    report = result.report
    metric, best = report["metric"], report["best"]
    rows = [
        [
            t["number"],
            t["state"].lower(),
            f"{t['value']:.4f}",
            f"{t['params']['lr']:.3g}",
            t["params"]["epochs"],
            t["params"]["batch_size"],
            f"{t['seconds']:.0f}",
        ]
        for t in report["trials"]
    ]
    defaults = best["defaults_value"]
    lines = [
        "",
        console.format_table(["trial", "state", metric, "lr", "epochs", "batch", "seconds"], rows),
        "",
        f"{len(report['trials'])} trials in {report['elapsed_seconds']:.0f} s of a {report['budget_seconds']:.0f} s "
        f"budget ({report['pruned']} pruned; stopped: {report['stopped_because']}).",
        f"Best: trial {best['number']}, validation {metric} {best['value']:.4f}"
        + (f" (finetune's defaults: {defaults:.4f})." if defaults is not None else "."),
        "Settings: " + ", ".join(f"{key} {value}" for key, value in best["params"].items()) + ".",
        f"Model saved to {result.output}/ as trained in that trial (metrics.json, README.md, tune.json, tuning.png).",
        f"The same model again:  {best['command']}",
    ]
    return "\n".join(lines)
