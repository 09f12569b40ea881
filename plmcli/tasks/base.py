"""The task contract: what a task supplies to the run skeleton (plmcli.run) and to the commands that use its model.

A training task (``Task``) says what differs between runs: its data, model and head, collator,
loss and metrics, what it measures, what ``config.json``'s ``plm`` section records
(``plmcli.settings.ModelSettings``) and its card. A use side (``Use``) says what a finished model of
that kind does in predict, evaluate, serve and check. The run and the commands call these and
nothing else, so a new task is its module and one registration line in ``plmcli.tasks``.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from plmcli import modeling


@dataclass
class Built:
    """What a task built for the Trainer, and what it decided on the way."""

    model: object
    tokenizer: object
    train_set: object  # datasets.Dataset
    collator: object
    lr: float  # the peak learning rate: the user's, or the default for the model's width
    max_length: int  # tokens per example, at most the model's limit
    base_name: str  # the base model as the user reads it
    lineage: list[str]  # the runs that made the base model, oldest first
    resolved: dict = field(default_factory=dict)  # settings decided from the config, compared on --resume
    eval_set: object = None
    compute_metrics: object = None
    compute_loss_func: object = None
    callbacks: list = field(default_factory=list)
    arguments: dict = field(default_factory=dict)  # the task's own TrainingArguments (evaluation, sampling, ...)
    batch_parts: object = None  # splits each training batch into parts trained in turn (training.length_parts)


@dataclass
class Finished:
    """What a task measured after training."""

    metrics: dict  # the task's part of metrics.json
    timing: dict  # runtime and throughput (manifest.json and the summary, never metrics.json)
    model_settings: Optional[dict] = None  # config.json's ``plm`` section: how predict reads data for the model
    resolved: dict = field(default_factory=dict)  # the task's part of manifest.json's "resolved"


class Task:
    """What a kind of training run supplies to ``execute``; each method is one step of the run."""

    lineage_step = "train"  # how the run is named in the model's lineage

    def __init__(self, config) -> None:
        self.config = config
        self.notes: list[str] = []  # what the summary should point out
        self.callbacks: list = []  # Trainer callbacks of whoever runs the task (plm tune's pruning)

    def source(self) -> Optional[modeling.ModelSource]:
        """The base model (None: a model built from scratch)."""
        return modeling.resolve(self.config.model, self.config.allow_pickle)

    def inputs(self) -> tuple[str, ...]:
        """The files the run reads: never replaced by --overwrite, recorded with their sha256."""
        raise NotImplementedError

    def read(self) -> None:
        """Read and check the data, before any model is loaded."""
        raise NotImplementedError

    def texts(self) -> tuple[str, Iterable[str]]:
        """(what they are, the training texts): the vocabulary's coverage is measured on them."""
        return "", ()

    def input_files(self) -> list[str]:
        """The files read, for manifest.json (a directory or glob given as input is resolved by the task)."""
        return [path for path in self.inputs() if path and path != "-"]

    def build(self, source, device: str, precision: str, resume_from: Optional[Path]) -> Built:
        raise NotImplementedError

    def before_training(self, built: Built, device: str, precision: str, resumed_state: Optional[dict]) -> dict:
        """What to measure before training; returns the state kept in each checkpoint for a resume."""
        return {}

    def finish(self, trainer, train_output, built: Built, device: str, precision: str) -> Finished:
        raise NotImplementedError

    def write(self, staging: Path, trainer, built: Built, metrics: dict, timing: dict) -> None:
        """The model card and plots, beside the weights and metrics.json."""
        raise NotImplementedError

    def save_model(self, staging: Path, model, tokenizer) -> None:
        """The weights, config and tokenizer (a task whose model is only a means, like an audit fold, keeps none)."""
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


class Use:
    """What a fine-tuned model of one task kind does in predict, evaluate, serve and check.

    The commands read the model's ``ModelSettings.task`` and call its use side
    (``plmcli.tasks.use_side``); a method that returns None leaves the command's own default.
    """

    task = ""  # the ModelSettings.task this use side answers for

    def predict(self, config, write=None):
        """plm predict: returns a plmcli.prediction.PredictResult."""
        raise NotImplementedError

    def evaluate(self, config, claim):
        """plm evaluate into the claimed report directory: returns a plmcli.evaluation.EvaluationResult."""
        raise NotImplementedError

    def evaluate_summary(self, result) -> Optional[str]:
        """evaluate's one-screen report (None: the command's sentence-classifier report)."""
        return None

    def finetune_summary(self, result) -> Optional[str]:
        """finetune's one-screen report (None: the command's sentence-model report)."""
        return None

    def load(self, config):
        """The model loaded for plm serve (what the batcher calls ``scores`` on)."""
        raise NotImplementedError

    def warm_up_pairs(self, runner) -> Optional[list[str]]:
        """The second text of serve's warm-up request, for a model of text pairs."""
        return None

    def request_problem(self, body, runner, config) -> Optional[tuple[int, str]]:
        """(status, message) for a /predict request this model cannot answer as asked, else None."""
        return None

    def answers(self, runner, body, outputs, model: str) -> list[dict]:
        """The /predict answer of each text from the batcher's outputs."""
        raise NotImplementedError

    def describe(self, runner) -> dict:
        """The task's part of GET /metadata."""
        raise NotImplementedError

    def check(self, config) -> dict:
        """plm check's report of a data file for this task."""
        raise NotImplementedError

    def check_summary(self, report: dict) -> Optional[str]:
        """check's one-screen report (None: the command's own)."""
        return None
