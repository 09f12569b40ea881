"""plmcli.tokendata: CoNLL, CoNLL-U and tables read into sentences, schemes found and turned into IOB2, refusals."""

import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from plmcli import tokendata
from plmcli.errors import PlmError

CONLL2003_VALID = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "valid.txt"

# Two documents in CoNLL-2003's own layout: word, POS, chunk, NER; IOB2 tags.
TWO_DOCUMENTS = """\
-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def _refused(path: str, **options) -> str:
    with pytest.raises(PlmError) as caught:
        tokendata.read_tagged(path, **options)
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)
    return str(caught.value)


def _conll(tags: list[list[str]]) -> str:
    """A two-column CoNLL text with one word per tag: w0, w1..."""
    return "\n\n".join("\n".join(f"w{i} {tag}" for i, tag in enumerate(sentence)) for sentence in tags) + "\n"


def test_conll_with_documents(tmp_path):
    sentences = tokendata.read_tagged(_write(tmp_path / "train.conll", TWO_DOCUMENTS))
    assert sentences.words == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["BRUSSELS", "1996-08-22"]]
    assert sentences.tags == [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"], ["B-LOC", "O"]]
    assert sentences.documents == [0, 0, 1]
    assert sentences.lines == [3, 8, 13]
    assert sentences.scheme == "IOB2"
    assert not sentences.converted and sentences.has_tags and sentences.invalid == []
    assert sentences.entity_types == ["LOC", "MISC", "ORG", "PER"]
    assert sentences.tag_names[:3] == ["O", "B-LOC", "I-LOC"]
    assert sentences.tag_names == ["O"] + [f"{p}-{t}" for t in ["LOC", "MISC", "ORG", "PER"] for p in "BI"]


def test_without_document_marks_every_sentence_is_document_0(tmp_path):
    sentences = tokendata.read_tagged(_write(tmp_path / "a.conll", _conll([["B-PER"], ["O"], ["O", "B-LOC"]])))
    assert sentences.documents == [0, 0, 0]


def test_tag_column_picks_another_column_as_plain_tags(tmp_path):
    sentences = tokendata.read_tagged(_write(tmp_path / "train.conll", TWO_DOCUMENTS), tag_column=2)
    assert sentences.scheme == "plain"
    assert sentences.tags[0] == ["NNP", "VBZ", "JJ", "NN"]
    assert sentences.entity_types == []
    assert sentences.tag_names == ["CD", "JJ", "NN", "NNP", "VBZ"]


def test_tabs_gzip_crlf_and_whitespace_only_blank_lines(tmp_path):
    text = "EU\tB-ORG\r\nrejects\tO\r\n \t \r\nPeter\tB-PER\r\nBlackburn\tI-PER\r\n"
    path = tmp_path / "train.iob2.gz"
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    sentences = tokendata.read_tagged(str(path))
    assert sentences.words == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert sentences.tags == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert sentences.lines == [1, 4]


def test_runs_of_spaces_align_columns(tmp_path):
    sentences = tokendata.read_tagged(_write(tmp_path / "a.conll", "EU      B-ORG\nrejects O  \n"))
    assert sentences.words == [["EU", "rejects"]]
    assert sentences.tags == [["B-ORG", "O"]]


def test_txt_files_read_as_conll(tmp_path):
    sentences = tokendata.read_tagged(_write(tmp_path / "train.txt", TWO_DOCUMENTS))
    assert len(sentences.words) == 3


def test_one_column_file_has_no_tags(tmp_path):
    path = _write(tmp_path / "predict.conll", "EU\nrejects\n\nPeter\n")
    sentences = tokendata.read_tagged(path, require_tags=False)
    assert not sentences.has_tags
    assert sentences.words == [["EU", "rejects"], ["Peter"]]
    assert sentences.tags == [] and sentences.tag_names == []
    message = _refused(path)
    assert "predict.conll has words but no tag column: " in message
    assert "plm finetune --task token-classification needs a tag in the last column" in message


def test_mixed_tabs_and_spaces_are_refused(tmp_path):
    path = _write(tmp_path / "a.conll", "-DOCSTART- -X- O O\n\nEU B-ORG\nrejects O\n\nPeter\tB-PER\n")
    assert "mixes tab-separated and space-separated columns (line 6 uses tabs, line 3 spaces)" in _refused(path)


def test_a_line_with_other_columns_is_refused(tmp_path):
    path = _write(tmp_path / "a.conll", "EU NNP B-ORG\nrejects VBZ O\n\nPeter B-PER\nBlackburn NNP I-PER\n")
    assert "a.conll line 4 has 2 columns where most lines have 3" in _refused(path)


@pytest.mark.parametrize("column", [1, 4])
def test_tag_column_out_of_range_is_refused(tmp_path, column):
    path = _write(tmp_path / "a.conll", "EU NNP B-ORG\n")
    assert f"--tag-column {column} does not fit" in _refused(path, tag_column=column)
    assert "pick one from 2 to 3" in _refused(path, tag_column=column)


def test_empty_file_is_refused(tmp_path):
    assert "has no sentences" in _refused(_write(tmp_path / "a.conll", "\n\n-DOCSTART- -X- O O\n\n"))


def test_missing_file_is_refused(tmp_path):
    assert _refused(str(tmp_path / "nope.conll")) == f"file not found: {tmp_path / 'nope.conll'}"


def test_csv_is_refused(tmp_path):
    assert "is a CSV file; token-classification data is CoNLL" in _refused(_write(tmp_path / "a.csv", "a,b\n1,2\n"))


CONLLU = """\
# newdoc id = doc1
# sent_id = 1
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:conj\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# newdoc id = doc2
# sent_id = 2
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_

"""


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    path = _write(tmp_path / "en.conllu", CONLLU)
    sentences = tokendata.read_tagged(path)
    assert sentences.words == [["Do", "n't", "go", "."], ["Hi"]]
    assert sentences.tags == [["AUX", "PART", "VERB", "PUNCT"], ["INTJ"]]
    assert sentences.scheme == "plain"
    assert sentences.documents == [0, 1]
    assert sentences.lines == [5, 13]
    assert tokendata.read_tagged(path, tag_column=5).tags[0] == ["VBP", "RB", "VB", "."]


def test_conllu_refusals(tmp_path):
    path = _write(tmp_path / "en.conllu", CONLLU)
    assert "en.conllu line 5: column 6 holds '_' (no value)" in _refused(path, tag_column=6)
    assert "--tag-column 2 does not fit" in _refused(path, tag_column=2)
    spaces = _write(tmp_path / "spaces.conllu", "1 Do do AUX\n")
    assert "spaces.conllu line 1 has 1 tab-separated columns where CoNLL-U has 10" in _refused(spaces)


ROWS = [
    {"id": "0", "tokens": ["EU", "rejects", "German", "call"], "ner_tags": ["B-ORG", "O", "B-MISC", "O"]},
    {"id": "1", "tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]},
]


def _write_table(path: Path, rows: list[dict]) -> str:
    if path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize("name", ["train.json", "train.jsonl", "train.parquet"])
def test_tables(tmp_path, name):
    sentences = tokendata.read_tagged(_write_table(tmp_path / name, ROWS))
    assert sentences.words == [row["tokens"] for row in ROWS]
    assert sentences.tags == [row["ner_tags"] for row in ROWS]
    assert sentences.lines == [1, 2]
    assert sentences.documents == [0, 0]
    assert sentences.scheme == "IOB2"


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(row) + "\n" for row in ROWS).encode()))
    assert tokendata.read_tagged(str(path)).words[1] == ["Peter", "Blackburn"]


def test_table_columns_by_name_case_insensitive_or_given(tmp_path):
    rows = [{"Words": ["EU", "rejects"], "NER": ["B-ORG", "O"], "pos": ["NNP", "VBZ"]}]
    path = _write_table(tmp_path / "a.jsonl", rows)
    assert tokendata.read_tagged(path).tags == [["B-ORG", "O"]]
    assert tokendata.read_tagged(path, tags_column="pos").tags == [["NNP", "VBZ"]]


def test_table_column_refusals(tmp_path):
    path = _write_table(tmp_path / "a.jsonl", [{"id": "0", "text": ["EU"], "label": ["B-ORG"]}])
    assert "a.jsonl has no words column ('tokens' or 'words'); found: id, text, label. Use --tokens-column" in (
        _refused(path)
    )
    message = _refused(path, words_column="text")
    assert "has no tags column ('tags' or 'ner_tags' or 'labels' or 'ner'); found: id, text, label." in message
    assert "Use --tags-column to pick one." in message
    assert "missing column 'tag' in" in _refused(path, words_column="text", tags_column="tag")
    assert "--tag-column picks a column of a CoNLL file" in _refused(path, tag_column=2)
    words_only = tokendata.read_tagged(path, words_column="text", require_tags=False)
    assert not words_only.has_tags and words_only.words == [["EU"]]


def test_table_row_refusals(tmp_path):
    def refused(row: dict) -> str:
        return _refused(_write_table(tmp_path / "a.jsonl", [ROWS[0], row]))

    assert "tags in column 'ner_tags' are numbers; plm needs tag names like B-PER (map them with the dataset's" in (
        refused({"tokens": ["EU"], "ner_tags": [3]})
    )
    assert "a.jsonl row 2 has 2 words but 1 tags" in refused({"tokens": ["EU", "x"], "ner_tags": ["O"]})
    assert "a.jsonl row 2 has 0 words (a sentence of 0 tokens)" in refused({"tokens": [], "ner_tags": []})
    assert "a.jsonl row 2, word 2: word 'New York' contains whitespace" in (
        refused({"tokens": ["in", "New York"], "ner_tags": ["O", "B-LOC"]})
    )
    assert "a.jsonl row 2, word 1: the word is empty" in refused({"tokens": [""], "ner_tags": ["O"]})
    assert "a.jsonl row 2: column 'tokens' holds 'EU rejects', not a list" in (
        refused({"tokens": "EU rejects", "ner_tags": ["B-ORG", "O"]})
    )
    assert "a.jsonl row 2: word 1 is 1996, not text" in refused({"tokens": [1996], "ner_tags": ["O"]})
    assert "a.jsonl row 2: tag 1 is None, not a name" in refused({"tokens": ["EU"], "ner_tags": [None]})


def test_integer_tags_in_parquet_are_refused(tmp_path):
    path = _write_table(tmp_path / "a.parquet", [{"tokens": ["EU", "rejects"], "ner_tags": [3, 0]}])
    assert "tags in column 'ner_tags' are numbers" in _refused(path)


def test_conll_word_with_whitespace_is_refused(tmp_path):
    path = _write(tmp_path / "a.conll", "in\tO\nNew York\tB-LOC\n")
    assert "a.conll line 2: word 'New York' contains whitespace" in _refused(path)
    nbsp = _write(tmp_path / "b.conll", "in O\nNew\u00a0York B-LOC\n")
    assert "b.conll line 2: word 'New\\xa0York' contains whitespace" in _refused(nbsp)


def test_bare_prefix_is_refused_with_its_line(tmp_path):
    lines = ["w O"] * 11 + ["x B-"]
    path = _write(tmp_path / "a.conll", "\n".join(lines) + "\n")
    assert "line 12: tag 'B-' has no entity type (expected like B-PER)" in _refused(path)


def test_entity_tags_mixed_with_plain_tags_are_refused(tmp_path):
    path = _write(tmp_path / "a.conll", _conll([["B-PER", "O"], ["NN", "O"]]))
    assert "mixes entity tags like 'B-PER' (line 1) with tags without a B-/I- prefix like 'NN' (line 4)" in (
        _refused(path)
    )


def test_iob1_is_converted(tmp_path):
    conll_sentence = ["I-ORG", "O", "I-MISC", "O", "O", "O", "I-MISC", "O", "O"]
    adjacent = ["I-PER", "I-PER", "B-PER", "I-PER", "O", "I-LOC", "I-PER"]
    sentences = tokendata.read_tagged(_write(tmp_path / "a.conll", _conll([conll_sentence, adjacent])))
    assert sentences.scheme == "IOB1"
    assert sentences.converted
    assert sentences.invalid == []
    assert sentences.tags == [
        ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"],
        ["B-PER", "I-PER", "B-PER", "I-PER", "O", "B-LOC", "B-PER"],
    ]


def test_iob2_keeps_invalid_transitions_and_lists_them(tmp_path):
    tags = [["B-PER", "I-PER", "O", "I-PER"], ["B-LOC", "O"], ["I-ORG", "B-ORG"], ["B-LOC", "I-PER"]]
    sentences = tokendata.read_tagged(_write(tmp_path / "a.conll", _conll(tags)))
    assert sentences.scheme == "IOB2"
    assert not sentences.converted
    assert sentences.tags == tags
    assert sentences.invalid == [(0, 3, "O", "I-PER"), (2, 0, "", "I-ORG"), (3, 1, "B-LOC", "I-PER")]


def test_bioes_is_converted_to_iob2(tmp_path):
    tags = [["S-PER", "O", "B-ORG", "I-ORG", "E-ORG"], ["B-LOC", "E-LOC", "O", "E-LOC"]]
    sentences = tokendata.read_tagged(_write(tmp_path / "a.bioes", _conll(tags)))
    assert sentences.scheme == "BIOES"
    assert sentences.converted
    assert sentences.tags == [["B-PER", "O", "B-ORG", "I-ORG", "I-ORG"], ["B-LOC", "I-LOC", "O", "I-LOC"]]
    assert sentences.invalid == [(1, 3, "O", "E-LOC")]


def test_bilou_reads_as_bioes():
    converted = tokendata.bioes_to_iob2(["U-PER", "B-LOC", "I-LOC", "L-LOC", "O"])
    assert converted == ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O"]


def test_bioes_mixed_with_iob1_is_refused(tmp_path):
    path = _write(tmp_path / "a.conll", _conll([["S-PER", "O"], ["I-LOC", "O", "I-ORG"], ["O", "I-MISC"]]))
    message = _refused(path)
    assert "mixes tagging schemes: 1 E-/S- tags (BIOES) and 3 entities that start with I- (IOB1)" in message
    assert "more than the 1 that start with B- or S-" in message


def test_tag_names_keep_the_users_case(tmp_path):
    sentences = tokendata.read_tagged(_write(tmp_path / "a.conll", _conll([["B-per", "I-per", "O", "B-Loc"]])))
    assert sentences.tag_names == ["O", "B-Loc", "I-Loc", "B-per", "I-per"]


def test_conversions_refuse_tags_of_other_schemes():
    with pytest.raises(ValueError):
        tokendata.to_iob2(["S-PER"])
    with pytest.raises(ValueError):
        tokendata.bioes_to_iob2(["NN"])
    with pytest.raises(ValueError):
        tokendata.spans(["E-PER"])


def test_spans_are_strict():
    assert tokendata.spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    assert tokendata.spans(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 1), ("PER", 1, 3)]
    assert tokendata.spans(["O", "I-PER", "I-PER", "B-LOC", "I-ORG"]) == [("LOC", 3, 4)]
    assert tokendata.spans(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 1)]
    assert tokendata.spans([]) == []


def _sentences(documents: list[int]) -> tokendata.Sentences:
    count = len(documents)
    return tokendata.Sentences([["w"]] * count, [["O"]] * count, documents, "IOB2", "a.conll", list(range(count)))


def test_split_by_document_holds_out_whole_documents_deterministically():
    documents = [d for d in range(10) for _ in range(d % 3 + 2)]  # 10 documents of 2 to 4 sentences
    sentences = _sentences(documents)
    train, validation = tokendata.split_by_document(sentences, 0.2, seed=7)
    assert (train, validation) == tokendata.split_by_document(sentences, 0.2, seed=7)
    assert sorted(train + validation) == list(range(len(documents)))
    held = {documents[i] for i in validation}
    assert held and held.isdisjoint(documents[i] for i in train)
    assert 0 < len(validation) <= round(0.2 * len(documents))


def test_split_by_document_holds_out_the_smallest_when_none_fits():
    train, validation = tokendata.split_by_document(_sentences([0] * 10 + [1] * 4), 0.1, seed=0)
    assert validation == [10, 11, 12, 13]
    assert train == list(range(10))


def test_split_of_one_document_splits_sentences():
    sentences = _sentences([0] * 10)
    train, validation = tokendata.split_by_document(sentences, 0.3, seed=1)
    assert len(validation) == 3 and len(train) == 7
    assert sorted(train + validation) == list(range(10))
    assert (train, validation) == tokendata.split_by_document(sentences, 0.3, seed=1)


def test_split_refuses_a_single_sentence():
    with pytest.raises(PlmError, match="has 1 sentence; holding some out for validation needs 2 at least"):
        tokendata.split_by_document(_sentences([0]), 0.2, seed=0)


@pytest.mark.parametrize("separator", [" ", "\t"])
def test_add_column_round_trip(tmp_path, separator):
    path = _write(tmp_path / "test.conll", TWO_DOCUMENTS.replace(" ", separator))
    sentences = tokendata.read_tagged(path)
    lines = tokendata.conll_lines(path)
    assert tokendata.column_separator(lines) == separator
    predicted = [[f"B-X{i}{j}" for j in range(len(words))] for i, words in enumerate(sentences.words)]
    text = tokendata.add_column(lines, predicted)
    assert text.splitlines()[0] == separator.join(["-DOCSTART-", "-X-", "-X-", "O", "O"])
    assert text.splitlines()[2] == separator.join(["EU", "NNP", "B-NP", "B-ORG", "B-X00"])
    assert text.splitlines()[1] == ""
    written = tmp_path / "predicted.conll"
    tokendata.write_conll(str(written), lines, predicted)
    again = tokendata.read_tagged(str(written))
    assert again.words == sentences.words
    assert again.tags == predicted
    assert again.documents == sentences.documents
    assert tokendata.read_tagged(str(written), tag_column=4).tags == sentences.tags


def test_add_column_to_conllu_and_a_stream(tmp_path):
    path = _write(tmp_path / "en.conllu", CONLLU)
    lines = tokendata.conll_lines(path)
    stream = io.StringIO()
    tokendata.write_conll(stream, lines, [["a", "b", "c", "d"], ["e"]], conllu=tokendata.is_conllu(path))
    written = stream.getvalue().splitlines()
    assert written[:4] == CONLLU.splitlines()[:4]
    assert written[4].split("\t") == ["1", "Do", "do", "AUX", "VBP", "_", "3", "aux", "_", "_", "a"]
    assert written[7] == CONLLU.splitlines()[7]
    assert written[-2].endswith("\t_\te") and written[-1] == ""


def test_add_column_refuses_predictions_that_do_not_fit():
    lines = ["EU B-ORG", "rejects O", "", "Peter B-PER"]
    with pytest.raises(ValueError):
        tokendata.add_column(lines, [["O", "O"]])
    with pytest.raises(ValueError):
        tokendata.add_column(lines, [["O"], ["O"]])
    with pytest.raises(ValueError):
        tokendata.add_column(lines, [["O", "O"], ["O", "O"]])


def test_is_tagged_file(tmp_path):
    for name in ["a.conll", "a.conllu", "a.iob", "a.IOB2", "a.bio", "a.bioes", "a.conll.gz"]:
        assert tokendata.is_tagged_file(str(tmp_path / name))
    assert not tokendata.is_tagged_file(str(tmp_path / "a.csv"))
    assert tokendata.is_tagged_file(_write(tmp_path / "docs.txt", TWO_DOCUMENTS))
    assert tokendata.is_tagged_file(_write(tmp_path / "plain.txt", "EU B-ORG\nrejects O\n\nPeter B-PER\n"))
    assert not tokendata.is_tagged_file(_write(tmp_path / "corpus.txt", "The film was good.\nI liked it a lot.\n"))
    assert not tokendata.is_tagged_file(_write(tmp_path / "pairs.txt", "good film\nbad plot\n"))
    assert not tokendata.is_tagged_file(str(tmp_path / "missing.txt"))


@pytest.mark.skipif(not CONLL2003_VALID.exists(), reason="needs ../shared/data/conll2003/valid.txt")
def test_conll2003_validation_file():
    sentences = tokendata.read_tagged(str(CONLL2003_VALID))
    assert len(sentences.words) == 3250
    assert sum(len(words) for words in sentences.words) == 51362
    assert sentences.scheme == "IOB1"
    assert sentences.converted
    assert sentences.entity_types == ["LOC", "MISC", "ORG", "PER"]
    assert sentences.invalid == []
    for tags in sentences.tags:
        for index, tag in enumerate(tags):
            if tag.startswith("I-"):
                assert index > 0 and tags[index - 1][2:] == tag[2:]
    assert sum(len(tokendata.spans(tags)) for tags in sentences.tags) == 5942
