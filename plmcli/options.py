"""Options shared by several commands, declared once so their help reads the same everywhere."""

from enum import Enum
from typing import Annotated, Optional

import typer


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


DeviceOption = Annotated[
    Device, typer.Option(help="Where to run: auto picks cuda, then mps, then cpu.", case_sensitive=False)
]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        help="Numeric precision: auto uses bf16 on GPUs that support it, else fp16 on CUDA, and fp32 on CPU.",
        case_sensitive=False,
    ),
]
MaxLengthOption = Annotated[
    int, typer.Option("--max-length", min=8, help="Tokens per text; longer texts are truncated (and counted).")
]
SeedOption = Annotated[int, typer.Option(help="Random seed: the same seed and data give the same metrics on CPU.")]
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Replace an existing output (the old one stays intact until the new one is complete)."
    ),
]
TextColumnOption = Annotated[
    Optional[str], typer.Option("--text-column", help="Column holding the text (default: detected from the data).")
]
LabelColumnOption = Annotated[
    Optional[str], typer.Option("--label-column", help="Column holding the label (default: detected from the data).")
]
BaseModelOption = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m", help="Base model: a local model directory or a Hugging Face id. [default: bundled MiniLM]"
    ),
]
