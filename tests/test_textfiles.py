"""Every reader takes gzip, UTF-16 and UTF-32 by their marks, and refuses binary data in one line."""

import codecs
import gzip
import io
import json
import zipfile

import pandas as pd
import pytest

from plmcli import corpus, corpus_cache, data
from plmcli.errors import PlmError
from tests.conftest import sentiment_rows, write_csv

ROWS = [('a good film, "truly"', "positive"), ("dull; and long", "negative"), ("héllo wörld ✓", "positive")]


def _table(path, kind):
    """ROWS written as ``kind`` at ``path``."""
    frame = pd.DataFrame(ROWS, columns=["text", "label"])
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "tsv":  # as GLUE writes them: no quoting
        path.write_text("".join("\t".join(row) + "\n" for row in [("text", "label"), *ROWS]), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(frame.to_dict("records"), ensure_ascii=False), encoding="utf-8")
    elif kind == "jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("kind", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_table_format_reads_the_same_gzipped(tmp_path, kind):
    plain = _table(tmp_path / f"rows.{kind}", kind)
    zipped = tmp_path / f"rows.{kind}.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    expected = data.read_table(str(plain))
    assert expected.values.tolist() == [list(row) for row in ROWS]
    pd.testing.assert_frame_equal(data.read_table(str(zipped)), expected)


def test_a_gzipped_csv_reads_whatever_its_name_or_encoding_option(tmp_path):
    plain = _table(tmp_path / "rows.csv", "csv")
    renamed = tmp_path / "renamed.csv"  # gzip bytes under a plain name
    renamed.write_bytes(gzip.compress(plain.read_bytes()))
    assert data.read_table(str(renamed)).values.tolist() == [list(row) for row in ROWS]
    latin = tmp_path / "latin.csv.gz"  # what following a latin-1 hint used to turn into one garbled text
    latin.write_bytes(gzip.compress(plain.read_text(encoding="utf-8").encode("latin-1", errors="replace")))
    assert data.read_table(str(latin), encoding="latin-1")["text"].tolist()[:2] == [ROWS[0][0], ROWS[1][0]]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_utf_16_and_32_with_a_byte_order_mark_read_as_text(tmp_path, codec):
    plain = _table(tmp_path / "rows.csv", "csv")
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE, "utf-32-le": codecs.BOM_UTF32_LE}
    wide = tmp_path / "wide.csv"
    wide.write_bytes(bom[codec] + plain.read_text(encoding="utf-8").encode(codec))
    pd.testing.assert_frame_equal(data.read_table(str(wide)), data.read_table(str(plain)))
    lines = tmp_path / "lines.txt"
    lines.write_bytes(bom[codec] + "first text\r\nsecond text\n".encode(codec))
    assert data.read_texts(str(lines))[0] == ["first text", "second text"]
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_bytes(bom[codec] + "one line\n\nnext document\n".encode(codec))
    assert corpus.read_corpus([str(corpus_file)]).lines == ["one line", "next document"]
    streamed = corpus_cache.scan([corpus_file], [str(corpus_file)])
    assert (streamed.lines, streamed.documents) == (2, 2)


def _zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return path


@pytest.mark.parametrize("name", ["sheet.xlsx", "rows.csv", "lines.txt"])
def test_a_zip_archive_is_refused_as_one(tmp_path, name):
    path = _zip(tmp_path / name)
    read = data.read_texts if name != "rows.csv" else data.read_table
    with pytest.raises(PlmError) as error:
        read(str(path))
    assert str(error.value) == (
        f"{path} is a ZIP archive (an Excel .xlsx workbook, a .docx, or zipped files), not text; save it as CSV, "
        "or unzip it."
    )


def test_predict_refuses_a_fake_spreadsheet_in_one_line(cli, tiny_classifier, tmp_path):
    path = _zip(tmp_path / "reviews.xlsx")
    run = cli("predict", "--model", tiny_classifier, "--file", path)
    assert run.exit_code == 2 and run.error_line.startswith(f"Error: {path} is a ZIP archive")


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
@pytest.mark.parametrize(
    "content, where",
    [(b"text,label\ngood,x\nba\x00d,y\n", " (a NUL byte on line 3)"), (bytes(range(1, 9)) * 400, "")],
    ids=["nul", "control-bytes"],
)
def test_binary_data_is_refused_never_given_encoding_advice(tmp_path, encoding, content, where):
    for name in ("rows.csv", "lines.txt", "corpus.txt"):
        path = tmp_path / name
        path.write_bytes(content)
        message = (
            f"{path} holds binary data, not text{where}; plm reads CSV, TSV, JSON, JSONL and text files (also "
            "gzipped) and Parquet."
        )
        if name == "corpus.txt":
            with pytest.raises(PlmError, match="binary"):  # the streamed reader checks line by line
                corpus_cache.scan([path], [str(path)])
            read = lambda: corpus.read_corpus([str(path)])  # noqa: E731
        else:
            reader = data.read_table if name == "rows.csv" else data.read_texts
            read = lambda: reader(str(path), encoding=encoding)  # noqa: E731
        with pytest.raises(PlmError) as error:
            read()
        assert str(error.value) == message and "latin" not in str(error.value)


def test_latin_1_text_still_gets_its_hint(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes("text,label\ncaf\u00e9,x\n".encode("latin-1"))
    with pytest.raises(PlmError, match="like --encoding latin-1"):
        data.read_table(str(path))
    assert data.read_table(str(path), encoding="latin-1")["text"].tolist() == ["caf\u00e9"]


def test_finetune_and_evaluate_read_a_gzipped_csv(cli, tiny_base, tmp_path):
    plain = write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(60))
    zipped = tmp_path / "reviews.csv.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    output = tmp_path / "model"
    run = cli("finetune", zipped, "--model", tiny_base, "--output", output, "--epochs", "1", "--device", "cpu")
    assert run.exit_code == 0, run.stderr
    run = cli("evaluate", zipped, "--model", output, "--device", "cpu", "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert json.load(io.StringIO(run.stdout))["samples"] == 60
