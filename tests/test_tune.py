"""plm tune: the defaults trial first, --trials, the budget, pruning, Ctrl-C and --resume; --report-to."""

import json
import shlex

import pytest

from plmcli.errors import Interrupted
from tests.conftest import sentiment_rows, write_csv


def tune_args(data, output, tiny_base, *more):
    return (
        "tune",
        data,
        "--model",
        tiny_base,
        "--output",
        output,
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--max-length",
        "32",
        *more,
    )


@pytest.fixture
def reviews(tmp_path):
    return write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(64))


def report(output):
    return json.loads((output / "tune.json").read_text())


def test_a_budget_too_small_for_the_defaults_trial_is_one_line_and_leaves_nothing(cli, tiny_base, reviews, tmp_path):
    import time

    many = write_csv(tmp_path / "many.csv", ["text", "label"], sentiment_rows(3000))  # minutes of training
    began = time.monotonic()
    run = cli(*tune_args(many, tmp_path / "tuned", tiny_base, "--budget", "1s"))
    assert run.exit_code == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.error_line.startswith("Error: --budget 1s ran out during the first trial (the defaults: ")
    assert "Give a larger --budget." in run.error_line
    assert time.monotonic() - began < 60  # stopped at the budget, not after 3 epochs
    assert sorted(path.name for path in tmp_path.iterdir()) == ["many.csv", "reviews.csv"]


def test_one_trial_runs_the_defaults_and_writes_a_usable_model(cli, tiny_base, reviews, tmp_path):
    output = tmp_path / "tuned"
    run = cli(*tune_args(reviews, output, tiny_base, "--trials", "1"))
    assert run.exit_code == 0, run.stderr
    tuned = report(output)
    assert [t["number"] for t in tuned["trials"]] == [0]
    first = tuned["trials"][0]
    assert (
        first["params"]["epochs"] == 3 and first["params"]["batch_size"] == 32 and first["params"]["max_length"] == 32
    )
    assert "--trials 1 reached" in tuned["stopped_because"]
    assert tuned["best"]["command"].startswith("plm finetune ") and "--epochs 3" in tuned["best"]["command"]
    assert {"model.safetensors", "config.json", "metrics.json", "README.md", "tuning.png", "study.db"} <= {
        p.name for p in output.iterdir()
    }
    assert not (output / "checkpoints").exists()
    predicted = cli("predict", "--model", output, "a great and wonderful film")
    assert predicted.exit_code == 0 and ("positive" in predicted.stdout or "negative" in predicted.stdout)
    assert "The same model again:  plm finetune" in run.stdout
    command = shlex.split(tuned["best"]["command"])
    assert cli(*command[1:], "--output", tmp_path / "again").exit_code == 0  # it trains the same model again
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["validation"]
    assert again == json.loads((output / "metrics.json").read_text())["validation"]
    rerun = cli(*tune_args(reviews, output, tiny_base, "--trials", "1", "--overwrite"))
    assert rerun.exit_code == 0, rerun.stderr  # a tune's own output may be replaced


def test_trials_runs_that_many_and_a_hopeless_trial_is_pruned(cli, tiny_base, reviews, tmp_path, monkeypatch):
    from plmcli import tuning

    defaults_trial = tuning.Search._defaults_trial

    def then_queued_trials(search, optuna):
        defaults_trial(search, optuna)
        settings = {"epochs": 5, "batch_size": 16, "warmup_ratio": 0.0, "weight_decay": 0.0}
        search.study.enqueue_trial({"lr": 3e-3, **settings})  # learns
        search.study.enqueue_trial({"lr": 1e-9, **settings})  # learns nothing: behind after its first epoch

    monkeypatch.setattr(tuning.Search, "_defaults_trial", then_queued_trials)
    output = tmp_path / "tuned"
    data = write_csv(tmp_path / "more.csv", ["text", "label"], sentiment_rows(160))  # 16 validation rows
    run = cli(*tune_args(data, output, tiny_base, "--trials", "3", "--budget", "30m"))
    assert run.exit_code == 0, run.stderr
    tuned = report(output)
    assert [t["number"] for t in tuned["trials"]] == [0, 1, 2]
    hopeless = tuned["trials"][2]
    assert hopeless["params"]["lr"] == 1e-9
    assert hopeless["state"] == "PRUNED" and "behind earlier trials" in hopeless["stopped_by"]
    assert hopeless["epochs_run"] < 5 and len(hopeless["values_per_epoch"]) < 5
    assert tuned["pruned"] == 1 and tuned["best"]["number"] in (0, 1)
    assert "--trials 3 reached" in tuned["stopped_because"]


def interrupt_second_trial(monkeypatch):
    """Make the second trial of the next tune stop as Ctrl-C stops it; returns the real trial runner."""
    from plmcli import tuning

    run_trial = tuning.execute
    calls = []

    def interrupted_second_trial(task):
        calls.append(task)
        if len(calls) == 2:
            raise Interrupted(2, "SIGINT")
        return run_trial(task)

    monkeypatch.setattr(tuning, "execute", interrupted_second_trial)
    return run_trial


def test_ctrl_c_keeps_the_best_model_and_resume_continues(cli, tiny_base, reviews, tmp_path, monkeypatch):
    from plmcli import tuning

    run_trial = interrupt_second_trial(monkeypatch)
    output = tmp_path / "tuned"
    stopped = cli(*tune_args(reviews, output, tiny_base, "--trials", "2"))
    assert stopped.exit_code == 130
    assert "best model so far (trial 0" in stopped.error_line and "--resume" in stopped.error_line
    assert [t["number"] for t in report(output)["trials"]] == [0]
    assert (output / "model.safetensors").is_file() and (output / "study.db").is_file()

    monkeypatch.setattr(tuning, "execute", run_trial)
    resumed = cli(*tune_args(reviews, output, tiny_base, "--trials", "2", "--resume"))
    assert resumed.exit_code == 0, resumed.stderr
    numbers = [t["number"] for t in report(output)["trials"]]
    assert numbers[0] == 0 and len(numbers) == 2 and numbers[1] > 1  # trial 1 was the interrupted one
    assert cli("predict", "--model", output, "boring and awful").exit_code == 0


def test_tune_refuses_bad_budgets_and_a_missing_study(cli, tiny_base, reviews, tmp_path):
    run = cli(*tune_args(reviews, tmp_path / "out", tiny_base, "--budget", "soon"))
    assert run.exit_code == 2 and "--budget must be a time like 90s" in run.error_line
    run = cli(*tune_args(reviews, tmp_path / "out", tiny_base, "--resume"))
    assert run.exit_code == 2 and "nothing to resume" in run.error_line


def test_report_to_tensorboard_writes_readable_event_files(cli, tiny_base, reviews, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = tmp_path / "model"
    run = cli(
        "finetune", reviews, "--model", tiny_base, "--output", output, "--epochs", "2", "--device", "cpu",
        "--report-to", "tensorboard",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    events = list((output / "logs").rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert "train/loss" in tags and "eval/loss" in tags
    assert len(accumulator.Scalars("eval/loss")) == 2  # one per epoch
    rerun = cli("finetune", reviews, "--model", tiny_base, "--output", output, "--epochs", "1", "--overwrite")
    assert rerun.exit_code == 0, rerun.stderr  # the logs directory is plm's own


def test_a_missing_tracker_is_one_line_naming_the_extra(cli, tiny_base, reviews, tmp_path, monkeypatch):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else found(name, *a))
    run = cli("finetune", reviews, "--model", tiny_base, "--output", tmp_path / "m", "--report-to", "mlflow")
    assert run.exit_code == 2 and "pip install 'plm[mlflow]'" in run.error_line
    assert not (tmp_path / "m").exists()


def test_the_reproduce_command_carries_a_calibration_that_is_not_the_default():
    from plmcli.config import TuneConfig
    from plmcli.tuning import finetune_command

    params = {"epochs": 3, "batch_size": 32, "lr": None, "warmup_ratio": 0.06, "weight_decay": 0.01, "max_length": 64}
    beta = shlex.split(finetune_command(TuneConfig(data="reviews.csv", calibration="beta"), params))
    assert beta[beta.index("--calibration") + 1] == "beta"
    assert "--calibration" not in finetune_command(TuneConfig(data="reviews.csv"), params)
