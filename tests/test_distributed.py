"""finetune and pretrain under torchrun: 2 CPU processes (gloo), one writer, the artefacts of a 1-process run.

Each test launches `torchrun --standalone --nproc-per-node 2 -m plmcli ...` as a user would.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import plm_command, snapshot

ARTEFACTS = {"model.safetensors", "config.json", "tokenizer.json", "metrics.json", "manifest.json", "README.md"}


def torchrun(*args, processes: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*command, "-m", "plmcli", *map(str, args)], capture_output=True, text=True, timeout=600, env=environment
    )


def leftovers(directory) -> list[str]:
    return [path.name for path in directory.iterdir() if ".partial-" in path.name or ".old-" in path.name]


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
@pytest.mark.slow  # two torchrun processes each; the refusal under torchrun stays in the quick suite
def test_two_processes_write_one_model_and_one_summary(command, tiny_base, sentiment_csv, corpus_txt, tmp_path):
    data = sentiment_csv if command == "finetune" else corpus_txt
    options = ["--model", tiny_base, "--epochs", "2", "--batch-size", "8", "--device", "cpu"]
    if command == "pretrain":
        options += ["--max-length", "32"]
    single = subprocess.run(
        plm_command(command, data, "--output", tmp_path / "one", *options), capture_output=True, text=True, timeout=600
    )
    assert single.returncode == 0, single.stderr
    run = torchrun(command, data, "--output", tmp_path / "two", *options)
    assert run.returncode == 0, run.stderr[-3000:]

    one, two = tmp_path / "one", tmp_path / "two"
    assert ARTEFACTS <= {path.name for path in two.iterdir()}
    assert {path.name for path in two.iterdir()} == {path.name for path in one.iterdir()}
    assert not leftovers(tmp_path) and not (two / "checkpoints").exists()
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["effective_batch_size"] == 16
    assert json.loads((one / "metrics.json").read_text())["world_size"] == 1
    # Each step of the 2-process run takes a batch on each process: about half the steps (rounded up per epoch).
    steps_one, steps_two = json.loads((one / "metrics.json").read_text())["train"]["steps"], metrics["train"]["steps"]
    assert steps_two < steps_one <= 2 * steps_two
    # One summary and one set of messages, from rank 0.
    assert run.stdout.count("Model saved to") == 1, run.stdout
    assert run.stderr.count("Model:") == 1

    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(two).architectures == AutoConfig.from_pretrained(one).architectures


def test_a_refusal_under_torchrun_writes_nothing(tiny_base, sentiment_csv, tmp_path):
    before = snapshot(tmp_path)
    run = torchrun(
        "finetune", sentiment_csv, "--model", tiny_base, "--output", tmp_path / "o", "--text-column", "body"
    )
    assert run.returncode != 0
    assert "Error: missing column 'body'" in run.stderr
    # torchrun itself reports the failed workers with its own traceback; none comes from plm's code.
    assert not [line for line in run.stderr.splitlines() if 'File "' in line and "plmcli" in line]
    assert snapshot(tmp_path) == before
