"""User files -> datasets.Dataset: readers, column detection, labels, splits, tokenisation.

Every cell is read as a string (``01``, ``NA``, ``None``, ``True`` stay text): pandas with
``dtype=str, keep_default_na=False`` for CSV/TSV, the json module for JSON/JSONL, and explicit
conversion for Parquet. Columns are found by name first (a known name, then a name that contains
one, like 'review_text' or 'news_category', if its values fit), then by content, and the choice is
always said. Labels are the user's strings; ``label_names`` (sorted, numerically when every
label is an integer) fixes their ids for every split.
"""

import csv
import io
import itertools
import json
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from plmcli import console, textfiles
from plmcli.config import check_encoding
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
    "tags",
    "categories",
    "topics",
    "classes",
    "classlabel",
    "output",
    "rating",
    "stars",
)


@dataclass
class Columns:
    """Which columns hold the text, the second text of a pair (if any) and the label."""

    text: str
    label: Optional[str]
    pair: Optional[str] = None


@dataclass
class ClassificationData:
    """A labelled file read and split: texts (and pairs), label ids and the label names those ids index.

    A label is one id per row, or with ``multi_label`` a sorted list of ids per row; for a regression
    target, one float per row (and ``label_names`` is the target column's name alone).
    """

    train_texts: list[str]
    train_labels: list
    validation_texts: list[str]
    validation_labels: list
    label_names: list[str]
    columns: Columns
    dropped_rows: int  # rows skipped for an empty text, pair or label
    train_pairs: Optional[list[str]] = None  # the second texts, with a pair column
    validation_pairs: Optional[list[str]] = None
    multi_label: bool = False
    label_separator: str = "|"
    validation_share: Optional[float] = None  # the share of the file's rows held out; None: a validation file


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
        return json.dumps(value, ensure_ascii=False, default=str)  # dates, decimals: as written
    return str(value)


def _read_json_records(path: Path, text: str, lines: bool) -> list[dict]:
    if lines:
        records = []
        for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may sit inside a string
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PlmError(
                    f"{path} line {number} is not valid JSON ({exc.msg} at column {exc.colno}); fix or remove it."
                ) from exc
            if not isinstance(record, dict):
                raise PlmError(f'{path} line {number} is not a JSON object; expected {{"text": "...", ...}}.')
            records.append(record)
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


ENCODING_HINT = "pass --encoding with the file's encoding (like --encoding latin-1), or save it as UTF-8."


def table_kind(path: Path) -> Optional[str]:
    """CSV, TSV, JSON, JSONL or Parquet by the file's extension (``.csv.gz`` is a CSV), else None."""
    name = path.name.lower()
    return TABLE_SUFFIXES.get(Path(name[:-3] if name.endswith(".gz") else name).suffix)


def _text(path: Path, encoding: str) -> str:
    """A table's text, read once: gunzipped, decoded, binary refused (plmcli.textfiles)."""
    check_encoding(encoding)
    return textfiles.read_text(path, encoding, ENCODING_HINT)


def _delimiter(path: Path, text: str, kind: str, quiet: bool = False) -> str:
    """The field separator: the extension's, unless the header plainly uses another (a TSV named .csv).

    Plainly: the extension's separator is not in the header line, and another is, as many times as
    in the first data line (a one-column CSV whose header holds a ';' stays a CSV).
    """
    lines = (line for line in _split_lines(text[: 1 << 20]) if line.strip())  # the first MiB holds them
    header, first_row = (list(itertools.islice(lines, 2)) + ["", ""])[:2]
    counts = {sep: header.count(sep) for sep in (",", "\t", ";")}
    expected = "," if kind == "CSV" else "\t"
    if counts[expected]:
        return expected
    found = max(counts, key=counts.get)
    if counts[found] and (not first_row or first_row.count(found) == counts[found]):
        if not quiet:
            console.info(f"{path}: the header is separated by {SEPARATOR_NAMES[found]}; reading the file that way.")
        return found
    return expected


SEPARATOR_NAMES = {",": "commas", "\t": "tabs", ";": "semicolons"}


def _parser_error(path: Path, separator: str, exc: Exception) -> PlmError:
    """pandas' tokenizer errors as one line with the line number and what to do."""
    reason = " ".join(str(exc).split())
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", reason)
    if fields:
        expected, line, found = fields.groups()
        return PlmError(
            f"{path} line {line} has {found} fields where the header has {expected}; "
            f"put quotes around values that contain {SEPARATOR_NAMES[separator][:-1]}s, or fix that line."
        )
    unclosed = re.search(r"EOF inside string starting at row (\d+)", reason)
    if unclosed:
        return PlmError(
            f'{path} line {int(unclosed.group(1)) + 1}: a quoted value is never closed; add the closing ".'
        )
    return PlmError(f"cannot read {path}: {reason}")


def read_table(path_str: str, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV, TSV, JSON, JSONL or Parquet file (by extension) into a DataFrame of strings.

    Every cell is read as the text written ('01', 'NA' and 'True' stay as they are). A CSV whose
    header is separated by tabs or semicolons (or a TSV by commas) is read with that separator.
    """
    path = Path(path_str)
    kind = table_kind(path)
    if path.is_dir():
        raise PlmError(f"{path} is a directory; expected a {kind or 'CSV, TSV, JSON, JSONL or Parquet'} file.")
    if kind is None:
        raise PlmError(
            f"unsupported file type '{path.suffix}' for {path}; expected one of: {', '.join(sorted(TABLE_SUFFIXES))}."
        )
    if not path.exists():
        raise PlmError(f"file not found: {path}")
    separator = None
    try:
        if kind in ("CSV", "TSV"):
            text = _text(path, encoding)
            separator = _delimiter(path, text, kind)
            quoting = csv.QUOTE_NONE if separator == "\t" else csv.QUOTE_MINIMAL  # GLUE TSVs hold bare quotes
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                frame = pd.read_csv(
                    io.StringIO(text),
                    sep=separator,
                    dtype=str,
                    keep_default_na=False,
                    na_filter=False,
                    skip_blank_lines=True,
                    quoting=quoting,
                    index_col=False,  # a first row with an extra field is an error, not an index column
                )
            if any("does not match length of data" in str(warning.message) for warning in caught):
                raise _ragged(path, text, separator, quoting)
            _check_header(path, text, separator, quoting)
        else:
            # Cells become strings one by one, before pandas could widen a column with a gap to floats (1 -> 1.0).
            if kind == "Parquet":
                import pyarrow.parquet

                table = pyarrow.parquet.read_table(io.BytesIO(textfiles.read_bytes(path)))
                records, names = table.to_pylist(), table.column_names
            else:
                records = _read_json_records(path, _text(path, encoding), lines=kind == "JSONL")
                names = list(dict.fromkeys(key for record in records for key in record))
            frame = pd.DataFrame(
                [[_stringify(r.get(name)) for name in names] for r in records], columns=names, dtype=str
            )
    except pd.errors.EmptyDataError:
        raise PlmError(f"{path} is empty; expected a header row and data rows.") from None
    except pd.errors.ParserError as exc:
        raise _parser_error(path, separator or ",", exc) from exc
    except (json.JSONDecodeError, ValueError, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise PlmError(f"cannot read {path} as {kind}: {reason}") from exc
    except RecursionError as exc:
        raise PlmError(f"cannot read {path} as {kind}: it is nested too deeply.") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    repeated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if repeated:
        raise PlmError(f"{path} has more than one column named {', '.join(repeated)}; rename them.")
    if len(frame.columns) == 0:
        raise PlmError(f"{path} is empty; expected a header row and data rows.")
    if len(frame) == 0:
        raise PlmError(f"{path} has a header but no rows.")
    return frame


def _records(text: str, separator: str, quoting: int):
    """(line where it starts, fields) of each non-blank record, read by Python's csv module."""
    csv.field_size_limit(sys.maxsize)  # a long text is still one field
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, quoting=quoting)
    previous = 0
    for record in reader:
        if record:
            yield previous + 1, record
        previous = reader.line_num


def _ragged(path: Path, text: str, separator: str, quoting: int) -> PlmError:
    """The error for the first row with more fields than the header."""
    records = _records(text, separator, quoting)
    _, header = next(records)
    for line, fields in records:
        if len(fields) > len(header):
            return _parser_error(
                path, separator, ValueError(f"Expected {len(header)} fields in line {line}, saw {len(fields)}")
            )
    return PlmError(f"{path} has rows with more fields than its header; check the separators.")


def _check_header(path: Path, text: str, separator: str, quoting: int) -> None:
    """Refuse header names that are empty or repeated (pandas would invent 'Unnamed: 1' or rename to 'text.1')."""
    _, header = next(_records(text, separator, quoting))
    names = [name.strip() for name in header]
    for number, name in enumerate(names, 1):
        if not name:
            raise PlmError(f"{path}: column {number} of the header has no name; give it one.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise PlmError(f"{path} has more than one column named {', '.join(repeated)}; rename them.")


def row_lines(path_str: str, encoding: str = "utf-8") -> Optional[list[int]]:
    """The line of the file on which each row of ``read_table`` starts; None for JSON and Parquet.

    Quoted values may span lines, so the lines are counted by a CSV reader, not by row numbers.
    Used only to point at rows in an error message.
    """
    path = Path(path_str)
    kind = table_kind(path)
    if kind in (None, "JSON", "Parquet"):
        return None
    text = _text(path, encoding)
    if kind == "JSONL":
        return [number for number, line in enumerate(text.split("\n"), 1) if line.strip()]
    separator = _delimiter(path, text, kind, quiet=True)
    quoting = csv.QUOTE_NONE if separator == "\t" else csv.QUOTE_MINIMAL
    return [line for line, _ in _records(text, separator, quoting)][1:]  # the header is not a row


def _find_by_name(columns: list[str], names: tuple[str, ...], exclude: set[str]) -> Optional[str]:
    by_key = {}
    for column in columns:
        by_key.setdefault(_normalise(column), column)
    for name in names:
        column = by_key.get(name)
        if column is not None and column not in exclude:
            return column
    return None


def _find_by_part_of_name(
    frame: pd.DataFrame, names: tuple[str, ...], exclude: set[str], looks_right
) -> Optional[str]:
    """A column whose name contains a known name ('review_text', 'news_category'), if its values fit."""
    for name in (name for name in names if len(name) >= 4):
        for column in frame.columns:
            if column not in exclude and name in _normalise(column) and looks_right(frame[column]):
                return column
    return None


def _looks_like_text(values: pd.Series) -> bool:
    return values.str.len().mean() >= 10 and values.nunique() >= 0.3 * len(values)


def _looks_like_labels(values: pd.Series) -> bool:
    stripped = values.str.strip()
    count = stripped[stripped != ""].nunique()
    return 2 <= count <= max(2, min(1000, len(values) // 2)) and stripped.str.len().mean() <= 40


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
    pair_column: Optional[str] = None,
) -> Columns:
    """Choose the text (and label) columns: given names first, then known names, then by content.

    A pair column is never guessed: it is given (``--text-pair-column``) or saved with the model.
    """
    found = ", ".join(frame.columns)
    if text_column is not None:
        _require_column(frame, text_column, path, "--text-column")
    if label_column is not None:
        _require_column(frame, label_column, path, "--label-column")
    if pair_column is not None:
        _require_column(frame, pair_column, path, "--text-pair-column")
    taken = {c for c in (text_column, label_column, pair_column) if c}
    text = text_column or _find_by_name(list(frame.columns), TEXT_COLUMN_NAMES, taken)
    label = label_column
    if need_label and label is None:
        label = _find_by_name(list(frame.columns), LABEL_COLUMN_NAMES, taken | {text} if text else taken)
    if text is None:
        text = _find_by_part_of_name(frame, TEXT_COLUMN_NAMES, taken | {label}, _looks_like_text)
    if need_label and label is None:
        label = _find_by_part_of_name(frame, LABEL_COLUMN_NAMES, taken | {text}, _looks_like_labels)
    if text is None:
        text = _find_text_by_content(frame, taken | ({label} if label else set()))
    if need_label and label is None:
        label = _find_label_by_content(frame, taken | ({text} if text else set()))
    if text is None:
        raise PlmError(f"no text column found in {path}; found: {found}. Use --text-column to pick one.")
    if need_label and label is None:
        raise PlmError(f"no label column found in {path}; found: {found}. Use --label-column to pick one.")
    if need_label and text == label:
        raise PlmError(f"the text and label columns are both '{text}' in {path}; pick two different columns.")
    if pair_column is not None and pair_column in (text, label):
        raise PlmError(f"the text pair column '{pair_column}' is also the text or label column; pick another.")
    return Columns(text=text, label=label, pair=pair_column)


def quote_labels(labels: list[str], most: int = 5) -> str:
    """Labels for an error message: "'a', 'b', 'c' ..." with at most ``most`` shown."""
    shown = ", ".join(f"'{console.printable(label)}'" for label in labels[:most])
    return shown + (" ..." if len(labels) > most else "")


def sort_labels(labels: set[str]) -> list[str]:
    """Label names in id order: numerically when every label is an integer ('2' before '10'), else by text."""
    if all(re.fullmatch(r"-?[0-9]+", label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def split_labels(cell: str, separator: str) -> tuple[str, ...]:
    """A multi-label cell ('sports | politics', or a JSON list from JSON/Parquet) as its sorted, distinct labels.

    An empty cell is a row with no label: every label's target is 0.
    """
    parts = None
    if cell.startswith("[") and cell.endswith("]"):
        try:
            parts = json.loads(cell)
        except json.JSONDecodeError:
            parts = None
    if not isinstance(parts, list):
        parts = cell.split(separator)
    return tuple(sorted({_stringify(part).strip() for part in parts if _stringify(part).strip()}))


@dataclass
class LabelledRows:
    """The rows of a table that have a text (a pair) and a label, and their positions in the table."""

    texts: list[str]
    pairs: Optional[list[str]]
    labels: list  # stripped label strings, or tuples of them (multi-label)
    kept: list[int]


def labelled_rows(
    frame: pd.DataFrame,
    columns: Columns,
    separator: Optional[str] = None,
    source: str = "",
    encoding: str = "utf-8",
    drop_invalid: bool = False,
) -> LabelledRows:
    """The rows with a text, a pair text (with a pair column) and a label; ``separator`` splits multi-labels.

    A row missing one of them is refused with its line in ``source``, or skipped (and counted by
    the caller) with ``drop_invalid``. A multi-label row with an empty label cell is kept: it is
    a row none of the labels applies to.
    """
    texts = frame[columns.text].tolist()
    pairs = frame[columns.pair].tolist() if columns.pair else None
    cells = [cell.strip() for cell in frame[columns.label].tolist()]
    labels = [split_labels(cell, separator) for cell in cells] if separator else cells
    invalid, missing = [], set()
    for i, (text, label) in enumerate(zip(texts, labels)):
        empty = [
            what
            for what, is_empty in (
                ("text", not text.strip()),
                ("pair text", pairs is not None and not pairs[i].strip()),
                ("label", not label and not separator),
            )
            if is_empty
        ]
        if empty:
            invalid.append(i)
            missing.update(empty)
    if invalid and not drop_invalid:
        what = " or ".join(name for name in ("text", "pair text", "label") if name in missing)
        raise PlmError(
            f"{source} has {len(invalid)} row{'s' if len(invalid) > 1 else ''} with an empty {what} "
            f"({_where(invalid, source, encoding, len(frame))}); fill them in, or pass --drop-invalid to skip them."
        )
    skipped = set(invalid)
    keep = [i for i in range(len(texts)) if i not in skipped]
    return LabelledRows(
        texts=[texts[i] for i in keep],
        pairs=[pairs[i] for i in keep] if pairs is not None else None,
        labels=[labels[i] for i in keep],
        kept=keep,
    )


def _where(rows: list[int], source: str, encoding: str, count: int) -> str:
    """'lines 4, 9' (or 'rows 3, 8' where lines mean nothing) for row indices of a table read from ``source``."""
    lines = row_lines(source, encoding) if source else None
    if lines is not None and len(lines) == count:
        unit, numbers = "line", [lines[i] for i in rows]
    else:
        unit, numbers = "row", [i + 1 for i in rows]
    shown = ", ".join(map(str, numbers[:10])) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
    return f"{unit}{'s' if len(numbers) > 1 else ''} {shown}"


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, validation), each label keeping its share in both, both lists shuffled with ``seed``.

    Every label with 2+ rows reaches validation, unless that would hold out more than SPLIT_SLACK
    times the rows ``fraction`` asks for (many labels with few rows each): then exactly that many
    rows are held out, shared among the labels in proportion, and some labels have none there
    (``load_classification`` says which).
    """
    rng = np.random.default_rng(seed)
    by_label = _by_label(labels)
    counts = {label: len(indices) for label, indices in by_label.items()}
    # each label's share of the held-out rows, at least one, never its last row
    held = {label: min(max(1, round(n * fraction)), n - 1) if n >= 2 else 0 for label, n in counts.items()}
    wanted = max(1, round(len(labels) * fraction))
    if sum(held.values()) > SPLIT_SLACK * wanted + 1:
        held = _shares(counts, wanted, {label: max(count - 1, 0) for label, count in counts.items()})
    train, validation = [], []
    for label in sorted(by_label):
        indices = rng.permutation(by_label[label]).tolist()
        validation += indices[: held[label]]
        train += indices[held[label] :]
    return rng.permutation(train).tolist(), rng.permutation(validation).tolist()


SPLIT_SLACK = 1.5  # a stratified split may hold out up to 1.5x the requested rows to reach every label


def _by_label(labels: list[str]) -> dict[str, list[int]]:
    """{label: the positions it is at}, in order."""
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    return by_label


def _shares(counts: dict[str, int], total: int, most: dict[str, int]) -> dict[str, int]:
    """``total`` rows shared among labels in proportion to ``counts`` (largest remainders first), ``most`` at most."""
    size = sum(counts.values())
    exact = {label: total * count / size for label, count in counts.items()}
    given = {label: min(int(exact[label]), most[label]) for label in counts}
    order = sorted(counts, key=lambda label: (int(exact[label]) - exact[label], label))
    while sum(given.values()) < total and any(given[label] < most[label] for label in counts):
        for label in order:
            if sum(given.values()) < total and given[label] < most[label]:
                given[label] += 1
    return given


def _sample(train_index: list[int], strata: list[str], count: int) -> list[int]:
    """``count`` of the (shuffled) training rows for --max-train-samples: every label kept, shares kept.

    ``strata`` is each row's label (multi-label: its rarest). Each label gets one row, the rest are
    shared in proportion; the rows keep their shuffled order.
    """
    if count >= len(train_index):
        return train_index
    by_label = _by_label([strata[i] for i in train_index])
    if count < len(by_label):
        raise PlmError(
            f"--max-train-samples {count} is fewer than the {len(by_label)} labels of the training rows; "
            f"raise it to at least {len(by_label)}."
        )
    counts = {label: len(positions) for label, positions in by_label.items()}
    extra = _shares(counts, count - len(by_label), {label: n - 1 for label, n in counts.items()})
    kept = sorted(position for label, positions in by_label.items() for position in positions[: 1 + extra[label]])
    return [train_index[position] for position in kept]


def _validation_rows(
    validation: str,
    columns: Columns,
    text_column: Optional[str],
    label_column: Optional[str],
    separator: Optional[str],
    encoding: str,
    drop_invalid: bool,
) -> tuple[LabelledRows, Columns, int]:
    """The rows of a --validation file (its columns may be named differently: train.tsv's 'sentence' is
    dev.tsv's 'content'), its columns, and how many of its rows were skipped (--drop-invalid)."""
    frame = read_table(validation, encoding)
    given_text = columns.text if columns.text in frame.columns else text_column
    given_label = columns.label if columns.label in frame.columns else label_column
    found = detect_columns(frame, validation, given_text, given_label, pair_column=columns.pair)
    held_out = labelled_rows(frame, found, separator, validation, encoding, drop_invalid)
    if not held_out.texts:
        what = "a text, a pair text" if columns.pair else "a text"
        raise PlmError(f"{validation} has no row with both {what} and a label.")
    if found.text != columns.text or found.label != columns.label:
        console.info(f"Validation columns: text '{found.text}', label '{found.label}'.")
    return held_out, found, len(frame) - len(held_out.kept)


def load_classification(
    data: str,
    validation: Optional[str],
    validation_split: float,
    seed: int,
    text_column: Optional[str] = None,
    label_column: Optional[str] = None,
    max_train_samples: Optional[int] = None,
    pair_column: Optional[str] = None,
    multi_label: bool = False,
    label_separator: str = "|",
    encoding: str = "utf-8",
    drop_invalid: bool = False,
) -> ClassificationData:
    """Read the labelled training file (and validation file), detect columns, encode labels, split.

    Rows with an empty text or label are refused with their lines, or skipped with ``drop_invalid``.
    """
    separator = label_separator if multi_label else None
    frame = read_table(data, encoding)
    columns = detect_columns(frame, data, text_column, label_column, pair_column=pair_column)
    rows = labelled_rows(frame, columns, separator, data, encoding, drop_invalid)
    dropped = len(frame) - len(rows.kept)
    what = "a text, a pair text" if columns.pair else "a text"
    if not rows.texts:
        raise PlmError(
            f"{data} has no row with both {what} (column '{columns.text}') and a label (column '{columns.label}')."
        )
    strata = _rarest_labels(rows.labels) if separator else rows.labels  # what splits and samples keep the shares of
    if validation is not None:
        held_out, _, skipped = _validation_rows(
            validation, columns, text_column, label_column, separator, encoding, drop_invalid
        )
        dropped += skipped
        train_index = np.random.default_rng(seed).permutation(len(rows.texts)).tolist()
        validation_index = list(range(len(held_out.texts)))
    else:
        train_index, validation_index = stratified_split(strata, validation_split, seed)
        held_out = rows
        if not validation_index:
            raise PlmError(
                f"no label in {data} has 2 or more rows ({len(rows.texts)} rows, {len(set(strata))} labels), so "
                "none can be held out for validation; add rows or pass --validation FILE."
            )
        _say_split(strata, validation_index, validation_split)
    # The label set comes from the whole training split, also when --max-train-samples keeps a part of it.
    every_train_label = [rows.labels[i] for i in train_index]
    seen = {name for y in every_train_label for name in y} if separator else set(every_train_label)
    if max_train_samples is not None:
        train_index = _sample(train_index, strata, max_train_samples)
        kept = {name for i in train_index for name in (rows.labels[i] if separator else [rows.labels[i]])}
        left_out = sort_labels(seen - kept)  # multi-label: a label that is never a row's rarest can be
        if left_out:
            console.warn(
                f"--max-train-samples {max_train_samples} leaves no training row for {quote_labels(left_out)}; "
                "raise it to train on every label."
            )
    train_labels = [rows.labels[i] for i in train_index]
    validation_labels = [held_out.labels[i] for i in validation_index]
    label_names = sort_labels(seen)
    if len(label_names) < 2:
        raise PlmError(
            f"{data} has {'a single label (' + quote_labels(label_names) + ')' if label_names else 'no label'} "
            f"in column '{columns.label}'; "
            "a classifier needs at least 2. Check --label-column."
        )
    unseen = sorted(({n for y in validation_labels for n in y} if separator else set(validation_labels)) - seen)
    if unseen:
        raise PlmError(
            f"the validation data has labels that training never sees: {quote_labels(unseen)}. "
            "Add them to the training data or drop those rows."
        )
    if not multi_label:
        suggest_regression(every_train_label, columns.label)
    if not multi_label and any(label_separator in y for y in train_labels) and len(label_names) > 2:
        joined = sum(label_separator in y for y in train_labels)
        console.warn(
            f"{joined} labels contain '{label_separator}'; if a row can have several labels, pass --multi-label."
        )
    label2id = {name: i for i, name in enumerate(label_names)}

    def ids(labels: list) -> list:
        return [[label2id[n] for n in y] for y in labels] if separator else [label2id[y] for y in labels]

    return ClassificationData(
        train_texts=[rows.texts[i] for i in train_index],
        train_labels=ids(train_labels),
        validation_texts=[held_out.texts[i] for i in validation_index],
        validation_labels=ids(validation_labels),
        label_names=label_names,
        columns=columns,
        dropped_rows=dropped,
        train_pairs=[rows.pairs[i] for i in train_index] if rows.pairs is not None else None,
        validation_pairs=[held_out.pairs[i] for i in validation_index] if held_out.pairs is not None else None,
        multi_label=multi_label,
        label_separator=label_separator,
        validation_share=None if validation is not None else len(validation_index) / len(rows.texts),
    )


def _say_split(strata: list[str], validation_index: list[int], fraction: float) -> None:
    """One line when the split is not the plain --validation-split share of every label (too few rows for it)."""
    held = len(validation_index) / len(strata)
    counts = Counter(strata)
    reached = {strata[i] for i in validation_index}
    missing = [label for label, count in counts.items() if count >= 2 and label not in reached]
    if missing:
        console.info(
            f"Validation: {len(validation_index)} of {len(strata)} rows ({held:.0%}); {len(missing)} of the "
            f"{len(counts)} labels have too few rows to be among them: they are trained on, not validated. "
            "Pass --validation FILE to validate every label."
        )
    elif held > fraction * 1.2 + 0.005:
        console.info(
            f"Validation: {len(validation_index)} of {len(strata)} rows ({held:.0%}, more than --validation-split "
            f"{fraction:g}), so that every label with 2 or more rows has one there."
        )


# A label column of more distinct numbers than this, in a classification run, is likely a quantity.
MANY_NUMBERS = 20
TARGET_COLUMN_NAMES = ("score", "value", "rating", "target", "label", "labels", "y", "stars", "grade", "price")


def _number(cell: str) -> Optional[float]:
    """A cell as a finite number, or None ('1,5', 'n/a', 'inf' and '' are not numbers)."""
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def suggest_regression(labels: list[str], column: str) -> None:
    """Warn when a classification run's labels are more than MANY_NUMBERS distinct numbers: likely a quantity."""
    distinct = set(labels)
    if len(distinct) > MANY_NUMBERS and all(_number(label) is not None for label in distinct):
        console.warn(
            f"column '{column}' holds {len(distinct)} distinct numbers, each trained as its own class; "
            "if it is a quantity (a score, a rating, a price), pass --task regression."
        )


def _find_target_column(frame: pd.DataFrame, path: str, text: str, pair: Optional[str]) -> str:
    """The numeric target column: a known name whose cells are numbers, else the one column of numbers.

    A column counts as numbers when nine of its cells in ten are; the rest are then refused with their lines.
    """
    candidates = [column for column in frame.columns if column not in (text, pair)]

    def numeric(column: str) -> bool:  # nine cells in ten or more: the others are refused with their lines
        cells = [cell.strip() for cell in frame[column].tolist() if cell.strip()]
        return bool(cells) and sum(_number(cell) is not None for cell in cells) >= 0.9 * len(cells)

    for name in TARGET_COLUMN_NAMES:
        for column in candidates:
            if _normalise(column) == name and numeric(column):
                return column
    numbers = [column for column in candidates if numeric(column)]
    if len(numbers) == 1:
        return numbers[0]
    found = ", ".join(frame.columns)
    if not numbers:
        raise PlmError(f"no numeric target column found in {path}; found: {found}. Use --label-column to pick one.")
    raise PlmError(
        f"{path} has several numeric columns ({', '.join(numbers)}); use --label-column to pick the target."
    )


# Targets whose squared errors (MSE, R²) are normal float64 numbers in the target's own units.
TARGET_LIMIT = 1e150


def numeric_targets(rows: LabelledRows, column: str, source: str, encoding: str, count: int) -> list[float]:
    """The target cells as numbers; a cell that is not one is refused with its line, a range too wide or
    too narrow to train and score in float64 in one line that names it."""
    values = [_number(cell) for cell in rows.labels]
    bad = [i for i, value in enumerate(values) if value is None]
    if bad:
        where = _where([rows.kept[i] for i in bad], source, encoding, count)
        raise PlmError(
            f"{source}: the target column '{column}' must hold numbers; {where} "
            f"{'has' if len(bad) == 1 else 'have'} {quote_labels([rows.labels[i] for i in bad], 3)}. "
            "Fix them, or pass --task classification for labels."
        )
    if values:
        low, high = min(values), max(values)
        spread = high / 2 - low / 2  # half the range: never overflows
        if max(abs(low), abs(high)) > TARGET_LIMIT or 0 < spread < 0.5 / TARGET_LIMIT:
            raise PlmError(
                f"{source}: the target column '{column}' holds numbers from {low:g} to {high:g}; plm trains targets "
                f"of at most {TARGET_LIMIT:g} in size whose values differ by at least {1 / TARGET_LIMIT:g} (their "
                "squared errors must be finite numbers). Rescale the column first: other units, or its logarithm."
            )
    return values


def load_regression(
    data: str,
    validation: Optional[str],
    validation_split: float,
    seed: int,
    text_column: Optional[str] = None,
    label_column: Optional[str] = None,
    max_train_samples: Optional[int] = None,
    pair_column: Optional[str] = None,
    encoding: str = "utf-8",
    drop_invalid: bool = False,
) -> ClassificationData:
    """Read a file with a numeric target (and a validation file), detect columns, split at random.

    The target is ``--label-column``, else a column of numbers with a known name (score, rating,
    ...), else the only column of numbers. Its values are the ``labels`` (floats); ``label_names``
    holds the target column's name.
    """
    frame = read_table(data, encoding)
    text = detect_columns(frame, data, text_column, need_label=False, pair_column=pair_column).text
    target = label_column or _find_target_column(frame, data, text, pair_column)
    columns = detect_columns(frame, data, text, target, pair_column=pair_column)
    rows = labelled_rows(frame, columns, None, data, encoding, drop_invalid)
    if not rows.texts:
        raise PlmError(f"{data} has no row with both a text (column '{text}') and a target (column '{target}').")
    values = numeric_targets(rows, target, data, encoding, len(frame))
    dropped = len(frame) - len(rows.kept)
    if validation is not None:
        held_out, held_columns, skipped = _validation_rows(
            validation, columns, text_column, label_column, None, encoding, drop_invalid
        )
        held_values = numeric_targets(held_out, held_columns.label, validation, encoding, len(held_out.kept) + skipped)
        dropped += skipped
        train_index = np.random.default_rng(seed).permutation(len(rows.texts)).tolist()
        validation_index = list(range(len(held_out.texts)))
    else:
        if len(rows.texts) < 2:
            raise PlmError(f"{data} has {len(rows.texts)} row; at least 2 are needed to hold one out for validation.")
        order = np.random.default_rng(seed).permutation(len(rows.texts)).tolist()
        count = min(max(1, round(len(order) * validation_split)), len(order) - 1)
        validation_index, train_index = order[:count], order[count:]
        held_out, held_values = rows, values
    if max_train_samples is not None:
        train_index = train_index[:max_train_samples]
    train_values = [values[i] for i in train_index]
    if len(set(train_values)) < 2:
        raise PlmError(
            f"every training target in column '{target}' is {train_values[0]:g}: there is nothing to learn. "
            "Check --label-column."
        )
    return ClassificationData(
        train_texts=[rows.texts[i] for i in train_index],
        train_labels=train_values,
        validation_texts=[held_out.texts[i] for i in validation_index],
        validation_labels=[held_values[i] for i in validation_index],
        label_names=[target],
        columns=columns,
        dropped_rows=dropped,
        train_pairs=[rows.pairs[i] for i in train_index] if rows.pairs is not None else None,
        validation_pairs=[held_out.pairs[i] for i in validation_index] if held_out.pairs is not None else None,
        validation_share=None if validation is not None else len(validation_index) / len(rows.texts),
    )


def _rarest_labels(label_sets: list[tuple[str, ...]]) -> list[str]:
    """What a multi-label split stratifies on: each row's rarest label ('' for a row with none).

    Stratifying on whole label sets would keep every row whose combination occurs once out of
    validation; the rarest label still spreads each label over both sides.
    """
    counts: dict[str, int] = {}
    for labels in label_sets:
        for name in labels:
            counts[name] = counts.get(name, 0) + 1
    return [min(labels, key=lambda name: (counts[name], name)) if labels else "" for labels in label_sets]


def multi_hot(label_ids: list[list[int]], num_labels: int) -> list[list[float]]:
    """Rows of label ids as 0/1 vectors, the targets of a multi-label (BCE) loss."""
    rows = np.zeros((len(label_ids), num_labels), dtype=np.float32)
    for row, ids in enumerate(label_ids):
        rows[row, ids] = 1.0
    return rows.tolist()


def check_readable(file: str) -> None:
    """Refuse a path that is missing or a directory ('-' is standard input), before any model is loaded."""
    path = Path(file)
    if file != "-" and not path.exists():
        raise PlmError(f"file not found: {path}")
    if path.is_dir():
        raise PlmError(f"{path} is a directory; expected a file.")


def read_texts(
    file: str,
    text_column: Optional[str] = None,
    pair_column: Optional[str] = None,
    trained_column: Optional[str] = None,
    encoding: str = "utf-8",
) -> tuple[list[str], Optional[list[str]], Optional[pd.DataFrame], Optional[str]]:
    """Texts to classify from a file: a table (text column detected) or plain lines ('-' reads stdin).

    ``trained_column``, the text column the model was trained on, is used when the table has it and
    no column is given. Returns the texts, the pair texts (with ``pair_column``), the table they
    came from (None for plain lines) and the text column.
    """
    check_encoding(encoding)
    if file == "-":
        hint = "pass --encoding with its encoding (like --encoding latin-1)."
        lines = _split_lines(textfiles.decode(sys.stdin.buffer.read(), "standard input", encoding, hint))
        source = "standard input"
    else:
        path = Path(file)
        if table_kind(path) is not None:
            frame = read_table(file, encoding)
            if text_column is None and trained_column in frame.columns and trained_column != pair_column:
                text_column = trained_column
            column = detect_columns(frame, file, text_column, need_label=False, pair_column=pair_column).text
            pairs = frame[pair_column].tolist() if pair_column else None
            return frame[column].tolist(), pairs, frame, column
        check_readable(file)
        lines = _split_lines(textfiles.read_text(path, encoding, ENCODING_HINT))
        source = str(path)
    if pair_column:
        raise PlmError(f"text pairs need a table (CSV, TSV, JSON, JSONL or Parquet) with column '{pair_column}'.")
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise PlmError(f"{source} holds no text; expected one text per line.")
    return texts, None, None, None


def _split_lines(text: str) -> list[str]:
    """Lines ended by LF, CRLF or CR only (str.splitlines also splits at U+2028, form feeds and more)."""
    return re.split(r"\r\n|\r|\n", text)


def tokenize(
    texts: list[str],
    labels: Optional[list],
    tokenizer,
    max_length: int,
    pairs: Optional[list[str]] = None,
    segment_ids: Optional[bool] = None,
):
    """A datasets.Dataset of input_ids/attention_mask(/token_type_ids), 'length' and 'labels', unpadded.

    With ``pairs``, each example is the pair [CLS] text [SEP] pair [SEP] with segment ids 0 and 1,
    the longer text cut first. ``segment_ids`` (see modeling.reads_segment_ids): True gives every
    example its token_type_ids, also where the tokenizer leaves them out (ALBERT's), False none;
    None, what the tokenizer returns. Returns the dataset and how many examples were truncated.
    """
    from datasets import Dataset

    encodings = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    truncated = sum(1 for encoding in encodings.encodings if encoding.overflowing)
    columns = dict(encodings)
    if segment_ids:
        columns["token_type_ids"] = [encoding.type_ids for encoding in encodings.encodings]
    elif segment_ids is not None:
        columns.pop("token_type_ids", None)
    columns["length"] = [len(ids) for ids in encodings["input_ids"]]
    if labels is not None:
        columns["labels"] = labels
    return Dataset.from_dict(columns), truncated
