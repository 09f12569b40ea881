"""`plm predict`: texts in, a label (or a value) per text out, a chunk at a time.

The texts come from the command line or a file (a table comes back whole, with the prediction
columns added to each row). They are tokenised into packed ids and run longest first in batches
over the whole input (plmcli.inference: the batches, and so the scores, do not depend on how the
output is written); then their rows are made and written CHUNK at a time, so memory stays flat
however long the file is: CSV, JSON and JSON lines go to a staged file that takes the output's
name at the end (or to stdout as they come); a table is rendered whole.
"""

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Optional

import numpy as np

from plmcli import console, vocabulary
from plmcli.config import PredictConfig
from plmcli.errors import PlmError
from plmcli.formats import FORMAT_BY_SUFFIX, ChunkWriter
from plmcli.inference import Classifier, load_for_inference
from plmcli.outputs import check_output_file, check_places, staged_file

CHUNK = 4096  # rows made and written at a time
PROGRESS = 1000  # texts from which predicting shows a progress bar (on a terminal)


@dataclass
class PredictResult:
    """What predict did: the rows when they were kept to be rendered (a table, or the Python API), else none."""

    rows: list[dict]  # one per text: the input columns (or 'text'), then label, score, ...; [] when streamed
    columns: list[str]  # every column, in order (csv and json)
    shown_columns: list[str]  # the columns the table shows
    format: str  # table, json, jsonl or csv
    output: Optional[Path]  # the file written, or None for stdout
    texts_per_second: float
    count: int = 0  # texts predicted


def predict(config: PredictConfig, write: Optional[Callable[[str], None]] = None) -> PredictResult:
    """Predict with the model of ``config`` as its task does (plmcli.tasks); sentence models: ``predict_texts``."""
    from plmcli.tasks import use_of

    check_places(config.places())  # never an input, --overwrite or not
    return use_of(config.model, config.allow_pickle).predict(config, write)


def predict_texts(config: PredictConfig, write: Optional[Callable[[str], None]] = None) -> PredictResult:
    """Classify (or score) the texts of ``config`` and write their rows a chunk at a time.

    With --output the rows go to a staged file; else, with ``write`` (the CLI's stdout), CSV, JSON
    and JSON lines go there as they come. A table, or a call without either, keeps every row in
    the result to render.
    """
    output = check_output_file(config.output, config.overwrite) if config.output else None
    chosen_format = output_format(config)
    review = check_output_file(config.review_file, config.overwrite, "--review-file") if config.review_file else None
    review_format = _review_format(config.review_file) if review else None
    if config.file is not None:
        from plmcli import data  # pandas: only when reading a file

        data.check_readable(config.file)  # a missing file is said before the model loads
    classifier = load_for_inference(config, plain_bert=True)
    pair_column = config.text_pair_column or classifier.settings.text_pair_column
    texts, pairs, table, text_column = read_inputs(config, classifier.settings, pair_column)
    vocabulary.check(
        chain(texts, pairs or ()), classifier.tokenizer, config.file or "the texts", vocabulary.USE_REMEDY
    )
    layout = Layout.of(config, classifier, table, text_column, pair_column)
    streamed = chosen_format != "table" and (output is not None or write is not None)
    started = time.perf_counter()
    with _progress(len(texts)) as advance:
        outputs, long_texts = classifier.scores(texts, config.batch_size, pairs, advance)
    elapsed = time.perf_counter() - started
    classifier.say_long(long_texts, len(texts), pairs is not None)
    kept, empty, abstained = [], 0, 0
    with destination(output, config.overwrite, write) as sink, destination(review, config.overwrite) as to_review:
        writer = ChunkWriter(sink, chosen_format, layout.columns) if streamed else None
        reviewer = ChunkWriter(to_review, review_format, layout.columns) if review else None
        for start in range(0, len(texts), CHUNK):  # rows are made and written a chunk at a time
            end = min(start + CHUNK, len(texts))
            records = table.iloc[start:end].to_dict("records") if table is not None else None
            chunk_pairs = pairs[start:end] if pairs is not None else None
            rows, blank = layout.rows(outputs[start:end], texts[start:end], chunk_pairs, records)
            below = [row for row in rows if layout.abstains(row)]
            empty, abstained = empty + blank, abstained + len(below)
            if reviewer is not None:
                reviewer.add(below)
            if writer is not None:
                writer.add(rows)
            else:
                kept += rows
        for chunks in (writer, reviewer):
            if chunks is not None:
                chunks.close()
        if writer is None and output is not None:
            from plmcli.formats import render

            sink(render(kept, layout.columns, layout.shown, chosen_format))
    if empty:
        what = "value" if classifier.regression else "label"
        console.warn(f"{empty} of {len(texts)} rows have an empty text; they get no {what}.")
    if config.min_score is not None:
        given = f"the label '{config.abstain_label}'" if config.abstain_label is not None else "no label"
        console.info(
            f"{abstained} of {len(texts)} rows scored below --min-score {config.min_score:g} and got {given}"
            + (f"; they are also in {review}." if review else ".")
        )
    rate = len(texts) / max(elapsed, 1e-9)
    return PredictResult(kept, layout.columns, layout.shown, chosen_format, output, rate, len(texts))


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], object]]:
    """A function to call with each batch's size: a bar with texts/s on a terminal, for more than PROGRESS texts."""
    from tqdm.auto import tqdm

    with tqdm(
        total=total, desc="Predicting", unit="text", file=sys.stderr, disable=None if total > PROGRESS else True
    ) as bar:
        yield bar.update


@contextmanager
def destination(output: Optional[Path], overwrite: bool, write: Optional[Callable[[str], None]] = None):
    """Where the text goes: a staged file published when the block ends (see outputs.staged_file), or ``write``."""
    if output is None:
        yield write
        return
    with staged_file(output, replace=overwrite) as stream:
        yield stream.write


def read_inputs(config, settings, pair_column: Optional[str]):
    """The texts (and pairs) to predict from config.texts or config.file, with the table they came from.

    Columns: those given, else the ones the model was trained on (``settings``, its ModelSettings)
    when the file has them, else detected. Returns (texts, pairs or None, table or None, text column or None).
    """
    if config.file is None:
        if pair_column:
            raise PlmError(
                f"{config.model} classifies text pairs (columns '{settings.text_column}' and '{pair_column}'); "
                "give them in a table with --file."
            )
        return list(config.texts), None, None, None
    from plmcli import data  # pandas: only when reading a file

    return data.read_texts(config.file, config.text_column, pair_column, settings.text_column, config.encoding)


def output_format(config: PredictConfig) -> str:
    if config.format is not None:
        return config.format
    if config.output is not None:
        suffix = Path(config.output).suffix.lower()
        if suffix not in FORMAT_BY_SUFFIX:
            raise PlmError(
                f"cannot tell the format of --output {config.output} from '{suffix}'; "
                "pass --format table|json|jsonl|csv."
            )
        return FORMAT_BY_SUFFIX[suffix]
    return "table"


def _review_format(path: str) -> str:
    """CSV, JSON or JSON lines, as --review-file's extension says."""
    found = FORMAT_BY_SUFFIX.get(Path(path).suffix.lower())
    if found not in ("csv", "json", "jsonl"):
        raise PlmError(f"cannot tell the format of --review-file {path}; name it .csv, .json or .jsonl.")
    return found


@dataclass
class Layout:
    """The output's columns, and how a chunk's model outputs become its rows."""

    classifier: Classifier
    columns: list[str]  # the input's columns (or 'text'), then the predictions'
    shown: list[str]  # what a table shows: the text (and pair) columns, then the predictions'
    predicted: list[str]  # the prediction columns: (label, score, label_2, score_2, ..., prob_*) or (value,)
    top_k: int = 1
    all_scores: bool = False
    min_score: Optional[float] = None  # a top score below this abstains: the label is abstain_label (None: empty)
    abstain_label: Optional[str] = None

    @classmethod
    def of(cls, config, classifier: Classifier, table, text_column, pair_column) -> "Layout":
        """The layout for this model and input; an input whose columns the predictions would take is refused."""
        input_columns = list(table.columns) if table is not None else ["text"]
        taken = set(input_columns)
        if config.min_score is not None and (classifier.regression or classifier.multi_label):
            kind = "a regression" if classifier.regression else "a multi-label"
            raise PlmError(f"--min-score is for single-label classifiers; {config.model} is {kind} model.")
        texts = [text_column or "text", *([pair_column] if pair_column and table is not None else [])]
        if classifier.regression:
            if config.top_k > 1 or config.all_scores:
                raise PlmError(
                    f"{config.model} is a regression model: it gives one value per text; --top-k and --all-scores "
                    "are for classifiers."
                )
            column = next((c for c in ("value", "predicted_value", "plm_predicted_value") if c not in taken), None)
            if column is None:
                raise PlmError(
                    f"{config.file} already has columns for plm's predictions (value, predicted_value, ...)."
                )
            if column != "value":
                console.info(f"The input has its own value column; predictions are in '{column}'.")
            return cls(classifier, input_columns + [column], texts + [column], [column])
        prefix = next(
            p
            for p in ("", "predicted_", "plm_predicted_", None)
            if p is None or not {p + "label", p + "score"} & taken
        )
        if prefix is None:
            raise PlmError(f"{config.file} already has columns for plm's predictions (label, predicted_label, ...).")
        if prefix:
            console.info(
                f"The input has its own label or score column; predictions are in '{prefix}label' and '{prefix}score'."
            )
        top_k = min(config.top_k, len(classifier.label_names))
        extra = [name for k in range(2, top_k + 1) for name in (f"label_{k}", f"score_{k}")]
        extra += [f"prob_{name}" for name in classifier.label_names] if config.all_scores else []
        clashes = sorted(taken & set(extra))
        if clashes:
            raise PlmError(f"{config.file} already has the columns {', '.join(clashes)}, which the predictions need.")
        predicted = [f"{prefix}label", f"{prefix}score", *extra]
        return cls(
            classifier,
            input_columns + predicted,
            texts + predicted,
            predicted,
            top_k,
            config.all_scores,
            config.min_score,
            config.abstain_label,
        )

    def abstains(self, row: dict) -> bool:
        """Whether this row's top score is below --min-score (a row with no text has no score)."""
        score = row.get(self.predicted[1]) if len(self.predicted) > 1 else None
        return self.min_score is not None and score is not None and score < self.min_score

    def rows(self, outputs: np.ndarray, texts: list[str], pairs, records) -> tuple[list[dict], int]:
        """The rows of one chunk (its input records, or its texts, with the predictions) and how many were empty.

        A row without text keeps its place, with no prediction.
        """
        records = records if records is not None else [{"text": text} for text in texts]
        if self.classifier.regression:
            rows = [
                {**record, self.predicted[0]: float(value)}
                for record, value in zip(records, self.classifier.values(outputs))
            ]
        else:
            chosen = self.classifier.chosen(outputs)
            rows = [self._labelled(record, probs, picked) for record, probs, picked in zip(records, outputs, chosen)]
        empty = [i for i, text in enumerate(texts) if not str(text).strip() or (pairs and not str(pairs[i]).strip())]
        for i in empty:
            rows[i].update(dict.fromkeys(self.predicted))
        return rows, len(empty)

    def _labelled(self, record: dict, probs: np.ndarray, chosen: np.ndarray) -> dict:
        """One input row with its label and score, the next labels of --top-k and the --all-scores columns.

        A multi-label model's label is every label at or above its threshold, joined by its separator
        ('' for none), best first; its score is the best label's.
        """
        classifier, label_names = self.classifier, self.classifier.label_names
        ranked = np.argsort(-probs, kind="stable")
        row = dict(record)
        if classifier.multi_label:
            row[self.predicted[0]] = classifier.separator.join(label_names[i] for i in ranked if chosen[i])
        elif self.min_score is not None and probs[ranked[0]] < self.min_score:
            row[self.predicted[0]] = self.abstain_label  # abstains: the score stays, the label is left to a person
        else:
            row[self.predicted[0]] = label_names[ranked[0]]
        row[self.predicted[1]] = float(probs[ranked[0]])
        for k, index in enumerate(ranked[1 : self.top_k], start=2):
            row[f"label_{k}"], row[f"score_{k}"] = label_names[index], float(probs[index])
        if self.all_scores:
            row.update({f"prob_{name}": float(p) for name, p in zip(label_names, probs)})
        return row
