"""Hostile input: untrusted model files, broken data files, odd values, and what plm does with each.

Each test asserts the exit code, the exact one-line message, and the files afterwards. The cases
of interruption, checkpoints and --resume are in test_checkpoints.py.
"""

import json
import shutil
import subprocess

import pytest

from plmcli import data
from plmcli.errors import PlmError
from tests.conftest import plm_command, sentiment_rows, snapshot, write_csv

FAST = ("--epochs", "1", "--batch-size", "16", "--device", "cpu")


def finetune(cli, tiny_base, path, output, *extra):
    return cli("finetune", path, "--model", tiny_base, "--output", output, *FAST, *extra)


def copy_model(source, target):
    shutil.copytree(source, target)
    return target


def without_weights(source, target):
    """A copy of a model directory without its safetensors weights."""
    target.mkdir()
    for path in source.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, target / path.name)
    return target


# 11-13: model files


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tiny_classifier, tmp_path):
    marker = tmp_path / "pwned"
    model = without_weights(tiny_classifier, tmp_path / "pickled")
    payload = (
        "import os, pickle\n"
        "class Exploit:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        f"pickle.dump({{'weight': Exploit()}}, open('{model / 'pytorch_model.bin'}', 'wb'))\n"
    )
    subprocess.run(["python", "-c", payload], check=True)
    for extra in ((), ("--allow-pickle",)):
        run = subprocess.run(
            plm_command("predict", "--model", model, "a good film", *extra), capture_output=True, text=True
        )
        assert run.returncode in (1, 2), run.stderr
        assert run.stderr.strip().splitlines()[-1].startswith("Error: ")
        assert "Traceback" not in run.stderr
        assert not marker.exists()
    refused = subprocess.run(plm_command("predict", "--model", model, "a good film"), capture_output=True, text=True)
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: {model} has no safetensors weights; plm loads only model.safetensors "
        "(pickled .bin files can run code). Pass --allow-pickle if you trust this model."
    )


def test_allow_pickle_loads_plain_pickled_weights(cli, tiny_classifier, tmp_path):
    import torch
    from safetensors.torch import load_file

    model = without_weights(tiny_classifier, tmp_path / "pickled")
    torch.save(load_file(tiny_classifier / "model.safetensors"), model / "pytorch_model.bin")
    assert cli("predict", "--model", model, "a good film").exit_code == 2
    run = cli("predict", "--model", model, "a good film", "--allow-pickle", "--format", "json")
    assert run.exit_code == 0, run.stderr
    expected = cli("predict", "--model", tiny_classifier, "a good film", "--format", "json")
    assert json.loads(run.stdout) == json.loads(expected.stdout)


def test_a_model_with_its_own_code_is_refused_without_a_prompt(tiny_classifier, tmp_path):
    marker = tmp_path / "ran"
    model = copy_model(tiny_classifier, tmp_path / "custom")
    config = json.loads((model / "config.json").read_text())
    config.update(
        model_type="plm-custom",
        architectures=["CustomForSequenceClassification"],
        auto_map={
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForSequenceClassification": "modeling_custom.CustomForSequenceClassification",
        },
    )
    (model / "config.json").write_text(json.dumps(config))
    touch = f"open({str(marker)!r}, 'w').close()\n"
    (model / "configuration_custom.py").write_text(touch + "from transformers import PretrainedConfig\n")
    (model / "modeling_custom.py").write_text(touch)
    for command in (("predict", "--model", model, "a good film"), ("evaluate", tmp_path / "x.csv", "--model", model)):
        write_csv(tmp_path / "x.csv", ["text", "label"], sentiment_rows(4))
        run = subprocess.run(plm_command(*command), input="y\ny\n", capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip().splitlines()[-1] == (
            f"Error: {model} needs its own Python code (auto_map in config.json); plm never runs code that "
            "comes with a model. Use a model of a standard architecture (BERT, RoBERTa, ...)."
        )
        assert "trust_remote_code" not in run.stdout + run.stderr  # no prompt was shown
        assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"not safetensors at all"])
def test_a_corrupt_or_empty_safetensors_file_is_one_line_naming_it(cli, tiny_classifier, tmp_path, content):
    model = copy_model(tiny_classifier, tmp_path / "broken")
    (model / "model.safetensors").write_bytes(content)
    before = snapshot(model)
    run = cli("predict", "--model", model, "a good film")
    assert snapshot(model) == before and run.stdout == ""
    assert run.exit_code == 1
    assert run.error_line.startswith(f"Error: {model / 'model.safetensors'} is not a valid safetensors file (")
    assert run.error_line.endswith("); the model directory is broken: train or download it again.")


# 14-26: data files


def test_mixed_line_endings_and_quoted_newlines(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        b'text,label\r\n"first line\nsecond line",positive\n"plain, with comma",negative\r\nthird,positive\r\n'
    )
    frame = data.read_table(str(path))
    assert frame.to_dict("records") == [
        {"text": "first line\nsecond line", "label": "positive"},
        {"text": "plain, with comma", "label": "negative"},
        {"text": "third", "label": "positive"},
    ]
    assert data.row_lines(str(path)) == [2, 4, 5]


def test_latin_1_bytes_name_the_file_and_line_and_encoding_reads_them(cli, tiny_base, tmp_path):
    rows = sentiment_rows(40)
    path = tmp_path / "latin.csv"
    text = "text,label\n" + "".join(f"{t},{y}\n" for t, y in rows[:5]) + "un café good,positive\n"
    text += "".join(f"{t},{y}\n" for t, y in rows[5:])
    path.write_bytes(text.encode("latin-1"))
    run = finetune(cli, tiny_base, path, tmp_path / "out")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {path} line 7 is not UTF-8 text (invalid continuation byte); pass --encoding with the file's "
        "encoding (like --encoding latin-1), or save it as UTF-8."
    )
    assert not (tmp_path / "out").exists()
    assert "un café good" in data.read_table(str(path), "latin-1")["text"].tolist()
    unknown = finetune(cli, tiny_base, path, tmp_path / "out", "--encoding", "klingon")
    assert unknown.exit_code == 2
    assert (
        unknown.error_line
        == "Error: --encoding klingon is not a text encoding Python knows; try utf-8, latin-1, cp1252."
    )


def test_a_byte_order_mark_is_ignored_on_a_header_and_a_corpus(tmp_path):
    from plmcli import corpus

    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\ngood film,positive\n")
    assert list(data.read_table(str(path)).columns) == ["text", "label"]
    text = tmp_path / "bom.txt"
    text.write_bytes(b"\xef\xbb\xbffirst line\nsecond line\n")
    assert corpus.read_corpus([str(text)]).lines[0] == "first line"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "{path} is empty; expected a header row and data rows."),
        (b"text,label\n", "{path} has a header but no rows."),
        (b"\n\n  \n", "{path} is empty; expected a header row and data rows."),
        (
            b"text,label\ngood film,positive\nbad, really,negative\n",
            "{path} line 3 has 3 fields where the header has 2; "
            "put quotes around values that contain commas, or fix that line.",
        ),
        (
            b'text,label\ngood film,positive\n"bad film,negative\nok,positive\n',
            '{path} line 3: a quoted value is never closed; add the closing ".',
        ),
    ],
)
def test_empty_ragged_or_unclosed_files_are_one_line_with_the_line(cli, tiny_base, tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    run = finetune(cli, tiny_base, path, tmp_path / "out")
    assert run.exit_code == 2
    assert run.error_line == "Error: " + message.format(path=path)
    assert not (tmp_path / "out").exists()


def test_a_corpus_of_blank_lines_is_one_line(cli, tiny_base, tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n\n   \n\t\n")
    run = cli("pretrain", path, "--model", tiny_base, "--output", tmp_path / "out")
    assert run.exit_code == 2
    assert run.error_line == f"Error: the corpus has no text: {path} is empty."
    assert not (tmp_path / "out").exists()


def test_misnamed_columns_and_header_spaces(cli, tiny_base, tmp_path):
    spaced = write_csv(tmp_path / "spaced.csv", [" text ", " label "], sentiment_rows(40))
    assert list(data.read_table(str(spaced)).columns) == ["text", "label"]
    run = finetune(cli, tiny_base, spaced, tmp_path / "out", "--label-column", "sentiment")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: missing column 'sentiment' in {spaced}; found: text, label. Use --label-column to pick one."
    )
    assert not (tmp_path / "out").exists()


def test_empty_labels_are_refused_with_lines_or_dropped_and_counted(cli, tiny_base, tmp_path):
    rows = sentiment_rows(40)
    rows[3] = (rows[3][0], "")
    rows[10] = (rows[10][0], "   ")
    path = write_csv(tmp_path / "gaps.csv", ["text", "label"], rows)
    run = finetune(cli, tiny_base, path, tmp_path / "out")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {path} has 2 rows with an empty label (lines 5, 12); "
        "fill them in, or pass --drop-invalid to skip them."
    )
    assert not (tmp_path / "out").exists()
    dropped = finetune(cli, tiny_base, path, tmp_path / "out", "--drop-invalid")
    assert dropped.exit_code == 0, dropped.stderr
    assert "Warning: --drop-invalid: skipped 2 rows with an empty text or label." in dropped.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["train"]["samples"] + metrics["validation_samples"] == 38


def test_labels_that_look_alike_stay_distinct_strings(cli, tiny_base, tmp_path):
    looks = ["1", "01", "1.0", "True"]
    rows = [(text, looks[i % 4]) for i, (text, _) in enumerate(sentiment_rows(48))]
    path = write_csv(tmp_path / "alike.csv", ["text", "label"], rows)
    run = finetune(cli, tiny_base, path, tmp_path / "out")
    assert run.exit_code == 0, run.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == sorted(looks)


def test_texts_that_look_like_missing_values_are_kept(tmp_path):
    rows = [("NA", "a"), ("None", "b"), ("null", "a"), ("123", "b"), ("nan", "a"), ("N/A", "b")]
    path = write_csv(tmp_path / "na.csv", ["text", "label"], rows * 4)
    loaded = data.load_classification(str(path), None, 0.25, seed=0)
    kept = sorted(set(loaded.train_texts + loaded.validation_texts))
    assert kept == sorted(text for text, _ in rows)
    assert loaded.dropped_rows == 0


def test_empty_or_blank_texts_are_refused_or_dropped_never_trained_on(cli, tiny_base, tmp_path):
    rows = sentiment_rows(40) + [("", "positive"), (" \t ", "negative")]
    path = write_csv(tmp_path / "blank.csv", ["text", "label"], rows)
    run = finetune(cli, tiny_base, path, tmp_path / "out")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {path} has 2 rows with an empty text (lines 42, 43); "
        "fill them in, or pass --drop-invalid to skip them."
    )
    loaded = data.load_classification(str(path), None, 0.2, seed=0, drop_invalid=True)
    assert all(text.strip() for text in loaded.train_texts + loaded.validation_texts)
    assert loaded.dropped_rows == 2


def test_one_class_only_is_refused(cli, tiny_base, tmp_path):
    path = write_csv(tmp_path / "one.csv", ["text", "label"], [(t, "positive") for t, _ in sentiment_rows(20)])
    run = finetune(cli, tiny_base, path, tmp_path / "out")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: {path} has a single label ('positive') in column 'label'; "
        "a classifier needs at least 2. Check --label-column."
    )
    assert not (tmp_path / "out").exists()


def test_a_validation_label_absent_from_training_is_named(cli, tiny_base, tmp_path):
    train = write_csv(tmp_path / "train.csv", ["text", "label"], sentiment_rows(20))
    dev = write_csv(tmp_path / "dev.csv", ["text", "label"], sentiment_rows(4) + [("so so film", "neutral")])
    run = finetune(cli, tiny_base, train, tmp_path / "out", "--validation", dev)
    assert run.exit_code == 2
    assert run.error_line == (
        "Error: the validation data has labels that training never sees: 'neutral'. "
        "Add them to the training data or drop those rows."
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("separator, name", [("\t", "tabs"), (";", "semicolons")])
def test_another_separator_in_a_csv_is_detected(tmp_path, capsys, separator, name):
    path = write_csv(tmp_path / "data.csv", ["text", "label"], [("a, b and c", "x"), ("d", "y")], separator)
    frame = data.read_table(str(path))
    assert frame.to_dict("records") == [{"text": "a, b and c", "label": "x"}, {"text": "d", "label": "y"}]
    assert f"{path}: the header is separated by {name}; reading the file that way." in capsys.readouterr().err


# 27-29: predict, and the same seed


def test_a_head_that_disagrees_with_id2label_is_refused(cli, tiny_classifier, tmp_path):
    model = copy_model(tiny_classifier, tmp_path / "mismatch")
    config = json.loads((model / "config.json").read_text())
    config["id2label"] = {"0": "negative", "1": "positive", "2": "neutral"}
    config["label2id"] = {"negative": 0, "positive": 1, "neutral": 2}
    (model / "config.json").write_text(json.dumps(config))
    before = snapshot(model)
    run = cli("predict", "--model", model, "a good film")
    assert snapshot(model) == before
    assert run.exit_code == 1
    assert run.error_line == (
        f"Error: {model} names 3 labels in config.json (id2label) but its classification head has 2 outputs; "
        "the model directory is broken."
    )
    assert run.stdout == ""


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_predicting_an_empty_text_is_refused(cli, tiny_classifier, text):
    run = cli("predict", "--model", tiny_classifier, "a good film", text)
    assert run.exit_code == 2
    assert run.error_line == "Error: text 2 is empty; give texts with words in them."
    assert run.stdout == ""


def test_a_3000_word_text_is_truncated_with_a_notice(cli, tiny_classifier):
    run = cli("predict", "--model", tiny_classifier, " ".join(["good film"] * 1500), "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert "Warning: 1 of 1 texts were longer than 64 tokens and were truncated" in run.stderr
    assert json.loads(run.stdout)[0]["label"] in ("positive", "negative")


def test_labels_do_not_depend_on_batch_size_or_input_order(cli, tiny_classifier, tmp_path):
    texts = [text for text, _ in sentiment_rows(50, seed=3)]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n")
    reversed_path = tmp_path / "reversed.txt"
    reversed_path.write_text("\n".join(reversed(texts)) + "\n")

    def labels(file, batch_size):
        run = cli(
            "predict", "--model", tiny_classifier, "--file", file, "--batch-size", batch_size, "--format", "json"
        )
        assert run.exit_code == 0, run.stderr
        return [row["label"] for row in json.loads(run.stdout)]

    one, many = labels(path, "1"), labels(path, "32")
    assert one == many
    assert labels(reversed_path, "32") == list(reversed(many))


@pytest.mark.parametrize("cpu_bf16", ["0", "1"], ids=["auto-fp32", "auto-bf16"])
def test_the_same_seed_gives_identical_metrics_and_weights(
    cli, tiny_base, sentiment_csv, tmp_path, monkeypatch, cpu_bf16
):
    """Bit for bit, in whichever precision --precision auto resolves to (forced both ways on any CPU)."""
    from plmcli import modeling

    monkeypatch.setenv(modeling.FORCE_CPU_BF16, cpu_bf16)
    output, saved = tmp_path / "out", []
    for extra in ((), ("--overwrite",)):
        run = finetune(cli, tiny_base, sentiment_csv, output, "--epochs", "2", *extra)
        assert run.exit_code == 0, run.stderr
        saved.append({name: (output / name).read_bytes() for name in ("metrics.json", "model.safetensors")})
    assert saved[0] == saved[1]
    metrics = json.loads(saved[0]["metrics.json"])
    assert metrics["precision"] == ("bf16" if cpu_bf16 == "1" else "fp32")
    assert "measured" not in metrics["precision_reason"]  # a fact about the CPU, never a timing


def test_errors_leave_an_existing_model_untouched(cli, tiny_base, tiny_classifier, tmp_path):
    model = copy_model(tiny_classifier, tmp_path / "model")
    before = snapshot(model)
    path = tmp_path / "bad.csv"
    path.write_text("text,label\ngood film,positive\nbad, really,negative\n")
    run = finetune(cli, tiny_base, path, model, "--overwrite")
    assert run.exit_code == 2
    assert snapshot(model) == before


# Found by a hostile-input review beyond the list


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"text,label\ngood, fun movie,positive\nbad film,negative\n",
            "{path} line 2 has 3 fields where the header has 2; "
            "put quotes around values that contain commas, or fix that line.",
        ),
        (b"text,text,label\na,b,c\n", "{path} has more than one column named text; rename them."),
        (b"id,,label\n1,a,b\n", "{path}: column 2 of the header has no name; give it one."),
        (b"text,label\n" + b"x" * 200_000 + b",\nfine,ok\n", "{path} has 1 row with an empty label (line 2); "),
    ],
)
def test_shifted_rows_and_bad_headers_are_never_read_silently(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(PlmError) as error:
        data.load_classification(str(path), None, 0.2, seed=0)
    assert str(error.value).startswith(message.format(path=path))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", b'{"text": "a", "label": "x"}\n' * 6 + b'{"text": oops}\n', "{path} line 7 is not valid JSON ("),
        ("list.jsonl", b'{"text": "a", "label": "x"}\n[1, 2]\n', "{path} line 2 is not a JSON object;"),
        ("deep.json", b"[" * 100_000, "cannot read {path} as JSON: it is nested too deeply."),
    ],
)
def test_broken_json_names_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PlmError) as error:
        data.read_table(str(path))
    assert str(error.value).startswith(message.format(path=path))


def test_jsonl_and_txt_lines_end_only_at_line_breaks(cli, tiny_classifier, tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"text": "a\u2028b", "label": "x"}\n{"text": "c", "label": "y"}\n', encoding="utf-8")
    assert data.read_table(str(path))["text"].tolist() == ["a\u2028b", "c"]
    lines = tmp_path / "lines.txt"
    lines.write_text("good\u2028film\nbad\x0cfilm\nok\x85film\n", encoding="utf-8")
    run = cli("predict", "--model", tiny_classifier, "--file", lines, "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert len(json.loads(run.stdout)) == 3


def test_parquet_with_nested_dates_is_read(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "nested.parquet"
    stamp = datetime.datetime(2026, 1, 2, 3, 4, 5)
    pq.write_table(pa.table({"text": ["a", "b"], "label": ["x", "y"], "seen": [[stamp], []]}), path)
    assert data.read_table(str(path))["seen"].tolist() == ['["2026-01-02 03:04:05"]', "[]"]


def test_predictions_never_overwrite_an_input_column(cli, tiny_classifier, tmp_path):
    path = write_csv(
        tmp_path / "in.csv", ["text", "label", "predicted_label"], [("a good film", "x", "mine"), ("bad", "y", "too")]
    )
    run = cli("predict", "--model", tiny_classifier, "--file", path, "--format", "csv")
    assert run.exit_code == 0, run.stderr
    header, first, _ = run.stdout.strip().split("\n")
    assert header == "text,label,predicted_label,plm_predicted_label,plm_predicted_score"
    assert first.startswith("a good film,x,mine,")


def test_evaluate_never_writes_over_the_model_it_evaluates(cli, tiny_classifier, tmp_path):
    model = copy_model(tiny_classifier, tmp_path / "model")
    before = snapshot(model)
    labelled = write_csv(tmp_path / "test.csv", ["text", "label"], sentiment_rows(8))
    run = cli("evaluate", labelled, "--model", model, "--output", model, "--overwrite")
    assert run.exit_code == 2
    assert run.error_line == f"Error: --output {model} holds the input {model}; choose another --output."
    assert snapshot(model) == before


@pytest.mark.parametrize(
    "option, message",
    [
        (("--epochs", "inf"), "--epochs must be a finite number greater than 0 and at most 10000; got inf."),
        (("--lr", "inf"), "--lr must be a finite number greater than 0; got inf."),
        (("--seed", "-1"), "--seed must be between 0 and 4294967295; got -1."),
        (
            ("--encoding", "base64"),
            "--encoding base64 is not a text encoding Python knows; try utf-8, latin-1, cp1252.",
        ),
    ],
)
def test_impossible_settings_are_refused_before_any_work(cli, tiny_base, sentiment_csv, tmp_path, option, message):
    run = finetune(cli, tiny_base, sentiment_csv, tmp_path / "out", *option)
    assert run.exit_code == 2
    assert run.error_line == "Error: " + message
    assert not (tmp_path / "out").exists()


def test_a_failed_run_into_an_existing_model_leaves_no_checkpoints_dir(cli, tiny_base, tiny_classifier, tmp_path):
    model = copy_model(tiny_classifier, tmp_path / "model")
    before = snapshot(model)
    rows = [(text, label) for text, label in sentiment_rows(40)]
    path = write_csv(tmp_path / "one-each.csv", ["text", "label"], [(t, f"label{i}") for i, (t, _) in enumerate(rows)])
    run = finetune(cli, tiny_base, path, model, "--overwrite")
    assert run.exit_code == 2
    assert run.error_line == (
        f"Error: no label in {path} has 2 or more rows (40 rows, 40 labels), so none can be held out for "
        "validation; add rows or pass --validation FILE."
    )
    assert snapshot(model) == before and sorted(p.name for p in model.iterdir()) == sorted(before)


@pytest.mark.parametrize(
    "content", ["[1, 2]", '{"id2label": "oops", "architectures": ["BertForSequenceClassification"]}']
)
def test_a_config_that_is_not_a_configuration_is_one_line(cli, tiny_classifier, tmp_path, content):
    model = copy_model(tiny_classifier, tmp_path / "model")
    (model / "config.json").write_text(content)
    for command in (("predict", "--model", model, "a good film"), ("fill-mask", "--model", model, "a [MASK] film")):
        run = cli(*command)
        assert run.exit_code == 1, run.stderr
        assert run.error_line == (
            f"Error: {model / 'config.json'} is not a model configuration (a JSON object with an id2label "
            "object); the model directory is broken."
        )


def test_same_validation_file_under_another_name_or_a_directory(cli, tiny_base, sentiment_csv, tmp_path):
    same = cli("finetune", sentiment_csv, "--validation", f"{sentiment_csv.parent}/./{sentiment_csv.name}")
    assert same.exit_code == 2 and "the validation file is the training file" in same.stderr
    folder = finetune(cli, tiny_base, sentiment_csv, tmp_path / "out", "--validation", tmp_path)
    assert folder.exit_code == 2
    assert folder.error_line == f"Error: {tmp_path} is a directory; expected a CSV, TSV, JSON, JSONL or Parquet file."


def test_an_output_under_a_file_is_refused_before_any_work(cli, tiny_base, sentiment_csv, tmp_path):
    run = finetune(cli, tiny_base, sentiment_csv, sentiment_csv / "out")
    assert run.exit_code == 2
    assert (
        run.error_line
        == f"Error: cannot write --output {sentiment_csv / 'out'}: {sentiment_csv} is a file, not a directory."
    )
    assert "Data:" not in run.stderr  # refused before the data was read


def test_fill_mask_never_drops_masks_or_proposes_special_tokens(cli, tiny_mlm):
    many = cli("fill-mask", "--model", tiny_mlm, " ".join(["[MASK]"] * 100))
    assert many.exit_code == 2
    assert many.error_line.startswith("Error: 38 of the 100 masks in ") and "shorten the text" in many.error_line
    wide = cli("fill-mask", "--model", tiny_mlm, "the film was [MASK] .", "--top-k", "1000", "--format", "json")
    assert wide.exit_code == 0, wide.stderr
    tokens = [filler["token"] for filler in json.loads(wide.stdout)[0]["masks"][0]]
    assert not {"[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]"} & set(tokens) and len(tokens) == len(set(tokens))


def test_check_refuses_an_empty_label_separator(cli, sentiment_csv):
    run = cli("check", sentiment_csv, "--multi-label", "--label-separator", "")
    assert run.exit_code == 2
    assert run.error_line == "Error: --label-separator must be a visible character or string, like '|' or ';'."


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("predict", "--top-k", "0", "x"),
            "Error: Invalid value for '--top-k': Input should be greater than or equal to 1",
        ),
        (("finetune", "data.csv", "--bogus"), "Error: No such option: --bogus"),
    ],
)
def test_usage_errors_are_one_line(cli, args, message):
    run = cli(*args)
    assert run.exit_code == 2
    assert run.stderr == message + "\n"


def test_rows_without_text_keep_their_place_with_no_prediction(cli, tiny_classifier, tmp_path):
    path = write_csv(tmp_path / "in.csv", ["id", "text"], [("1", "a good film"), ("2", "  "), ("3", "bad")])
    run = cli("predict", "--model", tiny_classifier, "--file", path, "--format", "json")
    assert run.exit_code == 0, run.stderr
    rows = json.loads(run.stdout)
    assert [row["id"] for row in rows] == ["1", "2", "3"]
    assert rows[1]["label"] is None and rows[1]["score"] is None and rows[0]["label"] in ("positive", "negative")
    assert "Warning: 1 of 3 rows have an empty text; they get no label." in run.stderr
