"""Messages stay one clean line: no library warnings with source lines, labels escaped, paths quoted, ~ expanded."""

import json
import warnings

from plmcli import console
from tests.conftest import sentiment_rows, write_csv

FAST = ["--epochs", "1", "--batch-size", "16", "--device", "cpu"]


def test_a_library_warning_is_one_line_without_its_source(capsys):
    shown = warnings.showwarning
    warnings.showwarning = console.one_line_warning
    try:
        warnings.warn_explicit("Glyph 128512\n missing from font", UserWarning, "/lib/matplotlib/text.py", 12)
    finally:
        warnings.showwarning = shown
    assert capsys.readouterr().err == "Warning: Glyph 128512 missing from font\n"


def test_labels_with_emoji_newlines_and_tabs_train_with_a_clean_stderr(cli, tiny_base, tmp_path):
    names = {"positive": "good 😀", "negative": "bad\nday\t!"}
    rows = [(text, names[label]) for text, label in sentiment_rows(60)]
    data = write_csv(tmp_path / "odd.csv", ["text", "label"], rows)
    output = tmp_path / "my model"
    run = cli("finetune", data, "--model", tiny_base, "--output", output, *FAST)
    assert run.exit_code == 0, run.stderr
    assert "UserWarning" not in run.stderr and "Glyph" not in run.stderr
    assert "labels: bad\\nday\\t!, good 😀" in run.stderr  # one line, the label escaped
    assert "bad\\nday\\t!" in run.stdout and "bad\nday" not in run.stdout  # the summary's table, escaped
    assert f"plm predict --model '{output}'" in run.stdout  # a hint that pastes into a shell as it is
    config = json.loads((output / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["bad\nday\t!", "good 😀"]  # the model keeps the real names


def test_a_label_with_a_newline_in_an_error_is_escaped(cli, tiny_base, tmp_path):
    data = write_csv(tmp_path / "one.csv", ["text", "label"], [("good", "x\ny"), ("bad", "x\ny")])
    run = cli("finetune", data, "--model", tiny_base, "--output", tmp_path / "m", *FAST)
    assert run.exit_code == 2
    assert run.stderr.strip().splitlines()[-1] == run.error_line
    assert "single label ('x\\ny')" in run.error_line


def test_texts_that_are_not_utf_8_are_one_line(cli, tiny_classifier, tiny_mlm):
    run = cli("predict", "--model", tiny_classifier, "good", "caf\udce9")  # how Python keeps the byte 0xe9
    assert (run.exit_code, run.error_line) == (
        2,
        "Error: text 2 is not valid UTF-8 (byte 0xe9 at character 4); give texts in UTF-8, or put them in a file "
        "and pass --file with --encoding.",
    )
    run = cli("fill-mask", "--model", tiny_mlm, "a [MASK] \udcff")
    assert run.exit_code == 2 and run.error_line.startswith("Error: text 1 is not valid UTF-8 (byte 0xff")


def test_a_tilde_is_expanded_by_every_command(cli, tiny_base, tiny_classifier, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(40))
    run = cli("finetune", "~/reviews.csv", "--model", tiny_base, "--output", "~/model", *FAST)
    assert run.exit_code == 0, run.stderr
    run = cli("predict", "--model", "~/model", "good", "--output", "~/labels.csv")
    assert run.exit_code == 0, run.stderr
    run = cli("evaluate", "~/reviews.csv", "--model", "~/model", "--output", "~/report", "--device", "cpu")
    assert run.exit_code == 0, run.stderr
    run = cli("check", "~/reviews.csv")
    assert run.exit_code == 0, run.stderr
    assert {"model", "labels.csv", "report", "reviews.csv"} <= {path.name for path in tmp_path.iterdir()}


def test_output_dash_is_standard_output(cli, tiny_classifier, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = cli("predict", "--model", tiny_classifier, "good", "--output", "-", "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout)[0]["text"] == "good" and not (tmp_path / "-").exists()
