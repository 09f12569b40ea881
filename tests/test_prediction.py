"""plmcli.prediction: a file is predicted and written a chunk at a time, with the same output as all at once."""

import json

import pytest

from plmcli import formats, inference, modeling, prediction
from tests.conftest import sentiment_rows, write_csv


@pytest.mark.parametrize(
    "output_format, cpu_bf16", [("csv", "1"), ("json", "0"), ("jsonl", "1"), ("table", "0")], ids=lambda v: v
)
def test_chunks_give_the_bytes_of_one_pass(cli, tiny_classifier, tmp_path, monkeypatch, output_format, cpu_bf16):
    monkeypatch.setenv(modeling.FORCE_CPU_BF16, cpu_bf16)
    rows = [(text, label, str(i)) for i, (text, label) in enumerate(sentiment_rows(50, seed=5))]
    rows[7] = ("", "positive", "7")  # an empty text keeps its place
    data = write_csv(tmp_path / "texts.csv", ["text", "label", "id"], rows)

    def predicted(chunk: int, name: str) -> str:
        monkeypatch.setattr(prediction, "CHUNK", chunk)
        monkeypatch.setattr(inference, "TOKENIZE_CHUNK", chunk)
        output = tmp_path / name
        run = cli(
            "predict", "--model", tiny_classifier, "--file", data, "--output", output, "--format", output_format,
            "--top-k", "2", "--batch-size", "4",
        )  # fmt: skip
        assert run.exit_code == 0, run.stderr
        assert f"Wrote 50 predictions to {output}" in run.stderr
        return output.read_text(encoding="utf-8")

    # the batches run over the whole input whatever the chunks, so the scores are the same bits
    assert predicted(7, "chunked") == predicted(4096, "whole")


def test_csv_and_json_stream_to_stdout_as_one_pass_would_print_them(cli, tiny_classifier, tmp_path, monkeypatch):
    data = tmp_path / "texts.txt"
    data.write_text("".join(f"{text}\n" for text, _ in sentiment_rows(20)), encoding="utf-8")
    printed = {}
    for chunk in (4096, 3):
        monkeypatch.setattr(prediction, "CHUNK", chunk)
        run = cli("predict", "--model", tiny_classifier, "--file", data, "--format", "json", "--precision", "fp32")
        assert run.exit_code == 0, run.stderr
        printed[chunk] = run.stdout
    assert printed[3] == printed[4096]
    assert [row["text"] for row in json.loads(printed[3])] == [text for text, _ in sentiment_rows(20)]


def test_a_failure_mid_file_leaves_no_output(cli, tiny_classifier, tmp_path, monkeypatch):
    data = tmp_path / "texts.txt"
    data.write_text("".join(f"{text}\n" for text, _ in sentiment_rows(20)), encoding="utf-8")
    monkeypatch.setattr(prediction, "CHUNK", 5)
    add = formats.ChunkWriter.add

    def disk_full_at_the_third_chunk(writer, rows):
        if writer.count >= 10:
            raise OSError(28, "No space left on device")
        add(writer, rows)

    monkeypatch.setattr(formats.ChunkWriter, "add", disk_full_at_the_third_chunk)
    run = cli("predict", "--model", tiny_classifier, "--file", data, "--output", tmp_path / "labels.csv")
    assert (run.exit_code, run.error_line) == (1, "Error: No space left on device")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["texts.txt"]  # no partial file, no temporary
