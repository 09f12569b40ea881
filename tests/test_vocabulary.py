"""The vocabulary's coverage of text (plmcli.vocabulary), --extend-vocab, and Chinese whole words (plmcli.words)."""

import json
import random

import pytest

from plmcli import vocabulary, words
from plmcli.errors import PlmError
from tests.conftest import write_csv

GOOD = ["好吃", "很快", "满意", "推荐", "新鲜"]
BAD = ["难吃", "太慢", "失望", "差劲", "冷了"]
PLAIN = ["外卖", "今天", "味道", "送餐", "我们", "这家"]


def chinese_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) rows of Chinese words the tiny vocabulary cannot read (no spaces, as Chinese is written)."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "positive" if i % 2 == 0 else "negative"
        chosen = rng.sample(PLAIN, 2) + rng.sample(GOOD if label == "positive" else BAD, 2)
        rng.shuffle(chosen)
        rows.append(("".join(chosen) + "。", label))
    return rows


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


def test_measure_counts_unknown_tokens_and_names_the_characters(tokenizer):
    texts = ["good movie", "好 good 好 吃", "the plot 吃"]
    report = vocabulary.measure(texts, tokenizer)
    unknown = sum(ids.count(tokenizer.unk_token_id) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    assert report["unknown_tokens"] == unknown == 4
    assert report["tokens"] == 9
    assert report["unknown_share"] == round(4 / 9, 4)
    assert report["texts_with_unknown_share"] == round(2 / 3, 4)
    assert report["most_frequent_unknown"] == [["吃", 2], ["好", 2]]  # ties in character order
    assert not report["sampled"]
    assert vocabulary.measure(["good movie"], tokenizer)["unknown_share"] == 0.0


def test_measure_samples_the_first_texts(tokenizer, monkeypatch):
    monkeypatch.setattr(vocabulary, "SAMPLE_TEXTS", 3)
    report = vocabulary.measure(["good"] * 3 + ["好"] * 10, tokenizer)
    assert report["texts"] == 3 and report["sampled"] and report["unknown_share"] == 0.0


def test_a_byte_level_tokenizer_reads_everything(tmp_path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(["good movie the plot"] * 10, vocab_size=300, min_frequency=1)
    fast = PreTrainedTokenizerFast(tokenizer_object=trainer._tokenizer)
    assert vocabulary.reads_everything(fast)
    assert vocabulary.measure(["今天天气很好 🙂"], fast)["unknown_share"] == 0.0


def test_warn_is_one_line_above_the_threshold_and_once_per_text(tokenizer, capsys):
    report = vocabulary.measure(["好吃 good", "很好"], tokenizer)
    assert vocabulary.warn(report, "a.csv", vocabulary.TRAINING_REMEDY, once=True)
    assert not vocabulary.warn(report, "a.csv", vocabulary.TRAINING_REMEDY, once=True)  # said once
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Warning: ") and "[UNK]" in err[0] and "--extend-vocab" in err[0]
    assert "好" in err[0]
    assert not vocabulary.warn(vocabulary.measure(["good movie"], tokenizer), "b.csv", "")


def _mlm(tiny_base, tied: bool = True):
    from transformers import AutoTokenizer, BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(tiny_base, tie_word_embeddings=tied)
    return AutoTokenizer.from_pretrained(tiny_base), model


@pytest.mark.parametrize("tied", [True, False])
def test_extend_adds_the_most_frequent_unread_characters_and_grows_the_model(tiny_base, tmp_path, tied):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer, model = _mlm(tiny_base, tied)
    lines = [text for text, _ in chinese_rows(40)] + ["good movie é"]
    old_size = len(tokenizer)
    old_rows = model.get_input_embeddings().weight.detach().clone()
    extension = vocabulary.extend(tokenizer, model, lambda: iter(lines), 5, "tiny")
    counts = {}
    for line in lines:
        for char in line:
            counts[char] = counts.get(char, 0) + 1
    unread = vocabulary.uncovered_characters(iter(lines), AutoTokenizer.from_pretrained(tiny_base))
    assert extension.added == [char for char, _ in unread[:5]]
    assert [counts[c] for c in extension.added] == sorted((counts[c] for c in extension.added), reverse=True)
    assert len(tokenizer) == old_size + 5
    assert model.get_input_embeddings().weight.shape[0] == old_size + 5
    assert model.get_output_embeddings().weight.shape[0] == old_size + 5
    assert model.cls.predictions.bias.shape[0] == old_size + 5
    assert torch.equal(model.get_input_embeddings().weight[:old_size], old_rows)
    tied_now = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied_now == tied
    assert extension.after["unknown_share"] < extension.before["unknown_share"]
    # the new tokens are read as themselves
    ids = tokenizer(extension.added[0], add_special_tokens=False)["input_ids"]
    assert ids == [tokenizer.convert_tokens_to_ids(extension.added[0])] and ids[0] >= old_size
    # and plain transformers loads the result
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(extension.added[0], add_special_tokens=False)["input_ids"] == ids
    assert AutoModelForMaskedLM.from_pretrained(tmp_path).get_input_embeddings().weight.shape[0] == old_size + 5


def test_a_new_token_made_of_known_pieces_starts_at_their_mean(tiny_base, monkeypatch):
    import torch

    tokenizer, model = _mlm(tiny_base)
    before = model.get_input_embeddings().weight.detach().clone()
    pieces = tokenizer("good.", add_special_tokens=False)["input_ids"]
    assert len(pieces) == 2 and tokenizer.unk_token_id not in pieces
    monkeypatch.setattr(vocabulary, "uncovered_characters", lambda lines, tok: [("good.", 3)])
    vocabulary.extend(tokenizer, model, lambda: iter(["好 good."]), 1, "tiny")
    new_row = model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("good.")]
    assert torch.allclose(new_row, before[pieces].mean(0))


def test_extend_refuses_what_it_cannot_do(tiny_base, capsys):
    tokenizer, model = _mlm(tiny_base)
    with pytest.raises(PlmError, match="already reads every character"):
        vocabulary.extend(tokenizer, model, lambda: iter(["good movie"]), 10, "tiny")
    vocabulary.extend(tokenizer, model, lambda: iter(["好吃 good"]), 50, "tiny")
    assert "only 2 characters" in capsys.readouterr().err
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(["good movie"] * 10, vocab_size=300, min_frequency=1)
    with pytest.raises(PlmError, match="byte-level"):
        vocabulary.extend(
            PreTrainedTokenizerFast(tokenizer_object=trainer._tokenizer), model, lambda: iter([]), 5, "b"
        )


def test_extend_refuses_a_tokenizer_that_takes_no_tokens(tiny_base, monkeypatch):
    tokenizer, model = _mlm(tiny_base)
    monkeypatch.setattr(type(tokenizer), "add_tokens", lambda self, tokens: 0)
    with pytest.raises(PlmError, match="took 0 of the 2 new tokens"):
        vocabulary.extend(tokenizer, model, lambda: iter(["好吃"]), 5, "tiny")


# ---- the commands ----


@pytest.fixture
def chinese_csv(tmp_path):
    return write_csv(tmp_path / "reviews-zh.csv", ["text", "label"], chinese_rows(60))


@pytest.fixture
def chinese_corpus(tmp_path):
    path = tmp_path / "corpus-zh.txt"
    path.write_text("\n".join(text for text, _ in chinese_rows(200, seed=1)) + "\n", encoding="utf-8")
    return path


def test_check_and_finetune_warn_on_text_the_vocabulary_cannot_read(cli, tiny_base, chinese_csv, tmp_path):
    checked = cli("check", chinese_csv, "--model", tiny_base)
    assert checked.exit_code == 0
    assert "[UNK] to the model's vocabulary" in checked.stdout and "--extend-vocab" in checked.stdout
    as_json = cli("check", chinese_csv, "--model", tiny_base, "--format", "json")
    assert json.loads(as_json.stdout)["vocabulary"]["unknown_share"] > 0.5
    output = tmp_path / "clf"
    trained = cli("finetune", chinese_csv, "--model", tiny_base, "--output", output, "--epochs", "1")
    assert trained.exit_code == 0, trained.stderr
    warnings = [line for line in trained.stderr.splitlines() if "[UNK]" in line]
    assert len(warnings) == 1 and warnings[0].startswith("Warning: ") and "reviews-zh.csv" in warnings[0]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["vocabulary"]["unknown_share"] > 0.5
    assert "Vocabulary coverage" in (output / "README.md").read_text()
    predicted = cli("predict", "--model", output, "--file", chinese_csv, "--format", "json")
    assert predicted.exit_code == 0 and "[UNK]" in predicted.stderr and "guesses" in predicted.stderr
    evaluated = cli("evaluate", chinese_csv, "--model", output, "--output", tmp_path / "report", "--format", "json")
    assert evaluated.exit_code == 0 and "[UNK]" in evaluated.stderr
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["vocabulary"]["unknown_share"] > 0.5


def test_english_text_gets_no_warning(cli, tiny_base, sentiment_csv):
    checked = cli("check", sentiment_csv, "--model", tiny_base)
    assert "[UNK]" not in checked.stdout + checked.stderr


def test_pretrain_extend_vocab_then_finetune_reads_the_new_tokens(
    cli, tiny_base, chinese_corpus, chinese_csv, tmp_path
):
    from transformers import AutoTokenizer

    pretrained = tmp_path / "pretrained"
    ran = cli(
        "pretrain", chinese_corpus, "--model", tiny_base, "--extend-vocab", "100", "--output", pretrained,
        "--max-steps", "2", "--max-length", "32", "--batch-size", "8",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    metrics = json.loads((pretrained / "metrics.json").read_text())
    extended = metrics["extended_vocabulary"]
    assert extended["unknown_share_before"] > 0.5 and extended["unknown_share_after"] == 0.0
    assert extended["added_tokens"] == extended["uncovered_characters"] < 100  # fewer than asked: all of them
    assert "only" in ran.stderr and "Vocabulary: added" in ran.stderr
    assert metrics["vocabulary"]["unknown_share"] == 0.0
    assert "Vocabulary extended" in (pretrained / "README.md").read_text()
    output = tmp_path / "clf"
    trained = cli("finetune", chinese_csv, "--model", pretrained, "--output", output, "--epochs", "1")
    assert trained.exit_code == 0, trained.stderr
    assert "[UNK]" not in trained.stderr
    assert json.loads((output / "metrics.json").read_text())["vocabulary"]["unknown_share"] == 0.0
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert tokenizer.unk_token_id not in tokenizer(chinese_rows(1)[0][0])["input_ids"]


def test_extend_vocab_refusals(cli, tiny_base, chinese_corpus, corpus_txt, tmp_path):
    both = cli("pretrain", chinese_corpus, "--from-scratch", "--extend-vocab", "5", "--output", tmp_path / "a")
    assert both.exit_code == 2 and "--extend-vocab" in both.stderr and "Traceback" not in both.stderr
    nothing = cli("pretrain", corpus_txt, "--model", tiny_base, "--extend-vocab", "5", "--output", tmp_path / "b")
    assert nothing.exit_code == 2 and "nothing to add" in nothing.error_line
    assert not (tmp_path / "b").exists()


# ---- Chinese whole words ----


def test_jieba_words_are_whole_and_a_run_of_characters_is_no_longer_one_word(tmp_path):
    import numpy as np
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    from plmcli import corpus

    line = "我们今天去北京吃烤鸭"
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(line)])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    from tokenizers.processors import TemplateProcessing

    backend.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip
    plain = corpus.encode_batch([line], tokenizer, offsets=True)
    segmented = corpus.encode_batch([line], tokenizer, offsets=True, segmenter=words.check_segmenter())
    rule = DataCollatorForLanguageModeling._calc_word_ids_and_prob_mask
    special = np.array(plain["special_tokens_mask"])
    plain_ids, _ = rule(np.array(plain["offset_mapping"]), special)
    jieba_ids, _ = rule(np.array(segmented["offset_mapping"]), special)
    assert len(set(plain_ids[0][1:-1])) == 1  # transformers' rule: the whole run is one "word"
    found = [line[i - 1] for i in range(1, len(line) + 1)]
    by_word: dict = {}
    for char, word in zip(found, jieba_ids[0][1:-1]):
        by_word.setdefault(int(word), []).append(char)
    assert ["".join(chars) for chars in by_word.values()] == ["我们", "今天", "去", "北京", "吃", "烤鸭"]

    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=0.4, whole_word_mask=True, mask_replace_prob=1.0, random_replace_prob=0.0, seed=3
    )
    example = {name: segmented[name][0] for name in ("input_ids", "special_tokens_mask", "offset_mapping")}
    for _ in range(10):
        batch = collator([example])
        masked = (batch["labels"][0] != -100).numpy()
        for word in set(jieba_ids[0][1:-1]):
            positions = np.flatnonzero(jieba_ids[0] == word)
            assert masked[positions].all() or not masked[positions].any()  # a word is masked whole or not at all


def test_segmenter_is_used_on_chinese_text_only():
    assert words.needs_segmenter(["我们今天去北京吃烤鸭", "hello"])
    assert not words.needs_segmenter(["the movie was good", "a plot"])
    assert not words.needs_segmenter([])


def test_pretrain_whole_word_mask_on_chinese_segments_with_jieba(cli, tiny_base, chinese_corpus, tmp_path):
    output = tmp_path / "wwm"
    ran = cli(
        "pretrain", chinese_corpus, "--model", tiny_base, "--extend-vocab", "40", "--whole-word-mask",
        "--output", output, "--max-steps", "2", "--max-length", "32", "--batch-size", "8",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    assert "jieba" in ran.stderr
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["word_segmenter"].startswith("jieba")
    assert "segmented by jieba" in (output / "README.md").read_text()


def test_missing_jieba_is_one_line(cli, tiny_base, chinese_corpus, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jieba", None)  # import jieba raises ImportError
    ran = cli("pretrain", chinese_corpus, "--model", tiny_base, "--whole-word-mask", "--output", tmp_path / "x")
    assert ran.exit_code != 0 and "plm[chinese]" in ran.error_line and "Traceback" not in ran.stderr
    assert not (tmp_path / "x").exists()


def test_english_whole_word_mask_needs_no_segmenter(cli, tiny_base, corpus_txt, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jieba", None)
    ran = cli(
        "pretrain", corpus_txt, "--model", tiny_base, "--whole-word-mask", "--output", tmp_path / "x",
        "--max-steps", "1", "--max-length", "32",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    assert json.loads((tmp_path / "x" / "metrics.json").read_text())["word_segmenter"] is None


def test_pretrain_extend_vocab_resumes_with_the_same_vocabulary(cli, tiny_base, chinese_corpus, tmp_path, monkeypatch):
    from tests.test_checkpoints import stop_at

    output = tmp_path / "out"
    args = (
        "pretrain", chinese_corpus, "--model", tiny_base, "--extend-vocab", "20", "--output", output,
        "--max-steps", "6", "--save-steps", "2", "--max-length", "32", "--batch-size", "8", "--device", "cpu",
    )  # fmt: skip
    stop_at(monkeypatch, 2)
    assert cli(*args).exit_code == 143
    monkeypatch.undo()
    saved = (output / "checkpoints" / "checkpoint-2" / "tokenizer.json").read_text()
    changed = cli(*args[:5], "30", *args[6:], "--resume")
    assert changed.exit_code == 2, changed.stderr
    assert "written with other settings: --extend-vocab 20 -> 30." in changed.error_line
    resumed = cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert (output / "tokenizer.json").read_text() == saved
