"""`plm evaluate`: metrics agree with the predictions, report files, refusals."""

import csv
import json

from tests.conftest import sentiment_rows, snapshot, write_csv


def _labelled(tmp_path, flipped: int = 3):
    """30 rows with the first `flipped` gold labels wrong, so the model must get those rows 'wrong'."""
    rows = []
    for i, (text, label) in enumerate(sentiment_rows(30, seed=11)):
        if i < flipped:
            label = "negative" if label == "positive" else "positive"
        rows.append((f"id{i}", text, label))
    return write_csv(tmp_path / "test.csv", ["id", "blurb", "label"], rows), rows


def test_evaluate_writes_a_report_that_matches_predict(cli, tiny_classifier, tmp_path):
    data, rows = _labelled(tmp_path)
    output = tmp_path / "report"
    run = cli("evaluate", data, "--model", tiny_classifier, "--output", output)
    assert run.exit_code == 0, run.stderr
    assert sorted(p.name for p in output.iterdir()) == [
        "confusion_matrix.png",
        "coverage.png",
        "errors.csv",
        "manifest.json",
        "metrics.json",
        "reliability.png",
    ]
    assert (output / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = json.loads((output / "metrics.json").read_text())
    predicted = json.loads(cli("predict", "--model", tiny_classifier, "--file", data, "--format", "json").stdout)
    wrong = [p for p in predicted if p["label"] != p["predicted_label"]]
    assert metrics["samples"] == 30 and metrics["text_column"] == "blurb"
    assert metrics["misclassified"] == len(wrong) >= 3
    assert metrics["accuracy"] == (30 - len(wrong)) / 30
    assert sum(map(sum, metrics["confusion_matrix"])) == 30
    with open(output / "errors.csv", newline="") as stream:
        errors = list(csv.DictReader(stream))
    assert {e["id"] for e in errors} == {p["id"] for p in wrong} and {"id0", "id1", "id2"} <= {e["id"] for e in errors}
    assert list(errors[0]) == ["id", "blurb", "label", "predicted_label", "predicted_score"]
    scores = [float(e["predicted_score"]) for e in errors]
    assert scores == sorted(scores, reverse=True)  # the most confident mistakes first
    assert f"Misclassified: {len(wrong)} of 30" in run.stdout and "Confusion matrix" in run.stdout


def test_evaluate_json_and_default_output_beside_the_model(cli, tiny_classifier, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_classifier, model)
    data, _ = _labelled(tmp_path, flipped=0)
    run = cli("evaluate", data, "--model", model, "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout)["samples"] == 30
    assert (model / "eval" / "metrics.json").exists()
    before = snapshot(model / "eval")
    run = cli("evaluate", data, "--model", model)
    assert run.exit_code == 2 and "already exists and is not empty; pass --overwrite" in run.error_line
    assert snapshot(model / "eval") == before
    assert cli("evaluate", data, "--model", model, "--overwrite").exit_code == 0


def test_labels_the_model_does_not_know_are_refused(cli, tiny_classifier, tmp_path):
    data = write_csv(tmp_path / "t.csv", ["text", "label"], [("great fun", "positive"), ("meh", "neutral")])
    run = cli("evaluate", data, "--model", tiny_classifier, "--output", tmp_path / "r")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {data} has labels the model does not know: 'neutral'; the model's labels are: negative, positive."
    )
    assert not (tmp_path / "r").exists()


def test_evaluate_needs_a_label_column(cli, tiny_classifier, tmp_path):
    data = write_csv(tmp_path / "t.csv", ["text"], [("great fun",), ("awful",)])
    run = cli("evaluate", data, "--model", tiny_classifier, "--output", tmp_path / "r")
    assert run.exit_code == 2 and run.error_line.startswith(f"Error: no label column found in {data}")
