"""plm audit: stratified folds, out-of-fold predictions, cleanlab's suspects, row numbers, --fix-out, --resume."""

import csv
import json

import numpy as np
import pytest

from plmcli.audit import assign_folds
from plmcli.errors import Interrupted
from tests.conftest import sentiment_rows, snapshot, write_csv

FLIPPED = (3, 10, 17, 30, 41, 58, 77, 96)  # 0-based data rows whose label is turned over


def noisy_rows(count: int = 120) -> list[tuple[str, str]]:
    """Sentiment rows with FLIPPED labels turned over; row 5's text spans two lines (a quoted cell)."""
    rows = sentiment_rows(count, seed=3)
    rows = [
        (text, ("negative" if label == "positive" else "positive") if i in FLIPPED else label)
        for i, (text, label) in enumerate(rows)
    ]
    text, label = rows[5]
    rows[5] = (text.replace(" ", "\n", 1), label)
    return rows


def audit_args(data, output, tiny_base, *more):
    return (
        "audit", data, "--model", tiny_base, "--output", output, "--folds", "3", "--epochs", "6", "--lr", "3e-3",
        "--batch-size", "16", "--device", "cpu", "--precision", "fp32", *more,
    )  # fmt: skip


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_folds_are_stratified_balanced_and_seeded():
    labels = np.array([0] * 50 + [1] * 23 + [2] * 7 + [3] * 2)
    folds = assign_folds(labels, 5, seed=1)
    for label in range(4):
        counts = np.bincount(folds[labels == label], minlength=5)
        assert counts.max() - counts.min() <= 1, (label, counts)
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    assert (assign_folds(labels, 5, seed=1) == folds).all()
    assert (assign_folds(labels, 5, seed=2) != folds).any()


@pytest.fixture(scope="module")
def audited(tmp_path_factory, tiny_base):
    """One audit of a file with 8 flipped labels, run through the command line, with --fix-out."""
    from plmcli.cli import main

    directory = tmp_path_factory.mktemp("audit")
    data = write_csv(
        directory / "noisy.csv", ["text", "label", "source"], [(*r, f"s{i}") for i, r in enumerate(noisy_rows())]
    )
    output, fixed = directory / "report", directory / "cleaned.csv"
    argv = ["plm", *map(str, audit_args(data, output, tiny_base, "--fix-out", fixed))]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", argv)
        with pytest.raises(SystemExit) as ended:
            main()
    assert ended.value.code in (0, None)
    return data, output, fixed


def test_audit_finds_the_flipped_labels_and_numbers_rows_as_in_the_file(audited):
    data, output, _ = audited
    given = read_csv(data)  # row N of the report is given[N - 1]: the quoted two-line cell is one row
    suspects = read_csv(output / "suspects.csv")
    assert list(suspects[0])[:5] == ["row", "given_label", "suggested_label", "self_confidence", "suggested_score"]
    assert {"text", "label", "source"} <= set(suspects[0])
    for suspect in suspects:
        row = given[int(suspect["row"]) - 1]
        assert (suspect["text"], suspect["label"], suspect["given_label"]) == (row["text"], row["label"], row["label"])
        assert suspect["source"] == f"s{int(suspect['row']) - 1}"
    confidences = [float(s["self_confidence"]) for s in suspects]
    assert confidences == sorted(confidences)  # most suspect first
    top = {int(s["row"]) - 1 for s in suspects[: len(FLIPPED)]}
    assert len(top & set(FLIPPED)) >= 6, (top, FLIPPED)
    assert all(s["suggested_label"] != s["given_label"] for s in suspects[: len(FLIPPED)])

    every = read_csv(output / "out_of_fold.csv")
    assert [int(r["row"]) for r in every] == list(range(1, 121))
    assert every[5]["given_label"] == given[5]["label"]
    totals = [float(r["score: negative"]) + float(r["score: positive"]) for r in every]
    assert np.allclose(totals, 1.0, atol=1e-5)
    assert sorted(int(r["fold"]) for r in every) == sorted([1] * 40 + [2] * 40 + [3] * 40)
    assert {int(r["row"]) for r in every if r["flagged"]} == {int(s["row"]) for s in suspects}


def test_audit_metrics_readme_and_fix_out(audited):
    data, output, fixed = audited
    metrics = json.loads((output / "metrics.json").read_text())
    cv = metrics["cross_validation"]
    assert len(cv["accuracy"]["folds"]) == 3 and cv["accuracy"]["mean"] == pytest.approx(
        np.mean(cv["accuracy"]["folds"]), abs=1e-4
    )
    assert 0.7 < cv["accuracy"]["mean"] <= 0.95  # the flipped rows count against it
    suspects = read_csv(output / "suspects.csv")
    assert metrics["suspects"]["count"] == len(suspects)
    assert sum(metrics["suspects"]["per_class"].values()) == len(suspects)
    assert 0 < metrics["estimated_label_errors"]["count"] < 40
    assert "suspects.csv" in (output / "README.md").read_text()
    assert not (output / "checkpoints").exists()  # the folds' state goes once the report is written
    kept = read_csv(fixed)
    dropped = {int(s["row"]) - 1 for s in suspects}
    assert [r["source"] for r in kept] == [f"s{i}" for i in range(120) if i not in dropped]
    assert kept[5 - sum(i < 5 for i in dropped)]["text"].count("\n") == (0 if 5 in dropped else 1)


def test_interrupted_audit_resumes_from_the_finished_folds(cli, tiny_base, tmp_path, monkeypatch, audited):
    from plmcli.audit import FoldTask

    data, reference, _ = audited
    output = tmp_path / "report"
    read = FoldTask.read

    def stop_at_the_third_fold(task):
        if task.fold == 2:
            raise Interrupted(2, "SIGINT")
        read(task)

    monkeypatch.setattr(FoldTask, "read", stop_at_the_third_fold)
    stopped = cli(*audit_args(data, output, tiny_base))
    assert stopped.exit_code == 130
    assert "2 finished folds kept" in stopped.error_line and "--resume" in stopped.error_line
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["fold-1", "fold-2"]
    assert not (output / "suspects.csv").exists()

    refused = cli(*audit_args(data, output, tiny_base))
    assert refused.exit_code == 2 and "--resume" in refused.error_line

    monkeypatch.setattr(FoldTask, "read", read)
    resumed = cli(*audit_args(data, output, tiny_base, "--resume"))
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.stderr.count("finished in an earlier run") == 2
    assert (output / "out_of_fold.csv").read_bytes() == (reference / "out_of_fold.csv").read_bytes()
    assert (output / "suspects.csv").read_bytes() == (reference / "suspects.csv").read_bytes()


@pytest.mark.slow  # a second interrupted audit; resume itself stays in the quick suite
def test_resume_refuses_a_finished_fold_run_with_other_settings(cli, tiny_base, tmp_path, monkeypatch):
    from plmcli.audit import FoldTask

    data = write_csv(tmp_path / "noisy.csv", ["text", "label"], noisy_rows(60))
    output = tmp_path / "report"
    read = FoldTask.read

    def stop_at_the_second_fold(task):
        if task.fold == 1:
            raise Interrupted(15, "SIGTERM")
        read(task)

    monkeypatch.setattr(FoldTask, "read", stop_at_the_second_fold)
    assert cli(*audit_args(data, output, tiny_base)).exit_code == 143
    monkeypatch.setattr(FoldTask, "read", read)
    before = snapshot(output)
    changed = cli(*audit_args(data, output, tiny_base, "--resume", "--seed", "7"))
    assert changed.exit_code == 2 and "other data or settings" in changed.error_line
    assert snapshot(output) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--multi-label",), "--multi-label is not supported"),
        (("--task", "regression"), "--task regression is not supported"),
        (("--fix-out", "cleaned.xlsx"), "--fix-out cleaned.xlsx"),
    ],
)
def test_audit_refuses_what_it_cannot_do(cli, tiny_base, tmp_path, extra, message):
    data = write_csv(tmp_path / "data.csv", ["text", "label"], noisy_rows(30))
    run = cli(*audit_args(data, tmp_path / "out", tiny_base, *extra))
    assert run.exit_code == 2 and message in run.error_line and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_audit_refuses_a_label_with_one_row_and_resume_with_nothing_to_resume(cli, tiny_base, tmp_path):
    rows = noisy_rows(30) + [("a lonely text", "neutral")]
    data = write_csv(tmp_path / "data.csv", ["text", "label"], rows)
    run = cli(*audit_args(data, tmp_path / "out", tiny_base))
    assert run.exit_code == 2 and "'neutral' has a single row" in run.error_line
    clean = write_csv(tmp_path / "clean.csv", ["text", "label"], noisy_rows(30))
    run = cli(*audit_args(clean, tmp_path / "out", tiny_base, "--resume"))
    assert run.exit_code == 2 and "nothing to resume" in run.error_line
