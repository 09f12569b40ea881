"""plmcli.modeling: resolving --model and choosing device and precision."""

import json
import os
import shutil
import subprocess

import pytest

from plmcli import modeling
from plmcli.errors import PlmError
from tests.conftest import plm_command


def test_default_is_the_bundled_model():
    source = modeling.resolve(None)
    assert source.local and (modeling.bundled_model_dir() / "model.safetensors").is_file()
    assert modeling.read_config(source.location)["hidden_size"] == 384


def test_hub_ids_and_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert modeling.resolve("bert-base-uncased") == modeling.ModelSource(
        "bert-base-uncased", "bert-base-uncased", local=False
    )
    assert not modeling.resolve("google-bert/bert-base-uncased").local
    (tmp_path / "runs").mkdir()
    with pytest.raises(PlmError, match="model directory not found: runs/finetune"):
        modeling.resolve("runs/finetune")
    with pytest.raises(PlmError, match="model directory not found: ./model"):
        modeling.resolve("./model")
    with pytest.raises(PlmError, match="neither a local model directory nor a Hugging Face model id"):
        modeling.resolve("bad id with spaces")


def test_broken_config_is_a_runtime_failure(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(PlmError) as caught:
        modeling.read_config(str(tmp_path))
    assert caught.value.exit_code == 1 and "is not valid JSON" in str(caught.value)


def test_cpu_precision_choices():
    assert modeling.choose_device("cpu") == "cpu"
    assert modeling.choose_precision("auto", "cpu") == "fp32"
    assert modeling.choose_precision("bf16", "cpu") == "bf16"
    with pytest.raises(PlmError, match="--precision fp16 needs a CUDA GPU"):
        modeling.choose_precision("fp16", "cpu")


def test_missing_gpu_is_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PlmError, match="--device cuda: torch sees no CUDA GPU"):
        modeling.choose_device("cuda")


def test_half_precision_checkpoints_are_trained_in_float32(tiny_base, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertModel

    half = tmp_path / "half"
    BertModel.from_pretrained(tiny_base).half().save_pretrained(half)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(half)
    source = modeling.resolve(str(half))
    masked_lm, note = modeling.load_for_pretraining(source, "mlm")
    classifier, _ = modeling.load_for_classification(source, ["a", "b"])
    assert {p.dtype for p in masked_lm.parameters()} == {p.dtype for p in classifier.parameters()} == {torch.float32}
    assert note == f"{half} has no trained masked-LM head; starting it fresh."


def test_mlm_nsp_needs_a_bert(tiny_base, tmp_path):
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    roberta = tmp_path / "roberta"
    RobertaModel(
        RobertaConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
    ).save_pretrained(roberta)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(roberta)
    with pytest.raises(
        PlmError, match="mlm\\+nsp needs a BERT model .*loads as RobertaForMaskedLM. Use --objective mlm."
    ):
        modeling.load_for_pretraining(modeling.resolve(str(roberta)), "mlm+nsp")


def _without_network(tmp_path) -> dict:
    """An environment in which the Hub is out of reach (a closed local port) and the HF cache is ``tmp_path``."""
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    return env | {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hub")}


def test_a_hub_id_with_no_network_fails_at_once_in_one_line(tmp_path):
    result = subprocess.run(
        plm_command("fill-mask", "--model", "owner/not-cached", "a [MASK] film"),
        capture_output=True,
        text=True,
        env=_without_network(tmp_path),
        timeout=60,  # the hub client alone retries for about a minute
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: cannot load 'owner/not-cached': it is not a local directory or in the Hugging Face cache, and the "
        "Hugging Face Hub cannot be reached (127.0.0.1: Connection refused). Use the bundled model (leave out "
        "--model), a local model directory, or a model already in the Hugging Face cache with HF_HUB_OFFLINE=1."
    ]


def test_a_cached_hub_id_with_no_network_loads_from_the_cache(tiny_mlm, tmp_path):
    snapshot = tmp_path / "hub" / "models--owner--tiny" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_mlm, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    result = subprocess.run(
        plm_command("fill-mask", "--model", "owner/tiny", "a [MASK] film", "--format", "json"),
        capture_output=True,
        text=True,
        env=_without_network(tmp_path),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["masks"][0]
