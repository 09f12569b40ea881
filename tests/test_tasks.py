"""Pairs, multi-label, class weights, early stopping, long texts and the run manifest, by behaviour.

Each feature is checked by what it changes in the model's predictions or the files written, on
tiny random BERTs and toy data whose labels follow known words.
"""

import hashlib
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import FILLER, NEGATIVE, POSITIVE, snapshot, write_csv

FAST = ["--batch-size", "16", "--device", "cpu"]


def phrase(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.sample(FILLER, rng.randint(2, 5)) + rng.sample(words, 2))


def pair_rows(count: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(premise, reply, label): the label is the reply's sentiment; the premise's is independent noise."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "agree" if i % 2 == 0 else "disagree"
        premise = phrase(rng, rng.choice([POSITIVE, NEGATIVE]))
        rows.append((premise, phrase(rng, POSITIVE if label == "agree" else NEGATIVE), label))
    return rows


def tag_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, tags): 'praise' when the text has a positive word, 'complaint' for a negative one; some have both."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        kind = i % 3  # praise, complaint, both
        words = rng.sample(FILLER, rng.randint(2, 4))
        tags = []
        if kind in (0, 2):
            words += rng.sample(POSITIVE, 2)
            tags.append("praise")
        if kind in (1, 2):
            words += rng.sample(NEGATIVE, 2)
            tags.append("complaint")
        rng.shuffle(words)
        rows.append((" ".join(words), "|".join(reversed(tags)) if i % 2 else "|".join(tags)))
    return rows


# --- sentence pairs ---------------------------------------------------------------------------


def test_pairs_are_encoded_with_segment_ids_not_concatenated(tiny_base):
    from transformers import AutoTokenizer

    from plmcli import data

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    dataset, truncated = data.tokenize(["the plot was good"], [0], tokenizer, 64, pairs=["it was bad"])
    ids, types = dataset[0]["input_ids"], dataset[0]["token_type_ids"]
    assert ids.count(tokenizer.sep_token_id) == 2 and truncated == 0
    second = ids.index(tokenizer.sep_token_id) + 1
    assert set(types[:second]) == {0} and set(types[second:]) == {1}


def test_a_pair_model_reads_the_second_text(cli, tiny_base, tmp_path):
    train = write_csv(tmp_path / "pairs.csv", ["premise", "reply", "label"], pair_rows(160))
    output = tmp_path / "pairs-model"
    run = cli(
        "finetune", train, "--model", tiny_base, "--output", output, "--text-column", "premise",
        "--text-pair-column", "reply", "--epochs", "6", "--lr", "3e-3", *FAST,
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    metrics = json.loads((output / "metrics.json").read_text())
    # The label is in the reply alone: only a model that reads the pair can score well.
    assert metrics["validation"]["accuracy"] >= 0.9
    assert json.loads((output / "config.json").read_text())["plm"]["text_pair_column"] == "reply"

    # predict and evaluate find both columns by the names the model was trained with.
    rng = random.Random(5)
    fresh = [
        (phrase(rng, POSITIVE), phrase(rng, NEGATIVE), "disagree"),
        (phrase(rng, NEGATIVE), phrase(rng, POSITIVE), "agree"),
    ]
    test = write_csv(tmp_path / "test.csv", ["premise", "reply", "label"], fresh + pair_rows(40, seed=9))
    run = cli("predict", "--model", output, "--file", test, "--format", "json")
    assert run.exit_code == 0, run.stderr
    predictions = json.loads(run.stdout)
    assert [p["predicted_label"] for p in predictions[:2]] == ["disagree", "agree"]
    run = cli("evaluate", test, "--model", output, "--format", "json")
    assert run.exit_code == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["text_pair_column"] == "reply" and report["accuracy"] >= 0.9

    # Texts on the command line have no second text: one line, exit 2.
    run = cli("predict", "--model", output, "a good film")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {output} classifies text pairs (columns 'premise' and 'reply'); give them in a table with --file."
    )


def test_a_missing_pair_column_is_one_line_and_writes_nothing(cli, tiny_base, tmp_path):
    train = write_csv(tmp_path / "pairs.csv", ["premise", "reply", "label"], pair_rows(20))
    before = snapshot(tmp_path)
    run = cli("finetune", train, "--model", tiny_base, "--output", tmp_path / "out", "--text-pair-column", "answer")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: missing column 'answer' in {train}; found: premise, reply, label. Use --text-pair-column to pick one."
    )
    assert snapshot(tmp_path) == before


# --- multi-label --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, tiny_base):
    """A tiny multi-label model trained on tag_rows, and its data directory."""
    from plmcli.config import FinetuneConfig
    from plmcli.run import finetune

    directory = tmp_path_factory.mktemp("tags")
    train = write_csv(directory / "tags.csv", ["text", "tags"], tag_rows(180))
    output = directory / "tagger"
    result = finetune(
        FinetuneConfig(
            data=str(train), model=str(tiny_base), output=str(output), multi_label=True, epochs=8, lr=3e-3,
            batch_size=16, device="cpu",
        )
    )  # fmt: skip
    return output, result


def test_multi_label_learns_sets_and_saves_tuned_thresholds(tagger):
    output, result = tagger
    config = json.loads((output / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "complaint", "1": "praise"}
    thresholds = config["plm"]["thresholds"]
    assert len(thresholds) == 2 and all(0.05 <= t <= 0.95 for t in thresholds)
    validation = result.metrics["validation"]
    assert validation["micro_f1"] >= 0.9 and validation["macro_f1"] >= 0.9
    # A third of the rows have both labels; multi-label data gets tuned thresholds, not class weights.
    weighting = result.metrics["class_weights"]
    assert weighting["weights"] is None and weighting["reason"].startswith("multi-label")
    assert sum(weighting["counts"].values()) == pytest.approx(result.metrics["train"]["samples"] * 4 / 3, rel=0.05)
    assert [row["threshold"] for row in validation["per_class"].values()] == thresholds
    assert (output / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_multi_label_predict_gives_every_label_above_its_threshold(cli, tagger):
    output, _ = tagger
    run = cli(
        "predict",
        "--model",
        output,
        "the film was great and awful",
        "the plot was good",
        "--format",
        "json",
        "--all-scores",
    )
    assert run.exit_code == 0, run.stderr
    both, praise = json.loads(run.stdout)
    assert set(both["label"].split("|")) == {"praise", "complaint"}
    assert praise["label"] == "praise"
    thresholds = json.loads((output / "config.json").read_text())["plm"]["thresholds"]
    assert praise["prob_complaint"] < thresholds[0] <= both["prob_complaint"]


def test_multi_label_evaluate(cli, tagger, tmp_path):
    output, _ = tagger
    test = write_csv(
        tmp_path / "test.csv", ["text", "tags"], tag_rows(30, seed=3) + [("the plot was good", "complaint")]
    )
    run = cli("evaluate", test, "--model", output, "--output", tmp_path / "report")
    assert run.exit_code == 0, run.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["task"] == "multi-label" and metrics["micro_f1"] >= 0.85
    assert metrics["misclassified"] >= 1  # the last row is mislabelled on purpose
    errors = (tmp_path / "report" / "errors.csv").read_text()
    assert "the plot was good,complaint,praise," in errors
    assert "subset accuracy" in run.stdout and "(none)" in run.stdout


def test_multi_label_metric_choices_are_checked(cli, tiny_base, tmp_path):
    train = write_csv(tmp_path / "tags.csv", ["text", "tags"], tag_rows(30))
    run = cli(
        "finetune", train, "--model", tiny_base, "--multi-label", "--metric", "accuracy", "--output", tmp_path / "o"
    )
    assert run.exit_code == 2
    assert (
        run.error_line == "Error: --metric with --multi-label must be one of macro_f1, micro_f1, loss; got 'accuracy'."
    )
    run = cli("finetune", train, "--model", tiny_base, "--metric", "micro_f1", "--output", tmp_path / "o")
    assert run.exit_code == 2 and "--metric must be one of macro_f1, accuracy, weighted_f1, loss" in run.error_line
    assert not (tmp_path / "o").exists()


# --- class weights ------------------------------------------------------------------------------


def imbalanced_rows(count: int, seed: int) -> list[tuple[str, str]]:
    """9 negative rows to 1 positive, and an ambiguous signal: two positive words in every positive row and in a
    fifth of the negative ones. A text with them is positive about a third of the time: an unweighted model
    should call it negative, a balanced one positive."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        positive = i % 10 == 0
        words = rng.sample(FILLER, 3) + rng.sample(NEGATIVE, 2)
        if positive or rng.random() < 0.2:
            words += rng.sample(POSITIVE, 2)
        rng.shuffle(words)
        rows.append((" ".join(words), "positive" if positive else "negative"))
    return rows


@pytest.mark.slow  # two fine-tunes on an imbalanced set; the weights and the loss are checked by hand below
def test_class_weights_make_the_minority_class_predicted_more_often(cli, tiny_base, tmp_path):
    train = write_csv(tmp_path / "skewed.csv", ["text", "label"], imbalanced_rows(200, seed=1))
    probe = tmp_path / "probe.txt"
    probe.write_text("\n".join(text for text, _ in imbalanced_rows(100, seed=2)) + "\n")
    predicted_positive = {}
    for mode in ("auto", "none"):
        output = tmp_path / mode
        run = cli(
            "finetune", train, "--model", tiny_base, "--output", output, "--class-weights", mode,
            "--epochs", "6", "--lr", "3e-3", *FAST,
        )  # fmt: skip
        assert run.exit_code == 0, run.stderr
        metrics = json.loads((output / "metrics.json").read_text())
        predict = cli("predict", "--model", output, "--file", probe, "--format", "json")
        predicted_positive[mode] = sum(row["label"] == "positive" for row in json.loads(predict.stdout))
        if mode == "auto":  # 9:1 is more than 3:1, so auto weighs the classes: n / (classes x count)
            assert metrics["class_weights"]["weights"] == pytest.approx({"negative": 180 / 324, "positive": 180 / 36})
            assert "Class weights: negative 0.56, positive 5.00" in run.stdout
            assert "Class weights: `negative` 0.556, `positive` 5.000" in (output / "README.md").read_text()
        else:
            assert metrics["class_weights"]["weights"] is None
    assert predicted_positive["auto"] > predicted_positive["none"] + 5, predicted_positive


def test_class_weights_are_inverse_frequencies_and_weigh_the_loss():
    import torch

    from plmcli.tasks.classification import class_weighting, weighted_cross_entropy

    skewed = SimpleNamespace(
        label_names=["negative", "positive"], multi_label=False, train_labels=[0] * 180 + [1] * 20
    )
    auto = class_weighting("auto", skewed)
    assert auto["weights"] == pytest.approx({"negative": 200 / 360, "positive": 200 / 40})
    assert class_weighting("none", skewed)["weights"] is None
    logits, labels = torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1])
    loss = weighted_cross_entropy(list(auto["weights"].values()))({"logits": logits}, labels)
    each = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert float(loss) == pytest.approx(float((each[0] * 200 / 360 + each[1] * 5) / (200 / 360 + 5)))


def test_class_weights_auto_leaves_balanced_data_alone(tiny_classifier):
    weighting = json.loads((tiny_classifier / "metrics.json").read_text())["class_weights"]
    assert weighting["weights"] is None and weighting["reason"].startswith("the largest class has 1.0x")


# --- early stopping -----------------------------------------------------------------------------


def test_early_stopping_stops_and_keeps_the_best_model(cli, tiny_base, sentiment_csv, tmp_path):
    output = tmp_path / "stopped"
    # A learning rate this small changes nothing: macro-F1 cannot improve after the first evaluation.
    run = cli(
        "finetune", sentiment_csv, "--model", tiny_base, "--output", output, "--epochs", "10",
        "--early-stopping", "2", "--lr", "1e-12", *FAST,
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    stop = json.loads((output / "metrics.json").read_text())["early_stopping"]
    steps_per_epoch = 5  # 72 training rows in batches of 16
    assert stop["best_step"] == steps_per_epoch and stop["last_step"] == 3 * steps_per_epoch
    assert stop["stopped_early"] and stop["planned_steps"] == 10 * steps_per_epoch
    assert f"came at step {steps_per_epoch}; training stopped at step 15 of 50" in run.stdout
    assert not (output / "checkpoints").exists() and not list(output.glob("checkpoint-*"))


def test_early_stopping_saves_the_evaluation_with_the_best_metric(cli, tiny_base, sentiment_csv, tmp_path):
    output = tmp_path / "best"
    run = cli(
        "finetune", sentiment_csv, "--model", tiny_base, "--output", output, "--epochs", "6",
        "--early-stopping", "3", "--metric", "loss", "--lr", "3e-3", *FAST,
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    metrics = json.loads((output / "metrics.json").read_text())
    stop = metrics["early_stopping"]
    history = {entry["step"]: entry["loss"] for entry in stop["evaluations"]}
    best_step = min(history, key=history.get)
    assert stop["best_step"] == best_step and stop["best_value"] == pytest.approx(history[best_step])
    # The model written is that evaluation's model: its validation loss is the best one.
    assert metrics["validation"]["loss"] == pytest.approx(history[best_step], rel=1e-4)


# --- long texts ---------------------------------------------------------------------------------


def test_sliding_windows_read_what_truncation_cuts_off(cli, tiny_classifier):
    filler = " ".join(["the movie was a film"] * 12)  # 60 tokens of no sentiment
    texts = [f"{filler} great best wonderful", f"{filler} awful worst boring"]
    scores = {}
    for mode in ("truncate", "sliding"):
        run = cli(
            "predict",
            "--model",
            tiny_classifier,
            *texts,
            "--max-length",
            "24",
            "--long",
            mode,
            "--format",
            "json",
            "--all-scores",
        )
        assert run.exit_code == 0, run.stderr
        scores[mode] = json.loads(run.stdout)
    truncated, sliding = scores["truncate"], scores["sliding"]
    assert truncated[0]["prob_positive"] == truncated[1]["prob_positive"]  # both cut to the same filler
    assert sliding[0]["prob_positive"] > sliding[1]["prob_positive"] + 0.05  # the windows reach the sentiment


def test_sliding_equals_truncation_for_short_texts(tiny_classifier):
    from plmcli import modeling
    from plmcli.inference import classify

    tokenizer, model = modeling.load_classifier(str(tiny_classifier))
    texts = ["the film was great", "awful plot and boring acting", "it is a film"]
    truncated, long_truncated = classify(texts, tokenizer, model, 2, 32, "cpu", "fp32")
    windows, long_windows = classify(texts, tokenizer, model, 2, 32, "cpu", "fp32", sliding=True)
    assert long_truncated == long_windows == 0
    np.testing.assert_allclose(windows, truncated, rtol=1e-5, atol=1e-6)


def test_long_texts_are_counted_and_windows_said(cli, tiny_classifier):
    long = " ".join(["the movie was a film"] * 12)
    run = cli("predict", "--model", tiny_classifier, long, "short and good", "--max-length", "24")
    assert "1 of 2 texts were longer than 24 tokens and were truncated (--long sliding reads them whole" in run.stderr
    run = cli("predict", "--model", tiny_classifier, long, "short and good", "--max-length", "24", "--long", "sliding")
    assert (
        "1 of 2 texts were longer than 24 tokens; their scores are the average over overlapping windows." in run.stderr
    )


# --- manifest -------------------------------------------------------------------------------------


def test_finetune_writes_a_manifest_to_rerun_and_check_the_run(tiny_classifier):
    manifest = json.loads((tiny_classifier / "manifest.json").read_text())
    data_file = next(path for path in manifest["inputs"] if path.endswith("reviews.csv"))
    with open(data_file, "rb") as stream:
        assert manifest["inputs"][data_file]["sha256"] == hashlib.sha256(stream.read()).hexdigest()
    assert any(path.endswith("model.safetensors") for path in manifest["inputs"])  # the local base model too
    assert {"python", "plm", "torch", "transformers", "datasets"} <= set(manifest["versions"])
    assert manifest["seed"] == 42 and manifest["settings"]["epochs"] == 6
    assert manifest["resolved"]["text_column"] == "text" and manifest["resolved"]["learning_rate"] == 3e-3
    written = {path.name for path in tiny_classifier.iterdir() if path.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == written >= {"model.safetensors", "config.json", "metrics.json"}
    for name, recorded in manifest["files"].items():
        assert recorded["sha256"] == hashlib.sha256((tiny_classifier / name).read_bytes()).hexdigest()
    assert manifest["timing"]["runtime_seconds"] > 0 and manifest["timing"]["samples_per_second"] > 0


# --- check ----------------------------------------------------------------------------------------


def test_check_reads_pairs_and_multi_label_sets(cli, tmp_path):
    rows = [("a good film", "it was great", "agree"), ("a good film", "it was awful", "disagree")] * 3
    pairs = write_csv(tmp_path / "pairs.csv", ["premise", "reply", "label"], rows)
    run = cli("check", pairs, "--text-pair-column", "reply", "--format", "json")
    assert run.exit_code == 0, run.stderr
    report = json.loads(run.stdout)
    # Same premise, different replies: different examples, so no conflicting labels; 4 exact repeats.
    assert report["texts_with_several_labels"] == 0 and report["duplicate_rows"] == 4
    tags = write_csv(tmp_path / "tags.csv", ["text", "tags"], [("good", "b|a"), ("good", "a|b"), ("bad", "a")])
    report = json.loads(cli("check", tags, "--multi-label", "--format", "json").stdout)
    assert report["labels"] == {"a": 3, "b": 2} and report["duplicate_rows"] == 1
