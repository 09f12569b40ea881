"""`plm finetune --task regression`, and predict and evaluate on the regressor (plmcli/tasks/regression.py)."""

import csv
import json
import random

import pytest

from tests.conftest import FILLER, NEGATIVE, POSITIVE, write_csv


def rated_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, rating) rows: the rating is 10 + the positive words minus the negative ones, in [8, 13]."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        good, bad = rng.randint(0, 3), rng.randint(0, 2)
        words = rng.sample(FILLER, 3) + rng.sample(POSITIVE, good) + rng.sample(NEGATIVE, bad)
        rng.shuffle(words)
        rows.append((" ".join(words), f"{10 + good - bad:g}"))
    return rows


@pytest.fixture
def ratings_csv(tmp_path):
    return write_csv(
        tmp_path / "ratings.csv",
        ["review", "id", "rating"],
        [(t, f"r{i}", y) for i, (t, y) in enumerate(rated_rows(120))],
    )


def finetune_args(tiny_base, data, output, *extra):
    return (
        "finetune", data, "--task", "regression", "--model", tiny_base, "--output", output, "--device", "cpu",
        "--epochs", "6", "--batch-size", "16", "--lr", "3e-3", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def regressor(tmp_path_factory, tiny_base):
    """A tiny regressor fine-tuned by plm on the rated rows, and the run's stdout."""
    from plmcli.config import FinetuneConfig
    from plmcli.run import finetune

    directory = tmp_path_factory.mktemp("ratings")
    data = write_csv(directory / "ratings.csv", ["review", "rating"], rated_rows(160, seed=1))
    output = directory / "model"
    config = FinetuneConfig(
        data=str(data), task="regression", model=str(tiny_base), output=str(output), epochs=8, lr=3e-3,
        batch_size=16, device="cpu",
    )  # fmt: skip
    finetune(config)
    return output


def test_a_regressor_is_a_standard_one_output_model_with_its_scale_and_figures(regressor):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(regressor)
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    plm = json.loads((regressor / "config.json").read_text())["plm"]
    assert plm["task"] == "regression" and plm["label_column"] == "rating" and plm["text_column"] == "review"
    assert 10 < plm["target_scale"]["mean"] < 11 and 0.5 < plm["target_scale"]["std"] < 2
    metrics = json.loads((regressor / "metrics.json").read_text())
    assert metrics["task"] == "regression"
    validation = metrics["validation"]
    assert set(validation) == {"loss", "mse", "rmse", "mae", "pearson", "spearman", "r2"}
    assert validation["rmse"] == pytest.approx(validation["mse"] ** 0.5)
    assert validation["pearson"] > 0.5  # it learned: the rating follows the sentiment words
    assert metrics["target"]["column"] == "rating" and metrics["target"]["min"] == 8
    assert (regressor / "scatter.png").stat().st_size > 0 and (regressor / "loss_curve.png").is_file()
    card = (regressor / "README.md").read_text()
    assert "Text regressor" in card and f"{validation['pearson']:.4f}" in card


def test_predict_gives_a_value_in_the_targets_units(cli, regressor, tmp_path):
    run = cli("predict", "--model", regressor, "great superb best film", "awful terrible movie", "--format", "json")
    assert run.exit_code == 0, run.stderr
    rows = json.loads(run.stdout)
    assert [set(row) for row in rows] == [{"text", "value"}] * 2
    assert rows[0]["value"] > rows[1]["value"]
    assert all(7 < row["value"] < 14 for row in rows)
    table = write_csv(tmp_path / "in.csv", ["review", "value"], [("great fun", "1"), ("dull", "2")])
    written = cli("predict", "--model", regressor, "--file", table, "--output", tmp_path / "out.csv")
    assert written.exit_code == 0, written.stderr
    with open(tmp_path / "out.csv", newline="") as stream:
        out = list(csv.DictReader(stream))
    assert list(out[0]) == ["review", "value", "predicted_value"] and out[1]["value"] == "2"  # the input is kept


def test_predict_refuses_classifier_options_on_a_regressor(cli, regressor):
    run = cli("predict", "--model", regressor, "good", "--top-k", "2")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {regressor} is a regression model: it gives one value per text; --top-k and --all-scores are "
        "for classifiers."
    )


def test_evaluate_reports_the_figures_a_scatter_plot_and_the_largest_errors_first(cli, regressor, tmp_path):
    data = write_csv(tmp_path / "test.csv", ["review", "rating"], rated_rows(30, seed=5))
    run = cli("evaluate", "--model", regressor, data, "--output", tmp_path / "report")
    assert run.exit_code == 0, run.stderr
    assert "RMSE" in run.stdout and "largest errors" in run.stdout
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["samples"] == 30
    assert {"mse", "rmse", "mae", "pearson", "spearman", "r2"} <= set(metrics)
    with open(tmp_path / "report" / "errors.csv", newline="") as stream:
        errors = list(csv.DictReader(stream))
    assert len(errors) == 30 and list(errors[0]) == ["review", "rating", "predicted_value", "error"]
    sizes = [abs(float(row["error"])) for row in errors]
    assert sizes == sorted(sizes, reverse=True)
    assert float(errors[0]["predicted_value"]) - float(errors[0]["rating"]) == pytest.approx(float(errors[0]["error"]))
    assert (tmp_path / "report" / "scatter.png").stat().st_size > 0


def test_the_target_is_the_numeric_column_and_a_non_number_is_one_line(cli, tiny_base, tmp_path):
    rows = [(text, "x", rating) for text, rating in rated_rows(12)]
    rows[4] = (rows[4][0], "x", "n/a")
    data = write_csv(tmp_path / "data.csv", ["text", "note", "points"], rows)
    run = cli(*finetune_args(tiny_base, data, tmp_path / "out"))
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {data}: the target column 'points' must hold numbers; line 6 has 'n/a'. "
        "Fix them, or pass --task classification for labels."
    )
    assert not (tmp_path / "out").exists()


def test_regression_metrics_pick_the_best_model_and_classification_metrics_are_refused(
    cli, tiny_base, ratings_csv, tmp_path
):
    run = cli(*finetune_args(tiny_base, ratings_csv, tmp_path / "out", "--early-stopping", "2", "--metric", "pearson"))
    assert run.exit_code == 0, run.stderr
    stopping = json.loads((tmp_path / "out" / "metrics.json").read_text())["early_stopping"]
    assert stopping["metric"] == "pearson"
    assert stopping["best_value"] == max(e["pearson"] for e in stopping["evaluations"])
    refused = cli(*finetune_args(tiny_base, ratings_csv, tmp_path / "other", "--metric", "accuracy"))
    assert refused.exit_code == 2
    assert refused.error_line.startswith("Error: --metric with --task regression must be one of rmse, pearson")


def test_many_distinct_numbers_in_a_classification_run_suggest_regression(cli, tiny_base, tmp_path):
    rows = [(text, str(i % 30)) for i, (text, _) in enumerate(rated_rows(90))]
    data = write_csv(tmp_path / "data.csv", ["text", "label"], rows)
    run = cli("finetune", data, "--model", tiny_base, "--output", tmp_path / "out", "--epochs", "1", "--device", "cpu")
    assert run.exit_code == 0, run.stderr
    assert (
        "Warning: column 'label' holds 30 distinct numbers, each trained as its own class; if it is a quantity "
        "(a score, a rating, a price), pass --task regression."
    ) in run.stderr


@pytest.mark.slow  # resume is the run skeleton's, tested on finetune in the quick suite
def test_an_interrupted_regression_resumes_to_the_same_weights(cli, tiny_base, ratings_csv, tmp_path, monkeypatch):
    from tests.test_checkpoints import identical, stop_then_resume, weights

    output = tmp_path / "out"
    stop_then_resume(cli, monkeypatch, finetune_args(tiny_base, ratings_csv, output, "--save-steps", "4"), 9)
    straight = cli(*finetune_args(tiny_base, ratings_csv, tmp_path / "straight", "--save-steps", "4"))
    assert straight.exit_code == 0, straight.stderr
    assert identical(weights(output), weights(tmp_path / "straight"))


def test_serve_answers_a_regressors_value_as_predict_does(cli, regressor):
    import httpx

    from tests.test_serving import Server

    texts = ["good great film", "awful boring and dull"]
    run = cli("predict", "--model", regressor, *texts, "--format", "json", "--device", "cpu")
    assert run.exit_code == 0, run.stderr
    expected = [row["value"] for row in json.loads(run.stdout)]
    server = Server(regressor)
    try:
        answer = httpx.post(f"{server.url}/predict", json={"texts": texts}, timeout=60)
        refused = httpx.post(f"{server.url}/predict", json={"texts": texts, "top_k": 2}, timeout=60)
        metadata = httpx.get(f"{server.url}/metadata").json()
    finally:
        assert server.stop() == 0
    values = [prediction["value"] for prediction in answer.json()["predictions"]]
    assert values == pytest.approx(expected, abs=1e-3)
    assert set(answer.json()["predictions"][0]) == {"value"}
    assert refused.status_code == 422 and "regression model" in refused.json()["error"]
    assert (metadata["task"], metadata["labels"]) == ("regression", None)


@pytest.mark.parametrize(
    "targets, shown",
    [
        (["1e200", "3e200", "2e200"], "from 1e+200 to 3e+200"),
        (["-1e151", "5", "7"], "from -1e+151 to 7"),
        (["1e-300", "3e-300", "2e-300"], "from 1e-300 to 3e-300"),
        (["-1e200", "0", "1"], "from -1e+200 to 1"),
    ],
)
def test_targets_beyond_float64_are_refused_in_one_line_naming_the_column(cli, tiny_base, tmp_path, targets, shown):
    rows = [(text, targets[i % len(targets)]) for i, (text, _) in enumerate(rated_rows(30))]
    data = write_csv(tmp_path / "big.csv", ["review", "rating"], rows)
    run = cli(*finetune_args(tiny_base, data, tmp_path / "model"))
    assert run.exit_code == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert run.error_line.startswith(f"Error: {data}: the target column 'rating' holds numbers {shown}; plm trains")
    assert "Rescale the column first" in run.error_line and "--lr" not in run.error_line
    assert not (tmp_path / "model").exists()


def test_large_targets_within_range_train_and_answer_finite_values(cli, tiny_base, tmp_path):
    rows = [(text, f"{float(y) * 1e140:g}") for text, y in rated_rows(60)]
    data = write_csv(tmp_path / "large.csv", ["review", "rating"], rows)
    output = tmp_path / "model"
    run = cli(*finetune_args(tiny_base, data, output, "--epochs", "1"))
    assert run.exit_code == 0, run.stderr
    scale = json.loads((output / "config.json").read_text())["plm"]["target_scale"]
    assert 8e140 <= scale["mean"] <= 13e140 and 0 < scale["std"] < 1e141
    metrics = json.loads((output / "metrics.json").read_text())  # write_json allows no NaN nor infinity
    assert metrics["validation"]["mse"] > 0
    predicted = cli("predict", "--model", output, "good great film", "--format", "json", "--device", "cpu")
    assert predicted.exit_code == 0 and 1e139 < json.loads(predicted.stdout)[0]["value"] < 1e142
    evaluated = cli("evaluate", data, "--model", output, "--device", "cpu", "--format", "json")
    assert evaluated.exit_code == 0, evaluated.stderr


@pytest.mark.parametrize(
    "scale", [{"mean": 10.0, "std": "Infinity"}, {"mean": "NaN", "std": 1.0}, {"mean": 1.0, "std": 0}]
)
def test_a_regressor_with_a_broken_scale_is_refused_by_every_command(cli, regressor, tmp_path, scale):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(regressor, broken)
    config = json.loads((broken / "config.json").read_text())
    config["plm"]["target_scale"] = scale
    text = json.dumps(config).replace('"Infinity"', "Infinity").replace('"NaN"', "NaN")
    (broken / "config.json").write_text(text, encoding="utf-8")
    data = write_csv(tmp_path / "dev.csv", ["review", "rating"], rated_rows(10))
    for args in (
        ("predict", "--model", broken, "good great film"),
        ("evaluate", data, "--model", broken, "--output", tmp_path / "report"),
        ("serve", "--model", broken, "--port", "0"),
    ):
        run = cli(*args, "--device", "cpu")
        assert run.exit_code == 2, (args, run.stderr)
        assert "config.json's plm.target_scale is" in run.error_line and "damaged" in run.error_line
    assert not (tmp_path / "report").exists()


def test_no_nan_or_infinity_is_ever_saved(tmp_path):
    from plmcli.errors import RUNTIME_FAILURE, PlmError
    from plmcli.reporting import write_json
    from plmcli.settings import ModelSettings

    with pytest.raises(PlmError) as refused:
        write_json(tmp_path / "metrics.json", {"validation": {"mse": 1.0, "r2": float("nan")}})
    assert refused.value.exit_code == RUNTIME_FAILURE and "validation.r2" in str(refused.value)
    assert not (tmp_path / "metrics.json").exists()
    with pytest.raises(PlmError, match="target_scale would be saved as NaN or infinite"):
        ModelSettings(task="regression", target_scale={"mean": 1.0, "std": float("inf")}).to_dict()
