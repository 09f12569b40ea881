"""Corpus reading, blocks, line-by-line examples, NSP pairs and the held-out split."""

import gzip
import io
import random
import sys

import pytest

from plmcli import corpus, corpus_cache
from plmcli.errors import PlmError


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


def test_documents_are_separated_by_blank_lines_and_line_endings_do_not_matter():
    text = "the movie was good\r\nit was fun\r\n\r\n  \r\nthe plot is dull\rthe end\n\n\n"
    assert corpus.split_documents(text) == [["the movie was good", "it was fun"], ["the plot is dull", "the end"]]


def test_files_directories_globs_gzip_and_bom(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffgood movie\n".encode("utf-8"))
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    (tmp_path / "nested" / "deeper" / "b.txt.gz").write_bytes(gzip.compress(b"bad plot\n\nweak story\n"))
    (tmp_path / "nested" / "notes.csv").write_text("not,part,of,a,directory,corpus\n")
    (tmp_path / "nested" / ".hidden.txt").write_text("hidden\n")
    from_file = corpus.read_corpus([str(tmp_path / "a.txt")])
    assert from_file.documents == [["good movie"]]  # the byte-order mark is gone
    from_dir = corpus.read_corpus([str(tmp_path / "nested")])
    assert from_dir.documents == [["bad plot"], ["weak story"]]
    from_glob = corpus.read_corpus([str(tmp_path / "**" / "*.txt*")])
    assert [d[0] for d in from_glob.documents] == ["good movie", "bad plot", "weak story"]


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"one line\n\nanother\n")))
    text = corpus.read_corpus(["-"])
    assert text.documents == [["one line"], ["another"]] and text.sources == ["-"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "the corpus has no text: {path} is empty."),
        (b"\n  \n\n", "the corpus has no text: {path} is empty."),
        (
            b"caf\xe9\n",
            "{path} line 1 is not UTF-8 text (invalid continuation byte); "
            "convert it to UTF-8 first, e.g. iconv -f latin1 -t utf-8.",
        ),
        (
            b"ab\x00cd",
            "{path} holds binary data, not text (a NUL byte on line 1); plm reads CSV, TSV, JSON, JSONL and text "
            "files (also gzipped) and Parquet.",
        ),
    ],
)
def test_unusable_corpora_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(PlmError) as error:
        corpus.read_corpus([str(path)])
    assert str(error.value) == message.format(path=path)


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(PlmError, match="corpus file not found: .*nothing.txt"):
        corpus.read_corpus([str(tmp_path / "nothing.txt")])
    with pytest.raises(PlmError, match=r"no files match .*\*.txt"):
        corpus.read_corpus([str(tmp_path / "*.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlmError, match="no text files in directory"):
        corpus.read_corpus([str(tmp_path / "empty")])
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(PlmError, match="is not a valid gzip file"):
        corpus.read_corpus([str(broken)])


def test_blocks_cut_the_whole_token_stream_and_keep_the_remainder(tokenizer):
    lines = [f"the movie was {word} ." for word in ["good", "bad", "fun", "dull", "great", "weak", "superb"]]
    text = corpus.Corpus(documents=[lines[:4], lines[4:]], sources=["x"])
    examples = corpus.blocks(text, tokenizer, max_length=8, whole_word_mask=False)
    stream = [token for line in lines for token in tokenizer(line)["input_ids"]]
    assert [token for block in examples.columns["input_ids"] for token in block] == stream
    assert all(len(block) == 8 for block in examples.columns["input_ids"][:-1])
    assert 0 < len(examples.columns["input_ids"][-1]) <= 8  # the remainder is kept, not dropped
    assert examples.tokens == len(stream)
    specials = [flag for block in examples.columns["special_tokens_mask"] for flag in block]
    assert sum(specials) == 2 * len(lines)  # [CLS] and [SEP] of every line


def test_blocks_carry_offsets_for_whole_word_masking(tokenizer):
    text = corpus.Corpus(documents=[["good movie", "bad plot"]], sources=["x"])
    examples = corpus.blocks(text, tokenizer, max_length=4, whole_word_mask=True)
    assert [len(o) for o in examples.columns["offset_mapping"]] == [len(i) for i in examples.columns["input_ids"]]
    assert all(len(pair) == 2 for block in examples.columns["offset_mapping"] for pair in block)


def test_line_by_line_truncates_and_counts(tokenizer):
    text = corpus.Corpus(documents=[["good movie", "the movie was very very very good and fun"]], sources=["x"])
    examples = corpus.lines(text, tokenizer, max_length=6, whole_word_mask=False)
    assert examples.truncated == 1
    long_line = examples.columns["input_ids"][1]
    assert len(long_line) == 6 and long_line[-1] == tokenizer.sep_token_id
    assert examples.columns["input_ids"][0] == tokenizer("good movie")["input_ids"]


def test_nsp_pairs_follow_the_bert_recipe(tokenizer):
    from tests.conftest import corpus_text

    text = corpus.Corpus(documents=corpus.split_documents(corpus_text(40)), sources=["x"])
    examples = corpus.nsp_pairs(text, tokenizer, max_length=24, seed=0)
    labels = examples.columns["next_sentence_label"]
    assert 0.3 < sum(labels) / len(labels) < 0.7  # about half are random next segments
    for ids, types, specials in zip(
        examples.columns["input_ids"], examples.columns["token_type_ids"], examples.columns["special_tokens_mask"]
    ):
        assert len(ids) <= 24 and len(ids) == len(types) == len(specials)
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        first_sep = ids.index(tokenizer.sep_token_id)
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
        assert [i for i, flag in enumerate(specials) if flag] == [0, first_sep, len(ids) - 1]
    again = corpus.nsp_pairs(text, tokenizer, max_length=24, seed=0)
    assert again.columns == examples.columns  # the same seed gives the same pairs


def test_nsp_on_one_document_says_where_random_segments_come_from(tokenizer):
    text = corpus.Corpus(
        documents=[[f"the movie was {w} ." for w in ["good", "bad", "fun", "dull"] * 5]], sources=["x"]
    )
    examples = corpus.nsp_pairs(text, tokenizer, max_length=16, seed=0)
    assert len(examples) > 2
    assert any("one document" in note for note in text.notes)


def test_validation_split_is_capped_and_disjoint():
    train, validation = corpus.split_validation(1000, 0.05, cap=20, seed=1)
    assert len(validation) == 20 and len(train) == 980 and not set(train) & set(validation)
    assert corpus.split_validation(3, 0.05, cap=20, seed=1)[1] != []  # at least one held out
    with pytest.raises(PlmError, match="only one training example"):
        corpus.split_validation(1, 0.05, cap=20, seed=1)


def test_nsp_pairs_from_long_lines_keep_their_text_and_both_labels(tokenizer):
    words = "the movie was good and the plot was fun but the acting is weak".split()
    documents = [[" ".join(words[i % 5 :] + words[: i % 5]) * 3] for i in range(30)]  # one 45-word line each
    examples = corpus.nsp_pairs(corpus.Corpus(documents=documents, sources=["x"]), tokenizer, max_length=32, seed=0)
    labels = examples.columns["next_sentence_label"]
    assert 0.25 < sum(labels) / len(labels) < 0.75  # not every pair "random" because lines are long
    assert examples.tokens > 0.8 * 30 * 45  # the text is used, not cut away


def test_nsp_random_segments_of_one_document_stay_away_from_segment_a():
    document = [[line] for line in range(12)]  # line i is the one token i
    starts = {corpus._random_segment([document], 0, (3, 6), 1, random.Random(seed))[0] for seed in range(40)}
    assert starts and all(start < 1 or start > 8 for start in starts)


def test_a_long_line_is_cut_at_spaces_into_pieces_read_as_lines(tmp_path):
    words = [f"word{i % 97}" for i in range(6000)]  # about 40,000 characters on one line
    line = " ".join(words)
    pieces = corpus.cut_long(line)
    assert len(pieces) == 5 and all(len(piece) <= corpus.LONG_LINE for piece in pieces)
    assert " ".join(pieces).split(" ") == words  # every word whole, none lost
    assert corpus.cut_long("x" * 25_000) == ["x" * 10_000, "x" * 10_000, "x" * 5_000]  # no space: cut where it must
    path = tmp_path / "one-line.txt"
    path.write_text(line + "\n\nnext document\n", encoding="utf-8")
    assert corpus.read_corpus([str(path)]).documents == [pieces, ["next document"]]
    scanned = corpus_cache.scan([path], [str(path)])
    assert (scanned.lines, scanned.documents) == (6, 2)
    assert list(corpus_cache.lines([path], scanned.digests)) == [*pieces, "next document"]


def test_tokenizer_batches_are_bounded_in_lines_and_characters():
    lines = ["a" * 400_000, "b" * 400_000, "c" * 400_000, "d"] + ["e"] * 2500
    batches = list(corpus._batches(lines))
    assert [len(batch) for batch in batches] == [2, 2000, 502]
    assert [line for batch in batches for line in batch] == lines
