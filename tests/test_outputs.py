"""Nothing a user has is lost: an output is held for its run, checked again when published, and never an input."""

import json
import os
import subprocess

import pytest

from plmcli.errors import RUNTIME_FAILURE, PlmError
from plmcli.outputs import claimed, staged_dir, staged_file
from tests.conftest import plm_command, snapshot, write_csv

FAST = ["--epochs", "1", "--batch-size", "16", "--device", "cpu"]


def test_a_second_run_into_a_held_output_stops_at_once(tiny_base, sentiment_csv, tmp_path):
    output = tmp_path / "new" / "model"
    with claimed(output):
        result = subprocess.run(
            plm_command("finetune", sentiment_csv, "--model", tiny_base, "--output", output, *FAST),
            capture_output=True,
            text=True,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: another plm run (process {os.getpid()}) is writing {output}; wait for it to end, or choose "
        "another --output."
    )
    assert sorted(os.listdir(tmp_path)) == ["reviews.csv"]  # the lock and the directory made for it are gone


def test_two_runs_into_one_new_output_never_both_succeed(tiny_base, sentiment_csv, tmp_path):
    output = tmp_path / "model"
    processes = [
        subprocess.Popen(
            plm_command("finetune", sentiment_csv, "--model", tiny_base, "--output", output, "--seed", seed, *FAST),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2")
    ]
    results = [(process.wait(timeout=600), process.communicate()[1]) for process in processes]
    won = [seed for seed, (code, _) in zip((1, 2), results) if code == 0]
    assert len(won) == 1, results
    code, stderr = next(result for result in results if result[0] != 0)
    last = stderr.strip().splitlines()[-1]
    # the other run stopped at the start (exit 2), or found the winner's model at its end and kept its own aside
    assert (code, "another plm run" in last) == (2, True) or (code, "finished result is in" in last) == (1, True)
    assert json.loads((output / "metrics.json").read_text())["seed"] == won[0]


def test_what_appears_in_the_output_during_a_run_is_kept(tmp_path):
    output = tmp_path / "model"
    with pytest.raises(PlmError) as error:
        with claimed(output) as claim, staged_dir(claim) as staging:
            (staging / "config.json").write_text("new")
            output.mkdir()
            (output / "notes.txt").write_text("mine")
    assert error.value.exit_code == RUNTIME_FAILURE
    assert str(error.value) == (
        f"{output} changed during this run (notes.txt appeared); it was left as it was, and the finished result is "
        f"in {tmp_path / 'model-2'}."
    )
    assert snapshot(output) == {"notes.txt": b"mine"}
    assert snapshot(tmp_path / "model-2") == {"config.json": b"new"}
    assert sorted(os.listdir(tmp_path)) == ["model", "model-2"]  # no staging directory, no lock


def test_a_file_that_takes_the_outputs_name_is_kept(tmp_path):
    output = tmp_path / "model"
    with pytest.raises(PlmError, match="changed during this run \\(a file appeared\\)"):
        with claimed(output) as claim, staged_dir(claim) as staging:
            (staging / "config.json").write_text("new")
            output.write_text("a file")
    assert output.read_text() == "a file" and (tmp_path / "model-2" / "config.json").read_text() == "new"


def test_the_runs_own_checkpoints_and_what_it_may_replace_are_replaced(tmp_path):
    output = tmp_path / "model"
    output.mkdir()
    (output / "config.json").write_text("old")
    with claimed(output) as claim, staged_dir(claim) as staging:
        (staging / "config.json").write_text("new")
        (output / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    assert snapshot(output) == {"config.json": b"new"}
    assert os.listdir(tmp_path) == ["model"]


def test_a_finetune_keeps_a_directory_made_at_its_output_during_the_run(
    cli, tiny_base, sentiment_csv, tmp_path, monkeypatch
):
    from plmcli import reporting

    output = tmp_path / "model"
    write_manifest = reporting.write_manifest

    def someone_else_writes_there(*args, **kwargs):
        output.mkdir(exist_ok=True)
        (output / "photo.jpg").write_bytes(b"\xff\xd8")
        write_manifest(*args, **kwargs)

    monkeypatch.setattr(reporting, "write_manifest", someone_else_writes_there)
    run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", output, *FAST)
    assert (run.exit_code, run.error_line) == (
        1,
        f"Error: {output} changed during this run (photo.jpg appeared); it was left as it was, and the finished "
        f"result is in {tmp_path / 'model-2'}.",
    )
    assert snapshot(output) == {"photo.jpg": b"\xff\xd8"}
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(tmp_path / "model-2")


def test_a_file_written_without_overwrite_never_replaces_one_made_meanwhile(tmp_path):
    path = tmp_path / "predictions.csv"
    with staged_file(path, replace=False) as stream:
        stream.write("first\n")
    with pytest.raises(PlmError) as error, staged_file(path, replace=False) as stream:
        stream.write("second\n")
    assert str(error.value) == (
        f"{path} was created by something else during this run; it was left as it was, and the finished result is "
        f"in {tmp_path / 'predictions-2.csv'}."
    )
    assert path.read_text() == "first\n" and (tmp_path / "predictions-2.csv").read_text() == "second\n"
    with staged_file(path, replace=True) as stream:
        stream.write("third\n")
    assert path.read_text() == "third\n" and sorted(os.listdir(tmp_path)) == ["predictions-2.csv", "predictions.csv"]


def test_predict_keeps_an_output_file_made_during_its_run(cli, tiny_classifier, tmp_path, monkeypatch):
    from plmcli import prediction

    output = tmp_path / "labels.csv"
    read_inputs = prediction.read_inputs

    def someone_else_writes_there(*args):
        output.write_text("theirs")
        return read_inputs(*args)

    monkeypatch.setattr(prediction, "read_inputs", someone_else_writes_there)
    run = cli("predict", "--model", tiny_classifier, "a good film", "--output", output)
    assert run.exit_code == 1 and run.error_line.startswith(f"Error: {output} was created by something else")
    assert output.read_text() == "theirs" and "a good film" in (tmp_path / "labels-2.csv").read_text()


@pytest.mark.parametrize(
    "output, reads",
    [
        ("{model}/model.safetensors", "a file of {model}"),
        ("{model}/config.json", "a file of {model}"),
        ("{tmp}/data.csv", "the input file {tmp}/data.csv"),
        ("{tmp}/link.csv", "the input file {tmp}/data.csv"),
        ("{tmp}/hard.csv", "the input file {tmp}/data.csv"),
    ],
)
def test_predict_never_writes_a_file_it_reads(cli, tiny_classifier, tmp_path, output, reads):
    data = write_csv(tmp_path / "data.csv", ["text", "label"], [("a good film", "positive")])
    (tmp_path / "link.csv").symlink_to(data)
    os.link(data, tmp_path / "hard.csv")
    output, reads = (text.format(model=tiny_classifier, tmp=tmp_path) for text in (output, reads))
    before = snapshot(tiny_classifier), snapshot(tmp_path)
    for extra in ((), ("--overwrite",)):
        run = cli("predict", "--model", tiny_classifier, "--file", tmp_path / "data.csv", "--output", output, *extra)
        assert (run.exit_code, run.error_line) == (
            2,
            f"Error: --output {output} is {reads}, which this command reads; choose another --output.",
        )
    assert (snapshot(tiny_classifier), snapshot(tmp_path)) == before


def test_predict_may_write_a_new_file_beside_the_model(cli, tiny_classifier, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_classifier, model)
    run = cli("predict", "--model", model, "a good film", "--output", model / "predictions.csv")
    assert run.exit_code == 0, run.stderr
    assert "a good film" in (model / "predictions.csv").read_text()


def test_training_never_writes_over_its_data_or_base_model(cli, tiny_base, tiny_classifier, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_classifier, base)
    folder = tmp_path / "folder"
    folder.mkdir()
    data = write_csv(folder / "train.csv", ["text", "label"], [("good", "positive"), ("bad", "negative")] * 20)
    dev = write_csv(folder / "dev.csv", ["text", "label"], [("good", "positive"), ("bad", "negative")])
    (folder / "manifest.json").write_text('{"versions": {"plm": "0"}}', encoding="utf-8")
    before = snapshot(tmp_path)
    cases = [
        (["finetune", data, "--model", base, "--output", base], f"holds the input {base}"),
        (["finetune", data, "--validation", dev, "--model", tiny_base, "--output", folder], f"holds the input {data}"),
        (["pretrain", folder, "--model", tiny_base, "--output", folder], f"holds the input {folder}"),
        (["evaluate", dev, "--model", base, "--output", base], f"holds the input {base}"),
    ]
    for args, message in cases:
        run = cli(*args, "--overwrite", "--device", "cpu")
        assert run.exit_code == 2 and message in run.error_line, (args, run.stderr)
    assert snapshot(tmp_path) == before


def test_every_command_refuses_an_output_that_is_an_input_or_another_output(cli, tiny_base, tiny_classifier, tmp_path):
    rows = [("good", "positive"), ("bad", "negative")] * 20
    data = write_csv(tmp_path / "train.csv", ["text", "label"], rows)
    run = tmp_path / "run"
    run.mkdir()
    inside = write_csv(run / "train.csv", ["text", "label"], rows)
    (tmp_path / "link-run").symlink_to(run)
    (tmp_path / "link-model").symlink_to(tiny_classifier)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("some text to read\n", encoding="utf-8")
    before = snapshot(tmp_path), snapshot(tiny_classifier)
    predict = ["predict", "--model", tiny_classifier, "a good film", "--min-score", "0.5"]
    cases = [
        (
            [*predict, "--output", tmp_path / "a.csv", "--review-file", tmp_path / "corpus" / ".." / "a.csv"],
            f"--output {tmp_path}/a.csv and --review-file {tmp_path}/corpus/../a.csv are the same file",
        ),
        ([*predict, "--review-file", tmp_path / "link-model" / "config.json"], "is a file of"),
        (["finetune", inside, "--model", tiny_base, "--output", tmp_path / "link-run", "--resume"], "holds the input"),
        (["tune", data, "--validation", inside, "--output", run, "--resume", "--budget", "1m"], "holds the input"),
        (["audit", data, "--output", tmp_path / "audit", "--fix-out", tmp_path / "audit" / "clean.csv"], "is inside"),
        (["evaluate", data, "--model", tiny_classifier, "--output", tmp_path / "link-model"], "holds the input"),
        (["pretrain", tmp_path / "corpus", "--model", tiny_base, "--output", tmp_path / "corpus" / ".."], "holds"),
    ]
    for args, message in cases:
        for extra in ((), ("--overwrite",)) if "--resume" not in args else ((),):
            result = cli(*args, *extra)
            assert result.exit_code == 2 and message in result.error_line, (args, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (snapshot(tmp_path), snapshot(tiny_classifier)) == before


def test_the_next_run_removes_what_a_killed_run_left_and_only_that(cli, tiny_base, sentiment_csv, tmp_path):
    import signal
    import time

    output = tmp_path / "model"
    process = subprocess.Popen(
        plm_command("finetune", sentiment_csv, "--model", tiny_base, "--output", output, *FAST, "--epochs", "50"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".model.partial-*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no handler runs: the staging directory and the lock stay
    process.wait()
    left = list(tmp_path.glob(".model.partial-*"))
    assert left and (tmp_path / ".model.plm-lock").exists()
    (tmp_path / ".model.old-x").mkdir()  # a backup a rename left when killed
    (tmp_path / ".model.old-x" / "model.safetensors").write_bytes(b"old")
    dead = tmp_path / ".labels.csv.plm-999999999-abc"  # a killed predict's temporary file (no such process)
    alive = tmp_path / f".labels.csv.plm-{os.getpid()}-abc"  # one a running predict is writing
    other = tmp_path / ".model.partial.notes"  # not plm's
    for path in (dead, alive, other):
        path.write_text("x", encoding="utf-8")
    again = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", output, *FAST)
    assert again.exit_code == 0, again.stderr
    assert "Removed what a run that was killed left beside" in again.stderr
    predicted = cli("predict", "--model", output, "a good film", "--output", tmp_path / "labels.csv")
    assert predicted.exit_code == 0, predicted.stderr
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == sorted(["reviews.csv", "model", "labels.csv", alive.name, other.name]), names
