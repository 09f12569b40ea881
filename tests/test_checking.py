"""`plm check`: the data doctor's figures on a file with known problems."""

import json

from tests.conftest import write_csv


def _problem_file(tmp_path):
    rows = [("great fun film", "pos")] * 3  # 2 duplicate rows
    rows += [("awful  boring", "neg"), ("awful boring", "pos")]  # one text (after folding spaces), two labels
    rows += [(f"good movie is a very fun film {i}", "pos") for i in range(10)] + [
        ("bad movie", "neg"),
        ("", "neg"),
        ("plot", ""),
    ]
    return write_csv(tmp_path / "d.csv", ["text", "label"], rows)


def test_check_reports_duplicates_conflicts_imbalance_overlap_and_lengths(cli, tiny_base, tmp_path):
    data = _problem_file(tmp_path)
    validation = write_csv(tmp_path / "v.csv", ["content", "label"], [("bad   movie", "neg"), ("new text", "pos")])
    run = cli("check", data, "--validation", validation, "--model", tiny_base, "--max-length", "8", "--format", "json")
    assert run.exit_code == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["rows"] == 18 and report["empty_texts"] == 1 and report["empty_labels"] == 1
    assert report["labels"] == {"neg": 2, "pos": 14}
    assert report["imbalance_ratio"] == 7.0
    assert report["duplicate_rows"] == 2 and report["duplicate_rows_examples"] == ["great fun film"]
    assert report["texts_with_several_labels_examples"] == [{"text": "awful boring", "labels": ["neg", "pos"]}]
    assert report["validation_texts_also_in_data"] == 1 and report["validation_overlap_examples"] == ["bad movie"]
    assert report["token_length_percentiles"]["max"] == 10  # [CLS] good movie is a very fun film [UNK] [SEP]
    assert report["truncated_at_max_length"] == round(10 / 16, 4)  # of the 16 rows with a text and a label


def test_check_table_says_what_to_fix(cli, tiny_base, tmp_path):
    run = cli("check", _problem_file(tmp_path), "--model", tiny_base)
    assert run.exit_code == 0, run.stderr
    assert "- 2 rows repeat an earlier row (same text and label)." in run.stdout
    assert "- 1 texts appear with more than one label; no model can get both right." in run.stdout
    assert "- the largest label has 7.0x the rows of the smallest; watch macro-F1, not only accuracy." in run.stdout


def test_check_of_a_missing_file_is_one_line(cli, tmp_path):
    run = cli("check", tmp_path / "nope.csv")
    assert (run.exit_code, run.error_line) == (2, f"Error: file not found: {tmp_path / 'nope.csv'}")
