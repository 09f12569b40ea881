"""What a run read is what it records: digests taken in the reading pass, a file changed mid-run refused.

A manifest, a --resume check and a corpus cache key all describe data. Each must describe the
bytes the run trained on, even when the file changes while the run is going.
"""

import hashlib
import json

import pytest

from plmcli import textfiles
from plmcli.errors import RUNTIME_FAILURE, PlmError
from tests.conftest import corpus_text, sentiment_rows, snapshot, write_csv

FAST = ["--epochs", "1", "--batch-size", "16", "--device", "cpu", "--precision", "fp32", "--max-length", "32"]


def test_a_file_read_twice_in_one_run_must_read_the_same(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\ngood,positive\n", encoding="utf-8")
    first = hashlib.sha256(path.read_bytes()).hexdigest()
    with textfiles.recording():
        textfiles.read_bytes(path)
        path.write_text("text,label\nbad,negative\n", encoding="utf-8")
        assert textfiles.read_digest(path)[1] == first  # what was read, not what is there now
        for read_again in (lambda: textfiles.read_bytes(path), lambda: list(textfiles.byte_lines(path))):
            with pytest.raises(PlmError) as changed:
                read_again()
            assert changed.value.exit_code == RUNTIME_FAILURE
            assert str(changed.value) == (
                f"{path} changed while this run was reading it; run again once nothing is writing to it."
            )
    textfiles.read_bytes(path)  # outside a run nothing is remembered: a later run reads the new file


def test_a_streamed_read_takes_the_digest_of_the_file_as_read(tmp_path):
    import gzip

    plain, packed = tmp_path / "a.txt", tmp_path / "a.txt.gz"
    plain.write_text("one line\nanother\n" * 5000, encoding="utf-8")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    with textfiles.recording():
        assert b"".join(textfiles.byte_lines(plain)) == plain.read_bytes()
        list(textfiles.byte_lines(packed))
        for path in (plain, packed):
            assert textfiles.read_digest(path) == (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())


def test_the_manifest_records_the_data_as_trained_on(cli, tiny_base, tmp_path, monkeypatch):
    from plmcli.tasks.classification import ClassificationTask

    data = write_csv(tmp_path / "train.csv", ["text", "label"], sentiment_rows(64))
    trained_on = hashlib.sha256(data.read_bytes()).hexdigest()
    read = ClassificationTask.read

    def then_the_file_changes(task):
        read(task)
        write_csv(data, ["text", "label"], sentiment_rows(64, seed=1))  # another writer, mid-run

    monkeypatch.setattr(ClassificationTask, "read", then_the_file_changes)
    output = tmp_path / "model"
    run = cli("finetune", data, "--model", tiny_base, "--output", output, *FAST)
    assert run.exit_code == 0, run.stderr
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["inputs"][str(data)]["sha256"] == trained_on
    assert hashlib.sha256(data.read_bytes()).hexdigest() != trained_on


def test_a_corpus_that_changes_before_it_is_tokenized_publishes_no_cache_entry(cli, tiny_base, tmp_path, monkeypatch):
    from plmcli import corpus_cache

    monkeypatch.setenv("PLM_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(40), encoding="utf-8")
    scan = corpus_cache.scan

    def then_the_file_changes(files, sources):
        scanned = scan(files, sources)
        corpus.write_text(corpus_text(40, seed=1), encoding="utf-8")
        return scanned

    monkeypatch.setattr(corpus_cache, "scan", then_the_file_changes)
    output = tmp_path / "model"
    run = cli("pretrain", corpus, "--model", tiny_base, "--output", output, *FAST)
    assert run.exit_code == 1, run.stderr
    assert run.error_line == (
        f"Error: {corpus} changed while this run was reading it; run again once nothing is writing to it."
    )
    assert not output.exists()
    corpora = tmp_path / "cache" / "corpora"
    assert not [path for path in corpora.iterdir() if not path.name.endswith(".lock")]  # no entry under that key


def test_tune_resume_refuses_a_study_run_on_other_data(cli, tiny_base, tmp_path, monkeypatch):
    from plmcli import tuning
    from tests.test_tune import interrupt_second_trial

    data = write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(64))
    dev = write_csv(tmp_path / "dev.csv", ["text", "label"], sentiment_rows(16, seed=3))
    args = ["tune", data, "--validation", dev, "--model", tiny_base, "--output", tmp_path / "tuned", "--trials", "2"]
    args += ["--device", "cpu", "--precision", "fp32", "--max-length", "32"]
    run_trial = interrupt_second_trial(monkeypatch)
    assert cli(*args).exit_code == 130
    monkeypatch.setattr(tuning, "execute", run_trial)
    original = data.read_bytes(), dev.read_bytes()
    for changed, which in ((data, "the data file"), (dev, "--validation")):
        changed.write_bytes(changed.read_bytes() + b"one more row,positive\n")
        before = snapshot(tmp_path / "tuned")
        run = cli(*args, "--resume")
        assert run.exit_code == 2 and run.error_line == (
            f"Error: the study in {tmp_path / 'tuned'} was run on other data ({which} changed since); resume with "
            "the data it was run on, or start again with --overwrite."
        ), run.stderr
        assert snapshot(tmp_path / "tuned") == before
        data.write_bytes(original[0]), dev.write_bytes(original[1])
    assert cli(*args, "--resume").exit_code == 0


def test_pretrain_resume_refuses_a_corpus_that_changed_since(cli, tiny_base, tmp_path, monkeypatch):
    from plmcli import interrupts
    from tests.test_checkpoints import stop_at

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(40), encoding="utf-8")
    output = tmp_path / "model"
    args = ["pretrain", corpus, "--model", tiny_base, "--output", output, "--save-steps", "2", *FAST]
    stop_at(monkeypatch, 3)
    assert cli(*args).exit_code == 143
    monkeypatch.setattr(interrupts, "requested", lambda: None)
    corpus.write_text(corpus_text(40, seed=2), encoding="utf-8")
    before = snapshot(output)
    run = cli(*args, "--resume")
    assert run.exit_code == 2 and run.error_line.startswith(
        "Error: the checkpoint was written with other settings: corpus_sha256 "
    ), run.stderr
    assert snapshot(output) == before
