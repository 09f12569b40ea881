"""Shared fixtures: a tiny random BERT written once per session, small data files, and `cli`.

The tiny BERT follows transformers' own tests: hidden 32, 2 layers, 4 heads, intermediate 37
(odd sizes, so a mixed-up dimension fails loudly), with a vocab written at test time.
"""

import atexit
import csv
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["PLM_CACHE"] = tempfile.mkdtemp(prefix="plm-test-cache-")  # tokenized corpora, not ~/.cache
atexit.register(shutil.rmtree, os.environ["PLM_CACHE"], True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSITIVE = ["good", "great", "love", "wonderful", "fun", "best", "brilliant", "superb"]
NEGATIVE = ["bad", "awful", "hate", "boring", "worst", "dull", "terrible", "weak"]
FILLER = ["the", "movie", "film", "plot", "was", "is", "a", "and", "it", "this", "acting", "story", "very", "so"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class Run:
    """What one plm invocation did: its exit code and what it printed."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        """The last line on stderr (where plm's one 'Error: ...' line goes)."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


def sentiment_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) rows a tiny model can learn: the label follows the sentiment words."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "positive" if i % 2 == 0 else "negative"
        words = POSITIVE if label == "positive" else NEGATIVE
        text = " ".join(rng.sample(FILLER, rng.randint(2, 6)) + rng.sample(words, 2))
        rows.append((text, label))
    return rows


def write_csv(path: Path, header: list[str], rows: list[tuple], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_tiny_bert(directory: Path, words: list[str]) -> Path:
    """A tiny random BertModel (an encoder with no head, like the bundled MiniLM) whose vocab is ``words``."""
    from transformers import BertConfig, BertModel, BertTokenizer

    tokens = SPECIAL + words
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)
    tokenizer.model_max_length = 64
    config = BertConfig(
        vocab_size=len(tokens),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The tiny BERT with its tokenizer, for the sentiment rows."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), sorted(set(POSITIVE + NEGATIVE + FILLER + ["."])))


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory, tiny_base) -> Path:
    """The tiny BERT with a masked-LM head: a model directory that is not a classifier."""
    from transformers import AutoTokenizer, BertForMaskedLM

    directory = tmp_path_factory.mktemp("tiny-mlm")
    BertForMaskedLM.from_pretrained(tiny_base).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(directory)
    return directory


def corpus_text(documents: int, seed: int = 0) -> str:
    """Documents of short sentences in the tiny vocabulary, separated by blank lines."""
    rows = sentiment_rows(documents * 4, seed)
    return "\n\n".join("\n".join(text + " ." for text, _ in rows[i : i + 4]) for i in range(0, len(rows), 4)) + "\n"


@pytest.fixture
def corpus_txt(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text(60), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory, tiny_base) -> Path:
    """The tiny BERT after a short `plm pretrain` (shared by the fill-mask and handoff tests)."""
    from plmcli.config import PretrainConfig
    from plmcli.run import pretrain

    directory = tmp_path_factory.mktemp("corpus")
    corpus = directory / "corpus.txt"
    corpus.write_text(corpus_text(80), encoding="utf-8")
    output = tmp_path_factory.mktemp("pretrained") / "model"
    pretrain(
        PretrainConfig(
            corpus=[str(corpus)],
            model=str(tiny_base),
            output=str(output),
            max_length=32,
            epochs=4,
            lr=3e-3,
            batch_size=16,
            device="cpu",
        )
    )
    return output


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "reviews.csv", ["text", "label"], sentiment_rows(80))


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `plm ARGS...` in-process through plmcli.cli.main, as the console script does."""
    from plmcli.cli import main

    def run(*args: str, stdin: str | None = None) -> Run:
        monkeypatch.setattr(sys, "argv", ["plm", *map(str, args)])
        if stdin is not None:
            import io

            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8"))
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory, tiny_base) -> Path:
    """A tiny classifier fine-tuned by plm on the sentiment rows (shared by the predict tests)."""
    from plmcli.config import FinetuneConfig
    from plmcli.run import finetune

    directory = tmp_path_factory.mktemp("data")
    data = write_csv(directory / "reviews.csv", ["text", "label"], sentiment_rows(120))
    output = tmp_path_factory.mktemp("classifier") / "model"
    finetune(
        FinetuneConfig(
            data=str(data), model=str(tiny_base), output=str(output), epochs=6, lr=3e-3, batch_size=16, device="cpu"
        )
    )
    return output


def plm_command(*args) -> list[str]:
    """The argv that runs plm in a fresh Python process, as `python -m plmcli ARGS...`."""
    return [sys.executable, "-m", "plmcli", *map(str, args)]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under a directory with its bytes: compare before and after to prove nothing changed."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
