"""plmcli.bert: predict's own BERT classifier gives what transformers gives, and steps aside for anything else."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from plmcli import bert, modeling
from plmcli.inference import classify

TEXTS = [
    "the film was great",
    "awful plot and boring acting , a waste",
    "it is a film",
    "Great GREAT great ! the acting was good and the plot was good and the film was great",
    "unknownword Ünïcödé 電影 tokens",
]


def both(directory):
    """(plmcli.bert's tokenizer and model, transformers' tokenizer and model) for one directory."""
    plain = bert.load(str(directory))
    assert plain is not None
    return plain, modeling.load_classifier(str(directory))


@pytest.mark.parametrize("max_length", [64, 9])
def test_same_tokens_and_probabilities_as_transformers(tiny_classifier, max_length):
    (tokenizer, model), (hf_tokenizer, hf_model) = both(tiny_classifier)
    ours, theirs = tokenizer(TEXTS, max_length=max_length), hf_tokenizer(TEXTS, truncation=True, max_length=max_length)
    assert ours["input_ids"] == theirs["input_ids"]
    assert ours["token_type_ids"] == theirs["token_type_ids"]
    # batches of 2 sorted by length: rows are padded, and the attention mask matters
    probabilities, long_texts = classify(TEXTS, tokenizer, model, 2, max_length, "cpu", "fp32")
    expected, expected_long = classify(TEXTS, hf_tokenizer, hf_model, 2, max_length, "cpu", "fp32")
    assert long_texts == expected_long == (2 if max_length == 9 else 0)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert model.config.id2label == hf_model.config.id2label
    assert model.config.plm == hf_model.config.plm
    assert tokenizer.model_max_length == hf_tokenizer.model_max_length


def test_text_pairs_get_segment_ids_as_in_transformers(tiny_classifier):
    (tokenizer, model), (hf_tokenizer, hf_model) = both(tiny_classifier)
    pairs = ["good", "the plot was bad and boring", "great", "it is", "film"]
    assert (
        tokenizer(TEXTS, pairs, max_length=12)["token_type_ids"]
        == (hf_tokenizer(TEXTS, pairs, truncation=True, max_length=12)["token_type_ids"])
    )
    probabilities, _ = classify(TEXTS, tokenizer, model, 3, 12, "cpu", "fp32", pairs)
    expected, _ = classify(TEXTS, hf_tokenizer, hf_model, 3, 12, "cpu", "fp32", pairs)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)


def test_the_real_vocabulary_tokenizes_as_in_transformers(tmp_path):
    """The bundled MiniLM with a new 3-label head: real WordPiece, lowercasing, accents, CJK, 12 heads."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    base = modeling.bundled_model_dir()
    labels = {0: "neg", 1: "neutral", 2: "pos"}
    BertForSequenceClassification.from_pretrained(
        base, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()}
    ).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path)
    (tokenizer, model), (hf_tokenizer, hf_model) = both(tmp_path)
    texts = ["Café déjà-vu: naïve résumé!", "東京の映画", "don't   stop\tbelieving", "x" * 300, "tl;dr 42% 3.14"]
    assert (
        tokenizer(texts, max_length=128)["input_ids"]
        == hf_tokenizer(texts, truncation=True, max_length=128)["input_ids"]
    )
    probabilities, _ = classify(texts, tokenizer, model, 2, 128, "cpu", "fp32")
    expected, _ = classify(texts, hf_tokenizer, hf_model, 2, 128, "cpu", "fp32")
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)


def edited_copy(source, tmp_path, config=None, tokenizer_config=None, remove=()):
    """A copy of a model directory with config.json / tokenizer_config.json entries changed and files removed."""
    directory = tmp_path / "model"
    shutil.copytree(source, directory)
    for name, changes in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if changes:
            path = directory / name
            path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    for name in remove:
        (directory / name).unlink()
    return directory


@pytest.mark.parametrize(
    "change",
    [
        {"config": {"hidden_act": "gelu_new"}},
        {"config": {"position_embedding_type": "relative_key"}},
        {"config": {"architectures": ["RobertaForSequenceClassification"], "model_type": "roberta"}},
        {"tokenizer_config": {"do_lower_case": False}},
        {"remove": ["tokenizer.json"]},
        {"config": {"id2label": {"a": "negative", "b": "positive"}}},
        {"config": {"id2label": {"0": "negative", "\u00b2": "positive"}}},
        {"config": {"dtype": "bfloat16"}},
        {"tokenizer_config": {"truncation_side": "left"}},
        {"tokenizer_config": {"tokenize_chinese_chars": False}},
        {"tokenizer_config": {"unk_token": "[PAD]"}},
    ],
    ids=[
        "activation",
        "positions",
        "architecture",
        "tokenizer-settings",
        "no-tokenizer-json",
        "label-ids",
        "superscript-label-id",
        "config-dtype",
        "truncation-side",
        "chinese-chars",
        "unk-token",
    ],
)
def test_anything_but_a_plain_bert_classifier_is_left_to_transformers(tiny_classifier, tmp_path, change):
    assert bert.load(str(edited_copy(tiny_classifier, tmp_path, **change))) is None


def test_a_missing_or_extra_weight_is_left_to_transformers(tiny_classifier, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = edited_copy(tiny_classifier, tmp_path)
    weights = load_file(directory / "model.safetensors")
    save_file({**weights, "bert.extra.weight": weights["classifier.bias"].clone()}, directory / "model.safetensors")
    assert bert.load(str(directory)) is None
    del weights["bert.pooler.dense.bias"]
    save_file(weights, directory / "model.safetensors")
    assert bert.load(str(directory)) is None


def test_predict_gives_the_same_output_either_way(cli, tiny_classifier, tmp_path, monkeypatch):
    texts = TEXTS[:4]
    ours = cli("predict", "--model", tiny_classifier, *texts, "--format", "json", "--all-scores", "--top-k", "2")
    monkeypatch.setattr(bert, "load", lambda directory: None)  # as for a model plmcli.bert does not run
    theirs = cli("predict", "--model", tiny_classifier, *texts, "--format", "json", "--all-scores", "--top-k", "2")
    assert ours.exit_code == theirs.exit_code == 0, ours.stderr + theirs.stderr
    mine, expected = json.loads(ours.stdout), json.loads(theirs.stdout)
    assert [row["label"] for row in mine] == [row["label"] for row in expected]
    for row, other in zip(mine, expected):
        assert row.keys() == other.keys()
        for key, value in row.items():
            assert value == pytest.approx(other[key], abs=1e-5) if isinstance(value, float) else value == other[key]


def test_one_text_predict_imports_no_transformers_datasets_or_plotting(tiny_classifier):
    script = (
        "import sys\n"
        "from plmcli.cli import main\n"
        f"sys.argv = ['plm', 'predict', '--model', {str(tiny_classifier)!r}, 'the film was great']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit_:\n"
        "    assert not exit_.code, exit_.code\n"
        "heavy = {'transformers', 'datasets', 'evaluate', 'matplotlib', 'pandas', 'accelerate', 'sklearn'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "the film was great" in completed.stdout
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def test_a_tokenizer_json_lowercasing_against_the_default_is_left_to_transformers(tiny_classifier, tmp_path):
    """tokenizer_config.json without do_lower_case means True to transformers, whatever tokenizer.json says."""
    directory = edited_copy(tiny_classifier, tmp_path)
    settings = json.loads((directory / "tokenizer_config.json").read_text())
    settings.pop("do_lower_case", None)
    (directory / "tokenizer_config.json").write_text(json.dumps(settings))
    document = json.loads((directory / "tokenizer.json").read_text())
    document["normalizer"]["lowercase"] = False
    (directory / "tokenizer.json").write_text(json.dumps(document))
    assert bert.load(str(directory)) is None


@pytest.mark.parametrize(
    "damage",
    ["config-width", "weight-shape", "tokenizer-json"],
)
def test_a_broken_directory_gets_transformers_one_line_refusal(cli, tiny_classifier, tmp_path, damage):
    from safetensors.torch import load_file, save_file

    directory = edited_copy(tiny_classifier, tmp_path)
    if damage == "config-width":
        config = json.loads((directory / "config.json").read_text())
        config["hidden_size"] *= 2
        (directory / "config.json").write_text(json.dumps(config))
    elif damage == "weight-shape":
        weights = load_file(directory / "model.safetensors")
        name = "bert.encoder.layer.0.intermediate.dense.weight"
        weights[name] = weights[name][:-1].clone()
        save_file(weights, directory / "model.safetensors")
    else:
        (directory / "tokenizer.json").write_text('{"version": "1.0", "mo')
    assert bert.load(str(directory)) is None
    run = cli("predict", "--model", directory, "the film was great")
    assert run.exit_code == 1, run.stdout
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert run.error_line.startswith("Error: cannot load the ")
