"""No silent garbage: broken weights, a diverging run, a model that learned nothing: each said, never saved as fine."""

import json
import re
import shutil

import pytest

from tests.conftest import write_csv

FAST = ["--batch-size", "16", "--device", "cpu"]


@pytest.fixture
def nan_classifier(tiny_classifier, tmp_path):
    """A copy of the tiny classifier whose head holds NaN (a run that diverged, a damaged file)."""
    from safetensors.torch import load_file, save_file

    model = tmp_path / "broken"
    shutil.copytree(tiny_classifier, model)
    tensors = load_file(model / "model.safetensors")
    tensors["classifier.weight"][0, 0] = float("nan")
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    return model


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predict_refuses_nan_scores(cli, nan_classifier, tmp_path, precision):
    output = tmp_path / "labels.csv"
    run = cli("predict", "--model", nan_classifier, "a good film", "bad", "--precision", precision, "--output", output)
    assert (run.exit_code, run.error_line) == (
        1,
        f"Error: {nan_classifier} gave NaN or infinite scores for 2 of 2 texts: its weights are broken (training "
        "diverged, or the file is damaged). Train it again, or use another --model.",
    )
    assert not output.exists()


def test_evaluate_refuses_nan_scores(cli, nan_classifier, tmp_path):
    data = write_csv(tmp_path / "test.csv", ["text", "label"], [("a good film", "positive"), ("bad", "negative")])
    run = cli("evaluate", data, "--model", nan_classifier, "--device", "cpu")
    assert run.exit_code == 1 and "gave NaN or infinite scores for 2 of 2 texts" in run.error_line
    assert not (nan_classifier / "eval").exists()


@pytest.mark.parametrize(
    "lr, loss",
    [("50", r"the loss is [0-9.e+]+ \(it started at 0\.69[0-9]*\)"), ("1e30", "the loss is NaN or infinite")],
    ids=["exploding", "nan"],
)
def test_a_diverging_run_stops_keeps_its_good_checkpoints_and_saves_no_model(
    cli, tiny_base, sentiment_csv, tmp_path, lr, loss
):
    output = tmp_path / "model"
    run = cli(
        "finetune",
        sentiment_csv,
        "--model",
        tiny_base,
        "--output",
        output,
        "--lr",
        lr,
        "--epochs",
        "3",
        "--save-steps",
        "2",
        *FAST,
    )
    assert run.exit_code == 1
    used = re.escape(f"{float(lr):g}")
    assert re.fullmatch(
        f"Error: training diverged at step 3 of 15: {loss}. Try a lower --lr \\(this run used {used}\\); "
        f"the checkpoints before it are kept in {re.escape(str(output / 'checkpoints'))} "
        "\\(--overwrite starts again\\).",
        run.error_line,
    ), run.error_line
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert sorted(path.name for path in output.iterdir()) == ["checkpoints"]  # no model saved as if fine
    if lr == "50":  # --overwrite starts again over the kept checkpoints
        run = cli("finetune", sentiment_csv, "--model", tiny_base, "--output", output, "--overwrite", *FAST)
        assert run.exit_code == 0, run.stderr


def test_a_model_no_better_than_the_majority_label_is_flagged(cli, tiny_base, tmp_path):
    # every text alike: the model can only answer one label for all, at best the majority's share
    rows = [("the movie", "positive")] * 42 + [("the movie", "negative")] * 18
    data = write_csv(tmp_path / "same.csv", ["text", "label"], rows)
    output = tmp_path / "model"
    run = cli("finetune", data, "--model", tiny_base, "--output", output, "--epochs", "1", *FAST)
    assert run.exit_code == 0, run.stderr
    validation = json.loads((output / "metrics.json").read_text())["validation"]
    assert validation["majority_baseline"] == {"label": "positive", "accuracy": 0.6667}
    warning = (
        f"Warning: validation accuracy {validation['accuracy']:.4f} is no better than always answering 'positive' "
        "(0.6667): the model has learned nothing useful. Try a lower --lr, more epochs or more data."
    )
    assert warning in run.stdout.splitlines()
    assert f"**{warning}**" in (output / "README.md").read_text()


def test_a_model_that_learned_is_not_flagged(cli, tiny_classifier):
    card = (tiny_classifier / "README.md").read_text()
    metrics = json.loads((tiny_classifier / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] > metrics["validation"]["majority_baseline"]["accuracy"]
    assert "no better than" not in card


def test_a_regressor_no_better_than_the_mean_is_flagged(cli, tiny_base, tmp_path):
    rows = [("the movie", str(value)) for value in range(40)]  # one text, forty targets: R² at most 0
    data = write_csv(tmp_path / "same.csv", ["text", "score"], rows)
    output = tmp_path / "model"
    run = cli(
        "finetune", data, "--task", "regression", "--model", tiny_base, "--output", output, "--epochs", "1", *FAST
    )
    assert run.exit_code == 0, run.stderr
    r2 = json.loads((output / "metrics.json").read_text())["validation"]["r2"]
    assert r2 <= 0
    assert f"Warning: validation R² {r2:.4f} is no better than always answering the mean (R² 0)" in run.stdout
    assert "no better than always answering the mean" in (output / "README.md").read_text()


def test_serve_refuses_a_model_with_nan_scores_at_its_warm_up(nan_classifier):
    import subprocess

    from tests.conftest import plm_command

    result = subprocess.run(
        plm_command("serve", "--model", nan_classifier, "--port", "0", "--device", "cpu"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {nan_classifier} gave NaN or infinite scores for 1 of 1 texts: its weights are broken (training "
        "diverged, or the file is damaged). Train it again, or use another --model."
    )
