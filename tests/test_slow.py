"""The real bundled model on real data (minutes on 2 CPU cores): run with `make test-slow`."""

import csv
import json
from pathlib import Path

import pytest

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SST2 / "train.tsv").exists(), reason="needs ../shared/data/sst2"),
]


def test_bundled_model_learns_sst2_and_predicts_the_dev_file(cli, tmp_path):
    model = tmp_path / "sst2"
    run = cli(
        "finetune",
        SST2 / "train.tsv",
        "--validation",
        SST2 / "dev.tsv",
        "--max-train-samples",
        "1500",
        "--epochs",
        "1",
        "--output",
        model,
    )
    assert run.exit_code == 0, run.stderr
    assert "text column 'sentence', label column 'label'" in run.stderr
    assert "Validation columns: text 'content', label 'label'." in run.stderr
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["validation_samples"] == 872
    assert metrics["validation"]["accuracy"] >= 0.70

    predictions = tmp_path / "preds.csv"
    run = cli("predict", "--model", model, "--file", SST2 / "dev.tsv", "--output", predictions)
    assert run.exit_code == 0, run.stderr
    with open(predictions, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 872 and list(rows[0]) == ["label", "content", "predicted_label", "predicted_score"]
    agreement = sum(r["label"] == r["predicted_label"] for r in rows) / len(rows)
    assert agreement == pytest.approx(metrics["validation"]["accuracy"], abs=0.01)


def test_bundled_model_pretrains_on_sst2_sentences_and_fills_masks(cli, tmp_path):
    with open(SST2 / "train.tsv", newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        sentences = [row["sentence"].strip() for _, row in zip(range(3000), reader)]
    corpus = tmp_path / "sentences.txt"
    corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    model = tmp_path / "pretrained"
    run = cli("pretrain", corpus, "--max-steps", "20", "--output", model)
    assert run.exit_code == 0, run.stderr
    assert "all-MiniLM-L6-v2 (bundled) has no trained masked-LM head; starting it fresh." in run.stderr
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 20
    assert metrics["perplexity_ratio"] >= 10  # a new head on a trained encoder learns fast
    run = cli("fill-mask", "--model", model, "--format", "json", "the movie was [MASK] .")
    assert run.exit_code == 0, run.stderr
    fillers = json.loads(run.stdout)[0]["masks"][0]
    assert len(fillers) == 5 and any(filler["token"].isalpha() for filler in fillers)
