"""Property-based tests of every reader: a well-formed table reads back exactly, any bytes read or fail in one line.

Tables are written the way plm writes them (``formats.to_csv`` for CSV, the json module,
pyarrow for Parquet, tab-joined lines for TSV, as GLUE's are). Whatever hypothesis finds that
breaks a reader stays here as an ``@example``.
"""

import gzip
import json
import os
import tempfile
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from plmcli import corpus, corpus_cache, data
from plmcli.errors import PlmError
from plmcli.formats import to_csv

# PLM_FUZZ_EXAMPLES=5000 searches harder (a maintainer's run); the suite tries 60 inputs per test.
FUZZ = settings(
    max_examples=int(os.environ.get("PLM_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
VISIBLE = st.characters(exclude_categories=("Cs", "Cc"))  # any character of text but line breaks and tabs
TRICKY = st.sampled_from(",;\"' |")  # what separates, quotes or pads fields, drawn often
CELL = st.text(st.one_of(VISIBLE, TRICKY, st.sampled_from("\t\n\r")), max_size=12)  # what a quoted cell can hold
LINE_CELL = st.text(st.one_of(VISIBLE, TRICKY), max_size=12)  # a TSV cell: no tab, no line break
NAME = st.text(st.one_of(st.characters(exclude_categories=("Cs", "Cc", "Z")), TRICKY), min_size=1, max_size=8).filter(
    lambda name: name == name.strip()
)
SUFFIXES = [".csv", ".tsv", ".json", ".jsonl", ".parquet", ".csv.gz", ".txt"]


@st.composite
def tables(draw, cell=CELL):
    """(column names, rows of cells): 1-4 columns, 1-5 rows, at least one visible character in each row."""
    names = draw(st.lists(NAME, min_size=1, max_size=4, unique=True))
    row = st.lists(cell, min_size=len(names), max_size=len(names)).filter(lambda cells: "".join(cells).strip())
    return names, draw(st.lists(row, min_size=1, max_size=5))


def _write(directory: Path, suffix: str, names: list[str], rows: list[list[str]]) -> Path:
    path = directory / f"table{suffix}"
    records = [dict(zip(names, cells)) for cells in rows]
    if suffix == ".csv":
        path.write_text(to_csv(records, names), encoding="utf-8")
    elif suffix == ".tsv":
        path.write_text("".join("\t".join(cells) + "\n" for cells in [names, *rows]), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    else:
        pyarrow.parquet.write_table(pyarrow.table({name: [r[i] for r in rows] for i, name in enumerate(names)}), path)
    return path


def _reads_back(suffix: str, names: list[str], rows: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        frame = data.read_table(str(_write(Path(directory), suffix, names, rows)))
    assert list(frame.columns) == names
    assert frame.values.tolist() == rows


@FUZZ
@given(tables())
@example(table=(["0"], [["0\r"]]))  # the csv module, ending lines with LF, left a lone CR unquoted
@example(table=([";"], [["0"]]))  # a one-column header holding ';' was taken for a semicolon-separated file
def test_a_csv_reads_back_exactly(table):
    _reads_back(".csv", *table)


@FUZZ
@given(tables(cell=LINE_CELL))
def test_a_tsv_reads_back_exactly(table):
    _reads_back(".tsv", *table)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
@FUZZ
@given(table=tables())
def test_json_jsonl_and_parquet_read_back_exactly(suffix, table):
    _reads_back(suffix, *table)


@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(raw=st.binary(max_size=200))
def test_any_bytes_read_or_fail_in_one_line(suffix, raw):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"input{suffix}"
        path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
        try:
            read = data.read_texts(str(path)) if suffix == ".txt" else data.read_table(str(path))
        except PlmError as error:
            assert "\n" not in str(error)
        else:
            assert read is not None


@FUZZ
@given(lines=st.lists(st.text(st.one_of(VISIBLE, TRICKY), max_size=20), min_size=1, max_size=6))
def test_text_lines_and_corpora_read_back_exactly(lines):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "lines.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        texts = [line for line in lines if line.strip()]
        if not texts:
            with pytest.raises(PlmError):
                data.read_texts(str(path))
            return
        assert data.read_texts(str(path))[0] == texts
        assert corpus.read_corpus([str(path)]).lines == [line.strip() for line in texts]
        assert corpus_cache.scan([path], [str(path)]).lines == len(texts)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_a_corpus_read_or_fail_in_one_line(raw):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "corpus.txt"
        path.write_bytes(raw)
        for read in (lambda: corpus.read_corpus([str(path)]), lambda: corpus_cache.scan([path], [str(path)])):
            try:
                read()
            except PlmError as error:
                assert "\n" not in str(error)
