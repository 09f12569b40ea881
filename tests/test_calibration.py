"""plmcli.calibration: temperature scaling fitted on validation, applied by predict, evaluate and serve."""

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


def test_predict_and_evaluate_apply_the_temperature(cli, tiny_classifier, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = [text for text, _ in sentiment_rows(12, seed=4)]
    run = cli("predict", "--model", tiny_classifier, *texts, "--format", "json", "--all-scores", "--precision", "fp32")
    assert run.exit_code == 0, run.stderr
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    temperature = json.loads((tiny_classifier / "config.json").read_text())["plm"]["temperature"]
    expected = calibration.softmax(logits, temperature)
    got = np.array([[row["prob_negative"], row["prob_positive"]] for row in json.loads(run.stdout)])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    data = write_csv(tmp_path / "test.csv", ["text", "label"], sentiment_rows(30, seed=4))
    run = cli("evaluate", data, "--model", tiny_classifier, "--output", tmp_path / "report", "--device", "cpu")
    assert run.exit_code == 0, run.stderr
    figures = json.loads((tmp_path / "report" / "metrics.json").read_text())["calibration"]
    assert figures["temperature"] == temperature
    assert set(figures["after"]) == {"ece", "nll", "brier", "mean_top_score", "accuracy"}
    assert (tmp_path / "report" / "reliability.png").is_file() and "Scores: ECE" in run.stdout


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
