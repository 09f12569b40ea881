"""plmcli.calibration: temperature scaling (and a beta map of the top score) fitted on validation, applied by
predict, evaluate and serve."""

import json

import numpy as np
import pytest

from plmcli import calibration
from tests.conftest import sentiment_rows, write_csv


def test_the_temperature_of_an_over_confident_model_is_found():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 2
    labels = np.array([rng.choice(3, p=p) for p in calibration.softmax(logits)])  # these logits are calibrated
    assert calibration.fit_temperature(logits * 3, labels) == pytest.approx(3.0, rel=0.1)  # 3x too sure
    assert calibration.fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.1)
    over = calibration.softmax(logits * 3)
    fitted = calibration.softmax(logits * 3, calibration.fit_temperature(logits * 3, labels))
    assert calibration.report(fitted, labels)["ece"] < calibration.report(over, labels)["ece"] / 3
    assert (fitted.argmax(1) == over.argmax(1)).all()  # labels never change


def too_sure_of_hard_rows(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """4-label logits whose top score s is right with probability sigmoid(1.7 (-ln(1 - s)) - 1.5), not s.

    Like a fine-tuned model on real data: scores of 0.6-0.9 are right far less often than that, scores
    near 1 a little more often. One temperature can't fix both ends; the beta map has this shape.
    """
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.3, 0.999, rows)
    logits = np.zeros((rows, 4))
    logits[:, 0] = np.log(3 * top / (1 - top))  # softmax gives label 0 the score ``top``
    right = rng.uniform(size=rows) < 1 / (1 + np.exp(-(1.7 * -np.log1p(-top) - 1.5)))
    labels = np.where(right, 0, rng.integers(1, 4, rows))
    order = rng.permuted(np.tile(np.arange(4), (rows, 1)), axis=1)  # the top label anywhere, not always first
    return np.take_along_axis(logits, np.argsort(order, axis=1), axis=1), order[np.arange(rows), labels]


def test_a_beta_map_fixes_what_one_temperature_cannot():
    logits, labels = too_sure_of_hard_rows(8000)
    temperature = calibration.fit_temperature(logits, labels)
    found = calibration.fit_beta(calibration.softmax(logits, temperature), labels)
    assert found["method"] == "beta" and found["a"] >= 0 and found["b"] >= 0
    fitted = calibration.Calibrator(temperature, found)
    held_out, held_labels = too_sure_of_hard_rows(8000, seed=1)
    by_temperature = calibration.report(calibration.softmax(held_out, temperature), held_labels)
    by_both = calibration.report(fitted(held_out), held_labels)
    assert by_both["ece"] < 0.02 < 0.03 < by_temperature["ece"]  # measured on rows the fit never saw
    assert by_both["nll"] < by_temperature["nll"]
    assert (fitted(held_out).argmax(1) == held_out.argmax(1)).all()  # labels never change


def test_remapping_the_top_score_keeps_labels_order_and_sums():
    rng = np.random.default_rng(3)
    probabilities = calibration.softmax(rng.normal(size=(500, 5)) * 2)
    for mapped in (lambda s: np.full_like(s, 0.01), calibration.beta_map({"a": 0.0, "b": 2.0, "c": -2.0})):
        remapped = calibration.remap_top(probabilities, mapped)
        assert (remapped.argmax(1) == probabilities.argmax(1)).all()
        assert (remapped.astype(np.float32).argmax(1) == probabilities.argmax(1)).all()  # as predict returns them
        np.testing.assert_allclose(remapped.sum(1), 1.0, atol=1e-9)
        assert (remapped >= 0).all()
        rest = np.sort(remapped, axis=1)[:, :-1] / np.sort(probabilities, axis=1)[:, :-1]
        np.testing.assert_allclose(rest, rest[:, :1] * np.ones_like(rest), rtol=1e-9)  # the others keep their ratios
    # a higher top score stays at least as high, where the map is not held above the second label's score
    free = mapped(probabilities.max(1)) > 0.5 + 1e-5
    order = np.argsort(probabilities.max(1)[free], kind="stable")
    assert free.sum() > 100 and (np.diff(remapped.max(1)[free][order]) >= -1e-12).all()
    one_hot = calibration.remap_top(np.array([[1.0, 0.0, 0.0]]), mapped)
    np.testing.assert_allclose(one_hot, [[1.0, 0.0, 0.0]])  # nothing to share with the other labels


def test_ece_against_a_hand_worked_example():
    # top scores 0.95 and 0.96 share bin 14 (both right), 0.85 (wrong), 0.62 (right) and 0.58 (wrong) are alone:
    # ECE = 2/5 x |1 - 0.955| + 1/5 x 0.85 + 1/5 x |1 - 0.62| + 1/5 x 0.58 = 0.018 + 0.17 + 0.076 + 0.116 = 0.38
    probabilities = np.array([[0.95, 0.05], [0.04, 0.96], [0.85, 0.15], [0.38, 0.62], [0.58, 0.42]])
    labels = np.array([0, 1, 1, 1, 1])
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(0.38)
    assert calibration.reliability(probabilities, labels) == [
        pytest.approx((0.58, 0.0, 1)),
        pytest.approx((0.62, 1.0, 1)),
        pytest.approx((0.85, 0.0, 1)),
        pytest.approx((0.955, 1.0, 2)),
    ]
    report = calibration.report(probabilities, labels)
    assert (report["ece"], report["accuracy"], report["mean_top_score"]) == (0.38, 0.6, 0.792)
    assert report["brier"] == pytest.approx(np.mean([0.005, 0.0032, 1.445, 0.2888, 0.6728]), abs=1e-4)


def test_finetune_fits_saves_and_reports_a_temperature(tiny_classifier):
    plm = json.loads((tiny_classifier / "config.json").read_text())["plm"]
    figures = json.loads((tiny_classifier / "metrics.json").read_text())["validation"]["calibration"]
    assert plm["temperature"] == figures["temperature"] > 0 and figures["method"] == "temperature"
    assert figures["after"]["nll"] <= figures["before"]["nll"]  # fitted to lower it, on these rows
    assert figures["after"]["accuracy"] == figures["before"]["accuracy"]
    assert (tiny_classifier / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "## What the scores mean" in (tiny_classifier / "README.md").read_text()


def predicted_and_by_hand(cli, model_dir) -> tuple[np.ndarray, np.ndarray]:
    """`plm predict --all-scores` on a dozen texts, and the model's logits for them computed with transformers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = [text for text, _ in sentiment_rows(12, seed=4)]
    run = cli("predict", "--model", model_dir, *texts, "--format", "json", "--all-scores", "--precision", "fp32")
    assert run.exit_code == 0, run.stderr
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    return np.array([[row["prob_negative"], row["prob_positive"]] for row in json.loads(run.stdout)]), logits


def test_predict_and_evaluate_apply_the_temperature(cli, tiny_classifier, tmp_path):
    got, logits = predicted_and_by_hand(cli, tiny_classifier)
    temperature = json.loads((tiny_classifier / "config.json").read_text())["plm"]["temperature"]
    np.testing.assert_allclose(got, calibration.softmax(logits, temperature), atol=1e-5)
    data = write_csv(tmp_path / "test.csv", ["text", "label"], sentiment_rows(30, seed=4))
    run = cli("evaluate", data, "--model", tiny_classifier, "--output", tmp_path / "report", "--device", "cpu")
    assert run.exit_code == 0, run.stderr
    figures = json.loads((tmp_path / "report" / "metrics.json").read_text())["calibration"]
    assert figures["temperature"] == temperature
    assert set(figures["after"]) == {"ece", "nll", "brier", "mean_top_score", "accuracy"}
    assert (tmp_path / "report" / "reliability.png").is_file() and "Scores: ECE" in run.stdout


def test_predict_and_evaluate_apply_a_saved_top_score_map(cli, tiny_classifier, tmp_path):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_classifier, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["plm"]["top_score_map"] = {"method": "beta", "a": 0.0, "b": 2.0, "c": -2.0}
    (model_dir / "config.json").write_text(json.dumps(config))
    got, logits = predicted_and_by_hand(cli, model_dir)
    fitted = calibration.Calibrator.of(config["plm"])
    np.testing.assert_allclose(got, fitted(logits), atol=1e-5)
    assert not np.allclose(got, calibration.softmax(logits, fitted.temperature), atol=1e-3)  # the map did something
    data = write_csv(tmp_path / "test.csv", ["text", "label"], sentiment_rows(30, seed=4))
    run = cli("evaluate", data, "--model", model_dir, "--output", tmp_path / "report", "--precision", "fp32")
    assert run.exit_code == 0, run.stderr
    figures = json.loads((tmp_path / "report" / "metrics.json").read_text())["calibration"]
    assert figures["top_score_map"] == config["plm"]["top_score_map"]
    assert figures["before"]["mean_top_score"] != figures["after"]["mean_top_score"]
    assert figures["before"]["accuracy"] == figures["after"]["accuracy"]
    assert "and a beta map of the top score" in run.stdout


def test_finetune_fits_a_beta_map_with_enough_rows_and_says_when_there_are_too_few(cli, tiny_base, tmp_path):
    rows = sentiment_rows(240)
    noisy = [(text, "negative" if i % 4 == 0 else label) for i, (text, label) in enumerate(rows)]  # 1 in 4 wrong
    data = write_csv(tmp_path / "reviews.csv", ["text", "label"], noisy)
    options = ["--epochs", "1", "--lr", "3e-3", "--batch-size", "16", "--device", "cpu", "--precision", "fp32"]
    run = cli("finetune", data, "--model", tiny_base, "--output", tmp_path / "beta", "--calibration", "beta",
              "--validation-split", "0.5", *options)  # fmt: skip
    assert run.exit_code == 0, run.stderr
    saved = json.loads((tmp_path / "beta" / "config.json").read_text())["plm"]
    figures = json.loads((tmp_path / "beta" / "metrics.json").read_text())["validation"]["calibration"]
    assert figures["method"] == "beta" and figures["validation_errors"] >= calibration.MIN_BETA_ROWS
    assert saved["top_score_map"] == figures["top_score_map"] and saved["top_score_map"]["method"] == "beta"
    assert figures["after"]["nll"] <= figures["before"]["nll"]
    assert figures["after"]["accuracy"] == figures["before"]["accuracy"]
    assert "beta map of the top score" in run.stdout
    assert "beta calibration" in (tmp_path / "beta" / "README.md").read_text()
    run = cli("finetune", data, "--model", tiny_base, "--output", tmp_path / "few", "--calibration", "beta",
              "--validation-split", "0.1", *options)  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "top_score_map" not in json.loads((tmp_path / "few" / "config.json").read_text())["plm"]
    assert "Scores are calibrated by the temperature alone: a top-score map needs at least" in run.stdout + run.stderr


@pytest.mark.slow  # two fine-tunes; the argmax is also held by the temperature test above
def test_calibration_none_keeps_raw_scores_and_the_same_labels(cli, tiny_base, tmp_path):
    data = write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(60))
    texts = [text for text, _ in sentiment_rows(20, seed=7)]
    answers = {}
    for method in ("temperature", "none"):
        output = tmp_path / method
        options = ["--epochs", "2", "--lr", "3e-3", "--batch-size", "16", "--device", "cpu", "--precision", "fp32"]
        run = cli("finetune", data, "--model", tiny_base, "--output", output, "--calibration", method, *options)
        assert run.exit_code == 0, run.stderr
        run = cli("predict", "--model", output, *texts, "--format", "json", "--precision", "fp32")
        answers[method] = json.loads(run.stdout)
    assert json.loads((tmp_path / "none" / "config.json").read_text())["plm"]["temperature"] == 1.0
    assert [row["label"] for row in answers["none"]] == [row["label"] for row in answers["temperature"]]


def test_coverage_and_the_threshold_for_a_target_accuracy_by_hand():
    # top scores 0.9 (right), 0.8 (right), 0.8 (wrong), 0.7 (right), 0.6 (wrong)
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 1, 1])
    table = calibration.coverage(probabilities, labels, shares=(1.0, 0.6, 0.2))
    assert [(row["rows"], row["accuracy"], row["min_score"]) for row in table] == [
        (5, 0.6, 0.6),
        (3, 0.6667, 0.8),
        (1, 1.0, 0.9),
    ]
    # 0.75 is reached by the top 4 (3 right of 4) at score 0.7; the ties at 0.8 are answered together
    assert calibration.threshold_for(probabilities, labels, 0.75) == {
        "target_accuracy": 0.75,
        "min_score": 0.7,
        "coverage": 0.8,
        "rows": 4,
        "accuracy": 0.75,
    }
    assert calibration.threshold_for(probabilities, labels, 0.7)["min_score"] == 0.7
    assert calibration.threshold_for(probabilities, labels, 1.0)["rows"] == 1
    assert calibration.threshold_for(np.array([[0.4, 0.6]]), np.array([0]), 0.5) is None


def test_min_score_abstains_and_writes_the_rows_to_review(cli, tiny_classifier, tmp_path):
    rows = [(text, str(i)) for i, (text, _) in enumerate(sentiment_rows(40, seed=11))]
    data = write_csv(tmp_path / "texts.csv", ["text", "id"], rows)
    run = cli("predict", "--model", tiny_classifier, "--file", data, "--format", "json", "--precision", "fp32")
    everything = json.loads(run.stdout)
    scores = sorted({row["score"] for row in everything if row["score"] < 1.0})
    threshold = round(scores[len(scores) // 2], 6)  # some rows below it, some at or above
    below = [row for row in everything if row["score"] < threshold]
    output, review = tmp_path / "labels.json", tmp_path / "review.csv"
    run = cli(
        "predict",
        "--model",
        tiny_classifier,
        "--file",
        data,
        "--output",
        output,
        "--precision",
        "fp32",
        "--min-score",
        threshold,
        "--abstain-label",
        "to check",
        "--review-file",
        review,
    )
    assert run.exit_code == 0, run.stderr
    assert f"{len(below)} of 40 rows scored below --min-score {threshold:g} and got the label 'to check'" in run.stderr
    answered = json.loads(output.read_text())
    assert [row["score"] for row in answered] == [row["score"] for row in everything]  # scores kept
    assert [row["label"] for row in answered] == [
        "to check" if row["score"] < threshold else row["label"] for row in everything
    ]
    import csv

    with open(review, newline="", encoding="utf-8") as stream:
        assert [row["id"] for row in csv.DictReader(stream)] == [row["id"] for row in below]
    run = cli("predict", "--model", tiny_classifier, below[0]["text"], "--min-score", threshold, "--format", "json")
    assert json.loads(run.stdout)[0]["label"] is None
    run = cli("predict", "--model", tiny_classifier, "good", "--review-file", review, "--overwrite")
    assert (run.exit_code, run.error_line) == (
        2,
        "Error: --abstain-label and --review-file need --min-score, the score below which rows abstain.",
    )


def test_evaluate_prints_coverage_and_predict_answers_as_it_says(cli, tiny_classifier, tmp_path):
    data = write_csv(tmp_path / "test.csv", ["text", "label"], sentiment_rows(60, seed=12))
    report = tmp_path / "report"
    run = cli(
        "evaluate",
        data,
        "--model",
        tiny_classifier,
        "--output",
        report,
        "--target-accuracy",
        "0.9",
        "--precision",
        "fp32",
    )
    assert run.exit_code == 0, run.stderr
    metrics = json.loads((report / "metrics.json").read_text())
    assert [row["coverage"] for row in metrics["coverage"]] == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    assert metrics["coverage"][0]["accuracy"] == metrics["accuracy"]
    assert (report / "coverage.png").is_file() and "rows answered" in run.stdout
    target = metrics["target_accuracy"]
    if target["min_score"] is not None:  # the tiny model reaches 0.9 on its most confident rows
        assert "To reach accuracy 0.9 on this data: --min-score" in run.stdout
        run = cli(
            "predict",
            "--model",
            tiny_classifier,
            "--file",
            data,
            "--format",
            "json",
            "--precision",
            "fp32",
            "--min-score",
            target["min_score"],
        )
        answered = [row for row in json.loads(run.stdout) if row["predicted_label"] is not None]
        assert len(answered) == target["rows"]
        right = sum(row["predicted_label"] == row["label"] for row in answered)
        assert right / len(answered) == pytest.approx(target["accuracy"], abs=1e-4)
