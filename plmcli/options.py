"""Options shared by several commands, declared once so their help reads the same everywhere."""

from enum import Enum
from typing import Annotated, Optional

import typer

from plmcli import config


def choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum of a config's choice tuple (``mlm+nsp`` is member ``mlm_nsp``): typer's choices, named once."""
    return Enum(name, {value.replace("-", "_").replace("+", "_"): value for value in values}, type=str)


Device = choices("Device", config.DEVICES)
Precision = choices("Precision", config.PRECISIONS)
ClassWeights = choices("ClassWeights", config.CLASS_WEIGHTS)
Calibration = choices("Calibration", config.CALIBRATIONS)
RankBy = choices("RankBy", config.RANKINGS)
Tracker = choices("Tracker", config.TRACKERS)
Metric = choices("Metric", config.METRICS)
Task = choices("Task", config.TASKS)
LongTexts = choices("LongTexts", config.LONG_TEXTS)
OutputFormat = choices("OutputFormat", config.FORMATS)
ReportFormat = choices("ReportFormat", config.REPORT_FORMATS)
Objective = choices("Objective", config.OBJECTIVES)
Size = choices("Size", config.SIZES)


LongOption = Annotated[
    LongTexts,
    typer.Option(
        "--long",
        help="Texts longer than --max-length: truncate them, or read them whole in overlapping windows "
        "(a quarter overlap) whose scores are averaged.",
        case_sensitive=False,
    ),
]


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
EncodingOption = Annotated[
    str,
    typer.Option(
        help="Text encoding of the data file, like latin-1 or cp1252 (UTF-8 may start with a byte-order mark)."
    ),
]
DropInvalidOption = Annotated[
    bool,
    typer.Option(
        "--drop-invalid", help="Skip (and count) rows with an empty text or label instead of refusing the file."
    ),
]
AllowPickleOption = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        help="Also load pickled .bin weights (read with torch's weights_only=True); by default only safetensors.",
    ),
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted run from the newest complete checkpoint in --output (same settings).",
    ),
]
AllowChangedSettingsOption = Annotated[
    bool,
    typer.Option(
        "--allow-changed-settings",
        help="With --resume: continue even though settings (learning rate, epochs, ...) differ from the checkpoint's.",
    ),
]
SaveStepsOption = Annotated[
    int,
    typer.Option(
        min=1,
        metavar="N",
        help="Write a checkpoint every N steps (and on SIGINT / SIGTERM) for --resume; the newest 2 are kept.",
    ),
]
TextColumnOption = Annotated[
    Optional[str], typer.Option("--text-column", help="Column holding the text (default: detected from the data).")
]
TextPairColumnOption = Annotated[
    Optional[str],
    typer.Option(
        "--text-pair-column",
        help="Column holding the second text of sentence pairs, encoded as a pair with its own segment ids "
        "(default: the one the model was trained with, if any).",
    ),
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
LabelledDataArgument = Annotated[
    str,
    typer.Argument(help="Labelled data: a CSV, TSV, JSON, JSONL or Parquet file.", show_default=False, metavar="DATA"),
]
ClassWeightsOption = Annotated[
    ClassWeights,
    typer.Option(
        help="auto: weight the loss by inverse class frequency when the largest class has more than 3x "
        "the rows of the smallest; none: never.",
        case_sensitive=False,
    ),
]
CalibrationOption = Annotated[
    Calibration,
    typer.Option(
        help="temperature: fit one temperature on the validation set so that single-label scores match "
        "accuracy (labels never change); beta: the temperature, then a map of the top score fitted on the "
        "same rows, for a model too sure of hard texts but not of easy ones (labels never change); none: raw "
        "softmax scores.",
        case_sensitive=False,
    ),
]
EpochsOption = Annotated[float, typer.Option(min=0.0, help="Passes over the training data.")]
BatchSizeOption = Annotated[int, typer.Option(min=1, help="Examples per training step per device.")]
LearningRateOption = Annotated[
    Optional[float],
    typer.Option(
        min=0.0,
        help="Peak learning rate (AdamW, linear decay). [default: 1e-4 for encoders narrower than 768, "
        "5e-5 up to 1024, else 2e-5]",
    ),
]
WarmupRatioOption = Annotated[
    float, typer.Option(min=0.0, max=0.99, help="Share of the steps over which the learning rate warms up from 0.")
]
WeightDecayOption = Annotated[float, typer.Option(min=0.0, max=0.99, help="AdamW weight decay.")]
ReportToOption = Annotated[
    Tracker,
    typer.Option(
        help="Log training to an experiment tracker (its package is an extra: pip install 'plm[tensorboard]'); "
        "logs go to OUTPUT/logs unless the tracker's own environment variable says where.",
        case_sensitive=False,
    ),
]
ValidationOption = Annotated[
    Optional[str], typer.Option(help="A labelled file to validate on (default: hold out --validation-split).")
]
ValidationSplitOption = Annotated[
    float, typer.Option(help="Share of DATA held out for validation, stratified by label (between 0 and 1).")
]
MultiLabelOption = Annotated[
    bool, typer.Option("--multi-label", help="Rows may have several labels, like 'sports|politics'.")
]
LabelSeparatorOption = Annotated[str, typer.Option(help="What separates the labels of a --multi-label cell.")]
Quantization = choices("Quantization", config.QUANTIZATIONS)
