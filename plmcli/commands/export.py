"""`plm export MODEL --output DIR`: an ONNX model (fp32 or int8), checked on real rows, with tokenizer and settings.

Usage:
    plm export runs/finetune --output runs/onnx
    plm export runs/finetune --output runs/int8 --quantize int8 --check ../shared/data/sst2/dev.tsv
    plm predict --model runs/int8 "This is a great movie!"      # runs through onnxruntime
"""

from typing import Annotated, Optional

import typer

from plmcli import console
from plmcli.config import ExportConfig, defaults
from plmcli.options import (
    AllowPickleOption,
    EncodingOption,
    LabelColumnOption,
    OverwriteOption,
    Quantization,
    TextColumnOption,
)

DEFAULT = defaults(ExportConfig)


def export(
    model: Annotated[
        str,
        typer.Argument(
            help="A model directory from plm finetune (or plm pretrain, for fill-mask).", show_default=False
        ),
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="Directory for the exported model.")],
    quantize: Annotated[
        Quantization,
        typer.Option(
            help="none: fp32; int8: the fastest int8 variant (onnxruntime's dynamic quantization, parts that cost "
            "agreement kept in fp32) that passes the check.",
            case_sensitive=False,
        ),
    ] = DEFAULT.quantize,
    check: Annotated[
        Optional[str],
        typer.Option(
            help="Rows to check the export on (labelled rows also compare the metric). "
            "[default: the validation file the model was trained with]"
        ),
    ] = DEFAULT.check,
    check_rows: Annotated[int, typer.Option(min=1, help="Check on at most this many rows (the first).")] = (
        DEFAULT.check_rows
    ),
    text_column: TextColumnOption = DEFAULT.text_column,
    label_column: LabelColumnOption = DEFAULT.label_column,
    force: Annotated[
        bool, typer.Option("--force", help="Keep an int8 export that fails the check (its card says so).")
    ] = DEFAULT.force,
    overwrite: OverwriteOption = DEFAULT.overwrite,
    encoding: EncodingOption = DEFAULT.encoding,
    allow_pickle: AllowPickleOption = DEFAULT.allow_pickle,
) -> None:
    """Export a model to ONNX (fp32 or int8), checked against torch on real rows; predict and serve run it."""
    if force and quantize.value != "int8":
        raise typer.BadParameter("--force keeps an int8 export that failed the check; it goes with --quantize int8.")
    config = ExportConfig(
        model=model,
        output=output,
        quantize=quantize.value,
        check=check,
        check_rows=check_rows,
        text_column=text_column,
        label_column=label_column,
        force=force,
        overwrite=overwrite,
        encoding=encoding,
        allow_pickle=allow_pickle,
    )
    from plmcli.export import export as run_export
    from plmcli.export import summary

    console.out(summary(run_export(config)))
