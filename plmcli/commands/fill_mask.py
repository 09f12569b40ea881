"""`plm fill-mask TEXT...`: the most likely words for each mask, the quick check of a pretrained model.

Usage:
    plm fill-mask "the movie was [MASK] ."
    plm fill-mask --model runs/pretrain --top-k 10 --format json "a [MASK] and [MASK] film"
"""

from typing import Annotated

import typer

from plmcli import console
from plmcli.config import FillMaskConfig, defaults
from plmcli.options import AllowPickleOption, DeviceOption, ReportFormat

DEFAULT = defaults(FillMaskConfig)


def fill_mask(
    texts: Annotated[
        list[str],
        typer.Argument(
            help="Texts with [MASK] (or the model's own mask token).", show_default=False, metavar="TEXT..."
        ),
    ],
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="A masked-LM: a model directory from plm pretrain, or a Hugging Face id."),
    ] = DEFAULT.model,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Fillers shown per mask, best first.")] = DEFAULT.top_k,
    format: Annotated[ReportFormat, typer.Option("--format", case_sensitive=False, help="table or json.")] = (
        DEFAULT.format
    ),
    device: DeviceOption = DEFAULT.device,
    allow_pickle: AllowPickleOption = DEFAULT.allow_pickle,
) -> None:
    """Fill in each [MASK] of a text with a masked-LM's top-k words and their scores."""
    config = FillMaskConfig(
        texts=texts, model=model, top_k=top_k, format=format.value, device=device.value, allow_pickle=allow_pickle
    )
    from plmcli.inference import fill_mask as run_fill_mask
    from plmcli.inference import render_fill_mask

    console.out(render_fill_mask(run_fill_mask(config), config.format).rstrip("\n"))
