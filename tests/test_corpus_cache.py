"""The on-disk tokenized corpus (plmcli/corpus_cache.py): the same examples as in memory, built once."""

import gzip
import json
import os

import pytest

from plmcli import corpus, corpus_cache
from plmcli.errors import PlmError
from tests.conftest import corpus_text


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PLM_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


@pytest.fixture
def files(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt.gz"
    first.write_text(corpus_text(20, seed=1), encoding="utf-8")
    second.write_bytes(gzip.compress(corpus_text(15, seed=2).replace("\n", "\r\n").encode()))
    return [first, second]


@pytest.mark.parametrize("line_by_line, whole_word_mask", [(False, False), (False, True), (True, True)])
def test_streamed_examples_equal_the_in_memory_ones(tokenizer, files, line_by_line, whole_word_mask):
    scanned = corpus_cache.scan(files, [str(f) for f in files])
    in_memory = corpus.read_corpus([str(f) for f in files])
    assert (scanned.documents, scanned.lines) == (len(in_memory.documents), len(in_memory.lines))
    build = corpus.lines if line_by_line else corpus.blocks
    expected = build(in_memory, tokenizer, 24, whole_word_mask)
    cached = corpus_cache.tokenized(scanned, tokenizer, 24, line_by_line, whole_word_mask)
    rows = cached.dataset.to_dict()
    assert rows["input_ids"] == expected.columns["input_ids"]
    assert rows["special_tokens_mask"] == expected.columns["special_tokens_mask"]
    if whole_word_mask:
        assert rows["offset_mapping"] == [[list(pair) for pair in row] for row in expected.columns["offset_mapping"]]
    assert (cached.tokens, cached.truncated) == (expected.tokens, expected.truncated)


def test_a_second_pass_reuses_the_cache_and_a_changed_file_is_tokenized_again(tokenizer, files):
    names = [str(f) for f in files]
    first = corpus_cache.tokenized(corpus_cache.scan(files, names), tokenizer, 24, False, False)
    again = corpus_cache.tokenized(corpus_cache.scan(files, names), tokenizer, 24, False, False)
    assert not first.cached and again.cached and again.location == first.location
    assert again.dataset.to_dict() == first.dataset.to_dict()
    stat = os.stat(files[0])
    text = files[0].read_text()
    files[0].write_text(text.replace("good", "bad ", 1))  # same size ...
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and same mtime
    changed = corpus_cache.tokenized(corpus_cache.scan(files, names), tokenizer, 24, False, False)
    assert not changed.cached and changed.location != first.location


def test_workers_tokenize_whole_files_in_parallel(tokenizer, files):
    names = [str(f) for f in files]
    one = corpus_cache.tokenized(corpus_cache.scan(files, names), tokenizer, 24, True, False)
    two = corpus_cache.tokenized(corpus_cache.scan(files, names), tokenizer, 24, True, False, workers=2)
    # one example per line: the same examples whichever process made them (the key does not hold the workers)
    assert sorted(map(tuple, two.dataset["input_ids"])) == sorted(map(tuple, one.dataset["input_ids"]))


def test_bad_bytes_in_a_streamed_file_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\nanother\ncaf\xe9\n")
    with pytest.raises(PlmError) as error:
        corpus_cache.scan([path], [str(path)])
    assert str(error.value) == (
        f"{path} line 3 is not UTF-8 text (invalid continuation byte); "
        "convert it to UTF-8 first, e.g. iconv -f latin1 -t utf-8."
    )


def test_a_second_pretrain_run_skips_tokenizing(cli, tiny_base, corpus_txt, tmp_path):
    args = ("pretrain", corpus_txt, "--model", tiny_base, "--epochs", "1", "--max-length", "32", "--device", "cpu")
    first = cli(*args, "--output", tmp_path / "one")
    second = cli(*args, "--output", tmp_path / "two")
    assert first.exit_code == 0 and second.exit_code == 0, second.stderr
    assert "Tokenizing the corpus into " in first.stderr and "Reusing the corpus tokenized" not in first.stderr
    assert "Reusing the corpus tokenized by an earlier run" in second.stderr
    assert "Tokenizing the corpus into " not in second.stderr
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two")]
    assert metrics[0]["validation"] == metrics[1]["validation"] and metrics[0]["corpus"] == metrics[1]["corpus"]


def test_a_damaged_cache_is_built_again(tokenizer, files):
    names = [str(f) for f in files]
    first = corpus_cache.tokenized(corpus_cache.scan(files, names), tokenizer, 24, False, False)
    expected = first.dataset.to_dict()
    for shard in first.location.glob("*.arrow"):
        shard.write_bytes(b"junk")
    again = corpus_cache.tokenized(corpus_cache.scan(files, names), tokenizer, 24, False, False)
    assert not again.cached and again.dataset.to_dict() == expected


def test_an_unusable_cache_location_is_one_line(tokenizer, files, monkeypatch):
    monkeypatch.setenv("PLM_CACHE", str(files[0]))  # a file, not a directory
    with pytest.raises(PlmError) as error:
        corpus_cache.tokenized(corpus_cache.scan(files, [str(f) for f in files]), tokenizer, 24, False, False)
    assert str(error.value) == (
        f"cannot keep tokenized corpora in {files[0]}/corpora (Not a directory); "
        "set PLM_CACHE to a writable directory."
    )
    assert error.value.exit_code == 1
