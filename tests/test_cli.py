"""The CLI layer: help without heavy imports, version, parse-and-delegate, usage errors."""

import subprocess
import sys
from dataclasses import fields

import pytest

from plmcli.config import FinetuneConfig, PredictConfig


def test_help_imports_no_torch_transformers_or_datasets():
    code = (
        "import sys\n"
        "sys.argv = ['plm', '--help']\n"
        "from plmcli.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "for name in ('pretrain', 'finetune', 'predict', 'evaluate', 'check', 'fill-mask'):\n"
        "    sys.argv = ['plm', name, '--help']\n"
        "    try:\n        main()\n    except SystemExit:\n        pass\n"
        "heavy = ('torch', 'transformers', 'datasets', 'evaluate', 'pandas', 'numpy', 'matplotlib')\n"
        "heavy = sorted(m for m in heavy if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in result.stdout
    assert "Usage: plm [OPTIONS] COMMAND" in result.stdout and "finetune" in result.stdout


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "plmcli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("plm ")


def test_finetune_defaults_match_the_config(cli, monkeypatch):
    received = []
    monkeypatch.setattr("plmcli.run.finetune", lambda config: received.append(config) or _stop())
    run = cli("finetune", "data.csv")
    assert run.exit_code == 3 and len(received) == 1
    expected = FinetuneConfig(data="data.csv")
    for field in fields(FinetuneConfig):
        if field.name != "command":
            assert getattr(received[0], field.name) == getattr(expected, field.name), field.name
    assert received[0].command == ["plm", "finetune", "data.csv"]


COMMANDS = ("finetune", "audit", "tune", "pretrain", "fill_mask", "check", "evaluate", "predict", "serve")


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_takes_its_default_from_the_config_field(name):
    import importlib
    import inspect

    from plmcli import config

    module = importlib.import_module(f"plmcli.commands.{name}")
    config_class = getattr(config, "".join(part.title() for part in name.split("_")) + "Config")
    field_defaults = vars(config.defaults(config_class))
    for parameter in inspect.signature(getattr(module, name)).parameters.values():
        if parameter.default is inspect.Parameter.empty or parameter.name == "texts":
            continue
        assert parameter.default is field_defaults[parameter.name], parameter.name  # the field's object, not a copy


def test_every_choice_is_the_config_tuple():
    from plmcli import config, options

    pairs = {options.Device: config.DEVICES, options.Task: config.TASKS, options.Metric: config.METRICS}
    pairs |= {options.Objective: config.OBJECTIVES, options.OutputFormat: config.FORMATS}
    for enum, values in pairs.items():
        assert tuple(member.value for member in enum) == values
    assert options.Objective.mlm_nsp == "mlm+nsp" and options.Task.token_classification == "token-classification"


def test_finetune_task_regression_reaches_the_config_with_its_own_default_metric(cli, monkeypatch):
    received = []
    monkeypatch.setattr("plmcli.run.finetune", lambda config: received.append(config) or _stop())
    cli("finetune", "scores.csv", "--task", "regression")
    cli("finetune", "scores.csv", "--task", "regression", "--metric", "pearson", "--early-stopping", "2")
    assert [(config.task, config.metric) for config in received] == [("regression", "rmse"), ("regression", "pearson")]
    refused = cli("finetune", "scores.csv", "--task", "regression", "--multi-label")
    assert refused.exit_code == 2
    assert refused.error_line == (
        "Error: --multi-label is for classification; a regression target is one number per row."
    )


def test_finetune_options_reach_the_config(cli, monkeypatch):
    received = []
    monkeypatch.setattr("plmcli.run.finetune", lambda config: received.append(config) or _stop())
    cli(
        "finetune",
        "train.tsv",
        "--validation",
        "dev.tsv",
        "--model",
        "m",
        "-o",
        "out",
        "--text-column",
        "t",
        "--label-column",
        "y",
        "--max-length",
        "64",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "1e-4",
        "--seed",
        "3",
        "--max-train-samples",
        "100",
        "--device",
        "cpu",
        "--precision",
        "bf16",
        "--overwrite",
        "--validation-split",
        "0.2",
    )
    config = received[0]
    assert (config.data, config.validation, config.model, config.output) == ("train.tsv", "dev.tsv", "m", "out")
    assert (config.text_column, config.label_column, config.max_length, config.epochs) == ("t", "y", 64, 2.0)
    assert (config.batch_size, config.lr, config.seed, config.max_train_samples) == (8, 1e-4, 3, 100)
    assert (config.device, config.precision, config.overwrite, config.validation_split) == ("cpu", "bf16", True, 0.2)


def test_predict_options_reach_the_config(cli, monkeypatch):
    received = []
    monkeypatch.setattr("plmcli.prediction.predict", lambda config, write: received.append(config) or _stop())
    cli("predict", "a", "b")
    assert received[0] == PredictConfig(texts=["a", "b"])
    cli(
        "predict",
        "--file",
        "x.csv",
        "--format",
        "csv",
        "--output",
        "o.csv",
        "--top-k",
        "3",
        "--all-scores",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--text-column",
        "body",
        "--model",
        "m",
        "--overwrite",
    )
    assert received[1] == PredictConfig(
        file="x.csv",
        format="csv",
        output="o.csv",
        top_k=3,
        all_scores=True,
        batch_size=8,
        max_length=32,
        text_column="body",
        model="m",
        overwrite=True,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["finetune", "d.csv", "--epochs", "0"],
            "Error: --epochs must be a finite number greater than 0 and at most 10000; got 0.0.",
        ),
        (
            ["finetune", "d.csv", "--validation-split", "1"],
            "Error: --validation-split must be between 0 and 1 (a share); got 1.0.",
        ),
        (
            ["finetune", "d.csv", "--validation", "d.csv"],
            "Error: Invalid value for --validation: the validation file is the training file; pass another file.",
        ),
        (["finetune", "d.csv", "--device", "tpu"], "'tpu' is not one of 'auto', 'cpu', 'cuda', 'mps'."),
        (["predict", "x", "--top-k", "0"], "Invalid value for '--top-k'"),
    ],
)
def test_bad_options_exit_2_with_an_error_line(cli, args, message):
    run = cli(*args)
    assert run.exit_code == 2
    assert run.error_line.startswith("Error: ") and message.removeprefix("Error: ") in run.error_line
    assert "Traceback" not in run.stderr


BIG = str(2**62)


@pytest.mark.parametrize(
    "args, option",
    [
        (["finetune", "d.csv", "--batch-size", BIG], "--batch-size"),
        (["finetune", "d.csv", "--max-length", BIG], "--max-length"),
        (["finetune", "d.csv", "--epochs", "1e20"], "--epochs"),
        (["finetune", "d.csv", "--save-steps", BIG], "--save-steps"),
        (["audit", "d.csv", "--batch-size", BIG], "--batch-size"),
        (["tune", "d.csv", "--trials", BIG], "--trials"),
        (["pretrain", "c.txt", "--max-steps", BIG], "--max-steps"),
        (["pretrain", "c.txt", "--preprocessing-workers", BIG], "--preprocessing-workers"),
        (["pretrain", "c.txt", "--from-scratch", "--vocab-size", BIG], "--vocab-size"),
        (["predict", "x", "--batch-size", BIG], "--batch-size"),
        (["predict", "x", "--top-k", BIG], "--top-k"),
        (["evaluate", "d.csv", "--max-length", BIG], "--max-length"),
        (["fill-mask", "a [MASK]", "--top-k", BIG], "--top-k"),
        (["serve", "--max-batch-size", BIG], "--max-batch-size"),
        (["serve", "--max-body-bytes", BIG], "--max-body-bytes"),
        (["serve", "--timeout", "1e300"], "--timeout"),
        (["serve", "--max-wait-ms", "1e300"], "--max-wait-ms"),
    ],
)
def test_every_count_and_size_option_has_a_sane_range_checked_before_any_work(cli, args, option):
    from plmcli.config import LIMITS

    run = cli(*args)
    assert run.exit_code == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.error_line.startswith(f"Error: {option} must be ") and f"{LIMITS[option]:g}" in run.error_line


def test_debug_shows_the_traceback(cli, tmp_path):
    from plmcli.errors import PlmError

    with pytest.raises(PlmError):
        cli("--debug", "finetune", tmp_path / "missing.csv")


def _stop():
    from plmcli.errors import PlmError

    raise PlmError("stopped by the test", exit_code=3)


def test_default_learning_rate_follows_encoder_width():
    from plmcli.config import default_learning_rate

    assert [default_learning_rate(width) for width in (312, 384, 768, 1024)] == [1e-4, 1e-4, 5e-5, 2e-5]
