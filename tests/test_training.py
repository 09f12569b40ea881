"""`plm finetune` end to end on a tiny BERT: artefacts, label names, refusals, reproducibility."""

import json

import pytest

from tests.conftest import plm_command, sentiment_rows, snapshot, write_csv

FAST = ["--epochs", "1", "--batch-size", "16", "--device", "cpu"]


def test_finetune_writes_a_standard_model_directory(cli, tiny_base, sentiment_csv, tmp_path):
    output = tmp_path / "out"
    run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", output, *FAST)
    assert run.exit_code == 0, run.stderr
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "metrics.json",
        "README.md",
        "loss_curve.png",
        "confusion_matrix.png",
    } <= {p.name for p in output.iterdir()}
    assert (output / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(output.glob("*.bin")) and not list(output.parent.glob(".out.partial-*"))

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(output)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert AutoTokenizer.from_pretrained(output)("great film")["input_ids"]

    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["validation_samples"] == 8 and metrics["train"]["samples"] == 72
    assert metrics["train"]["learning_rate"] == 1e-4  # the default for an encoder narrower than 768
    assert set(metrics["validation"]["per_class"]) == {"negative", "positive"}
    assert sum(sum(row) for row in metrics["validation"]["confusion_matrix"]) == 8
    assert 0.0 <= metrics["validation"]["accuracy"] <= 1.0
    assert "Validation (8 rows): accuracy" in run.stdout
    assert f"plm predict --model {output}" in run.stdout
    card = (output / "README.md").read_text()
    assert "`negative`, `positive`" in card and str(sentiment_csv) in card


def test_finetune_learns_the_toy_task(tiny_classifier):
    metrics = json.loads((tiny_classifier / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.9


def test_same_seed_gives_identical_metrics(cli, tiny_base, sentiment_csv, tmp_path):
    results = []
    for name in ("a", "b"):
        run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", tmp_path / name, "--seed", "7", *FAST)
        assert run.exit_code == 0, run.stderr
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        results.append((metrics["validation"], metrics["train"]["loss"]))
    assert results[0] == results[1]


def test_validation_file_and_integer_labels(cli, tiny_base, tmp_path):
    rows = [(t, "10" if y == "positive" else "2") for t, y in sentiment_rows(40)]
    train = write_csv(tmp_path / "train.csv", ["review", "stars"], rows)
    dev = write_csv(tmp_path / "dev.csv", ["content", "stars"], rows[:10])
    run = cli("finetune", train, "--validation", dev, "--model", tiny_base, "--output", tmp_path / "o", *FAST)
    assert run.exit_code == 0, run.stderr
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["id2label"] == {"0": "2", "1": "10"}
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["validation_samples"] == 10


def test_non_empty_output_is_refused_then_replaced_with_overwrite(cli, tiny_base, sentiment_csv, tmp_path):
    output = tmp_path / "out"
    assert cli("finetune", sentiment_csv, "--model", tiny_base, "--output", output, *FAST).exit_code == 0
    (output / "notes.txt").write_text("mine")
    before = snapshot(output)
    run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", output, *FAST)
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {output} already exists and is not empty; pass --overwrite to replace it, or choose another --output."
    )
    assert snapshot(output) == before
    run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", output, "--overwrite", "--seed", "3", *FAST)
    assert (run.exit_code, run.error_line) == (
        2,
        f"Error: --overwrite replaces only a directory plm wrote, and {output} holds what plm did not write "
        "(notes.txt), which would be lost; choose another --output.",
    )
    assert snapshot(output) == before
    (output / "notes.txt").unlink()
    (output / "eval").mkdir()  # a report plm evaluate wrote inside the model goes with it
    (output / "eval" / "manifest.json").write_text('{"versions": {"plm": "0"}}')
    run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", output, "--overwrite", "--seed", "3", *FAST)
    assert run.exit_code == 0, run.stderr
    assert (output / "model.safetensors").exists() and not (output / "eval").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "reviews.csv"]  # no staging or backup left


def test_overwrite_never_replaces_what_is_not_a_model(cli, tiny_base, sentiment_csv, tmp_path, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", folder, "--overwrite", *FAST)
    assert (run.exit_code, run.error_line) == (
        2,
        f"Error: --overwrite replaces only a directory plm wrote, and {folder} holds what plm did not write "
        "(thesis.tex), which would be lost; choose another --output.",
    )
    assert snapshot(folder) == {"thesis.tex": b"years of work"}
    (folder / "config.json").write_text('{"model_type": "bert"}')  # a config.json alone is not plm's mark
    (folder / "photos").mkdir()
    run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", folder, "--overwrite", *FAST)
    assert run.error_line.endswith(
        f"{folder} holds what plm did not write (config.json, photos, thesis.tex), "
        "which would be lost; choose another --output."
    )
    assert sorted(snapshot(folder)) == ["config.json", "thesis.tex"]
    (tmp_path / "config.json").write_text("{}")
    run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", tmp_path, "--overwrite", *FAST)
    assert (run.exit_code, run.error_line) == (
        2,
        f"Error: --output {tmp_path} holds the input {sentiment_csv}; choose another --output.",
    )
    monkeypatch.chdir(folder)
    run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", ".", "--overwrite", *FAST)
    assert (
        run.error_line == "Error: --output . is the working directory or one of its parents; choose another --output."
    )
    assert snapshot(folder) == {"thesis.tex": b"years of work", "config.json": b'{"model_type": "bert"}'}


@pytest.mark.parametrize(
    "content, options, message",
    [
        (None, [], "Error: file not found: {data}"),
        ("", [], "Error: {data} is empty; expected a header row and data rows."),
        ("text,label\n", [], "Error: {data} has a header but no rows."),
        (
            "text,label\ngood,x\nbad,x\nfine,x\n",
            [],
            "Error: {data} has a single label ('x') in column 'label'; a classifier needs at least 2. "
            "Check --label-column.",
        ),
        (
            "text,label\ngood,x\nbad,y\n",
            ["--label-column", "stars"],
            "Error: missing column 'stars' in {data}; found: text, label. Use --label-column to pick one.",
        ),
        (
            "text,label\ngood,x\nbad,y\n",
            ["--text-column", "body"],
            "Error: missing column 'body' in {data}; found: text, label. Use --text-column to pick one.",
        ),
    ],
)
def test_bad_data_gives_one_line_and_writes_nothing(cli, tiny_base, tmp_path, content, options, message):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    before = snapshot(tmp_path)
    run = cli("finetune", path, "--model", tiny_base, "--output", tmp_path / "out", *options, *FAST)
    assert run.exit_code == 2
    assert run.error_line == message.format(data=path)
    assert "Traceback" not in run.stderr
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_broken_model_directory_gives_one_line_and_writes_nothing(cli, tiny_base, sentiment_csv, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_base / "config.json").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_base / name).read_bytes())
    (broken / "model.safetensors").write_bytes((tiny_base / "model.safetensors").read_bytes()[:100])
    before = snapshot(tmp_path)
    run = cli("finetune", sentiment_csv, "--model", broken, "--output", tmp_path / "out", *FAST)
    assert run.exit_code == 1
    assert run.error_line.startswith(f"Error: {broken / 'model.safetensors'} is not a valid safetensors file (")
    assert "Traceback" not in run.stderr
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_model_without_config_or_missing_is_refused(cli, sentiment_csv, tmp_path):
    (tmp_path / "empty").mkdir()
    run = cli("finetune", sentiment_csv, "--model", tmp_path / "empty", "--output", tmp_path / "out", *FAST)
    assert (run.exit_code, run.error_line) == (
        2,
        f"Error: {tmp_path / 'empty'} is not a model directory: config.json is missing.",
    )
    run = cli("finetune", sentiment_csv, "--model", tmp_path / "nope", "--output", tmp_path / "out", *FAST)
    assert (run.exit_code, run.error_line) == (2, f"Error: model directory not found: {tmp_path / 'nope'}")


def test_unreachable_hub_id_names_the_offline_alternatives(cli, sentiment_csv, tmp_path):
    run = cli("finetune", sentiment_csv, "--model", "no-such-owner/no-such-model", "--output", tmp_path / "o", *FAST)
    assert run.exit_code == 1
    assert run.error_line.startswith(
        "Error: cannot load 'no-such-owner/no-such-model': it is not a local directory "
        "and the Hugging Face Hub cannot be reached."
    )
    assert "Use the bundled model (leave out --model)" in run.error_line
    assert not (tmp_path / "o").exists()


def test_pickle_only_model_is_refused(cli, tiny_base, sentiment_csv, tmp_path):
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (pickled / name).write_bytes((tiny_base / name).read_bytes())
    torch.save(load_file(tiny_base / "model.safetensors"), pickled / "pytorch_model.bin")
    run = cli("finetune", sentiment_csv, "--model", pickled, "--output", tmp_path / "out", *FAST)
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {pickled} has no safetensors weights; plm loads only model.safetensors "
        "(pickled .bin files can run code). Pass --allow-pickle if you trust this model."
    )


def test_hub_id_loads_from_the_local_hugging_face_cache(tiny_base, sentiment_csv, tmp_path):
    import os
    import subprocess

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--plm-test--tiny-bert"
    snapshot_dir = repo / "snapshots" / revision
    snapshot_dir.mkdir(parents=True)
    for path in tiny_base.iterdir():
        (snapshot_dir / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        plm_command("finetune", sentiment_csv, "--model", "plm-test/tiny-bert", "--output", tmp_path / "out", *FAST),
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Model: plm-test/tiny-bert with a new 2-label classification head" in result.stderr
    assert "fine-tuned from **plm-test/tiny-bert**" in (tmp_path / "out" / "README.md").read_text()


def test_max_length_beyond_the_model_is_capped_with_a_warning(cli, tiny_base, sentiment_csv, tmp_path):
    run = cli(
        "finetune", sentiment_csv, "--model", tiny_base, "--output", tmp_path / "o", "--max-length", "100", *FAST
    )
    assert run.exit_code == 0, run.stderr
    assert f"Warning: --max-length 100 is more than {tiny_base} takes; using 64." in run.stderr
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["max_length"] == 64
