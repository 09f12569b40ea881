"""Every BERT-style family through plm's commands, in the stock layout and in the layout the Hub ships.

Each family is a tiny random masked-LM (hidden 32, 2 layers, 4 heads, intermediate 37, as in
transformers' own tests) with its own kind of tokenizer, trained at test time with `tokenizers`
(or `sentencepiece` for a DeBERTa-v3 shipped as ``spm.model``) on the sentiment vocabulary of
conftest. The stock layout is ``save_pretrained`` of both with ``model_max_length`` set; the Hub
layout is what the real checkpoints ship: roberta-base, xlm-roberta-base, camembert-base and
albert-base-v2 have no tokenizer_config.json (so no length limit), deberta-v3-base has only
``spm.model``.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FILLER, NEGATIVE, POSITIVE, corpus_text, sentiment_rows, write_csv

WORDS = sorted(set(POSITIVE + NEGATIVE + FILLER + ["."]))
POSITIONS = 64  # usable positions of every tiny model: a text of 100 words is longer
BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def training_lines() -> list[str]:
    """What a sub-word tokenizer is trained on: the corpus's sentences, and each word alone."""
    return corpus_text(40).split("\n") + WORDS


# --- tokenizers -------------------------------------------------------------------------------


def wordpiece(tokenizer_class, special: list[str], **kwargs):
    """A WordPiece tokenizer of ``tokenizer_class`` whose vocabulary is the special tokens, WORDS and a piece."""
    tokens = special + WORDS + ["##s"]
    return tokenizer_class(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True, **kwargs)


def byte_level_bpe(special: list[str]) -> tuple[dict, list]:
    """(vocab, merges) of a byte-level BPE trained on the corpus, the special tokens first."""
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(training_lines(), vocab_size=400, min_frequency=1, special_tokens=special)
    model = json.loads(trainer.to_str())["model"]
    return model["vocab"], [tuple(merge) for merge in model["merges"]]


def unigram(special: list[str]) -> list[tuple[str, float]]:
    """A Unigram (sentencepiece-style) vocabulary: the special tokens, each word after '▁', then single letters.

    Words outside WORDS fall back to letters, and 'movies' is '▁movie' and 's', as sub-word pieces go.
    """
    letters = sorted(set("".join(WORDS)) | set("abcdefghijklmnopqrstuvwxyz"))
    return (
        [(token, 0.0) for token in special]
        + [("▁" + word, -2.0 - i / 100) for i, word in enumerate(WORDS)]
        + [(piece, -8.0) for piece in ["▁", *letters]]
    )


def sentencepiece_model(path: Path) -> Path:
    """A sentencepiece Unigram ``spm.model`` with DeBERTa-v3's special tokens ([PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3)."""
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()),
        model_writer=model,
        vocab_size=100,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="[PAD]",
        bos_piece="[CLS]",
        eos_piece="[SEP]",
        unk_piece="[UNK]",
        user_defined_symbols=["[MASK]"],
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


# --- families ---------------------------------------------------------------------------------


def _bert():
    from transformers import BertConfig, BertTokenizer

    tokenizer = wordpiece(BertTokenizer, BERT_SPECIAL)
    return tokenizer, BertConfig(vocab_size=len(tokenizer), max_position_embeddings=POSITIONS, **SIZES)


def _distilbert():
    from transformers import DistilBertConfig, DistilBertTokenizer

    tokenizer = wordpiece(DistilBertTokenizer, BERT_SPECIAL)
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=POSITIONS
    )
    return tokenizer, config


def _electra():
    from transformers import BertTokenizer, ElectraConfig

    tokenizer = wordpiece(BertTokenizer, BERT_SPECIAL)
    config = ElectraConfig(vocab_size=len(tokenizer), embedding_size=16, max_position_embeddings=POSITIONS, **SIZES)
    return tokenizer, config


def _mpnet():
    from transformers import MPNetConfig, MPNetTokenizer

    tokenizer = wordpiece(MPNetTokenizer, ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"])
    # 32 relative-attention buckets, the default: MPNet's attention computes 32 whatever its config says
    return tokenizer, MPNetConfig(vocab_size=len(tokenizer), max_position_embeddings=POSITIONS + 2, **SIZES)


def _roberta_like(config_class, tokenizer):
    return tokenizer, config_class(
        vocab_size=len(tokenizer),
        max_position_embeddings=POSITIONS + 2,  # as roberta-base's 514: position ids start after the padding id
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        type_vocab_size=1,
        **SIZES,
    )


def _roberta():
    from transformers import RobertaConfig, RobertaTokenizer

    vocab, merges = byte_level_bpe(ROBERTA_SPECIAL)
    return _roberta_like(RobertaConfig, RobertaTokenizer(vocab=vocab, merges=merges))


def _xlm_roberta():
    from transformers import XLMRobertaConfig, XLMRobertaTokenizer

    return _roberta_like(XLMRobertaConfig, XLMRobertaTokenizer(vocab=unigram(ROBERTA_SPECIAL)))


def _camembert():
    from transformers import CamembertConfig, CamembertTokenizer

    return _roberta_like(CamembertConfig, CamembertTokenizer(vocab=unigram(ROBERTA_SPECIAL)))


def _albert():
    from transformers import AlbertConfig, AlbertTokenizer

    vocab = unigram(["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = AlbertTokenizer(vocab=vocab)
    config = AlbertConfig(
        vocab_size=len(tokenizer), embedding_size=16, max_position_embeddings=POSITIONS, pad_token_id=0, **SIZES
    )
    return tokenizer, config


def _deberta_v3():
    from transformers import DebertaV2Config, DebertaV2Tokenizer

    tokenizer = DebertaV2Tokenizer(vocab=unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]), unk_id=3)
    config = DebertaV2Config(  # deberta-v3-base's attention: relative positions only, no segment embeddings
        vocab_size=128,  # more rows than the tokenizer has tokens (spm.model's or tokenizer.json's), as deberta-v3's
        max_position_embeddings=POSITIONS,
        relative_attention=True,
        position_buckets=16,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        type_vocab_size=0,
        pad_token_id=0,
        **SIZES,
    )
    return tokenizer, config


def _modernbert():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import ModernBertConfig, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab, merges = byte_level_bpe(special)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **dict(zip(["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"], special)),
    )
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=POSITIONS,
        local_attention=16,
        pad_token_id=vocab["[PAD]"],
        bos_token_id=vocab["[CLS]"],
        cls_token_id=vocab["[CLS]"],
        eos_token_id=vocab["[SEP]"],
        sep_token_id=vocab["[SEP]"],
        **SIZES,
    )
    return tokenizer, config


@dataclass(frozen=True)
class Family:
    """A BERT-style family: its tokenizer and config, and the tokenizer files its Hub checkpoints ship."""

    name: str  # as the README's table names it
    make: object  # () -> (tokenizer, config)
    kind: str  # the tokenizer's model: WordPiece, byte-level BPE or Unigram
    hub_files: tuple  # the tokenizer files of the Hub's checkpoints: vocab.txt, vocab.json, merges.txt, ...
    hub_config: object = None  # their tokenizer_config.json (None: they have none)


MODERNBERT_CONFIG = {  # answerdotai/ModernBERT-base's, special tokens and all
    "tokenizer_class": "PreTrainedTokenizerFast",
    "model_input_names": ["input_ids", "attention_mask"],
    "model_max_length": POSITIONS,
    **dict(zip(["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"], BERT_SPECIAL)),
}
FAMILIES = {
    "bert": Family("BERT", _bert, "WordPiece", ("vocab.txt",)),
    "distilbert": Family("DistilBERT", _distilbert, "WordPiece", ("vocab.txt", "tokenizer.json")),
    "electra": Family("ELECTRA", _electra, "WordPiece", ("vocab.txt", "tokenizer.json"), {"do_lower_case": True}),
    "roberta": Family("RoBERTa", _roberta, "byte-level BPE", ("vocab.json", "merges.txt", "tokenizer.json")),
    "xlm-roberta": Family("XLM-RoBERTa", _xlm_roberta, "Unigram", ("tokenizer.json",)),
    "camembert": Family("CamemBERT", _camembert, "Unigram", ("tokenizer.json",)),
    "albert": Family("ALBERT", _albert, "Unigram", ("tokenizer.json",)),
    "deberta-v3": Family(
        "DeBERTa-v2/v3", _deberta_v3, "Unigram", ("spm.model",), {"do_lower_case": False, "vocab_type": "spm"}
    ),
    "mpnet": Family("MPNet", _mpnet, "WordPiece", ("vocab.txt", "tokenizer.json"), {"do_lower_case": True}),
    "modernbert": Family("ModernBERT", _modernbert, "byte-level BPE", ("tokenizer.json",), MODERNBERT_CONFIG),
}


def _hub_layout(directory: Path, family: Family) -> None:
    """Replace the tokenizer files save_pretrained wrote with those the family's Hub checkpoints ship."""
    saved = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = saved["model"]["vocab"]
    for path in directory.iterdir():
        if path.name not in ("config.json", "model.safetensors", *family.hub_files):
            path.unlink()
    if "vocab.txt" in family.hub_files:
        (directory / "vocab.txt").write_text("".join(token + "\n" for token in sorted(vocab, key=vocab.get)))
    if "vocab.json" in family.hub_files:
        (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    if "merges.txt" in family.hub_files:
        merges = "".join(" ".join(merge) + "\n" for merge in saved["model"]["merges"])
        (directory / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
    if "spm.model" in family.hub_files:
        sentencepiece_model(directory / "spm.model")
    if family.hub_config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(family.hub_config), encoding="utf-8")


def write_family(name: str, directory: Path, hub: bool) -> Path:
    """A tiny random masked-LM of a family with its tokenizer, in the stock or the Hub's layout."""
    import torch
    from transformers import AutoModelForMaskedLM

    family = FAMILIES[name]
    tokenizer, config = family.make()
    torch.manual_seed(0)
    AutoModelForMaskedLM.from_config(config).save_pretrained(directory)
    tokenizer.model_max_length = POSITIONS
    tokenizer.save_pretrained(directory)
    if hub:
        _hub_layout(directory, family)
    return directory


LAYOUTS = ["stock", "hub"]


def cases(default=None, slow=()) -> list:
    """Every (family, layout), marked slow except those in ``default`` (None: all but those in ``slow``)."""
    return [
        pytest.param(
            name,
            layout,
            id=f"{name}-{layout}",
            marks=pytest.mark.slow
            if (name, layout) in slow or (default is not None and (name, layout) not in default)
            else (),
        )
        for name in FAMILIES
        for layout in LAYOUTS
    ]


CASES = cases()
CPU = ["--device", "cpu", "--precision", "fp32"]
QUICK = ["--epochs", "1", "--batch-size", "16", "--max-length", "32", "--lr", "3e-3", *CPU]
LONG_TEXT = " ".join(["the movie was good and the plot was dull"] * 20)  # ~180 tokens: past every limit


@pytest.fixture(scope="session")
def families(tmp_path_factory):
    """(family, layout) -> the directory of its tiny masked-LM, written on first use."""
    written = {}

    def directory(name: str, layout: str) -> Path:
        if (name, layout) not in written:
            path = tmp_path_factory.mktemp(f"{name}-{layout}")
            written[name, layout] = write_family(name, path, hub=layout == "hub")
        return written[name, layout]

    return directory


@pytest.fixture(scope="session")
def family_data(tmp_path_factory) -> dict[str, Path]:
    """The small files every family is run on: a corpus, labelled texts, pairs, a numeric target, tagged words."""
    from tests.test_token_classification import tagged_sentences, write_conll

    directory = tmp_path_factory.mktemp("family-data")
    corpus = directory / "corpus.txt"
    corpus.write_text(corpus_text(20), encoding="utf-8")
    rows = sentiment_rows(48)
    score = {"positive": "4.5", "negative": "1.0"}
    return {
        "corpus": corpus,
        "texts": write_csv(directory / "texts.csv", ["text", "label"], rows),
        "pairs": write_csv(
            directory / "pairs.csv",
            ["premise", "reply", "label"],
            [(a, b, label) for (a, _), (b, label) in zip(rows, rows[1:] + rows[:1])],
        ),
        "regression": write_csv(
            directory / "scores.csv", ["text", "score"], [(text, score[label]) for text, label in rows]
        ),
        "tags": write_conll(directory / "tags.conll", tagged_sentences(40)),
    }


@pytest.fixture(scope="session")
def classifiers(tmp_path_factory, families, family_data):
    """(family, layout) -> a classifier plm finetune trained from it on the labelled texts (once per session)."""
    from plmcli.config import FinetuneConfig
    from plmcli.run import finetune

    trained = {}

    def directory(name: str, layout: str) -> Path:
        if (name, layout) not in trained:
            output = tmp_path_factory.mktemp(f"{name}-{layout}-classifier") / "model"
            config = FinetuneConfig(
                data=str(family_data["texts"]),
                model=str(families(name, layout)),
                output=str(output),
                epochs=1,
                batch_size=16,  # max_length: the default 128, more than any of the tiny models takes
                lr=3e-3,
                device="cpu",
                precision="fp32",
            )
            finetune(config)
            trained[name, layout] = output
        return trained[name, layout]

    return directory


def succeeded(run) -> None:
    """A run that exited 0 without a traceback."""
    assert run.exit_code == 0, run.stderr
    assert "Traceback" not in run.stderr


# --- what every family does -------------------------------------------------------------------


@pytest.mark.parametrize("name, layout", CASES)
def test_fill_mask_shows_words_as_the_pipeline_does(cli, families, name, layout):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    model = families(name, layout)
    run = cli(
        "fill-mask", "--model", model, "--top-k", "3", "--format", "json", "--device", "cpu", "the movie was [MASK] ."
    )
    succeeded(run)
    [result] = json.loads(run.stdout)
    tokenizer = AutoTokenizer.from_pretrained(model)
    masked_lm = AutoModelForMaskedLM.from_pretrained(model)
    fill = pipeline("fill-mask", model=masked_lm, tokenizer=tokenizer, top_k=masked_lm.config.vocab_size)
    # The pipeline's words, less the special tokens and the embedding rows no token has, which plm never proposes
    special = set(tokenizer.all_special_ids)
    expected = [row for row in fill(f"the movie was {tokenizer.mask_token} .") if row["token"] not in special]
    expected = [row for row in expected if row["token"] < len(tokenizer)][:3]
    fillers = result["masks"][0]
    assert [filler["token"] for filler in fillers] == [row["token_str"].strip() for row in expected]
    assert [filler["sequence"] for filler in fillers] == [row["sequence"] for row in expected]


def served(model: Path, texts: list[str]) -> list[dict]:
    """What `plm serve --model MODEL`, run in-process, answers to one request for ``texts``."""
    import time

    from fastapi.testclient import TestClient

    from plmcli.config import ServeConfig
    from plmcli.serving import create_app

    with TestClient(create_app(ServeConfig(model=str(model), device="cpu"))) as client:
        for _ in range(400):  # the model loads and warms up in the background
            if client.get("/health").status_code == 200:
                break
            time.sleep(0.05)
        answer = client.post("/predict", json={"texts": texts})
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]


@pytest.mark.parametrize(
    "name, layout",
    cases(default={("roberta", "hub"), ("xlm-roberta", "hub"), ("mpnet", "hub"), ("deberta-v3", "hub")}),
)
def test_a_classifier_predicts_evaluates_and_serves_a_text_past_its_limit(
    cli, classifiers, family_data, tmp_path, name, layout
):
    model = classifiers(name, layout)
    texts = ["a good film", LONG_TEXT]
    run = cli("predict", "--model", model, "--format", "json", *CPU, *texts)
    succeeded(run)
    predictions = json.loads(run.stdout)
    assert len(predictions) == 2 and {p["label"] for p in predictions} <= {"positive", "negative"}
    assert f"1 of 2 texts were longer than {POSITIONS} tokens and were truncated" in run.stderr
    succeeded(cli("predict", "--model", model, "--format", "json", "--max-length", "1024", *CPU, LONG_TEXT))
    succeeded(cli("predict", "--model", model, "--format", "json", "--long", "sliding", *CPU, LONG_TEXT))
    run = cli(
        "evaluate", family_data["texts"], "--model", model, "--format", "json", "--output", tmp_path / "report", *CPU
    )
    succeeded(run)
    assert 0 <= json.loads(run.stdout)["accuracy"] <= 1
    answers = served(model, texts)
    assert [answer["label"] for answer in answers] == [p["label"] for p in predictions]


SEGMENT_FAMILIES = {"bert", "electra", "albert"}  # two token types: a pair's texts get segment ids 0 and 1


@pytest.mark.parametrize("name, layout", CASES)
def test_segment_ids_reach_the_families_that_read_them_and_no_others(families, name, layout):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from plmcli import data, inference, modeling

    directory = families(name, layout)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=2).eval()
    assert modeling.reads_segment_ids(model) == (name in SEGMENT_FAMILIES)
    dataset, _ = data.tokenize(
        ["the plot was good"], [0], tokenizer, 32, ["it was bad"], modeling.reads_segment_ids(model)
    )
    seen = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("token_type_ids")), with_kwargs=True
    )
    inference.classify(["the plot was good"], tokenizer, model, 8, 32, "cpu", "fp32", pairs=["it was bad"])
    if name in SEGMENT_FAMILIES:
        types = dataset[0]["token_type_ids"]
        assert types[0] == 0 and types[-1] == 1 and sorted(set(types)) == [0, 1]
        assert torch.equal(seen[0][0], torch.tensor(types))  # predict gives them as training did
    else:
        assert "token_type_ids" not in dataset.column_names and seen == [None]


# --- training commands ------------------------------------------------------------------------


def offset_words(tokenizer, text: str) -> int:
    """How many words whole-word masking finds in ``text`` as plm encodes it: a token starts one where its
    characters do not follow the previous token's (DeBERTa-v3 and ModernBERT count the space before a word
    into its first token; plm's offsets leave it out)."""
    from plmcli import corpus

    offsets = corpus.encode_batch([text], tokenizer, special_tokens=False, offsets=True)["offset_mapping"][0]
    return 1 + sum(1 for (start, _), (_, end) in zip(offsets[1:], offsets) if start != end)


@pytest.mark.parametrize("name, layout", cases(default={("roberta", "hub")}))
@pytest.mark.parametrize(
    "whole_words", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["mlm", "whole-word-mask"]
)
def test_pretrain_past_the_limit_then_fill_mask(cli, families, family_data, tmp_path, name, layout, whole_words):
    from transformers import AutoTokenizer

    output = tmp_path / "pretrained"
    run = cli(
        "pretrain", family_data["corpus"], "--model", families(name, layout), "--output", output,
        "--max-length", "1024", "--epochs", "1", "--batch-size", "8", "--lr", "3e-3", *CPU,
        *(["--whole-word-mask"] if whole_words else []),
    )  # fmt: skip
    succeeded(run)
    assert f"using {POSITIONS}" in run.stderr
    assert json.loads((output / "metrics.json").read_text())["validation"]["after"]["loss"] > 0
    succeeded(cli("fill-mask", "--model", output, "--device", "cpu", "the movie was [MASK] ."))
    if whole_words:
        assert offset_words(AutoTokenizer.from_pretrained(output), "the movie was good .") == 5


@pytest.mark.parametrize("name, layout", cases(slow={("bert", "stock"), ("bert", "hub")}))
def test_mlm_and_nsp_is_bert_s_alone(cli, families, family_data, tmp_path, name, layout):
    run = cli(
        "pretrain", family_data["corpus"], "--model", families(name, layout), "--output", tmp_path / "nsp",
        "--objective", "mlm+nsp", *QUICK,
    )  # fmt: skip
    if name == "bert":
        succeeded(run)
    else:
        assert run.exit_code == 2 and "Traceback" not in run.stderr
        assert run.error_line.startswith("Error: --objective mlm+nsp needs a BERT model (BertForPreTraining); ")
        assert run.error_line.endswith("Use --objective mlm.")
        assert not (tmp_path / "nsp").exists()


@pytest.mark.parametrize("name, layout", cases(default={("albert", "hub")}))
def test_finetune_on_pairs_then_predict_and_evaluate(cli, families, family_data, tmp_path, name, layout):
    output = tmp_path / "pairs"
    run = cli(
        "finetune", family_data["pairs"], "--model", families(name, layout), "--output", output,
        "--text-column", "premise", "--text-pair-column", "reply", *QUICK,
    )  # fmt: skip
    succeeded(run)
    assert ("has no segment ids (token_type_ids)" in run.stderr) == (name not in SEGMENT_FAMILIES)
    succeeded(cli("predict", "--model", output, "--file", family_data["pairs"], "--format", "json", *CPU))
    succeeded(cli("evaluate", family_data["pairs"], "--model", output, "--format", "json", *CPU))


@pytest.mark.parametrize("name, layout", cases(default=set()))
def test_finetune_regression_then_predict(cli, families, family_data, tmp_path, name, layout):
    output = tmp_path / "regressor"
    run = cli(
        "finetune",
        family_data["regression"],
        "--task",
        "regression",
        "--model",
        families(name, layout),
        "--output",
        output,
        *QUICK,
    )
    succeeded(run)
    run = cli("predict", "--model", output, "--format", "json", *CPU, "a good film", LONG_TEXT)
    succeeded(run)
    assert all("value" in row for row in json.loads(run.stdout))


@pytest.mark.parametrize("name, layout", cases(default={("roberta", "hub")}))
def test_token_classification_then_predict(cli, families, family_data, tmp_path, name, layout):
    output = tmp_path / "tagger"
    run = cli(
        "finetune", family_data["tags"], "--task", "token-classification", "--model", families(name, layout),
        "--output", output, *QUICK,
    )  # fmt: skip
    succeeded(run)
    run = cli("predict", "--model", output, "--format", "json", *CPU, "angela merkel visited paris today", LONG_TEXT)
    succeeded(run)
    assert len(json.loads(run.stdout)) == 2


# --- speed-ups, sentencepiece -----------------------------------------------------------------

CHECKED_SPEED_UPS = {  # family -> (masked-LM, sequence classifier) speed-ups applied for CPU training
    "bert": (
        ["masked_positions_only", "fast_dropout", "recompute_gelu"],
        ["score_first_token_only", "fast_dropout", "recompute_gelu"],
    ),
    "roberta": (["fast_dropout", "recompute_gelu"], ["fast_dropout", "recompute_gelu"]),
    "xlm-roberta": (["fast_dropout", "recompute_gelu"], ["fast_dropout", "recompute_gelu"]),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_speed_ups_apply_to_the_families_they_were_checked_for_and_the_others_run_stock(families, capsys, name):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    from plmcli import speed

    directory = families(name, "stock")
    masked_lm = AutoModelForMaskedLM.from_pretrained(directory).train()
    classifier = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=2).train()
    capsys.readouterr()
    expected = CHECKED_SPEED_UPS.get(name, ([], []))
    assert [speed.adapt(masked_lm, True, True), speed.adapt(classifier, True, True)] == list(expected)
    assert capsys.readouterr().err == ""  # each one applied agreed with the stock computation
    speed.standard(masked_lm)
    assert type(masked_lm) is type(AutoModelForMaskedLM.from_pretrained(directory))


def test_a_model_the_speed_up_check_cannot_run_gets_none_with_one_warning(families, capsys, monkeypatch):
    from transformers import AutoModelForMaskedLM

    from plmcli import speed

    model = AutoModelForMaskedLM.from_pretrained(families("bert", "stock"))
    monkeypatch.setattr(speed, "_check_input", lambda model: {"sentence_order_label": None})
    capsys.readouterr()
    assert speed.adapt(model, training=True, cpu=True) == []
    [warning] = capsys.readouterr().err.strip().splitlines()
    assert warning == (
        "Warning: the speed-ups could not be checked on BertForMaskedLM (ValueError: You must specify exactly one "
        "of input_ids or inputs_embeds); running without them."
    )
    assert type(model).__name__ == "BertForMaskedLM"  # the stock class


def test_a_sentencepiece_only_tokenizer_without_sentencepiece_is_one_line(cli, families, monkeypatch):
    import sys

    from transformers.utils import import_utils

    model = families("deberta-v3", "hub")
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # as if it were not installed
    import_utils.is_sentencepiece_available.cache_clear()
    try:
        run = cli("fill-mask", "--model", model, "--device", "cpu", "the movie was [MASK] .")
    finally:
        monkeypatch.undo()
        import_utils.is_sentencepiece_available.cache_clear()
    assert run.exit_code == 1 and "Traceback" not in run.stderr and "tiktoken" not in run.stderr
    assert run.error_line == (
        f"Error: the tokenizer of {model} is a sentencepiece model (no tokenizer.json), and reading it needs "
        "sentencepiece: pip install 'plm[sentencepiece]'"
    )


@pytest.mark.parametrize("name, layout", cases(default={("bert", "hub"), ("roberta", "hub"), ("deberta-v3", "hub")}))
def test_pretrain_extend_vocab_adds_what_the_tokenizer_cannot_read(cli, families, family_data, tmp_path, name, layout):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    chinese = ["今天的电影很好看", "这部电影很无聊", "我们喜欢这个故事"]
    corpus.write_text(family_data["corpus"].read_text(encoding="utf-8") + "\n".join(chinese * 10) + "\n")
    output = tmp_path / "extended"
    run = cli(
        "pretrain", corpus, "--model", families(name, layout), "--output", output, "--extend-vocab", "8",
        "--max-steps", "2", "--batch-size", "8", "--max-length", "32", *CPU,
    )  # fmt: skip
    if FAMILIES[name].kind == "byte-level BPE":
        assert run.exit_code == 2 and "byte-level" in run.error_line and "Traceback" not in run.stderr
        assert not output.exists()
        return
    succeeded(run)
    added = json.loads((output / "metrics.json").read_text())["extended_vocabulary"]
    assert added["added_tokens"] == 8
    assert added["unread_character_share_after"] < added["unread_character_share_before"]
    tokenizer = AutoTokenizer.from_pretrained(output)
    model = AutoModelForMaskedLM.from_pretrained(output)
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    first = added["first_added"][0]
    assert tokenizer.convert_tokens_to_ids(first) != tokenizer.unk_token_id
    assert tokenizer.unk_token_id not in tokenizer(first, add_special_tokens=False)["input_ids"]
