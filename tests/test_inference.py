"""`plm predict`: formats, files, input columns kept, batch-size invariance, refusals."""

import csv
import io
import json

import pytest

from tests.conftest import sentiment_rows, snapshot, write_csv


def test_predict_texts_as_a_table(cli, tiny_classifier):
    run = cli("predict", "--model", tiny_classifier, "great wonderful film", "awful boring plot")
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["text", "label", "score"]
    assert lines[2].split()[-2] == "positive" and lines[3].split()[-2] == "negative"


def test_predict_json_with_top_k_and_all_scores(cli, tiny_classifier):
    run = cli(
        "predict",
        "--model",
        tiny_classifier,
        "--format",
        "json",
        "--top-k",
        "2",
        "--all-scores",
        "the best brilliant movie",
        "the worst dull movie",
    )
    assert run.exit_code == 0, run.stderr
    rows = json.loads(run.stdout)
    assert [r["label"] for r in rows] == ["positive", "negative"]
    for row in rows:
        assert row["score"] >= row["score_2"] and {row["label"], row["label_2"]} == {"positive", "negative"}
        assert row["prob_positive"] + row["prob_negative"] == pytest.approx(1.0, abs=1e-5)
        assert row["score"] == max(row["prob_positive"], row["prob_negative"])


def test_predict_csv_file_keeps_every_input_column(cli, tiny_classifier, tmp_path):
    rows = [(str(i), text, gold) for i, (text, gold) in enumerate(sentiment_rows(30, seed=5))]
    source = write_csv(tmp_path / "in.csv", ["id", "review", "label"], rows)
    output = tmp_path / "preds.csv"
    run = cli("predict", "--model", tiny_classifier, "--file", source, "--output", output)
    assert run.exit_code == 0, run.stderr
    assert f"Wrote 30 predictions to {output}" in run.stderr
    with open(output, newline="") as stream:
        written = list(csv.DictReader(stream))
    assert list(written[0]) == ["id", "review", "label", "predicted_label", "predicted_score"]
    assert [(r["id"], r["review"], r["label"]) for r in written] == rows
    agreement = sum(r["label"] == r["predicted_label"] for r in written) / len(written)
    assert agreement >= 0.9


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-5), ("bf16", 2e-2)])
def test_labels_do_not_depend_on_batch_size(cli, tiny_classifier, tmp_path, precision, tolerance):
    """Scores agree across batch sizes to within what the precision resolves (bf16: 8 bits of mantissa)."""
    texts = [t for t, _ in sentiment_rows(37, seed=9)] + ["great " * 40]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n")
    outputs = []
    for batch_size in ("1", "5", "64"):
        run = cli(
            "predict",
            "--model",
            tiny_classifier,
            "--file",
            source,
            "--format",
            "json",
            "--batch-size",
            batch_size,
            "--all-scores",
            "--precision",
            precision,
        )
        assert run.exit_code == 0, run.stderr
        outputs.append(json.loads(run.stdout))
    assert [r["text"] for r in outputs[0]] == texts  # input order
    for other in outputs[1:]:
        decided = [i for i, r in enumerate(outputs[0]) if abs(r["prob_positive"] - 0.5) > tolerance]
        assert len(decided) > len(texts) // 2
        assert [other[i]["label"] for i in decided] == [outputs[0][i]["label"] for i in decided]
        expected = [r["prob_positive"] for r in outputs[0]]
        assert [r["prob_positive"] for r in other] == pytest.approx(expected, abs=tolerance)


def test_long_texts_are_truncated_and_counted(cli, tiny_classifier):
    run = cli("predict", "--model", tiny_classifier, "good " * 200, "bad film")
    assert run.exit_code == 0, run.stderr
    assert "Warning: 1 of 2 texts were longer than 64 tokens and were truncated (--long sliding" in run.stderr


def test_stdin_lines(cli, tiny_classifier):
    run = cli("predict", "--model", tiny_classifier, "--file", "-", "--format", "csv", stdin="great fun\n\nawful\n")
    assert run.exit_code == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert [r["text"] for r in rows] == ["great fun", "awful"]


def test_a_masked_lm_is_not_a_classifier(cli, tiny_mlm):
    run = cli("predict", "--model", tiny_mlm, "some text")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {tiny_mlm} is not a text classifier (it is BertForMaskedLM); fine-tune one "
        "with `plm finetune DATA` and pass its directory to --model."
    )


def test_a_classifier_without_label_names_is_refused(cli, tiny_classifier, tmp_path):
    unnamed = tmp_path / "unnamed"
    unnamed.mkdir()
    for path in tiny_classifier.iterdir():
        (unnamed / path.name).write_bytes(path.read_bytes())
    config = json.loads((unnamed / "config.json").read_text())
    config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1"}
    config["label2id"] = {"LABEL_0": 0, "LABEL_1": 1}
    (unnamed / "config.json").write_text(json.dumps(config))
    run = cli("predict", "--model", unnamed, "text")
    assert run.exit_code == 2
    assert "has no label names in config.json" in run.error_line
    assert "LABEL_0" not in run.stdout


def test_missing_default_model_and_existing_output(cli, tiny_classifier, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = cli("predict", "hello")
    assert (run.exit_code, run.error_line) == (
        2,
        "Error: no model at runs/finetune; train one with `plm finetune DATA`, or pass --model.",
    )
    existing = tmp_path / "preds.csv"
    existing.write_text("old")
    before = snapshot(tmp_path)
    run = cli("predict", "--model", tiny_classifier, "--output", existing, "hello")
    assert run.exit_code == 2
    assert (
        run.error_line
        == f"Error: {existing} already exists; pass --overwrite to replace it, or choose another --output."
    )
    assert snapshot(tmp_path) == before


def test_texts_and_file_together_are_refused(cli, tiny_classifier, tmp_path):
    run = cli("predict", "--model", tiny_classifier, "--file", tmp_path / "t.txt", "hello")
    assert (run.exit_code, run.error_line) == (2, "Error: give texts as arguments or --file, not both.")
    run = cli("predict", "--model", tiny_classifier)
    assert run.exit_code == 2 and "nothing to predict" in run.error_line


def test_output_format_follows_the_extension(cli, tiny_classifier, tmp_path):
    output = tmp_path / "preds.jsonl"
    run = cli("predict", "--model", tiny_classifier, "--output", output, "great fun", "awful")
    assert run.exit_code == 0, run.stderr
    lines = output.read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["great fun", "awful"]
    assert oct(output.stat().st_mode & 0o777) != oct(0o600)
    run = cli("predict", "--model", tiny_classifier, "--output", tmp_path / "preds.xlsx", "great fun")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: cannot tell the format of --output {tmp_path / 'preds.xlsx'} from '.xlsx'; "
        "pass --format table|json|jsonl|csv."
    )
    assert not (tmp_path / "preds.xlsx").exists()


def test_top_k_and_all_scores_columns_do_not_collide(cli, tiny_classifier):
    run = cli("predict", "--model", tiny_classifier, "--format", "csv", "--top-k", "2", "--all-scores", "great fun")
    header = run.stdout.splitlines()[0].split(",")
    assert header == ["text", "label", "score", "label_2", "score_2", "prob_negative", "prob_positive"]
