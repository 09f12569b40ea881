"""User files -> datasets.Dataset: readers, column detection, labels, splits, tokenisation.

Every cell is read as a string (``01``, ``NA``, ``None``, ``True`` stay text): pandas with
``dtype=str, keep_default_na=False`` for CSV/TSV, the json module for JSON/JSONL, and explicit
conversion for Parquet. Columns are found by name first, then by content, and the choice is
always said. Labels are the user's strings; ``label_names`` (sorted, numerically when every
label is an integer) fixes their ids for every split.
"""

import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from plmcli import console
from plmcli.errors import PlmError

TABLE_SUFFIXES = {
    ".csv": "CSV",
    ".tsv": "TSV",
    ".tab": "TSV",
    ".json": "JSON",
    ".jsonl": "JSONL",
    ".ndjson": "JSONL",
    ".parquet": "Parquet",
    ".pq": "Parquet",
}
# Column names people use, most specific first; matched case-insensitively, ignoring spaces, '-' and '_'.
TEXT_COLUMN_NAMES = (
    "text",
    "sentence",
    "review",
    "content",
    "comment",
    "body",
    "document",
    "utterance",
    "tweet",
    "message",
    "question",
    "query",
    "sentence1",
    "texta",
    "premise",
    "input",
    "prompt",
    "abstract",
    "description",
    "title",
    "reviewtext",
    "reviewbody",
)
LABEL_COLUMN_NAMES = (
    "label",
    "labels",
    "class",
    "target",
    "category",
    "sentiment",
    "intent",
    "topic",
    "goldlabel",
    "y",
    "tag",
    "classlabel",
    "output",
    "rating",
    "stars",
)


@dataclass
class Columns:
    """Which columns hold the text and the label, and whether they were detected or given."""

    text: str
    label: Optional[str]


@dataclass
class ClassificationData:
    """A labelled file read and split: texts, label ids and the label names those ids index."""

    train_texts: list[str]
    train_labels: list[int]
    validation_texts: list[str]
    validation_labels: list[int]
    label_names: list[str]
    columns: Columns
    dropped_rows: int  # rows skipped for an empty text or label


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in " _-")


def _stringify(value: object) -> str:
    """A JSON or Parquet cell as the text a user wrote: 1 -> '1', true -> 'true', null -> ''."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _read_json_records(path: Path, lines: bool) -> list[dict]:
    text = path.read_text(encoding="utf-8-sig")
    if lines:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text) if text.strip() else []
        if isinstance(data, dict):
            # {"data": [...]} as Hugging Face writes it, or {"column": [values...]}
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(data) == 1 and lists and all(isinstance(r, dict) for r in lists[0]):
                data = lists[0]
            elif lists and len(lists) == len(data):
                data = pd.DataFrame(data).to_dict("records")
        records = data
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise PlmError(f'{path} must hold JSON objects (one per row), like {{"text": "...", "label": "..."}}.')
    return records


def read_table(path_str: str) -> pd.DataFrame:
    """Read a CSV, TSV, JSON, JSONL or Parquet file (by extension) into a DataFrame of strings."""
    path = Path(path_str)
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise PlmError(
            f"unsupported file type '{path.suffix}' for {path}; expected one of: {', '.join(sorted(TABLE_SUFFIXES))}."
        )
    if not path.exists():
        raise PlmError(f"file not found: {path}")
    if path.is_dir():
        raise PlmError(f"{path} is a directory; expected a {kind} file.")
    try:
        if kind in ("CSV", "TSV"):
            frame = pd.read_csv(
                path,
                sep="," if kind == "CSV" else "\t",
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8-sig",
                skip_blank_lines=True,
                # GLUE-style TSV files carry bare quotes inside sentences.
                quoting=csv.QUOTE_MINIMAL if kind == "CSV" else csv.QUOTE_NONE,
            )
        else:
            # Cells become strings one by one, before pandas could widen a column with a gap to floats (1 -> 1.0).
            if kind == "Parquet":
                import pyarrow.parquet

                table = pyarrow.parquet.read_table(path)
                records, names = table.to_pylist(), table.column_names
            else:
                records = _read_json_records(path, lines=kind == "JSONL")
                names = list(dict.fromkeys(key for record in records for key in record))
            frame = pd.DataFrame(
                [[_stringify(r.get(name)) for name in names] for r in records], columns=names, dtype=str
            )
    except pd.errors.EmptyDataError:
        raise PlmError(f"{path} is empty; expected a header row and data rows.") from None
    except UnicodeDecodeError as exc:
        raise PlmError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from exc
    except (pd.errors.ParserError, json.JSONDecodeError, ValueError, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise PlmError(f"cannot read {path} as {kind}: {reason}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    repeated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if repeated:
        raise PlmError(f"{path} has more than one column named {', '.join(repeated)}; rename them.")
    if len(frame.columns) == 0:
        raise PlmError(f"{path} is empty; expected a header row and data rows.")
    if len(frame) == 0:
        raise PlmError(f"{path} has a header but no rows.")
    return frame


def _find_by_name(columns: list[str], names: tuple[str, ...], exclude: set[str]) -> Optional[str]:
    by_key = {}
    for column in columns:
        by_key.setdefault(_normalise(column), column)
    for name in names:
        column = by_key.get(name)
        if column is not None and column not in exclude:
            return column
    return None


def _find_text_by_content(frame: pd.DataFrame, exclude: set[str]) -> Optional[str]:
    """The column of longest values on average, if its values look like free text (mostly distinct)."""
    best, best_length = None, 0.0
    for column in frame.columns:
        if column in exclude:
            continue
        values = frame[column]
        mean_length = values.str.len().mean()
        if values.nunique() >= 0.5 * len(values) and mean_length > best_length:
            best, best_length = column, mean_length
    return best


def _find_label_by_content(frame: pd.DataFrame, exclude: set[str]) -> Optional[str]:
    """The column with the fewest distinct short values (at least 2): what a class column looks like."""
    limit = max(2, min(1000, len(frame) // 2))
    best, best_count = None, None
    for column in frame.columns:
        if column in exclude:
            continue
        values = frame[column].str.strip()
        count = values[values != ""].nunique()
        if 2 <= count <= limit and values.str.len().mean() <= 40 and (best_count is None or count < best_count):
            best, best_count = column, count
    return best


def _require_column(frame: pd.DataFrame, column: str, path: str, option: str) -> None:
    if column not in frame.columns:
        found = ", ".join(frame.columns)
        raise PlmError(f"missing column '{column}' in {path}; found: {found}. Use {option} to pick one.")


def detect_columns(
    frame: pd.DataFrame,
    path: str,
    text_column: Optional[str] = None,
    label_column: Optional[str] = None,
    need_label: bool = True,
) -> Columns:
    """Choose the text (and label) columns: given names first, then known names, then by content."""
    found = ", ".join(frame.columns)
    if text_column is not None:
        _require_column(frame, text_column, path, "--text-column")
    if label_column is not None:
        _require_column(frame, label_column, path, "--label-column")
    taken = {c for c in (text_column, label_column) if c}
    text = text_column or _find_by_name(list(frame.columns), TEXT_COLUMN_NAMES, taken)
    label = label_column
    if need_label and label is None:
        label = _find_by_name(list(frame.columns), LABEL_COLUMN_NAMES, taken | {text} if text else taken)
    if text is None:
        text = _find_text_by_content(frame, {label} if label else set())
    if need_label and label is None:
        label = _find_label_by_content(frame, {text} if text else set())
    if text is None:
        raise PlmError(f"no text column found in {path}; found: {found}. Use --text-column to pick one.")
    if need_label and label is None:
        raise PlmError(f"no label column found in {path}; found: {found}. Use --label-column to pick one.")
    if need_label and text == label:
        raise PlmError(f"the text and label columns are both '{text}' in {path}; pick two different columns.")
    return Columns(text=text, label=label)


def quote_labels(labels: list[str], most: int = 5) -> str:
    """Labels for an error message: "'a', 'b', 'c' ..." with at most ``most`` shown."""
    return ", ".join(f"'{label}'" for label in labels[:most]) + (" ..." if len(labels) > most else "")


def sort_labels(labels: set[str]) -> list[str]:
    """Label names in id order: numerically when every label is an integer ('2' before '10'), else by text."""
    if all(re.fullmatch(r"-?[0-9]+", label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def labelled_rows(frame: pd.DataFrame, columns: Columns) -> tuple[list[str], list[str], list[int]]:
    """Texts and stripped labels of the rows that have both, and those rows' positions in ``frame``."""
    texts = frame[columns.text].tolist()
    labels = [label.strip() for label in frame[columns.label].tolist()]
    keep = [i for i, (t, y) in enumerate(zip(texts, labels)) if t.strip() and y]
    return [texts[i] for i in keep], [labels[i] for i in keep], keep


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, validation): each label keeps its share in both; every label with 2+ rows reaches
    validation. Both lists are shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    train, validation = [], []
    for label in sorted(by_label):
        indices = rng.permutation(by_label[label]).tolist()
        count = len(indices)
        n_validation = min(max(1, round(count * fraction)), count - 1) if count >= 2 else 0
        validation += indices[:n_validation]
        train += indices[n_validation:]
    return rng.permutation(train).tolist(), rng.permutation(validation).tolist()


def load_classification(
    data: str,
    validation: Optional[str],
    validation_split: float,
    seed: int,
    text_column: Optional[str] = None,
    label_column: Optional[str] = None,
    max_train_samples: Optional[int] = None,
) -> ClassificationData:
    """Read the labelled training file (and validation file), detect columns, encode labels, split."""
    frame = read_table(data)
    columns = detect_columns(frame, data, text_column, label_column)
    texts, labels, kept = labelled_rows(frame, columns)
    dropped = len(frame) - len(kept)
    if not texts:
        raise PlmError(
            f"{data} has no row with both a text (column '{columns.text}') and a label (column '{columns.label}')."
        )
    if validation is not None:
        validation_frame = read_table(validation)
        # The validation file may name its columns differently (train.tsv's 'sentence' is dev.tsv's 'content').
        given_text = columns.text if columns.text in validation_frame.columns else text_column
        given_label = columns.label if columns.label in validation_frame.columns else label_column
        validation_columns = detect_columns(validation_frame, validation, given_text, given_label)
        validation_texts, validation_labels, kept = labelled_rows(validation_frame, validation_columns)
        validation_dropped = len(validation_frame) - len(kept)
        if not validation_texts:
            raise PlmError(f"{validation} has no row with both a text and a label.")
        dropped += validation_dropped
        train_texts, train_labels = texts, labels
        order = np.random.default_rng(seed).permutation(len(train_texts)).tolist()
        train_texts, train_labels = [train_texts[i] for i in order], [train_labels[i] for i in order]
        if validation_columns.text != columns.text or validation_columns.label != columns.label:
            console.info(f"Validation columns: text '{validation_columns.text}', label '{validation_columns.label}'.")
    else:
        train_index, validation_index = stratified_split(labels, validation_split, seed)
        train_texts, train_labels = [texts[i] for i in train_index], [labels[i] for i in train_index]
        validation_texts = [texts[i] for i in validation_index]
        validation_labels = [labels[i] for i in validation_index]
        if not validation_texts:
            raise PlmError(
                f"{data} is too small to hold out a validation set ({len(texts)} rows); "
                "add rows or pass --validation FILE."
            )
    label_names = sort_labels(set(train_labels))
    if len(label_names) < 2:
        raise PlmError(
            f"{data} has a single label ('{label_names[0]}') in column '{columns.label}'; "
            "a classifier needs at least 2. Check --label-column."
        )
    unseen = sorted(set(validation_labels) - set(label_names))
    if unseen:
        raise PlmError(
            f"the validation data has labels that training never sees: {quote_labels(unseen)}. "
            "Add them to the training data or drop those rows."
        )
    if max_train_samples is not None:
        train_texts, train_labels = train_texts[:max_train_samples], train_labels[:max_train_samples]
        if len(set(train_labels)) < 2:
            raise PlmError(f"--max-train-samples {max_train_samples} keeps a single label; raise it.")
    label2id = {name: i for i, name in enumerate(label_names)}
    return ClassificationData(
        train_texts=train_texts,
        train_labels=[label2id[y] for y in train_labels],
        validation_texts=validation_texts,
        validation_labels=[label2id[y] for y in validation_labels],
        label_names=label_names,
        columns=columns,
        dropped_rows=dropped,
    )


def read_texts(
    file: str, text_column: Optional[str] = None
) -> tuple[list[str], Optional[pd.DataFrame], Optional[str]]:
    """Texts to classify from a file: a table (text column detected) or plain lines ('-' reads stdin).

    Returns the texts, the table they came from (None for plain lines) and the text column.
    """
    if file == "-":
        lines = sys.stdin.read().splitlines()
        source = "standard input"
    else:
        path = Path(file)
        if path.suffix.lower() in TABLE_SUFFIXES:
            frame = read_table(file)
            column = detect_columns(frame, file, text_column, need_label=False).text
            return frame[column].tolist(), frame, column
        if not path.exists():
            raise PlmError(f"file not found: {path}")
        if path.is_dir():
            raise PlmError(f"{path} is a directory; expected a text file with one text per line.")
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as exc:
            raise PlmError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from exc
        source = str(path)
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise PlmError(f"{source} holds no text; expected one text per line.")
    return texts, None, None


def tokenize(texts: list[str], labels: Optional[list[int]], tokenizer, max_length: int):
    """A datasets.Dataset of input_ids/attention_mask(/token_type_ids), 'length' and 'labels', unpadded.

    Returns the dataset and how many texts were truncated to ``max_length``.
    """
    from datasets import Dataset

    encodings = tokenizer(texts, truncation=True, max_length=max_length)
    truncated = sum(1 for encoding in encodings.encodings if encoding.overflowing)
    columns = dict(encodings)
    columns["length"] = [len(ids) for ids in encodings["input_ids"]]
    if labels is not None:
        columns["labels"] = labels
    return Dataset.from_dict(columns), truncated
