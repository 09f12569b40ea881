"""Checkpoints, interruption and --resume (plmcli/checkpoints.py, plmcli/interrupts.py).

Most tests stop a run in-process by making ``interrupts.requested`` report SIGTERM from a given
step on, which is exactly what the signal handler does; the subprocess tests send real signals.
"""

import json
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from plmcli import interrupts
from tests.conftest import plm_command, sentiment_rows, snapshot, write_csv

ROWS = 80  # 72 training rows, 9 steps of 8 per epoch


def finetune_args(tiny_base, data, output, *extra):
    return (
        "finetune", data, "--model", tiny_base, "--output", output, "--device", "cpu",
        "--epochs", "4", "--batch-size", "8", "--lr", "3e-3", "--save-steps", "4", *extra,
    )  # fmt: skip


def stop_at(monkeypatch, step: int, signal_number: int = signal.SIGTERM) -> None:
    """From the end of training step ``step`` on, report ``signal_number`` as a received signal."""
    calls = {"n": 0}

    def requested():
        calls["n"] += 1  # the stop callback asks once per step
        return signal_number if calls["n"] >= step else None

    monkeypatch.setattr(interrupts, "requested", requested)


@pytest.fixture
def data(tmp_path):
    return write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(ROWS))


@pytest.fixture
def interrupted(cli, tiny_base, data, tmp_path, monkeypatch):
    """An output directory left by a run stopped by SIGTERM at step 10 (checkpoints 8 and 10 kept)."""
    output = tmp_path / "out"
    stop_at(monkeypatch, 10)
    run = cli(*finetune_args(tiny_base, data, output))
    monkeypatch.undo()
    assert run.exit_code == 143, run.stderr
    return output, run


def weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(directory / "model.safetensors")


def stop_then_resume(cli, monkeypatch, args: tuple, step: int):
    """Run ``plm ARGS``, stopped by SIGTERM at ``step``, then resume it; returns both runs."""
    stop_at(monkeypatch, step)
    stopped = cli(*args)
    assert stopped.exit_code == 143, stopped.stderr
    monkeypatch.setattr(interrupts, "requested", lambda: None)
    resumed = cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    return stopped, resumed


def identical(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_a_stopped_run_saves_one_complete_checkpoint_and_says_how_to_resume(interrupted, tiny_base, data):
    output, run = interrupted
    checkpoints = output / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-10", "checkpoint-8"]
    assert sorted(p.name for p in output.iterdir()) == ["checkpoints"]  # no model under the final name
    assert run.error_line == (
        f"Error: interrupted by SIGTERM at step 10 of 36; saved {checkpoints / 'checkpoint-10'}. "
        f"Continue with: plm {' '.join(map(str, finetune_args(tiny_base, data, output)))} --resume"
    )
    from plmcli.checkpoints import problem

    assert problem(checkpoints / "checkpoint-10") is None
    names = {p.name for p in (checkpoints / "checkpoint-10").iterdir()}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= names


def test_the_resume_command_drops_overwrite(cli, tiny_base, data, tmp_path, monkeypatch):
    output = tmp_path / "out"
    stop_at(monkeypatch, 3)
    run = cli(*finetune_args(tiny_base, data, output, "--overwrite"))
    assert run.exit_code == 143
    command = run.error_line.split("Continue with: ", 1)[1]
    assert "--overwrite" not in command and command.endswith(" --resume")


def test_resume_ends_where_an_uninterrupted_run_ends_with_the_same_weights(
    cli, interrupted, tiny_base, data, tmp_path
):
    output, _ = interrupted
    resumed = cli(*finetune_args(tiny_base, data, output), "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert f"Resuming from {output / 'checkpoints' / 'checkpoint-10'} (step 10)." in resumed.stderr
    assert not (output / "checkpoints").exists()  # a finished model keeps no checkpoints
    straight = cli(*finetune_args(tiny_base, data, tmp_path / "straight"))
    assert straight.exit_code == 0, straight.stderr
    # step 10 is mid-epoch (9 steps per epoch): the data order and dropout draws are restored too
    assert identical(weights(output), weights(tmp_path / "straight"))
    resumed_metrics, straight_metrics = (
        json.loads((path / "metrics.json").read_text()) for path in (output, tmp_path / "straight")
    )
    assert resumed_metrics["validation"] == straight_metrics["validation"]
    assert resumed_metrics["train"]["loss"] == pytest.approx(straight_metrics["train"]["loss"], abs=1e-6)
    assert resumed_metrics["train"]["resumed_from"] == str(output / "checkpoints" / "checkpoint-10")


def test_a_run_that_auto_resolved_to_bf16_resumes_to_the_same_weights(cli, tiny_base, data, tmp_path, monkeypatch):
    monkeypatch.setenv("PLM_TEST_CPU_BF16", "1")  # as on a CPU with AVX-512 BF16 or AMX
    output = tmp_path / "out"
    stop_then_resume(cli, monkeypatch, finetune_args(tiny_base, data, output), 10)
    straight = cli(*finetune_args(tiny_base, data, tmp_path / "straight"))
    assert straight.exit_code == 0, straight.stderr
    assert identical(weights(output), weights(tmp_path / "straight"))
    assert json.loads((output / "metrics.json").read_text())["precision"] == "bf16"


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        (lambda c: (c / "plm-checkpoint.json").unlink(), "plm-checkpoint.json is missing (its save did not finish)"),
        (lambda c: _truncate(c / "model.safetensors"), "model.safetensors is truncated or changed"),
        (lambda c: _truncate(c / "trainer_state.json"), "trainer_state.json is truncated or changed"),
    ],
)
def test_resume_skips_a_broken_newer_checkpoint_with_one_warning(cli, interrupted, tiny_base, data, damage, reason):
    output, _ = interrupted
    newer = output / "checkpoints" / "checkpoint-99"
    shutil.copytree(output / "checkpoints" / "checkpoint-10", newer)  # as if kill -9 hit its save
    damage(newer)
    resumed = cli(*finetune_args(tiny_base, data, output), "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("Warning: skipping")]
    assert len(warnings) == 1 and warnings[0].startswith(f"Warning: skipping checkpoint-99: {reason}")
    assert "(step 10)" in resumed.stderr
    assert (output / "model.safetensors").is_file()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("missing", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_missing_optimizer_scheduler_or_rng_state_is_refused_never_reset(cli, interrupted, tiny_base, data, missing):
    output, _ = interrupted
    shutil.rmtree(output / "checkpoints" / "checkpoint-8")
    (output / "checkpoints" / "checkpoint-10" / missing).unlink()
    before = snapshot(output)
    resumed = cli(*finetune_args(tiny_base, data, output), "--resume")
    assert resumed.exit_code == 1
    assert resumed.error_line == (
        f"Error: no complete checkpoint to resume in {output / 'checkpoints'}: checkpoint-10: {missing} is missing. "
        "Start again with --overwrite."
    )
    assert snapshot(output) == before


def test_resume_with_changed_settings_is_refused_and_lists_each(cli, interrupted, tiny_base, data):
    output, _ = interrupted
    before = snapshot(output)
    args = [*finetune_args(tiny_base, data, output), "--resume"]
    changed = [*args, "--lr", "1e-3", "--epochs", "5", "--batch-size", "16"]  # later options win
    run = cli(*changed)
    assert run.exit_code == 2
    assert run.error_line == (
        "Error: the checkpoint was written with other settings: --batch-size 8 -> 16; --epochs 4.0 -> 5.0; "
        "--lr 0.003 -> 0.001. Resume with the same settings, or pass --allow-changed-settings."
    )
    assert snapshot(output) == before
    allowed = cli(*changed, "--allow-changed-settings")
    assert allowed.exit_code == 0, allowed.stderr
    assert "Warning: resuming with changed settings: --batch-size 8 -> 16;" in allowed.stderr


def test_changed_data_is_a_changed_setting(cli, interrupted, tiny_base, data):
    output, _ = interrupted
    data.write_text(data.read_text() + "a good good film,positive\n")
    run = cli(*finetune_args(tiny_base, data, output), "--resume")
    assert run.exit_code == 2
    assert run.error_line.startswith("Error: the checkpoint was written with other settings: data_sha256 ")


def test_resume_settings_are_keyed_by_the_configs_field_names_not_by_option_names(
    cli, interrupted, tiny_base, data, monkeypatch
):
    """What a checkpoint records survives a renamed option: the Python API, with no option names at all, resumes."""
    from dataclasses import fields

    from plmcli.checkpoints import read_manifest
    from plmcli.config import FinetuneConfig
    from plmcli.run import finetune

    output, _ = interrupted
    settings = read_manifest(output / "checkpoints" / "checkpoint-10")["settings"]
    names = {item.name for item in fields(FinetuneConfig)}
    assert not [key for key in settings if key.startswith("-") or " " in key]
    assert {"max_length", "batch_size", "lr", "epochs", "seed", "text_column", "label_column"} <= set(settings)
    assert set(settings) - names == {"data_sha256", "validation_sha256", "labels", "processes"}
    config = FinetuneConfig(
        data=str(data), model=str(tiny_base), output=str(output), device="cpu", epochs=4, batch_size=8, lr=3e-3,
        save_steps=4, resume=True,
    )  # fmt: skip
    assert finetune(config).metrics["train"]["resumed_from"] == str(output / "checkpoints" / "checkpoint-10")


def test_a_checkpoint_keyed_by_option_names_still_resumes(cli, interrupted, tiny_base, data):
    """Manifests written before settings were keyed by field names ('--max-length', 'data (sha256)') still match."""
    output, _ = interrupted
    checkpoint = output / "checkpoints" / "checkpoint-10"
    manifest = json.loads((checkpoint / "plm-checkpoint.json").read_text())
    legacy = {
        "data_sha256": "data (sha256)",
        "validation_sha256": "validation data (sha256)",
        "warmup_ratio": "warmup ratio",
    }
    manifest["settings"] = {
        legacy.get(key, "--" + key.replace("_", "-") if key != "precision" else key): value
        for key, value in manifest["settings"].items()
    }
    (checkpoint / "plm-checkpoint.json").write_text(json.dumps(manifest))
    resumed = cli(*finetune_args(tiny_base, data, output), "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert "changed settings" not in resumed.stderr


def test_a_fresh_run_into_an_unfinished_run_is_refused(cli, interrupted, tiny_base, data):
    output, _ = interrupted
    before = snapshot(output)
    run = cli(*finetune_args(tiny_base, data, output))
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {output} holds the checkpoints of an unfinished run; pass --resume to continue it, "
        "or --overwrite to start again."
    )
    assert snapshot(output) == before
    again = cli(*finetune_args(tiny_base, data, output), "--overwrite")
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in output.iterdir() if p.name.startswith("check")) == []


def test_resume_without_a_checkpoint_is_one_line(cli, tiny_base, data, tmp_path):
    run = cli(*finetune_args(tiny_base, data, tmp_path / "none"), "--resume")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: nothing to resume: {tmp_path / 'none'} holds no checkpoints. Run again without --resume."
    )
    assert not (tmp_path / "none").exists()
    both = cli(*finetune_args(tiny_base, data, tmp_path / "none"), "--resume", "--overwrite")
    assert both.exit_code == 2
    assert "pass one of them" in both.error_line


def _start(args, **kwargs):
    """Start plm in a fresh process; return it with an event set once its training bar shows."""
    process = subprocess.Popen(plm_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    started, chunks = threading.Event(), []

    def read():
        while chunk := process.stderr.read(64):
            chunks.append(chunk)
            if "Training:" in "".join(chunks[-3:]):
                started.set()

    threading.Thread(target=read, daemon=True).start()
    return process, started, chunks


@pytest.mark.parametrize("signal_name, exit_code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_real_signal_saves_a_checkpoint_and_exits_128_plus_signal(tiny_base, data, tmp_path, signal_name, exit_code):
    output = tmp_path / "out"
    args = finetune_args(tiny_base, data, output, "--epochs", "500", "--save-steps", "100000")
    process, started, chunks = _start(args)
    assert started.wait(timeout=120), "".join(chunks)
    time.sleep(0.5)  # inside the training loop
    process.send_signal(getattr(signal, signal_name))
    process.wait(timeout=120)
    time.sleep(0.2)
    stderr = "".join(chunks)
    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    saved = list((output / "checkpoints").iterdir())
    assert len(saved) == 1 and saved[0].name.startswith("checkpoint-")
    assert f"Warning: {signal_name} received: saving a checkpoint at step " in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: interrupted by {signal_name} at step ") and last.endswith(" --resume")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "reviews.csv"]


def test_a_second_ctrl_c_stops_at_once_without_a_partial_checkpoint(tiny_base, data, tmp_path):
    output = tmp_path / "out"
    args = finetune_args(tiny_base, data, output, "--epochs", "500", "--save-steps", "100000")
    process, started, chunks = _start(args)
    assert started.wait(timeout=120), "".join(chunks)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    time.sleep(0.2)
    stderr = "".join(chunks)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("Error: interrupted by SIGINT")
    finals = [p for p in (output / "checkpoints").glob("checkpoint-*")] if output.exists() else []
    from plmcli.checkpoints import problem

    assert all(problem(p) is None for p in finals)  # a checkpoint under its final name is complete
    assert not list(tmp_path.glob(".*partial*")) and not list(output.glob(".*partial*"))


def test_python_ignores_file_size_signals():
    # `ulimit -f` sends SIGXFSZ; Python ignores it, so a write past the limit raises OSError (EFBIG)
    code = "import signal; print(signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"


def pretrain_args(corpus, output, *base):
    return (
        "pretrain", corpus, *base, "--output", output, "--epochs", "3", "--max-length", "32", "--batch-size", "8",
        "--lr", "3e-3", "--device", "cpu", "--save-steps", "5",
    )  # fmt: skip


@pytest.mark.slow  # finetune's resume to the same weights stays in the quick suite
def test_pretrain_resumes_to_the_same_weights_and_keeps_the_before_figures(
    cli, tiny_base, corpus_txt, tmp_path, monkeypatch
):
    def args(output):
        return pretrain_args(corpus_txt, output, "--model", tiny_base)

    straight = cli(*args(tmp_path / "straight"))
    assert straight.exit_code == 0, straight.stderr
    epoch_end = json.loads((tmp_path / "straight" / "metrics.json").read_text())["train"]["steps"] // 3
    output = tmp_path / "out"
    stop_at(monkeypatch, epoch_end, signal.SIGINT)
    stopped = cli(*args(output))
    monkeypatch.undo()
    assert stopped.exit_code == 130, stopped.stderr
    assert stopped.error_line.startswith(f"Error: interrupted by SIGINT at step {epoch_end} of ")
    resumed = cli(*args(output), "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert "Measuring the held-out set before training" not in resumed.stderr
    # at an epoch boundary: bit-identical (in mid-epoch the masks of the next batch, drawn before
    # the checkpoint, are drawn again after the resume)
    assert identical(weights(output), weights(tmp_path / "straight"))
    figures = [json.loads((path / "metrics.json").read_text()) for path in (output, tmp_path / "straight")]
    assert figures[0]["validation"] == figures[1]["validation"]  # before (kept from the interrupted run) and after


@pytest.mark.slow  # trains a tokenizer and a model from scratch twice
def test_pretrain_from_scratch_resumes_with_the_vocabulary_it_trained(cli, corpus_txt, tmp_path, monkeypatch):
    args = pretrain_args(corpus_txt, tmp_path / "out", "--from-scratch", "--size", "tiny", "--vocab-size", "120")
    stop_at(monkeypatch, 4)
    assert cli(*args).exit_code == 143
    monkeypatch.undo()
    vocabulary = (tmp_path / "out" / "checkpoints" / "checkpoint-4" / "tokenizer.json").read_text()
    resumed = cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert (tmp_path / "out" / "tokenizer.json").read_text() == vocabulary


def _limited(args, kilobytes: int):
    """Run plm in a shell whose files may not grow past ``kilobytes`` (what a full disk does to a write)."""
    command = " ".join(shlex.quote(str(arg)) for arg in plm_command(*args))
    return subprocess.run(["bash", "-c", f"ulimit -f {kilobytes}; exec {command}"], capture_output=True, text=True)


def test_a_full_disk_while_checkpointing_keeps_the_older_checkpoints(interrupted, tiny_base, data, cli):
    output, _ = interrupted
    older = snapshot(output / "checkpoints" / "checkpoint-10")
    optimizer = (output / "checkpoints" / "checkpoint-10" / "optimizer.pt").stat().st_size
    run = _limited([*finetune_args(tiny_base, data, output), "--resume"], optimizer // 1024 - 1)
    assert run.returncode == 1, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: could not write checkpoint {output / 'checkpoints' / 'checkpoint-12'}: ")
    assert last.endswith(". The earlier checkpoints are intact.")
    assert "Traceback" not in run.stderr
    assert snapshot(output / "checkpoints" / "checkpoint-10") == older
    assert not list((output / "checkpoints").glob(".*"))  # no staging left behind
    resumed = cli(*finetune_args(tiny_base, data, output), "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert "(step 10)" in resumed.stderr


def test_a_full_disk_while_writing_the_model_keeps_the_old_model(tiny_classifier, tiny_base, data, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = tmp_path / "model"
    shutil.copytree(tiny_classifier, model)
    before = snapshot(model)
    weights_size = (model / "model.safetensors").stat().st_size
    args = finetune_args(tiny_base, data, model, "--overwrite", "--save-steps", "100000")
    run = _limited(args, weights_size // 1024 - 1)
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"Error: could not write the model to {model}: ")
    assert run.stderr.strip().endswith(f"{model} was left as it was.")
    assert snapshot(model) == before
    assert AutoModelForSequenceClassification.from_pretrained(model).config.id2label
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "reviews.csv"]


def test_junk_in_the_checkpoints_directory_is_skipped_or_replaced(cli, interrupted, tiny_base, data):
    output, _ = interrupted
    checkpoints = output / "checkpoints"
    (checkpoints / "checkpoint-\u00b2").mkdir()  # a superscript two: not a step number
    (checkpoints / "notes").mkdir()
    (checkpoints / "checkpoint-12").write_text("a stray file where the next checkpoint goes")
    for step, change in (
        (20, lambda m: m.update(files=list(m["files"]))),
        (30, lambda m: m["files"].update({"../x": {"bytes": 1, "sha256": "0"}})),
    ):
        shutil.copytree(checkpoints / "checkpoint-10", checkpoints / f"checkpoint-{step}")
        manifest = json.loads((checkpoints / f"checkpoint-{step}" / "plm-checkpoint.json").read_text())
        change(manifest)
        (checkpoints / f"checkpoint-{step}" / "plm-checkpoint.json").write_text(json.dumps(manifest))
    resumed = cli(*finetune_args(tiny_base, data, output), "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("Warning: skipping")]
    assert warnings == [
        "Warning: skipping checkpoint-30: plm-checkpoint.json lists files outside the checkpoint.",
        "Warning: skipping checkpoint-20: plm-checkpoint.json is unreadable.",
    ]
    assert "(step 10)" in resumed.stderr and (output / "model.safetensors").is_file()


def test_a_private_name_plm_relies_on_gone_leaves_its_speed_up_off_and_a_checkpointed_run_completes(
    cli, tiny_base, data, tmp_path, monkeypatch
):
    """As a torch release without ``torch._softmax_backward_data`` would: one warning, then stock attention."""
    import torch

    monkeypatch.delattr(torch, "_softmax_backward_data")
    output = tmp_path / "out"
    stopped, resumed = stop_then_resume(cli, monkeypatch, finetune_args(tiny_base, data, output), 6)
    for run in (stopped, resumed):
        checks = [line for line in run.stderr.splitlines() if "checked on a test input" in line]
        assert checks == [
            "Warning: the faster dropout and attention was checked on a test input and failed (AttributeError: "
            "module 'torch' has no attribute '_softmax_backward_data'); running without it."
        ]
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(output).config.num_labels == 2
