"""The check of `plm export`: the rows it runs on, and how each kind of model is run, compared and scored.

torch fp32, as ``plm predict`` runs it, and the export score the check rows at batch 1 and at
serve's batch size (each batch padded to its longest text); a ``Judge`` per kind of model (sentence
classifiers and regressors, token classifiers, masked LMs) says what agreement and the metric are.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from plmcli import console, modeling
from plmcli.config import ExportConfig, PredictConfig, ServeConfig
from plmcli.errors import PlmError
from plmcli.onnx_model import MASKED_LM, SEQUENCE, TOKENS
from plmcli.settings import MULTI_LABEL, REGRESSION, SINGLE_LABEL, ModelSettings

MIN_AGREEMENT = 0.99  # the share of labels an int8 export must give as torch fp32 does
MAX_LOSS = 0.5  # points of the metric an int8 export may lose
SERVE_BATCH = ServeConfig().max_batch_size  # the largest batch plm serve runs: the check's padded batches
MASKED_LM_TEXTS = 200  # a masked-LM's check rows: its outputs are a vocabulary per token


@dataclass
class Rows:
    """The check rows: texts (or a tagger's words), and their labels when the file has them."""

    source: str  # the file, as the user reads it
    how: str  # why these rows: "--check", or "the validation file the model was trained with"
    texts: list[str]
    pairs: Optional[list[str]] = None
    labels: Optional[list] = None  # label names, label tuples (multi-label), numbers (regression) or tag lists
    words: Optional[list[list[str]]] = None  # a token classifier's sentences as words


@dataclass
class Measured:
    """One run of a model on the check rows at one batch size, against torch fp32."""

    batch_size: int
    agreement: float  # the share of labels (rows, words or tokens) the same as torch fp32's; R² for regression
    max_difference: float  # the largest score difference from torch fp32
    metric: Optional[float] = None  # the metric on the labelled rows, in points

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "agreement": round(self.agreement, 6),
            "max_score_difference": float(f"{self.max_difference:.3g}"),
            "metric": None if self.metric is None else round(self.metric, 4),
        }


# ---- the check rows -------------------------------------------------------------------------------------------------


def check_rows_of(config: ExportConfig, kind: str, settings: Optional[ModelSettings]) -> Rows:
    """The rows the export is checked on: --check, else the validation file of the model's manifest; else one line."""
    if config.check is not None:
        path, how = config.check, "--check"
    else:
        path, how = _trained_validation(config.model), "the validation file the model was trained with"
    from plmcli import data

    data.check_readable(path)
    if kind == TOKENS:
        return _tagged_rows(config, path, how)
    if kind == MASKED_LM:
        texts, _, _, _ = data.read_texts(path, config.text_column, None, None, config.encoding)
        return _first(
            Rows(path, how, [text for text in texts if text.strip()]), min(config.check_rows, MASKED_LM_TEXTS)
        )
    return _first(_sequence_rows(config, path, how, settings), config.check_rows)


def _trained_validation(model: str) -> str:
    """The validation file manifest.json names, when it is still there; else the line that asks for --check."""
    try:
        manifest = json.loads((Path(model) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    validation = (manifest.get("settings") or {}).get("validation") if isinstance(manifest, dict) else None
    if isinstance(validation, str) and Path(validation).is_file():
        return validation
    why = (
        f"its validation file {validation} is no longer there"
        if isinstance(validation, str)
        else "it was trained without a validation file"
    )
    raise PlmError(
        f"no rows to check the export of {model} on: {why}. Pass --check FILE with rows like those it will "
        "see (labelled rows also compare the metric)."
    )


def _sequence_rows(config: ExportConfig, path: str, how: str, settings: ModelSettings) -> Rows:
    """A sentence model's check rows: a table's text (and pair) column, with labels when it has the label column."""
    from plmcli import data

    pair = settings.text_pair_column
    if data.table_kind(Path(path)) is None:  # text lines: no labels
        texts, _, _, _ = data.read_texts(path, config.text_column, pair, settings.text_column, config.encoding)
        return Rows(path, how, texts)
    frame = data.read_table(path, config.encoding)
    text = config.text_column or (settings.text_column if settings.text_column in frame.columns else None)
    columns = data.detect_columns(frame, path, text, need_label=False, pair_column=pair)
    label = config.label_column
    if label is None:
        known = {data._normalise(name) for name in data.LABEL_COLUMN_NAMES}
        candidates = [settings.label_column] + [c for c in frame.columns if data._normalise(c) in known]
        label = next((c for c in candidates if c in frame.columns and c not in (columns.text, pair)), None)
    if label is None:
        texts = frame[columns.text].tolist()
        pairs = frame[pair].tolist() if pair else None
        keep = [i for i, text in enumerate(texts) if text.strip() and (pairs is None or pairs[i].strip())]
        return Rows(path, how, [texts[i] for i in keep], [pairs[i] for i in keep] if pairs else None)
    columns = data.detect_columns(frame, path, columns.text, label, pair_column=pair)
    separator = settings.label_separator if settings.task == MULTI_LABEL else None
    found = data.labelled_rows(frame, columns, separator, path, config.encoding, drop_invalid=True)
    labels = found.labels
    if settings.task == REGRESSION:
        labels = data.numeric_targets(found, label, path, config.encoding, len(frame))
    if not found.texts:
        raise PlmError(f"{path} has no row with a text to check the export on.")
    return Rows(path, how, found.texts, found.pairs, labels)


def _tagged_rows(config: ExportConfig, path: str, how: str) -> Rows:
    """A token classifier's check rows: a tagged file's sentences (with their tags), or texts."""
    from plmcli import data, tokendata
    from plmcli.tasks.token_classification import read_sentences

    if tokendata.is_tagged_file(path):
        sentences = read_sentences(path, config)
        rows = Rows(path, how, [" ".join(words) for words in sentences.words], None, sentences.tags, sentences.words)
        count = min(config.check_rows, len(rows.words))
        return Rows(path, how, rows.texts[:count], None, rows.labels[:count], rows.words[:count])
    texts, _, _, _ = data.read_texts(path, config.text_column, None, None, config.encoding)
    return _first(Rows(path, how, texts), config.check_rows)


def _first(rows: Rows, count: int) -> Rows:
    """The first ``count`` rows (said when there were more)."""
    if len(rows.texts) > count:
        console.info(f"{rows.source} has {len(rows.texts)} rows; the export is checked on the first {count}.")
        rows.texts = rows.texts[:count]
        rows.pairs = rows.pairs[:count] if rows.pairs is not None else None
        rows.labels = rows.labels[:count] if rows.labels is not None else None
    if not rows.texts:
        raise PlmError(f"{rows.source} holds no text to check the export on.")
    return rows


# ---- running and comparing ------------------------------------------------------------------------------------------


class Judge:
    """How one kind of model is run on the check rows, compared with torch fp32, and scored."""

    metric_name: Optional[str] = None

    def __init__(self, config: ExportConfig, settings: Optional[ModelSettings]):
        self.config = config
        self.settings = settings
        self.rows: Optional[Rows] = None

    def __len__(self) -> int:
        return len(self.rows.texts)

    def read(self, rows: Rows) -> None:
        self.rows = rows

    def torch_model(self):
        """The torch fp32 model as predict runs it on the CPU."""
        raise NotImplementedError

    def onnx_model(self, path: Path):
        """The exported graph at ``path`` in the same wrapper as torch_model."""
        raise NotImplementedError

    def run(self, model, batch_size: int, rows: Optional[int] = None):
        """The model's scores on the (first ``rows``) check rows."""
        raise NotImplementedError

    def compare(self, reference, outputs) -> tuple[float, float]:
        """(label agreement, largest score difference) of ``outputs`` against torch fp32's ``reference``."""
        raise NotImplementedError

    def metric(self, outputs) -> Optional[float]:
        """The metric on the labelled rows, in points (None without labels)."""
        return None

    def check(self, path: Path, reference) -> list[Measured]:
        """The export at ``path`` at batch 1 and at serve's batch size, against torch fp32."""
        model = self.onnx_model(path)
        measured = []
        for batch_size in (1, SERVE_BATCH):
            outputs = self.run(model, batch_size)
            agreement, difference = self.compare(reference, outputs)
            measured.append(Measured(batch_size, agreement, difference, self.metric(outputs)))
        return measured

    def failure(self, measured: list[Measured], torch_metric: Optional[float]) -> Optional[str]:
        """What an int8 export did wrong ('agrees with fp32 on 96.4% of labels at batch 1'), or None."""
        for item in measured:
            if item.agreement < MIN_AGREEMENT:
                return (
                    f"agrees with torch fp32 on {item.agreement:.1%} of {self.agreement_unit} at batch "
                    f"{item.batch_size}"
                )
            if torch_metric is not None and item.metric is not None and torch_metric - item.metric > MAX_LOSS:
                return (
                    f"loses {torch_metric - item.metric:.2f} points of {self.metric_name} at batch {item.batch_size} "
                    f"({item.metric:.2f} against torch fp32's {torch_metric:.2f})"
                )
        return None

    agreement_unit = "labels"


class SequenceJudge(Judge):
    """Classifiers and regressors: the scores predict gives (calibrated probabilities, or the standardised value)."""

    def read(self, rows: Rows) -> None:
        super().read(rows)
        names = [self._config()["id2label"][str(i)] for i in range(len(self._config()["id2label"]))]
        self.label_names = names
        if rows.labels is None or self.settings.task == REGRESSION:
            return
        given = {name for labels in rows.labels for name in labels} if self.multi else set(rows.labels)
        unknown = sorted(given - set(names))
        if unknown:
            from plmcli.data import quote_labels

            raise PlmError(
                f"{rows.source} has labels the model does not know: {quote_labels(unknown)}; the model's labels are: "
                f"{', '.join(names)}."
            )

    def _config(self) -> dict:
        return modeling.read_config(self.config.model)

    @property
    def multi(self) -> bool:
        return self.settings.task == MULTI_LABEL

    @property
    def metric_name(self) -> str:
        return {SINGLE_LABEL: "accuracy", MULTI_LABEL: "micro-F1", REGRESSION: "Pearson r"}[self.settings.task]

    @property
    def agreement_unit(self) -> str:
        return "the variance of its values (R²)" if self.settings.task == REGRESSION else "labels"

    def _predict_config(self, model: str) -> PredictConfig:
        return PredictConfig(texts=["-"], model=model, device="cpu", precision="fp32", allow_pickle=True)

    def torch_model(self):
        from plmcli.inference import load_for_inference

        config = self._predict_config(self.config.model)
        config.allow_pickle = self.config.allow_pickle
        return load_for_inference(config, plain_bert=True)

    def onnx_model(self, path: Path):
        from plmcli.inference import Classifier
        from plmcli.onnx_model import OnnxModel, session

        reference = self.reference_classifier
        model = OnnxModel(session(path, str(path)), reference.model.config, str(path))
        return Classifier(reference.tokenizer, model, "cpu", "fp32", reference.max_length, False, str(path))

    def run(self, model, batch_size: int, rows: Optional[int] = None):
        if not hasattr(self, "reference_classifier"):
            self.reference_classifier = model
        texts = self.rows.texts[:rows] if rows else self.rows.texts
        pairs = self.rows.pairs[: len(texts)] if self.rows.pairs is not None else None
        scores, _ = model.scores(texts, batch_size, pairs)
        return scores

    def labels(self, scores: np.ndarray) -> np.ndarray:
        if self.multi:
            return self.reference_classifier.chosen(scores)
        return scores.argmax(axis=1)

    def compare(self, reference, outputs) -> tuple[float, float]:
        difference = float(np.abs(reference - outputs[: len(reference)]).max()) if len(reference) else 0.0
        reference, outputs = reference[: len(outputs)], outputs[: len(reference)]
        if self.settings.task == REGRESSION:
            spread = float(((reference - reference.mean()) ** 2).sum())
            residual = float(((reference - outputs) ** 2).sum())
            return (1.0 - residual / spread if spread > 0 else float(residual == 0)), difference
        same = self.labels(reference) == self.labels(outputs)
        return float(same.all(axis=1).mean() if same.ndim == 2 else same.mean()), difference

    def metric(self, outputs) -> Optional[float]:
        labels = self.rows.labels
        if labels is None:
            return None
        if self.settings.task == REGRESSION:
            values = self.reference_classifier.values(outputs)
            if np.std(values) == 0 or np.std(labels) == 0:
                return 0.0
            return float(np.corrcoef(values, np.asarray(labels, dtype=np.float64))[0, 1] * 100)
        index = {name: i for i, name in enumerate(self.label_names)}
        if not self.multi:
            return float((outputs.argmax(axis=1) == np.array([index[name] for name in labels])).mean() * 100)
        truth = np.zeros(outputs.shape, dtype=bool)
        for row, names in enumerate(labels):
            truth[row, [index[name] for name in names]] = True
        chosen = self.labels(outputs).astype(bool)
        hits = int((chosen & truth).sum())
        given = int(chosen.sum()) + int(truth.sum())
        return 2 * hits / given * 100 if given else 100.0


class TokenJudge(Judge):
    """Token classifiers: each word's tag (its first piece's), and that tag's probability."""

    metric_name = "entity F1"
    agreement_unit = "word tags"

    def read(self, rows: Rows) -> None:
        super().read(rows)
        if rows.labels is not None:
            known = set(modeling.read_config(self.config.model)["id2label"].values())
            unknown = sorted({tag for tags in rows.labels for tag in tags} - known)
            if unknown:
                raise PlmError(
                    f"{rows.source} has tags the model does not know: {', '.join(unknown[:5])}; the model's tags "
                    f"are: {', '.join(sorted(known))}."
                )

    def torch_model(self):
        from plmcli.tasks.token_classification import load_tagger

        config = PredictConfig(texts=["-"], model=self.config.model, device="cpu", precision="fp32")
        config.allow_pickle = self.config.allow_pickle
        tagger = load_tagger(config)
        self.reference_tagger = tagger
        return tagger

    def onnx_model(self, path: Path):
        from plmcli.onnx_model import OnnxModel, session
        from plmcli.tasks.token_classification import Tagger

        reference = self.reference_tagger
        model = OnnxModel(session(path, str(path)), reference.model.config, str(path))
        return Tagger(reference.tokenizer, model, "cpu", "fp32", reference.max_length, reference.stride, str(path))

    def _pieces(self, tagger):
        from plmcli.tasks.token_classification import text_words, word_pieces

        if not hasattr(self, "pieces"):
            words = self.rows.words
            self.pieces = (
                word_pieces(words, tagger.tokenizer) if words else text_words(self.rows.texts, tagger.tokenizer)[0]
            )
        return self.pieces

    def run(self, model, batch_size: int, rows: Optional[int] = None):
        pieces = self._pieces(model)
        tags, values, _ = model.tag(pieces[:rows] if rows else pieces, batch_size)
        return tags, values

    def compare(self, reference, outputs) -> tuple[float, float]:
        same, total, difference = 0, 0, 0.0
        for tags, values, other_tags, other_values in zip(*reference, *outputs):
            for tag, value, other_tag, other_value in zip(tags, values, other_tags, other_values):
                total += 1
                if tag == other_tag:
                    same += 1
                    difference = max(difference, abs(value - other_value))
                else:
                    difference = max(difference, 1.0)
        return (same / total if total else 1.0), difference

    def metric(self, outputs) -> Optional[float]:
        if self.rows.labels is None:
            return None
        from plmcli.metrics import entity_report

        return float(entity_report(outputs[0], self.rows.labels)["f1"] * 100)


class MaskedJudge(Judge):
    """Masked-LMs: the most likely token at every position, and the probabilities over the vocabulary."""

    agreement_unit = "top tokens"

    def torch_model(self):
        tokenizer, model = modeling.load_masked_lm(self.config.model, self.config.allow_pickle)
        self.tokenizer = tokenizer
        limit = modeling.model_limit(tokenizer, model)
        self.ids = tokenizer(self.rows.texts, truncation=True, max_length=limit)["input_ids"]
        return model

    def onnx_model(self, path: Path):
        from plmcli.onnx_model import OnnxModel, session

        return OnnxModel(session(path, str(path)), self.config_object, str(path))

    def run(self, model, batch_size: int, rows: Optional[int] = None):
        from plmcli.inference import batched_logits

        if not hasattr(self, "config_object"):
            self.config_object = model.config
        ids = self.ids[:rows] if rows else self.ids
        logits = batched_logits(ids, None, self.tokenizer, model, batch_size, "cpu", "fp32", per_token=True)
        return [_softmax(item) for item in logits]  # (tokens, vocabulary) each

    def compare(self, reference, outputs) -> tuple[float, float]:
        same = total = 0
        difference = 0.0
        for expected, found in zip(reference, outputs):
            same += int((expected.argmax(axis=1) == found.argmax(axis=1)).sum())
            total += len(expected)
            difference = max(difference, float(np.abs(expected - found).max()))
        return (same / total if total else 1.0), difference


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def judge_for(kind: str, config: ExportConfig, settings) -> Judge:
    return {SEQUENCE: SequenceJudge, TOKENS: TokenJudge, MASKED_LM: MaskedJudge}[kind](config, settings)
