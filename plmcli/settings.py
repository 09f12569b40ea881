"""ModelSettings: what plm records in a model's ``config.json`` (its ``plm`` section) and every command reads back.

A task's finish writes it; predict, evaluate, serve and the card read it through
``ModelSettings.of(config)`` alone, never by string key. The task kind has one vocabulary
everywhere (``TASKS``). Models written by earlier plm versions, whose section had no ``task``
(single- or multi-label told by ``multi_label``, regression by ``task``) or none at all, read
the same way: the kind then comes from transformers' ``problem_type`` and the architecture.
Standard library only: it is read before torch is imported.
"""

import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

from plmcli.errors import RUNTIME_FAILURE, PlmError

SINGLE_LABEL = "single-label"
MULTI_LABEL = "multi-label"
REGRESSION = "regression"
TOKEN_CLASSIFICATION = "token-classification"
TASKS = (SINGLE_LABEL, MULTI_LABEL, REGRESSION, TOKEN_CLASSIFICATION)  # the task kind, as every file names it


@dataclass
class ModelSettings:
    """How a fine-tuned model reads its data and turns outputs into answers; ``config.json``'s ``plm`` section."""

    task: str = SINGLE_LABEL  # one of TASKS
    text_column: Optional[str] = None  # the column trained on (token classification: the words' column)
    text_pair_column: Optional[str] = None  # sentence pairs: the second text's column
    label_column: Optional[str] = None  # the labels' (or target's, or tags') column
    label_separator: str = "|"  # multi-label: how a cell joins its labels
    thresholds: Optional[list[float]] = None  # multi-label: each label's tuned decision threshold
    target_scale: Optional[dict] = None  # regression: {"mean", "std"} of the training target
    temperature: Optional[float] = None  # single-label: the fitted calibration temperature
    top_score_map: Optional[dict] = None  # single-label: the beta map of the top score (--calibration beta)
    max_length: Optional[int] = None  # tokens per example the model was trained with (None: older plm)
    inference_precision: Optional[str] = None  # bf16 where finetune found its labels the same as fp32's
    scheme: Optional[str] = None  # token classification: the tag scheme trained (IOB2) and the file's (IOB1, ...)
    source_scheme: Optional[str] = None
    stride: Optional[int] = None  # token classification: tokens two windows of a long sentence share

    @classmethod
    def of(cls, config) -> "ModelSettings":
        """The settings of a model config: transformers', plmcli.bert's, or config.json read as a dict."""
        raw = config if isinstance(config, dict) else vars(config) if hasattr(config, "__dict__") else {}
        section = raw.get("plm") if isinstance(raw.get("plm"), dict) else {}
        known = {item.name for item in fields(cls)}
        values = {key: value for key, value in section.items() if key in known}
        if values.get("task") not in TASKS:
            values["task"] = _older_task(section, raw)
        settings = cls(**values)
        if settings.task == REGRESSION and not _a_scale(settings.target_scale):
            raise PlmError(
                f"config.json's plm.target_scale is {settings.target_scale!r}, not a finite mean and a positive "
                "finite standard deviation: the model directory is damaged. Train it again."
            )
        return settings

    def to_dict(self) -> dict:
        """The section as config.json holds it: the fields that are set (never a NaN or an infinity)."""
        section = {key: value for key, value in asdict(self).items() if value is not None}
        broken = [key for key, value in section.items() if not _finite(value)]
        if broken:
            raise PlmError(
                f"the model's {', '.join(broken)} would be saved as NaN or infinite; nothing was saved.",
                RUNTIME_FAILURE,
            )
        return section

    @property
    def calibrated(self) -> bool:
        """Whether the scores are single-label probabilities that a temperature (or map) may calibrate."""
        return self.task == SINGLE_LABEL


def _finite(value) -> bool:
    """Every number in ``value`` (a number, or lists and dicts of them) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    return True


def _a_scale(scale) -> bool:
    """A regression model's target scale: a finite mean and a positive finite standard deviation."""
    if not isinstance(scale, dict):
        return scale is None  # older plm versions saved none, and predicted in standardised units
    mean, std = scale.get("mean"), scale.get("std")
    numbers = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (mean, std))
    return numbers and math.isfinite(mean) and math.isfinite(std) and std > 0


def _older_task(section: dict, raw: dict) -> str:
    """The task kind of a model whose plm section did not name one (an older plm, or none at all)."""
    architectures = raw.get("architectures") or []
    if any(name.endswith("ForTokenClassification") for name in architectures):
        return TOKEN_CLASSIFICATION
    if section.get("task") == REGRESSION or raw.get("problem_type") == "regression":
        return REGRESSION
    if section.get("multi_label") or raw.get("problem_type") == "multi_label_classification":
        return MULTI_LABEL
    return SINGLE_LABEL
