"""One dataclass per command: plm's Python API, usable without the CLI.

Each config checks its own values on construction and raises ``PlmError`` with the option
name the user would type, so the CLI and Python callers get the same messages::

    from plmcli.config import FinetuneConfig
    from plmcli.training import finetune
    result = finetune(FinetuneConfig(data="reviews.csv", epochs=1))
"""

import codecs
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from plmcli.errors import PlmError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
FORMATS = ("table", "json", "jsonl", "csv")  # of predict's output
REPORT_FORMATS = ("table", "json")  # of what check, evaluate and fill-mask print
DEFAULT_CLASSIFIER = "runs/finetune"  # where `plm finetune` writes and `plm predict` reads by default
DEFAULT_PRETRAINED = "runs/pretrain"  # where `plm pretrain` writes and `plm fill-mask` reads by default
OBJECTIVES = ("mlm", "mlm+nsp")
CLASS_WEIGHTS = ("auto", "none")
CALIBRATIONS = ("temperature", "beta", "none")
LONG_TEXTS = ("truncate", "sliding")
SINGLE_LABEL_METRICS = ("macro_f1", "accuracy", "weighted_f1", "loss")
MULTI_LABEL_METRICS = ("macro_f1", "micro_f1", "loss")
REGRESSION_METRICS = ("rmse", "pearson", "spearman", "mae", "r2", "loss")
TOKEN_METRICS = ("f1", "macro_f1", "accuracy", "loss")  # entity F1 (micro, strict IOB2), its macro mean, word accuracy
_EVERY_METRIC = dict.fromkeys(TOKEN_METRICS + SINGLE_LABEL_METRICS + MULTI_LABEL_METRICS + REGRESSION_METRICS)
METRICS = tuple(
    sorted(_EVERY_METRIC, key=lambda name: name == "loss")
)  # every --metric, loss last (as --help lists them)
TASKS = ("classification", "regression", "token-classification")
SIZES = ("tiny", "mini", "small", "base")
TRACKERS = ("none", "tensorboard", "mlflow", "wandb")
# Fields that say where a run reads and writes and how it is driven, not what it trains: a --resume
# may change them. Input files are compared by content (their sha256), not by path.
RUN_ONLY = frozenset(
    {"data", "validation", "corpus", "output", "overwrite", "resume", "allow_changed_settings", "save_steps"}
    | {"command", "device", "allow_pickle", "calibration", "report_to"}
)


def defaults(config_class) -> SimpleNamespace:
    """The default of every field of a config dataclass, by field name: what a command's signature shows.

    The dataclass is the one home of a default; ``plm finetune --help`` and ``FinetuneConfig(...)``
    read the same value, and tune's reproduce command names only the fields that differ from it.
    """
    values = {}
    for item in fields(config_class):
        if item.default is not MISSING:
            values[item.name] = item.default
        elif item.default_factory is not MISSING:
            values[item.name] = item.default_factory()
    return SimpleNamespace(**values)


def resume_settings(config, **resolved) -> dict:
    """What a --resume must match: the config's fields by their field names, never by CLI option names.

    ``resolved`` holds what the run decided from them (the detected columns, the learning rate for
    the model's width, the precision auto chose) and what it read (the data's sha256).
    """
    return {item.name: getattr(config, item.name) for item in fields(config) if item.name not in RUN_ONLY} | resolved


def default_learning_rate(hidden_size: int) -> float:
    """The peak learning rate for an encoder of this width: small encoders (MiniLM, TinyBERT) want more.

    On SST-2 (4,000 rows, 1 epoch) the bundled 384-wide MiniLM reached 0.81-0.82 dev accuracy at 1e-4
    against 0.77-0.79 at 5e-5; BERT-base is tuned in 2e-5..5e-5 and BERT-large is unstable above 2e-5.
    """
    if hidden_size < 768:
        return 1e-4
    return 5e-5 if hidden_size < 1024 else 2e-5


@dataclass(frozen=True)
class Places:
    """Every path a command reads and writes, by the option that names it: known before any work starts.

    ``outputs.check_places`` refuses an output that is, or holds, an input or another output.
    """

    reads: tuple[tuple[str, Optional[str]], ...] = ()  # files and directories (a local model) it reads
    directories: tuple[tuple[str, Optional[str]], ...] = ()  # output directories it replaces as a whole
    files: tuple[tuple[str, Optional[str]], ...] = ()  # output files


def _model_read(model: Optional[str]) -> tuple[tuple[str, Optional[str]], ...]:
    """The model a command reads, when it is a local directory (None is the bundled one; else a hub id)."""
    return (("--model", model),) if model and os.path.exists(model) else ()


def _corpus_reads(corpus: list[str]) -> tuple[tuple[str, str], ...]:
    """The files pretrain reads, as ``corpus.expand`` finds them (a directory's text files, a glob's matches)."""
    from plmcli.corpus import expand

    found = []
    for item in corpus:
        try:
            found += [("the corpus", str(path)) for path in expand(item)] if item != "-" else []
        except PlmError:  # a missing corpus file is said when the corpus is read
            found.append(("the corpus", item))
    return tuple(found)


PATH_FIELDS = ("data", "validation", "model", "output", "file", "corpus", "review_file")


def _expand_paths(config) -> None:
    """Expand a leading ``~`` in every path field, as a shell does outside quotes, alike in every command."""
    for item in fields(config):
        value = getattr(config, item.name)
        if item.name in PATH_FIELDS and isinstance(value, str):
            setattr(config, item.name, os.path.expanduser(value))
        elif item.name in PATH_FIELDS and isinstance(value, list):
            setattr(config, item.name, [os.path.expanduser(part) for part in value])


def _check_texts(texts: list[str]) -> None:
    """Texts given as arguments must be UTF-8 (Python keeps other bytes as lone surrogates a tokenizer chokes on)."""
    for number, text in enumerate(texts, 1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = ord(text[exc.start]) - 0xDC00  # the byte Python's surrogateescape kept
            raise PlmError(
                f"text {number} is not valid UTF-8 (byte 0x{byte & 0xFF:02x} at character {exc.start + 1}); "
                "give texts in UTF-8, or put them in a file and pass --file with --encoding."
            ) from None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PlmError(f"{name} must be one of {', '.join(choices)}; got '{value}'.")


# The largest value each count or size option takes: beyond it a run would fail deep inside (an
# allocation, an overflow), so it is refused when the config is made.
LIMITS = {
    "--batch-size": 1 << 16,
    "--max-batch-size": 1 << 16,
    "--max-length": 1 << 17,
    "--epochs": 10_000,
    "--max-steps": 1 << 40,
    "--save-steps": 1 << 40,
    "--early-stopping": 10_000,
    "--trials": 1_000_000,
    "--top-k": 100_000,
    "--max-train-samples": 1 << 40,
    "--vocab-size": 1 << 22,
    "--extend-vocab": 1 << 20,
    "--preprocessing-workers": 1024,
    "--max-texts-per-request": 1 << 20,
    "--max-body-bytes": 1 << 34,
    "--timeout": 86_400.0,
    "--max-wait-ms": 60_000.0,
}


def _check_positive(name: str, value: Optional[float]) -> None:
    """A count or size: greater than 0, and at most its LIMITS entry."""
    limit = LIMITS.get(name, math.inf)
    if value is not None and not (0 < value <= limit and value < math.inf):
        bound = f" and at most {limit:g}" if limit < math.inf else ""
        raise PlmError(f"{name} must be a finite number greater than 0{bound}; got {value}.")


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:
        raise PlmError(f"--seed must be between 0 and 4294967295; got {seed}.")


def check_encoding(encoding: str) -> None:
    """Refuse a name that is not a text codec Python knows (base64 and zlib are codecs, but not text)."""
    try:
        text = codecs.lookup(encoding)._is_text_encoding
    except LookupError:
        text = False
    if not text:
        raise PlmError(f"--encoding {encoding} is not a text encoding Python knows; try utf-8, latin-1, cp1252.")


def _check_resume(resume: bool, overwrite: bool, allow_changed_settings: bool) -> None:
    if resume and overwrite:
        raise PlmError("--resume continues the run in --output and --overwrite starts it again; pass one of them.")
    if allow_changed_settings and not resume:
        raise PlmError("--allow-changed-settings goes with --resume.")


@dataclass
class FinetuneConfig:
    """Settings of `plm finetune`: train a sequence classifier on a labelled file."""

    data: str  # CSV, TSV, JSON, JSONL or Parquet with a text and a label column
    model: Optional[str] = None  # base model: None is the bundled MiniLM; else a local dir or a hub id
    allow_pickle: bool = False  # also load pickled .bin weights (read with torch's weights_only=True)
    output: str = DEFAULT_CLASSIFIER  # output directory
    validation: Optional[str] = None  # a labelled file for validation; else a split of `data`
    validation_split: float = 0.1  # share of `data` held out (stratified) when `validation` is None
    text_column: Optional[str] = None  # None: detected
    label_column: Optional[str] = None  # None: detected
    text_pair_column: Optional[str] = None  # the second text of sentence pairs (encoded as a pair, not appended)
    multi_label: bool = False  # a row may have several labels, joined by label_separator
    label_separator: str = "|"
    encoding: str = "utf-8"  # of the data files (UTF-8 may start with a byte-order mark)
    drop_invalid: bool = False  # skip (and count) rows with an empty text or label instead of refusing them
    class_weights: str = "auto"  # auto: weight the loss when the largest class is > 3x the smallest; none
    calibration: str = "temperature"  # single-label scores: temperature scaling fitted on validation; beta; none
    early_stopping: Optional[int] = None  # stop after this many evaluations (epochs) without improving `metric`
    metric: Optional[str] = None  # what picks the best model under early stopping; None: macro_f1, or rmse
    task: str = "classification"  # or regression (a numeric target), or token-classification (a tag per word)
    max_length: int = 128  # tokens per text, [CLS] and [SEP] included
    stride: Optional[int] = None  # token classification: tokens two windows of a long sentence share; None: 1/4
    epochs: float = 3.0
    batch_size: int = 32  # examples per step per device
    lr: Optional[float] = None  # peak AdamW learning rate; None: by encoder width (see default_learning_rate)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    seed: int = 42
    max_train_samples: Optional[int] = None  # keep only the first N training rows (after the split)
    device: str = "auto"
    precision: str = "auto"
    overwrite: bool = False
    resume: bool = False  # continue from the newest complete checkpoint under output/checkpoints
    allow_changed_settings: bool = False  # resume even when settings differ from the checkpoint's
    save_steps: int = 500  # a checkpoint every N optimizer steps (and on SIGINT / SIGTERM)
    report_to: str = "none"  # an experiment tracker the Trainer logs to: tensorboard, mlflow or wandb
    command: list[str] = field(default_factory=list)  # the command line, for the model card

    def places(self) -> Places:
        reads = (("the data file", self.data), ("--validation", self.validation), *_model_read(self.model))
        return Places(reads=reads, directories=(("--output", self.output),))

    def __post_init__(self) -> None:
        _expand_paths(self)
        if not 0 < self.validation_split < 1:
            raise PlmError(f"--validation-split must be between 0 and 1 (a share); got {self.validation_split}.")
        for name, value in (
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
            ("--lr", self.lr),
            ("--max-length", self.max_length),
            ("--max-train-samples", self.max_train_samples),
            ("--early-stopping", self.early_stopping),
            ("--save-steps", self.save_steps),
            ("--stride", self.stride),
        ):
            _check_positive(name, value)
        _check_resume(self.resume, self.overwrite, self.allow_changed_settings)
        _check_seed(self.seed)
        _check_choice("--device", self.device, DEVICES)
        _check_choice("--precision", self.precision, PRECISIONS)
        _check_choice("--class-weights", self.class_weights, CLASS_WEIGHTS)
        _check_choice("--calibration", self.calibration, CALIBRATIONS)
        _check_choice("--report-to", self.report_to, TRACKERS)
        if not 0 <= self.warmup_ratio < 1:
            raise PlmError(
                f"--warmup-ratio must be a share of the steps, at least 0 and below 1; got {self.warmup_ratio}."
            )
        if not 0 <= self.weight_decay < 1:
            raise PlmError(f"--weight-decay must be at least 0 and below 1; got {self.weight_decay}.")
        _check_choice("--task", self.task, TASKS)
        check_encoding(self.encoding)
        if self.metric is None:
            self.metric = {"regression": "rmse", "token-classification": "f1"}.get(self.task, "macro_f1")
        if self.task == "token-classification":
            if self.multi_label or self.text_pair_column:
                what = "--multi-label" if self.multi_label else "--text-pair-column"
                raise PlmError(f"{what} is for sentence classification; token classification gives a tag per word.")
            _check_choice("--metric with --task token-classification", self.metric, TOKEN_METRICS)
            if self.stride is not None and self.stride > self.max_length // 2:
                raise PlmError(f"--stride must be at most half of --max-length ({self.max_length // 2}).")
        elif self.stride is not None:
            raise PlmError("--stride goes with --task token-classification (windows over long sentences).")
        elif self.task == "regression":
            if self.multi_label:
                raise PlmError("--multi-label is for classification; a regression target is one number per row.")
            _check_choice("--metric with --task regression", self.metric, REGRESSION_METRICS)
        elif self.multi_label:
            _check_choice("--metric with --multi-label", self.metric, MULTI_LABEL_METRICS)
        else:
            _check_choice("--metric", self.metric, SINGLE_LABEL_METRICS)
        if self.multi_label and not self.label_separator.strip():
            raise PlmError("--label-separator must be a visible character or string, like '|' or ';'.")
        if self.text_pair_column is not None and self.text_pair_column in (self.text_column, self.label_column):
            raise PlmError("--text-pair-column must name a column other than the text and label columns.")


RANKINGS = ("self_confidence", "normalized_margin")
FIX_OUT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")  # plm audit --fix-out writes the format its suffix names


@dataclass
class AuditConfig(FinetuneConfig):
    """Settings of `plm audit`: cross-validate a classifier on a labelled file and rank its likely label errors.

    Every training setting is finetune's, with the same defaults; each of ``folds`` runs trains on
    the other folds and predicts the one held out.
    """

    output: str = "runs/audit"
    folds: int = 5  # stratified by label; every row is predicted by the model that did not train on it
    rank_by: str = "self_confidence"  # how cleanlab orders the suspects: or normalized_margin
    fix_out: Optional[str] = None  # write the input without the flagged rows to this file

    def places(self) -> Places:
        return Places(
            reads=(("the data file", self.data), *_model_read(self.model)),
            directories=(("--output", self.output),),
            files=(("--fix-out", self.fix_out),),
        )

    def __post_init__(self) -> None:
        if self.multi_label or self.task != "classification":
            what = "--multi-label" if self.multi_label else f"--task {self.task}"
            raise PlmError(f"plm audit finds label errors of single-label classification; {what} is not supported.")
        if self.validation is not None or self.early_stopping is not None:
            raise PlmError(
                "plm audit holds out each fold in turn and trains for --epochs; --validation and "
                "--early-stopping do not apply."
            )
        super().__post_init__()
        if not 2 <= self.folds <= 20:
            raise PlmError(f"--folds must be between 2 and 20; got {self.folds}.")
        _check_choice("--rank-by", self.rank_by, RANKINGS)
        if self.fix_out is not None:
            self.fix_out = os.path.expanduser(self.fix_out)
            if Path(self.fix_out).suffix.lower() not in FIX_OUT_SUFFIXES:
                raise PlmError(
                    f"--fix-out {self.fix_out}: name a {', '.join(FIX_OUT_SUFFIXES)} file (its format follows "
                    "the suffix)."
                )


def parse_budget(text: str) -> float:
    """Seconds in a --budget like '90s', '20m', '1.5h' (a bare number is seconds)."""
    value = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(value[-1:], None)
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise PlmError(f"--budget must be a time like 90s, 20m or 1.5h; got '{text}'.")
    return seconds


@dataclass
class TuneConfig(FinetuneConfig):
    """Settings of `plm tune`: search finetune's training settings within a time budget, keep the best model.

    The data settings are finetune's; ``max_length`` is the longest the search may use; the
    first trial trains with finetune's defaults.
    """

    output: str = "runs/tune"
    budget: str = "30m"  # wall time for the whole command: no trial starts that cannot end within it
    trials: Optional[int] = None  # at most this many trials (the defaults trial included)

    def __post_init__(self) -> None:
        if self.early_stopping is not None:
            raise PlmError(
                "plm tune prunes trials by their validation --metric each epoch; --early-stopping does not apply."
            )
        super().__post_init__()
        self.budget_seconds = parse_budget(self.budget)
        _check_positive("--trials", self.trials)


@dataclass
class PretrainConfig:
    """Settings of `plm pretrain`: continue (or start) masked-language-model pretraining on a text corpus."""

    corpus: list[str]  # text files (.gz too), directories, globs, or '-' for stdin
    model: Optional[str] = None  # base model: None is the bundled MiniLM; ignored with from_scratch
    allow_pickle: bool = False  # also load pickled .bin weights (read with torch's weights_only=True)
    output: str = DEFAULT_PRETRAINED
    max_length: int = 128  # tokens per block (or per line with line_by_line), special tokens included
    line_by_line: bool = False  # one example per line instead of run_mlm.py's concatenated blocks
    mlm_probability: float = 0.15  # share of tokens the model must predict
    whole_word_mask: bool = False  # mask every piece of a word together
    objective: str = "mlm"  # mlm, or mlm+nsp (BertForPreTraining with next-sentence pairs)
    from_scratch: bool = False  # train a WordPiece tokenizer on the corpus and a new BERT of `size`
    size: str = "mini"  # from-scratch BERT size: tiny, mini, small or base
    vocab_size: int = 30522  # from-scratch WordPiece vocabulary size
    extend_vocab: int = 0  # add the corpus's N most frequent characters the base vocabulary reads as [UNK]
    preprocessing_workers: int = 1  # processes tokenizing corpus files (each takes whole files)
    validation_split: float = 0.05  # share of examples held out to measure perplexity before and after
    max_validation_examples: int = 2000  # cap on the held-out examples
    epochs: float = 3.0
    max_steps: Optional[int] = None  # stop after this many optimizer steps (overrides epochs)
    batch_size: int = 32  # examples per step per device
    lr: Optional[float] = None  # peak AdamW learning rate; None: by encoder width, higher from scratch
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"
    overwrite: bool = False
    resume: bool = False  # continue from the newest complete checkpoint under output/checkpoints
    allow_changed_settings: bool = False  # resume even when settings differ from the checkpoint's
    save_steps: int = 500  # a checkpoint every N optimizer steps (and on SIGINT / SIGTERM)
    report_to: str = "none"  # an experiment tracker the Trainer logs to: tensorboard, mlflow or wandb
    command: list[str] = field(default_factory=list)  # the command line, for the model card

    def places(self) -> Places:
        model = () if self.from_scratch else _model_read(self.model)
        return Places(reads=(*_corpus_reads(self.corpus), *model), directories=(("--output", self.output),))

    def __post_init__(self) -> None:
        _expand_paths(self)
        if not 0 < self.mlm_probability < 1:
            raise PlmError(f"--mlm-probability must be between 0 and 1; got {self.mlm_probability}.")
        if not 0 < self.validation_split < 1:
            raise PlmError(f"--validation-split must be between 0 and 1 (a share); got {self.validation_split}.")
        for name, value in (
            ("--epochs", self.epochs),
            ("--max-steps", self.max_steps),
            ("--batch-size", self.batch_size),
            ("--lr", self.lr),
            ("--max-length", self.max_length),
            ("--vocab-size", self.vocab_size),
            ("--save-steps", self.save_steps),
            ("--preprocessing-workers", self.preprocessing_workers),
        ):
            _check_positive(name, value)
        _check_resume(self.resume, self.overwrite, self.allow_changed_settings)
        _check_seed(self.seed)
        if self.max_length < 8:
            raise PlmError(f"--max-length must be at least 8; got {self.max_length}.")
        if self.from_scratch and self.vocab_size < 100:
            raise PlmError(f"--vocab-size must be at least 100; got {self.vocab_size}.")
        if self.extend_vocab:
            _check_positive("--extend-vocab", self.extend_vocab)
            if self.from_scratch:
                raise PlmError(
                    "--extend-vocab adds to a base model's vocabulary; --from-scratch trains a new one on the "
                    "corpus (size it with --vocab-size). Use one of the two."
                )
        _check_choice("--objective", self.objective, OBJECTIVES)
        if self.objective == "mlm+nsp" and (self.whole_word_mask or self.line_by_line):
            raise PlmError(
                "--objective mlm+nsp builds sentence pairs of single-token masks; it takes neither "
                "--whole-word-mask nor --line-by-line."
            )
        _check_choice("--size", self.size, SIZES)
        _check_choice("--device", self.device, DEVICES)
        _check_choice("--precision", self.precision, PRECISIONS)
        _check_choice("--report-to", self.report_to, TRACKERS)


@dataclass
class FillMaskConfig:
    """Settings of `plm fill-mask`: the most likely fillers of each mask in a text."""

    texts: list[str]
    model: str = DEFAULT_PRETRAINED
    allow_pickle: bool = False  # also load pickled .bin weights (read with torch's weights_only=True)
    top_k: int = 5  # fillers per mask, best first
    format: str = "table"  # table or json
    device: str = "auto"

    def __post_init__(self) -> None:
        _expand_paths(self)
        if not self.texts:
            raise PlmError('nothing to fill: give a text with a mask, like "the movie was [MASK] .".')
        _check_texts(self.texts)
        _check_positive("--top-k", self.top_k)
        _check_choice("--format", self.format, REPORT_FORMATS)
        _check_choice("--device", self.device, DEVICES)


@dataclass
class CheckConfig:
    """Settings of `plm check`: report what is wrong with a labelled file before training on it."""

    data: str
    validation: Optional[str] = None  # also report texts shared with this file
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    text_pair_column: Optional[str] = None  # sentence pairs: rows compare, and lengths count, as pairs
    multi_label: bool = False  # label cells hold several labels joined by label_separator
    label_separator: str = "|"
    model: Optional[str] = None  # whose tokenizer measures lengths; None: the bundled MiniLM
    max_length: int = 128  # report the share of texts longer than this
    format: str = "table"
    encoding: str = "utf-8"  # of the data files
    task: str = "classification"  # what the data trains (a CoNLL file is token-classification data whatever it says)

    def __post_init__(self) -> None:
        _expand_paths(self)
        _check_choice("--task", self.task, TASKS)
        _check_positive("--max-length", self.max_length)
        _check_choice("--format", self.format, REPORT_FORMATS)
        check_encoding(self.encoding)
        if self.multi_label and not self.label_separator.strip():
            raise PlmError("--label-separator must be a visible character or string, like '|' or ';'.")


@dataclass
class EvaluateConfig:
    """Settings of `plm evaluate`: score a fine-tuned classifier on labelled data."""

    data: str  # a labelled CSV, TSV, JSON, JSONL or Parquet file
    model: str = DEFAULT_CLASSIFIER
    allow_pickle: bool = False  # also load pickled .bin weights (read with torch's weights_only=True)
    output: Optional[str] = None  # report directory; None: <model>/eval
    format: str = "table"  # table or json, for what is printed
    text_column: Optional[str] = None  # None: the model's training column if the file has it, else detected
    label_column: Optional[str] = None
    text_pair_column: Optional[str] = None  # None: the model's training pair column, if it had one
    long: str = "truncate"  # texts longer than max_length: truncate, or sliding (overlapping windows, averaged)
    batch_size: int = 64
    max_length: Optional[int] = None  # None: the model's own limit
    encoding: str = "utf-8"  # of the data file
    drop_invalid: bool = False  # skip (and count) rows with an empty text or label instead of refusing them
    device: str = "auto"
    precision: str = "auto"
    overwrite: bool = False
    target_accuracy: Optional[float] = None  # also say the lowest --min-score whose answered rows reach it

    def places(self) -> Places:
        return Places(
            reads=(("the data file", self.data), *_model_read(self.model)),
            directories=(("--output", self.report_dir()),),
        )

    def report_dir(self) -> str:
        """--output, or the model's eval/ directory."""
        return self.output or str(Path(self.model) / "eval")

    def __post_init__(self) -> None:
        _expand_paths(self)
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise PlmError(f"--target-accuracy must be above 0 and at most 1; got {self.target_accuracy}.")
        for name, value in (("--batch-size", self.batch_size), ("--max-length", self.max_length)):
            _check_positive(name, value)
        check_encoding(self.encoding)
        _check_choice("--long", self.long, LONG_TEXTS)
        _check_choice("--format", self.format, REPORT_FORMATS)
        _check_choice("--device", self.device, DEVICES)
        _check_choice("--precision", self.precision, PRECISIONS)


@dataclass
class PredictConfig:
    """Settings of `plm predict`: classify texts with a fine-tuned model."""

    texts: list[str] = field(default_factory=list)  # texts given on the command line
    file: Optional[str] = None  # txt (one text per line), CSV/TSV/JSON/JSONL/Parquet, or '-' for stdin
    model: str = DEFAULT_CLASSIFIER
    allow_pickle: bool = False  # also load pickled .bin weights (read with torch's weights_only=True)
    output: Optional[str] = None  # write results here instead of stdout
    format: Optional[str] = None  # table, json or csv; None: from --output's extension, else table
    top_k: int = 1  # labels shown per text, best first
    all_scores: bool = False  # add one score column per label
    batch_size: int = 64
    max_length: Optional[int] = None  # None: the model's own limit
    text_column: Optional[str] = None  # for tabular files; None: the model's training column if present, else detected
    text_pair_column: Optional[str] = None  # None: the model's training pair column, if it had one
    long: str = "truncate"  # texts longer than max_length: truncate, or sliding (overlapping windows, averaged)
    encoding: str = "utf-8"  # of --file
    device: str = "auto"
    precision: str = "auto"
    overwrite: bool = False
    min_score: Optional[float] = None  # a single-label row whose top score is below this gets no label
    abstain_label: Optional[str] = None  # the label such a row gets instead of none
    review_file: Optional[str] = None  # also write those rows here (CSV, JSON or JSON lines, by extension)

    def places(self) -> Places:
        return Places(
            reads=(("--file", self.file), *_model_read(self.model)),
            files=(("--output", self.output), ("--review-file", self.review_file)),
        )

    def __post_init__(self) -> None:
        _expand_paths(self)
        check_encoding(self.encoding)
        if self.min_score is not None and not 0 < self.min_score < 1:
            raise PlmError(f"--min-score must be between 0 and 1; got {self.min_score}.")
        if self.min_score is None and (self.abstain_label is not None or self.review_file is not None):
            raise PlmError("--abstain-label and --review-file need --min-score, the score below which rows abstain.")
        if self.texts and self.file:
            raise PlmError("give texts as arguments or --file, not both.")
        if not self.texts and not self.file:
            raise PlmError("nothing to predict: give one or more texts, or --file PATH (- for stdin).")
        for number, text in enumerate(self.texts, 1):
            if not text.strip():
                raise PlmError(f"text {number} is empty; give texts with words in them.")
        _check_texts(self.texts)
        if self.output == "-":  # as --file - reads standard input
            self.output = None
        for name, value in (
            ("--top-k", self.top_k),
            ("--batch-size", self.batch_size),
            ("--max-length", self.max_length),
        ):
            _check_positive(name, value)
        _check_choice("--long", self.long, LONG_TEXTS)
        if self.format is not None:
            _check_choice("--format", self.format, FORMATS)
        _check_choice("--device", self.device, DEVICES)
        _check_choice("--precision", self.precision, PRECISIONS)


@dataclass
class ServeConfig:
    """Settings of `plm serve`: a fine-tuned model answering POST /predict over HTTP."""

    model: str = DEFAULT_CLASSIFIER
    allow_pickle: bool = False  # also load pickled .bin weights (read with torch's weights_only=True)
    host: str = "127.0.0.1"  # only this machine can connect unless a host says otherwise
    port: int = 8000
    max_batch_size: int = 64  # texts run in one forward pass: concurrent requests are gathered up to it
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others to join it
    max_texts_per_request: int = 256
    max_body_bytes: int = 1 << 20  # a larger request body is refused (413)
    timeout: float = 30.0  # seconds a request may wait for its answer (504 after)
    api_key: Optional[str] = None  # requests need "Authorization: Bearer KEY" (all but /health)
    log_texts: bool = False  # write the texts of each request to the access log
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        _expand_paths(self)
        for name, value in (
            ("--max-batch-size", self.max_batch_size),
            ("--max-texts-per-request", self.max_texts_per_request),
            ("--max-body-bytes", self.max_body_bytes),
            ("--timeout", self.timeout),
        ):
            _check_positive(name, value)
        if not 0 <= self.max_wait_ms <= LIMITS["--max-wait-ms"]:
            raise PlmError(f"--max-wait-ms must be between 0 and {LIMITS['--max-wait-ms']:g}; got {self.max_wait_ms}.")
        if not 0 <= self.port < 65536:
            raise PlmError(f"--port must be between 0 and 65535; got {self.port}.")
        if self.api_key is not None and not self.api_key.strip():
            raise PlmError("--api-key is empty; give a key, or leave it out to serve without one.")
        _check_choice("--device", self.device, DEVICES)
        _check_choice("--precision", self.precision, PRECISIONS)


QUANTIZATIONS = ("none", "int8")  # of plm export's graph


@dataclass
class ExportConfig:
    """Settings of `plm export`: an ONNX model (fp32 or int8) checked on real rows, with its tokenizer and settings."""

    model: str  # a fine-tuned (or pretrained masked-LM) model directory
    output: str  # the exported directory
    quantize: str = "none"  # none (fp32) or int8 (the fastest int8 variant that passes the check)
    check: Optional[str] = None  # rows to check the export on; None: the validation file the model was trained with
    check_rows: int = 1000  # at most this many of them (the first)
    text_column: Optional[str] = None  # of the check file; None: the model's training column if present, else detected
    label_column: Optional[str] = None  # None: the model's label column if present, else one named like labels
    encoding: str = "utf-8"  # of the check file
    force: bool = False  # keep an int8 export that failed the check (its card says so)
    overwrite: bool = False
    allow_pickle: bool = False  # also load pickled .bin weights (read with torch's weights_only=True)

    def places(self) -> Places:
        return Places(
            reads=(("--check", self.check), *_model_read(self.model)),
            directories=(("--output", self.output),),
        )

    def __post_init__(self) -> None:
        _expand_paths(self)
        if self.check is not None:
            self.check = os.path.expanduser(self.check)
        _check_choice("--quantize", self.quantize, QUANTIZATIONS)
        _check_positive("--check-rows", self.check_rows)
        check_encoding(self.encoding)
