"""--precision auto on the CPU: bf16 where it is fast, and for predict only where validation shows no loss."""

import json
from pathlib import Path

import numpy as np
import pytest

from plmcli import modeling
from plmcli.config import FinetuneConfig, PredictConfig
from plmcli.inference import load_for_inference
from plmcli.run import finetune
from tests.conftest import sentiment_rows, write_csv


def finetune_tiny(tiny_base, tmp_path, precision="auto"):
    data = write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(80))
    output = tmp_path / "model"
    config = FinetuneConfig(
        data=str(data),
        model=str(tiny_base),
        output=str(output),
        epochs=3,
        lr=3e-3,
        batch_size=16,
        device="cpu",
        precision=precision,
    )
    return finetune(config), output


def test_auto_trains_in_bf16_where_the_cpu_multiplies_it_fast_and_records_the_evidence(
    tiny_base, tmp_path, monkeypatch
):
    monkeypatch.setenv(modeling.FORCE_CPU_BF16, "1")  # as a CPU with AVX-512 BF16 or AMX
    monkeypatch.setattr(modeling, "cpu_bf16_speedup", not_timed)
    result, output = finetune_tiny(tiny_base, tmp_path)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["precision"] == "bf16"
    assert metrics["precision_reason"] == "this CPU has bf16 matrix instructions (AVX-512 BF16 or AMX)"
    check = metrics["inference_precision"]
    assert check["rows"] == metrics["validation_samples"]
    assert set(check["accuracy"]) == {"bf16", "fp32"} and 0 <= check["label_agreement_with_fp32"] <= 1
    # the rule: at least 99.5% the same labels, accuracy at most half a point lower
    safe = (
        check["label_agreement_with_fp32"] >= 0.995 and check["accuracy"]["bf16"] >= check["accuracy"]["fp32"] - 0.005
    )
    assert check["inference_precision"] == ("bf16" if safe else "fp32")
    # the evidence is judged on the validation rows in their order: where bf16 changes no label, both
    # precisions score the validation accuracy the run reports
    assert check["label_agreement_with_fp32"] == 1.0
    assert check["accuracy"] == {"bf16": metrics["validation"]["accuracy"], "fp32": metrics["validation"]["accuracy"]}
    saved = json.loads((output / "config.json").read_text())["plm"]
    assert saved["inference_precision"] == check["inference_precision"]
    assert "(this CPU has bf16 matrix instructions" in (output / "README.md").read_text()


def test_auto_stays_in_fp32_where_bf16_is_slow(tiny_base, tmp_path, monkeypatch):
    monkeypatch.setenv("PLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(modeling, "cpu_has_bf16_instructions", lambda: None)  # flags unknown (ARM): measured
    monkeypatch.setattr(modeling, "cpu_bf16_speedup", lambda: 0.02)  # emulated bf16
    result, output = finetune_tiny(tiny_base, tmp_path)
    assert result.metrics["precision"] == "fp32"
    evidence = next((tmp_path / "cache").glob("cpu-bf16-*.json"))
    assert result.metrics["precision_reason"] == f"bf16 matrix products are slow here ({evidence})"
    assert json.loads(evidence.read_text())["bf16_speedup"] == 0.02
    assert result.metrics["inference_precision"] is None  # nothing to check: trained and run in fp32
    assert "inference_precision" not in json.loads((output / "config.json").read_text())["plm"]


def not_timed():
    raise AssertionError("no timing is needed")


def test_flags_unknown_are_measured_once_per_machine_and_every_later_run_reads_the_same_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("PLM_CACHE", str(tmp_path))
    monkeypatch.setattr(modeling, "cpu_has_bf16_instructions", lambda: None)
    monkeypatch.setattr(modeling, "cpu_bf16_speedup", lambda: 2.2)
    first = modeling.cpu_precision()
    monkeypatch.setattr(modeling, "cpu_bf16_speedup", not_timed)  # a second run reads the first one's evidence
    assert modeling.cpu_precision() == first
    assert first[0] == "bf16" and "2.2" not in first[1]  # the figure is in the cached file, not in metrics


@pytest.mark.parametrize(
    ("recorded", "native", "expected"),
    [("bf16", "1", "bf16"), ("bf16", "0", "fp32"), ("fp32", "1", "fp32"), (None, "1", "fp32")],
)
def test_predict_runs_in_bf16_only_where_finetune_found_no_loss_and_the_cpu_is_fast(
    tiny_classifier, tmp_path, monkeypatch, recorded, native, expected
):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_classifier, model)
    config = json.loads((model / "config.json").read_text())
    config["plm"].pop("inference_precision", None)
    if recorded:
        config["plm"]["inference_precision"] = recorded
    (model / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv(modeling.FORCE_CPU_BF16, native)
    for plain_bert in (True, False):  # plmcli.bert's model and transformers' alike
        classifier = load_for_inference(PredictConfig(texts=["good"], model=str(model), device="cpu"), plain_bert)
        assert classifier.precision == expected
        probabilities, _ = classifier(["the film was great", "awful plot"], 2)
        assert np.allclose(probabilities.sum(1), 1, atol=1e-2)
    asked = load_for_inference(PredictConfig(texts=["good"], model=str(model), device="cpu", precision="fp32"))
    assert asked.precision == "fp32"  # an explicit --precision is kept


@pytest.mark.parametrize(
    ("flipped", "wrong_in_bf16", "expected"),
    [(0, 0, "bf16"), (1, 0, "fp32"), (0, 1, "fp32")],
    ids=["same-labels", "one-label-of-100-changes", "bf16-less-accurate"],
)
def test_bf16_for_predict_needs_995_of_1000_labels_unchanged_and_no_lost_accuracy(
    tiny_classifier, monkeypatch, flipped, wrong_in_bf16, expected
):
    """reduced_precision_check with the logits of each precision made up: the rule, not the model."""
    from plmcli import inference
    from plmcli.data import tokenize
    from plmcli.tasks.classification import reduced_precision_check

    rows = 100
    references = np.arange(rows) % 2
    fp32 = np.stack([1 - references, references], axis=1).astype(np.float32)  # every label right
    bf16 = fp32.copy()
    bf16[:flipped] = 1 - bf16[:flipped]  # labels that change in bf16 (right ones turn wrong)
    if wrong_in_bf16:
        fp32[-2:] = 1 - fp32[-2:]  # fp32 gets two wrong; bf16 gets one of those right and one more wrong
        bf16[-1] = 1 - bf16[-1]
        bf16[0] = 1 - bf16[0]
    monkeypatch.setattr(inference, "batched_logits", lambda *args: bf16 if args[-1] == "bf16" else fp32)
    tokenizer, model = modeling.load_classifier(str(tiny_classifier))
    dataset, _ = tokenize(["good"] * rows, list(references), tokenizer, 16)
    check = reduced_precision_check(model, tokenizer, dataset, references, "bf16", "cpu", 8)
    assert check["inference_precision"] == expected
    assert check["rows"] == rows
    assert check["label_agreement_with_fp32"] == pytest.approx(float((bf16.argmax(1) == fp32.argmax(1)).mean()))
    assert check["accuracy"] == {
        "bf16": pytest.approx(float((bf16.argmax(1) == references).mean())),
        "fp32": pytest.approx(float((fp32.argmax(1) == references).mean())),
    }


def test_an_x86_cpu_without_bf16_instructions_stays_in_fp32_without_timing(monkeypatch):
    monkeypatch.setattr(modeling, "cpu_has_bf16_instructions", lambda: False)
    monkeypatch.setattr(modeling, "cpu_bf16_speedup", not_timed)
    assert modeling.cpu_precision() == ("fp32", "this CPU has no bf16 matrix instructions (AVX-512 BF16 or AMX)")
    assert modeling.training_precision("auto", "cpu")[0] == "fp32"
    assert modeling.training_precision("bf16", "cpu") == ("bf16", "requested")


def test_this_hosts_flags_are_read(monkeypatch):
    monkeypatch.delenv(modeling.FORCE_CPU_BF16, raising=False)
    flags = open("/proc/cpuinfo", encoding="utf-8").read() if Path("/proc/cpuinfo").is_file() else ""
    expected = ("avx512_bf16" in flags or "amx_bf16" in flags) if "\nflags" in "\n" + flags else None
    assert modeling.cpu_has_bf16_instructions() == expected


def test_a_resumed_auto_run_keeps_the_precision_it_started_with(tmp_path):
    from plmcli import checkpoints

    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    (checkpoint / checkpoints.MANIFEST).write_text(json.dumps({"step": 10, "settings": {"precision": "bf16"}}))
    measured = ("fp32", "this CPU has no bf16 matrix instructions (AVX-512 BF16 or AMX)")
    assert checkpoints.resumed_precision(checkpoint, "auto", measured) == ("bf16", "auto, as in the run being resumed")
    assert checkpoints.resumed_precision(checkpoint, "fp32", ("fp32", "requested")) == ("fp32", "requested")
    assert checkpoints.resumed_precision(None, "auto", measured) == measured


@pytest.mark.parametrize(("thresholds", "expected"), [(None, "bf16"), ([0.9, 0.5], "fp32")])
def test_multi_label_agreement_is_judged_at_the_tuned_thresholds(tiny_classifier, monkeypatch, thresholds, expected):
    """fp32 and bf16 scores for label 0 are 0.73 and 0.92: the same label at 0.5, not at a tuned 0.9."""
    from plmcli import inference
    from plmcli.data import tokenize
    from plmcli.tasks.classification import reduced_precision_check

    rows = 20
    fp32 = np.tile(np.array([[1.0, 2.0]], dtype=np.float32), (rows, 1))
    bf16 = np.tile(np.array([[2.5, 2.0]], dtype=np.float32), (rows, 1))
    monkeypatch.setattr(inference, "batched_logits", lambda *args: bf16 if args[-1] == "bf16" else fp32)
    tokenizer, model = modeling.load_classifier(str(tiny_classifier))
    model.config.problem_type = "multi_label_classification"
    references = np.ones((rows, 2), dtype=np.int8)
    dataset, _ = tokenize(["good"] * rows, references.tolist(), tokenizer, 16)
    check = reduced_precision_check(model, tokenizer, dataset, references, "bf16", "cpu", 8, thresholds)
    assert check["inference_precision"] == expected
    assert check["label_agreement_with_fp32"] == (1.0 if thresholds is None else 0.0)
