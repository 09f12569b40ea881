"""`plm export`: ONNX graphs checked against torch on real rows, and predict, serve and fill-mask that run them.

Tiny random models of every task plm trains are written as plm writes them (config.json with its
``plm`` section), exported once per module, and compared with the torch model row by row.
"""

import json
import math
import random
import time
from pathlib import Path

import pytest

from tests.conftest import FILLER, NEGATIVE, POSITIVE, SPECIAL, sentiment_rows, snapshot, write_csv

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

PEOPLE = ["anna", "bob", "carla", "dmitri"]
TAGS = ["O", "B-PER", "I-PER"]
WORDS = sorted(set(POSITIVE + NEGATIVE + FILLER + PEOPLE + ["."]))


def _tokenizer():
    from transformers import BertTokenizer

    tokens = SPECIAL + WORDS
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)
    tokenizer.model_max_length = 64
    return tokenizer


def write_model(directory: Path, task: str, sharpen: float = 1.0) -> Path:
    """A tiny random model of ``task`` saved as plm finetune (or pretrain) saves it, with its plm settings."""
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertForSequenceClassification,
        BertForTokenClassification,
    )

    tokenizer = _tokenizer()
    labels = {
        "single-label": ["negative", "positive"],
        "multi-label": ["action", "comedy", "drama"],
        "regression": ["label"],  # plm names the one output after the target column
        "token-classification": TAGS,
        "masked-lm": ["LABEL_0", "LABEL_1"],
    }[task]
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    settings = {"text_column": "text", "label_column": "label", "max_length": 64}
    if task == "single-label":  # bf16 recorded for the torch side: the export's reference is still fp32
        settings |= {"task": task, "temperature": 1.7, "inference_precision": "bf16"}
    elif task == "multi-label":
        config.problem_type = "multi_label_classification"
        settings |= {"task": task, "thresholds": [0.45, 0.5, 0.55]}
    elif task == "regression":
        config.problem_type = "regression"
        settings |= {"task": task, "target_scale": {"mean": 3.0, "std": 1.5}}
    elif task == "token-classification":
        settings = {"task": task, "scheme": "IOB2", "max_length": 64}
    torch.manual_seed(0)
    model = {
        "token-classification": BertForTokenClassification,
        "masked-lm": BertForMaskedLM,
    }.get(task, BertForSequenceClassification)(config)
    if task != "masked-lm":
        config.plm = settings
        head = model.classifier
        with torch.no_grad():
            head.weight.mul_(sharpen)  # decisive logits: int8's rounding does not flip near-ties
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_check(directory: Path, task: str, count: int = 48) -> Path:
    """Labelled check rows of ``task``: a CSV (a CoNLL file for tags, text lines for a masked-LM)."""
    rng = random.Random(1)
    rows = sentiment_rows(count)
    if task == "single-label":
        return write_csv(directory / "check.csv", ["text", "label"], rows)
    if task == "multi-label":
        labelled = [(text, "|".join(rng.sample(["action", "comedy", "drama"], rng.randint(1, 2)))) for text, _ in rows]
        return write_csv(directory / "check.csv", ["text", "label"], labelled)
    if task == "regression":
        return write_csv(directory / "check.csv", ["text", "label"], [(text, rng.uniform(1, 5)) for text, _ in rows])
    if task == "token-classification":
        lines = []
        for text, _ in rows:
            person = rng.sample(PEOPLE, 2)
            words = person + text.split()
            tags = ["B-PER", "I-PER"] + ["O"] * len(text.split())
            lines += [f"{word} {tag}" for word, tag in zip(words, tags)] + [""]
        path = directory / "check.conll"
        path.write_text("\n".join(lines), encoding="utf-8")
        return path
    path = directory / "check.txt"
    path.write_text("\n".join(text for text, _ in rows) + "\n", encoding="utf-8")
    return path


TASKS = ["single-label", "multi-label", "regression", "token-classification", "masked-lm"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{task: (torch model dir, its fp32 export, the check file)}, exported once for the module."""
    from plmcli.config import ExportConfig
    from plmcli.export import export

    made = {}
    for task in TASKS:
        root = tmp_path_factory.mktemp(task)
        model = write_model(root / "model", task)
        check = write_check(root, task)
        export(ExportConfig(model=str(model), output=str(root / "onnx"), check=str(check)))
        made[task] = (model, root / "onnx", check)
    return made


@pytest.mark.parametrize("task", TASKS)
def test_an_fp32_export_scores_as_torch_fp32_does_within_1e4_at_batch_1_and_serves(exported, task):
    _, onnx, _ = exported[task]
    report = json.loads((onnx / "export.json").read_text())
    assert [item["batch_size"] for item in report["check"]["fp32"]] == [1, 64]
    for item in report["check"]["fp32"]:
        assert item["max_score_difference"] <= 1e-4 and item["agreement"] == 1.0
    assert {"model.onnx", "tokenizer.json", "config.json", "README.md", "manifest.json"} <= {
        path.name for path in onnx.iterdir()
    }
    section = json.loads((onnx / "config.json").read_text())
    assert section["plm_export"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    card = (onnx / "README.md").read_text()
    assert "## The check" in card and "torch fp32" in card and "ONNX fp32" in card


def test_the_export_keeps_plms_settings_and_its_metric_is_torchs(exported):
    model, onnx, _ = exported["single-label"]
    saved = json.loads((model / "config.json").read_text())["plm"]
    assert json.loads((onnx / "config.json").read_text())["plm"] == saved
    report = json.loads((onnx / "export.json").read_text())["check"]
    assert report["labelled"] and report["metric"] == "accuracy"
    assert all(item["metric"] == pytest.approx(report["torch_fp32_metric"]) for item in report["fp32"])


@pytest.mark.parametrize("task", ["single-label", "multi-label", "regression"])
def test_predict_on_the_export_gives_the_rows_the_torch_model_gives(cli, exported, task):
    model, onnx, check = exported[task]
    extra = ("--all-scores", "--top-k", "2") if task == "single-label" else ()
    rows = []
    for directory in (model, onnx):
        options = ("--file", check, "--format", "json", "--batch-size", "7", "--precision", "fp32", *extra)
        run = cli("predict", "--model", directory, *options)
        assert run.exit_code == 0, run.stderr
        rows.append(json.loads(run.stdout))
    torch_rows, onnx_rows = rows
    assert len(torch_rows) == len(onnx_rows) == 48
    for expected, found in zip(torch_rows, onnx_rows):
        assert expected.keys() == found.keys()
        for key, value in expected.items():
            if isinstance(value, float):
                assert found[key] == pytest.approx(value, abs=1e-4)
            else:
                assert found[key] == value


def test_predict_abstains_on_the_export_as_on_the_torch_model(cli, exported):
    model, onnx, check = exported["single-label"]
    scores = sorted(
        row["predicted_score"]
        for row in json.loads(cli("predict", "--model", model, "--file", check, "--format", "json").stdout)
    )
    gap = max(range(12, 36), key=lambda i: scores[i + 1] - scores[i])  # the line falls where no score is near it
    middle = f"{(scores[gap] + scores[gap + 1]) / 2:.9f}"
    options = (
        "--file",
        check,
        "--format",
        "csv",
        "--min-score",
        middle,
        "--abstain-label",
        "?",
        "--precision",
        "fp32",
    )
    runs = [cli("predict", "--model", directory, *options) for directory in (model, onnx)]
    assert [run.exit_code for run in runs] == [0, 0], runs[1].stderr
    labels = [[line.split(",")[2] for line in run.stdout.splitlines()[1:]] for run in runs]
    assert labels[0] == labels[1] and 12 < labels[0].count("?") <= 36


def test_a_tagger_export_gives_the_same_entities_and_fill_mask_the_same_fillers(cli, exported):
    model, onnx, _ = exported["token-classification"]
    texts = ["anna bob loved the movie", "carla dmitri hate it ."]
    runs = [cli("predict", "--model", d, *texts, "--format", "json") for d in (model, onnx)]
    assert [run.exit_code for run in runs] == [0, 0], runs[1].stderr
    expected, found = (json.loads(run.stdout) for run in runs)
    assert [[e["type"] for e in row["entities"]] for row in expected] == [
        [e["type"] for e in row["entities"]] for row in found
    ]
    masked, masked_onnx, _ = exported["masked-lm"]
    runs = [
        cli("fill-mask", "--model", d, "the movie was [MASK] .", "--format", "json") for d in (masked, masked_onnx)
    ]
    assert [run.exit_code for run in runs] == [0, 0], runs[1].stderr
    expected, found = (json.loads(run.stdout)[0]["masks"][0] for run in runs)
    assert [item["token"] for item in expected] == [item["token"] for item in found]
    assert [item["score"] for item in found] == pytest.approx([item["score"] for item in expected], abs=1e-4)


def test_serve_answers_from_the_export_as_predict_does(exported):
    from fastapi.testclient import TestClient

    from plmcli.config import ServeConfig
    from plmcli.serving import create_app

    model, onnx, _ = exported["single-label"]
    texts = ["good great film", "awful boring and dull"]
    answers = []
    for directory in (model, onnx):
        with TestClient(create_app(ServeConfig(model=str(directory), device="cpu"))) as client:
            deadline = time.monotonic() + 30
            while client.get("/health").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            answers.append(client.post("/predict", json={"texts": texts}).json()["predictions"])
    assert [row["label"] for row in answers[0]] == [row["label"] for row in answers[1]]
    assert [row["score"] for row in answers[1]] == pytest.approx([row["score"] for row in answers[0]], abs=1e-4)


def test_int8_export_is_checked_and_says_which_variant_it_kept(cli, tmp_path):
    model = write_model(tmp_path / "model", "single-label", sharpen=40.0)
    check = write_check(tmp_path, "single-label", count=64)
    run = cli("export", model, "--output", tmp_path / "int8", "--quantize", "int8", "--check", check)
    assert run.exit_code == 0, run.stderr
    assert "int8 (dynamic, per-channel weights" in run.stdout and "ONNX int8" in run.stdout
    report = json.loads((tmp_path / "int8" / "export.json").read_text())
    assert report["quantize"] == "int8" and [item["batch_size"] for item in report["check"]["int8"]] == [1, 64]
    assert all(item["agreement"] >= 0.99 for item in report["check"]["int8"])
    graph = (tmp_path / "int8" / "model.onnx").read_bytes()
    assert b"MatMulInteger" in graph
    predicted = cli("predict", "--model", tmp_path / "int8", "good great film", "--format", "json")
    assert predicted.exit_code == 0 and json.loads(predicted.stdout)[0]["label"] in ("negative", "positive")


def test_an_int8_export_the_check_refuses_leaves_nothing_behind(cli, tmp_path, monkeypatch):
    from plmcli import export_check

    monkeypatch.setattr(export_check, "MIN_AGREEMENT", 1.01)  # no int8 graph agrees on 101% of labels
    model = write_model(tmp_path / "model", "single-label", sharpen=40.0)
    check = write_check(tmp_path, "single-label", count=16)
    before = snapshot(tmp_path)
    run = cli("export", model, "--output", tmp_path / "out" / "int8", "--quantize", "int8", "--check", check)
    assert run.exit_code == 2
    assert run.error_line.startswith("Error: the int8 export agrees with torch fp32 on 100.0% of labels at batch 1")
    assert "nothing was written" in run.error_line and "--force" in run.error_line
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["check.csv", "model"]
    forced = cli("export", model, "--output", tmp_path / "forced", "--quantize", "int8", "--check", check, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "--force" in (tmp_path / "forced" / "README.md").read_text()
    assert json.loads((tmp_path / "forced" / "export.json").read_text())["forced"] is True


def test_an_int8_export_that_fails_whole_keeps_the_costliest_parts_in_fp32(cli, tmp_path, monkeypatch):
    from plmcli import export, export_check

    quantized = []  # the fp32 nodes each quantized graph kept
    quantize = export._quantize

    def recording(source, target, exclude):
        quantized.append(list(exclude))
        return quantize(source, target, exclude)

    failure = export_check.Judge.failure

    def fails_with_everything_quantized(self, measured, torch_metric):
        return "quantizing every part fails" if not quantized[-1] else failure(self, measured, torch_metric)

    monkeypatch.setattr(export, "_quantize", recording)
    monkeypatch.setattr(export_check.Judge, "failure", fails_with_everything_quantized)
    model = write_model(tmp_path / "model", "single-label", sharpen=40.0)
    check = write_check(tmp_path, "single-label", count=16)
    output = tmp_path / "int8"
    run = cli("export", model, "--output", output, "--quantize", "int8", "--check", check)
    assert run.exit_code == 0, run.stderr
    assert "measuring what quantizing each part costs" in run.stderr
    written = json.loads((output / "export.json").read_text())
    assert len(written["kept_fp32"]) == 1  # the first variant that passes keeps one part in fp32
    assert set(written["sensitivity"]) >= set(written["kept_fp32"])
    assert quantized[0] == [] and quantized[-1]  # every part first, then one part kept in fp32
    assert "Kept in fp32" in (output / "README.md").read_text()
    predicted = cli("predict", "--model", output, "good movie", "--format", "json")
    assert predicted.exit_code == 0, predicted.stderr


# ---- hostile input: one line each, nothing written ------------------------------------------------------------------


def _refused(cli, tmp_path, *args, code: int = 2) -> str:
    before = snapshot(tmp_path)
    run = cli(*map(str, args))
    assert run.exit_code == code, run.stderr
    assert run.error_line.startswith("Error: ") and len(run.stderr.strip().splitlines()) <= 2, run.stderr
    assert snapshot(tmp_path) == before
    return run.error_line


def test_a_directory_that_is_not_a_plm_model_is_refused(cli, tmp_path, tiny_base):
    (tmp_path / "empty").mkdir()
    line = _refused(cli, tmp_path, "export", tmp_path / "empty", "--output", tmp_path / "out")
    assert line == f"Error: {tmp_path / 'empty'} is not a model directory: config.json is missing."
    line = _refused(cli, tmp_path, "export", tiny_base, "--output", tmp_path / "out")
    assert "is not a model plm trains (BertModel)" in line


def test_no_check_rows_asks_for_check(cli, tmp_path):
    model = write_model(tmp_path / "model", "single-label")
    line = _refused(cli, tmp_path, "export", model, "--output", tmp_path / "out")
    assert "it was trained without a validation file. Pass --check FILE" in line


def test_nan_weights_are_refused(cli, tmp_path):
    from safetensors.torch import load_file, save_file

    model = write_model(tmp_path / "model", "single-label")
    weights = load_file(model / "model.safetensors")
    weights["classifier.weight"][0, 0] = math.nan
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    check = write_check(tmp_path, "single-label", count=8)
    line = _refused(cli, tmp_path, "export", model, "--output", tmp_path / "out", "--check", check, code=1)
    assert "gave NaN or infinite scores" in line


def test_an_existing_output_needs_overwrite_and_a_check_file_needs_a_text_column(cli, tmp_path, exported):
    model, onnx, check = exported["single-label"]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    line = _refused(cli, tmp_path, "export", model, "--output", tmp_path / "taken", "--check", check)
    assert line.endswith(
        "already exists and is not empty; pass --overwrite to replace it, or choose another --output."
    )
    numbers = write_csv(tmp_path / "numbers.csv", ["id", "stars"], [(1, 2), (1, 5)] * 3)  # no column of texts
    line = _refused(cli, tmp_path, "export", model, "--output", tmp_path / "out", "--check", numbers)
    assert line.startswith(f"Error: no text column found in {numbers}; found: id, stars.")
    unknown = write_csv(tmp_path / "unknown.csv", ["text", "label"], [("good film", "neutral")])
    line = _refused(cli, tmp_path, "export", model, "--output", tmp_path / "out", "--check", unknown)
    assert "has labels the model does not know: 'neutral'" in line


def test_a_broken_graph_or_a_mismatched_tokenizer_in_an_export_is_one_line(cli, tmp_path, exported):
    import shutil

    _, onnx, _ = exported["single-label"]
    broken = tmp_path / "broken"
    shutil.copytree(onnx, broken)
    (broken / "model.onnx").write_bytes(b"not a protobuf" * 10)
    line = _refused(cli, tmp_path, "predict", "--model", broken, "good film", code=1)
    assert line.startswith(f"Error: {broken / 'model.onnx'} is not an ONNX model onnxruntime can run")
    other = tmp_path / "other"
    shutil.copytree(onnx, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["zebra"] = len(tokenizer["model"]["vocab"])
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    line = _refused(cli, tmp_path, "predict", "--model", other, "good film", code=1)
    assert "tokenizer file tokenizer.json is not the one it was exported with" in line
    line = _refused(cli, tmp_path, "predict", "--model", onnx, "good film", "--precision", "bf16")
    assert "is an ONNX export, run as it was exported (none); leave out --precision bf16." in line


def test_export_help_does_not_import_torch():
    import subprocess

    from tests.conftest import plm_command

    code = "import sys, runpy; sys.argv = ['plm', 'export', '--help']\n"
    code += "try:\n    runpy.run_module('plmcli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
    code += "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules\n"
    done = subprocess.run([plm_command()[0], "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--quantize" in done.stdout
