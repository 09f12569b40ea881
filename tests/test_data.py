"""plmcli.data: readers keep every cell as text, columns are detected, labels sorted, splits stratified."""

import json
from collections import Counter

import pandas as pd
import pytest

from plmcli import data
from plmcli.errors import PlmError
from tests.conftest import sentiment_rows, write_csv

TRICKY = ["01", "NA", "None", "True", "123", ""]


def _tricky_frame() -> pd.DataFrame:
    return pd.DataFrame({"text": [f"row {i}" for i in range(len(TRICKY))], "label": TRICKY})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_cell_is_read_as_the_text_written(tmp_path, suffix):
    frame = _tricky_frame()
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".json":
        path.write_text(json.dumps(frame.to_dict("records")))
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")) + "\n")
    else:
        frame.to_parquet(path)
    read = data.read_table(str(path))
    assert read["label"].tolist() == TRICKY
    assert read["text"].tolist() == frame["text"].tolist()


def test_json_scalars_keep_their_json_spelling(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": true}\n{"text": "c", "label": null}\n')
    assert data.read_table(str(path))["label"].tolist() == ["1", "true", ""]


def test_tsv_with_crlf_and_bare_quotes(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b'sentence\tlabel\r\nit \'s a "charming" film \t1\r\n"quoted start\t0\r\n')
    read = data.read_table(str(path))
    assert read.columns.tolist() == ["sentence", "label"]
    assert read["label"].tolist() == ["1", "0"]
    assert read["sentence"].tolist() == ['it \'s a "charming" film ', '"quoted start']


@pytest.mark.parametrize(
    "header, expected",
    [
        (["text", "label"], ("text", "label")),
        (["label", "sentence"], ("sentence", "label")),
        (["label", "content"], ("content", "label")),
        (["Review Text", "Class"], ("Review Text", "Class")),
    ],
)
def test_columns_detected_by_name(header, expected):
    frame = pd.DataFrame([["a b c", "x"], ["d e f", "y"]], columns=header)
    columns = data.detect_columns(frame, "f.csv")
    assert (columns.text, columns.label) == expected


def test_columns_detected_by_content_when_names_are_unusual():
    rows = sentiment_rows(40)
    frame = pd.DataFrame(
        {
            "uid": [str(i) for i in range(40)],
            "verdict": [r[1] for r in rows],
            "blurb": [r[0] for r in rows],
            "lang": ["en"] * 40,
        }
    )
    columns = data.detect_columns(frame, "f.csv")
    assert (columns.text, columns.label) == ("blurb", "verdict")


def test_columns_whose_names_contain_a_known_name_are_found_when_their_values_fit():
    rows = sentiment_rows(40)
    frame = pd.DataFrame(
        {
            "ticket_no": [str(i) for i in range(40)],
            "channel": ["web", "phone"] * 20,  # fewer distinct values than the real label column
            "product_category_v2": [["billing", "login", "refund"][i % 3] for i in range(40)],
            "context_labelled": ["x"] * 40,  # contains 'label' but holds one value: not a label column
            "customer_text_raw": [r[0] for r in rows],
        }
    )
    columns = data.detect_columns(frame, "f.csv")
    assert (columns.text, columns.label) == ("customer_text_raw", "product_category_v2")


def test_given_columns_win_and_unknown_column_names_what_exists():
    frame = pd.DataFrame({"text": ["a"], "title": ["t"], "label": ["x"], "stars": ["5"]})
    columns = data.detect_columns(frame, "f.csv", text_column="title", label_column="stars")
    assert (columns.text, columns.label) == ("title", "stars")
    with pytest.raises(PlmError) as caught:
        data.detect_columns(frame, "reviews.csv", label_column="sentiment")
    assert str(caught.value) == (
        "missing column 'sentiment' in reviews.csv; found: text, title, label, stars. Use --label-column to pick one."
    )


def test_labels_sort_numerically_when_all_are_integers():
    assert data.sort_labels({"10", "2", "1"}) == ["1", "2", "10"]
    assert data.sort_labels({"b", "a", "10"}) == ["10", "a", "b"]


def test_stratified_split_keeps_label_shares_and_is_seeded():
    labels = ["a"] * 90 + ["b"] * 10
    train, validation = data.stratified_split(labels, 0.2, seed=1)
    assert sorted(train + validation) == list(range(100))
    assert Counter(labels[i] for i in validation) == {"a": 18, "b": 2}
    assert data.stratified_split(labels, 0.2, seed=1) == (train, validation)
    assert data.stratified_split(labels, 0.2, seed=2) != (train, validation)


def test_load_classification_maps_labels_and_validation_columns(tmp_path):
    train = write_csv(tmp_path / "train.tsv", ["label", "sentence"], [(y, t) for t, y in sentiment_rows(20)], "\t")
    dev = write_csv(tmp_path / "dev.tsv", ["label", "content"], [(y, t) for t, y in sentiment_rows(6, seed=3)], "\t")
    loaded = data.load_classification(str(train), str(dev), 0.1, seed=0)
    assert loaded.label_names == ["negative", "positive"]
    assert len(loaded.train_texts) == 20 and len(loaded.validation_texts) == 6
    assert loaded.columns.text == "sentence"
    expected = [loaded.label_names.index(y) for _, y in sentiment_rows(6, seed=3)]
    assert loaded.validation_labels == expected


def test_rows_with_empty_text_or_label_are_refused_with_their_lines_or_dropped_and_counted(tmp_path):
    rows = sentiment_rows(20) + [("", "positive"), ("some text", "  ")]
    path = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    with pytest.raises(PlmError) as refused:
        data.load_classification(str(path), None, 0.2, seed=0)
    assert str(refused.value) == (
        f"{path} has 2 rows with an empty text or label (lines 22, 23); "
        "fill them in, or pass --drop-invalid to skip them."
    )
    loaded = data.load_classification(str(path), None, 0.2, seed=0, drop_invalid=True)
    assert loaded.dropped_rows == 2
    assert len(loaded.train_texts) + len(loaded.validation_texts) == 20


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty; expected a header row and data rows."),
        ("text,label\n", "has a header but no rows."),
        ("text,label\na,x\nb,x\nc,x\n", "has a single label ('x') in column 'label'; a classifier needs at least 2."),
    ],
)
def test_unusable_files_are_refused(tmp_path, content, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(PlmError) as caught:
        data.load_classification(str(path), None, 0.1, seed=0)
    assert message in str(caught.value)


def test_validation_labels_unseen_in_training_are_refused(tmp_path):
    train = write_csv(tmp_path / "t.csv", ["text", "label"], sentiment_rows(10))
    dev = write_csv(tmp_path / "v.csv", ["text", "label"], [("x", "neutral"), ("y", "positive")])
    with pytest.raises(PlmError, match="labels that training never sees: 'neutral'"):
        data.load_classification(str(train), str(dev), 0.1, seed=0)


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(PlmError, match="unsupported file type '.xlsx'"):
        data.read_table(str(tmp_path / "d.xlsx"))
    with pytest.raises(PlmError, match="file not found"):
        data.read_table(str(tmp_path / "missing.csv"))


def test_read_texts_from_lines_and_tables(tmp_path):
    lines = tmp_path / "t.txt"
    lines.write_text("first text\n\nsecond text\n")
    assert data.read_texts(str(lines)) == (["first text", "second text"], None, None, None)
    table = write_csv(tmp_path / "t.csv", ["id", "review"], [("1", "nice"), ("2", "meh")])
    texts, pairs, frame, column = data.read_texts(str(table))
    assert texts == ["nice", "meh"] and pairs is None and column == "review" and frame["id"].tolist() == ["1", "2"]


def test_multi_label_cells_lists_and_empty_rows(tmp_path):
    import json

    path = tmp_path / "tags.jsonl"
    records = [
        {"text": f"text {i}", "tags": ["b", "a"] if i % 3 == 0 else ("c" if i % 3 == 1 else "")} for i in range(30)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = data.load_classification(str(path), None, 0.2, seed=0, multi_label=True)
    assert loaded.label_names == ["a", "b", "c"] and loaded.dropped_rows == 0
    every = loaded.train_labels + loaded.validation_labels
    assert sorted(map(tuple, every)).count(()) == 10  # rows with an empty cell: no label applies
    assert sorted(map(tuple, every)).count((0, 1)) == 10  # the JSON list ["b", "a"]


def test_the_pair_column_is_never_taken_as_the_text():
    frame = pd.DataFrame(
        {"claim": ["short a", "short b"], "evidence": ["a much longer text", "another long one"], "label": ["x", "y"]}
    )
    columns = data.detect_columns(frame, "f.csv", pair_column="evidence")
    assert (columns.text, columns.pair, columns.label) == ("claim", "evidence", "label")


def test_max_train_samples_keeps_the_label_set_of_the_whole_split(tmp_path):
    rows = [(f"text {i}", "common") for i in range(40)] + [(f"rare {i}", f"rare{i % 4}") for i in range(8)]
    path = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    loaded = data.load_classification(str(path), None, 0.25, seed=0, max_train_samples=10)
    assert loaded.label_names == ["common", "rare0", "rare1", "rare2", "rare3"] and len(loaded.train_texts) == 10


def test_many_labels_with_few_rows_hold_out_the_share_asked_for_and_say_so(tmp_path, capsys):
    rows = [(f"text {label} {i}", f"label{label}") for label in range(40) for i in range(2)]
    path = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    loaded = data.load_classification(str(path), None, 0.1, seed=0)
    assert (len(loaded.validation_texts), len(loaded.train_texts), loaded.validation_share) == (8, 72, 0.1)
    assert len(loaded.label_names) == 40 and set(loaded.train_labels) == set(range(40))  # every label is trained on
    assert capsys.readouterr().err.strip() == (
        "Validation: 8 of 80 rows (10%); 32 of the 40 labels have too few rows to be among them: they are trained "
        "on, not validated. Pass --validation FILE to validate every label."
    )


def test_a_split_that_reaches_every_label_says_when_it_holds_more_than_asked(tmp_path, capsys):
    rows = [(f"common {i}", "common") for i in range(40)] + [(f"rare {i}", f"rare{i % 4}") for i in range(8)]
    loaded = data.load_classification(str(write_csv(tmp_path / "d.csv", ["text", "label"], rows)), None, 0.1, seed=0)
    assert len(loaded.validation_texts) == 8 and loaded.validation_share == pytest.approx(8 / 48)
    assert "Validation: 8 of 48 rows (17%, more than --validation-split 0.1)" in capsys.readouterr().err


def test_max_train_samples_keeps_every_label_and_its_share(tmp_path):
    rows = [(f"common {i}", "common") for i in range(60)] + [(f"rare {i}", f"rare{i % 3}") for i in range(9)]
    path = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    loaded = data.load_classification(str(path), None, 0.25, seed=0, max_train_samples=8)
    counts = Counter(loaded.label_names[i] for i in loaded.train_labels)
    assert counts == {"common": 5, "rare0": 1, "rare1": 1, "rare2": 1}
    with pytest.raises(PlmError) as error:
        data.load_classification(str(path), None, 0.25, seed=0, max_train_samples=3)
    assert str(error.value) == (
        "--max-train-samples 3 is fewer than the 4 labels of the training rows; raise it to at least 4."
    )


def test_finetune_with_a_label_of_one_training_row_after_sampling(cli, tiny_base, tmp_path):
    rows = [(f"good film {i}", "positive") for i in range(30)] + [("bad film", "negative")] * 2
    path = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    output = tmp_path / "model"
    run = cli(
        "finetune",
        path,
        "--model",
        tiny_base,
        "--output",
        output,
        "--max-train-samples",
        "4",
        "--epochs",
        "1",
        "--device",
        "cpu",
    )
    assert run.exit_code == 0, run.stderr
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["class_weights"]["counts"] == {"negative": 1, "positive": 3}
    assert "- Validation: 12% of the training file, stratified (4 rows)" in (output / "README.md").read_text()
