"""ModelSettings (plmcli/settings.py): config.json's plm section, read the same from every plm version's models."""

import json
import shutil

from plmcli.settings import ModelSettings


def test_the_task_kind_of_sections_older_plm_versions_wrote():
    single = {"plm": {"text_column": "text", "multi_label": False, "temperature": 1.3}}
    multi = {"plm": {"multi_label": True, "thresholds": [0.4, 0.6]}, "problem_type": "multi_label_classification"}
    regression = {"plm": {"task": "regression", "target_scale": {"mean": 3.0, "std": 2.0}}}
    tagger = {"architectures": ["BertForTokenClassification"]}
    assert ModelSettings.of(single).task == "single-label" and ModelSettings.of(single).temperature == 1.3
    assert ModelSettings.of(multi).task == "multi-label" and ModelSettings.of(multi).thresholds == [0.4, 0.6]
    assert ModelSettings.of(regression).task == "regression"
    assert ModelSettings.of(regression).target_scale == {"mean": 3.0, "std": 2.0}
    assert ModelSettings.of(tagger).task == "token-classification"
    assert ModelSettings.of({}).task == "single-label" and ModelSettings.of({}).max_length is None


def test_a_section_round_trips_and_unknown_keys_are_ignored():
    settings = ModelSettings(task="multi-label", thresholds=[0.5], max_length=96, label_separator=";")
    assert ModelSettings.of({"plm": {**settings.to_dict(), "from_a_newer_plm": 1}}) == settings
    assert "temperature" not in settings.to_dict()  # only what is set is written


def test_a_model_saved_by_the_previous_plm_predicts_the_same(cli, tiny_classifier, tmp_path):
    """A model directory as plm 0.1 before ModelSettings wrote it: no task, no max_length in its plm section."""
    old = tmp_path / "old-model"
    shutil.copytree(tiny_classifier, old)
    config = json.loads((old / "config.json").read_text())
    section = config["plm"]
    assert section["task"] == "single-label" and section["max_length"] == 64  # what today's finetune writes
    config["plm"] = {
        key: value for key, value in section.items() if key not in ("task", "max_length", "source_scheme")
    } | {"multi_label": False}
    (old / "config.json").write_text(json.dumps(config), encoding="utf-8")
    texts = ["the movie was great and fun", "awful and boring plot"]
    new_run = cli("predict", "--model", tiny_classifier, "--format", "json", *texts)
    old_run = cli("predict", "--model", old, "--format", "json", *texts)
    assert old_run.exit_code == new_run.exit_code == 0, old_run.stderr
    assert json.loads(old_run.stdout) == json.loads(new_run.stdout)


def test_predict_truncates_at_the_length_the_model_was_trained_with(tmp_path, tiny_base):
    from plmcli.config import FinetuneConfig, PredictConfig
    from plmcli.inference import load_for_inference
    from plmcli.run import finetune
    from tests.conftest import sentiment_rows, write_csv

    data = write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(40))
    output = tmp_path / "model"
    finetune(
        FinetuneConfig(data=str(data), model=str(tiny_base), output=str(output), epochs=1, max_length=16, device="cpu")
    )
    assert load_for_inference(PredictConfig(texts=["x"], model=str(output), device="cpu")).max_length == 16
    given = PredictConfig(texts=["x"], model=str(output), device="cpu", max_length=32)
    assert load_for_inference(given).max_length == 32  # --max-length still decides when given
