"""Pretraining text -> training examples: corpus readers, documents, blocks, lines, NSP pairs.

A corpus is any mix of text files (``.gz`` decompressed), directories (their ``.txt`` and
``.txt.gz`` files, recursively), globs and ``-`` for stdin. Text is UTF-8 (a BOM is dropped;
UTF-16 with its BOM is read too, binary refused: plmcli.textfiles);
blank lines separate documents. Blocks follow run_mlm.py's group_texts: every line is tokenized
with [CLS] and [SEP], the token streams are concatenated and cut into ``max_length`` blocks over
the whole corpus, so only the very last block can be short (it is kept, not dropped). NSP pairs
follow the BERT paper's create_instances_from_document.
"""

import glob
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Optional

import numpy as np

from plmcli import textfiles, words
from plmcli.errors import PlmError

CORPUS_SUFFIXES = (".txt", ".txt.gz", ".text", ".text.gz")  # what a directory contributes
BATCH_LINES = 2000  # lines per tokenizer call (the fast tokenizer batches them in Rust)
BATCH_CHARS = 1_000_000  # characters per tokenizer call at most: its memory grows with the text it holds
LONG_LINE = 10_000  # characters: a longer line is read as pieces of at most this many, cut at spaces
SHORT_PAIR_PROBABILITY = 0.1  # BERT's short_seq_prob: some NSP pairs are shorter than max_length
HINT = "convert it to UTF-8 first, e.g. iconv -f latin1 -t utf-8."  # for a corpus in another encoding


@dataclass
class Corpus:
    """A corpus as documents of non-empty lines, and where it came from."""

    documents: list[list[str]]
    sources: list[str]  # file names as the user gave them ('-' for stdin)
    notes: list[str] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return [line for document in self.documents for line in document]


def expand(item: str) -> list[Path]:
    """The files one CORPUS argument names: itself, a directory's text files, or a glob's matches."""
    path = Path(item).expanduser()
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.name.lower().endswith(CORPUS_SUFFIXES)
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise PlmError(f"no text files in directory {item} (looked for {', '.join(CORPUS_SUFFIXES)}).")
        return files
    if path.is_file():
        return [path]
    if any(char in item for char in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not matches:
            raise PlmError(f"no files match {item}.")
        return matches
    raise PlmError(f"corpus file not found: {item}")


def cut_long(line: str) -> list[str]:
    """A stripped line, or the pieces of one longer than LONG_LINE characters, cut at the last space before it.

    A corpus of one 20 MB line would otherwise reach the tokenizer whole (gigabytes of memory); at a
    space the cut leaves every word's tokens as they were (a piece without a space is cut where it must).
    """
    line = line.strip()
    pieces = []
    while len(line) > LONG_LINE:
        cut = line.rfind(" ", 1, LONG_LINE + 1)
        cut = cut if cut > 0 else LONG_LINE
        pieces.append(line[:cut].rstrip())
        line = line[cut:].lstrip()
    return [*pieces, line]


def _batches(lines: Iterable[str]) -> Iterator[list[str]]:
    """Lines in batches for the tokenizer: BATCH_LINES at most, and BATCH_CHARS characters (one line at least)."""
    batch, size = [], 0
    for line in lines:
        if batch and (len(batch) == BATCH_LINES or size + len(line) > BATCH_CHARS):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line)
    if batch:
        yield batch


def split_documents(text: str) -> list[list[str]]:
    """Documents (lists of stripped, non-empty lines, long ones cut) of a text; blank lines separate them."""
    documents, current = [], []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip()
        if line:
            current.extend(cut_long(line))
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents


def read_corpus(items: list[str]) -> Corpus:
    """Read every file the CORPUS arguments name; refuse a missing, unreadable or empty corpus."""
    if not items:
        raise PlmError("no corpus given: pass text files, directories, globs, or - for stdin.")
    documents, sources = [], []
    for item in items:
        if item == "-":
            texts = [(textfiles.decode(sys.stdin.buffer.read(), "standard input", "utf-8", HINT), "-")]
        else:
            texts = [(textfiles.read_text(path, "utf-8", HINT), str(path)) for path in expand(item)]
        for text, name in texts:
            documents.extend(split_documents(text))
            sources.append(name)
    if not documents:
        raise PlmError(f"the corpus has no text: {', '.join(sources)} {'is' if len(sources) == 1 else 'are'} empty.")
    return Corpus(documents=documents, sources=sources)


@dataclass
class Examples:
    """Tokenized training examples as columns (lists of lists), ready for datasets.Dataset.from_dict."""

    columns: dict[str, list]
    tokens: int  # tokens over all examples, special tokens included
    truncated: int = 0  # lines cut to max_length (line-by-line only)

    def __len__(self) -> int:
        return len(self.columns["input_ids"])

    def split(self, indices: list[int]) -> "Examples":
        columns = {name: [values[i] for i in indices] for name, values in self.columns.items()}
        return Examples(columns, sum(len(ids) for ids in columns["input_ids"]))


def encode_batch(
    lines: list[str], tokenizer, special_tokens: bool = True, offsets: bool = False, segmenter: Optional[str] = None
):
    """One tokenizer call over a batch of lines: ids, special-tokens mask (and character offsets), uncut.

    The offsets are what whole-word masking reads (a token whose characters do not follow the
    previous token's starts a word), so they leave out the white space that SentencePiece and
    byte-level tokenizers count into a word's first token: without that, a line of DeBERTa-v3 or
    ModernBERT tokens would be one "word". With a ``segmenter`` (see plmcli.words) the offsets
    mark its words rather than the characters.
    """
    encoded = tokenizer(
        lines,
        add_special_tokens=special_tokens,
        return_special_tokens_mask=True,
        return_offsets_mapping=offsets,
        return_attention_mask=False,
        return_token_type_ids=False,
        truncation=False,
        verbose=False,
    )
    if offsets:
        encoded["offset_mapping"] = [
            words.regroup(line, words.without_spaces(line, line_offsets), special)
            if segmenter
            else words.without_spaces(line, line_offsets)
            for line, line_offsets, special in zip(lines, encoded["offset_mapping"], encoded["special_tokens_mask"])
        ]
    return encoded


def _encode_lines(lines: list[str], tokenizer, special_tokens: bool, offsets: bool) -> dict[str, list]:
    """Tokenize lines in chunks (the fast tokenizer batches them in Rust)."""
    encoded: dict[str, list] = {"input_ids": [], "special_tokens_mask": []}
    if offsets:
        encoded["offset_mapping"] = []
    for lines_batch in _batches(lines):
        batch = encode_batch(lines_batch, tokenizer, special_tokens, offsets)
        for name in encoded:
            encoded[name].extend(batch[name])
    return encoded


def examples_from_lines(
    lines: Iterable[str],
    tokenizer,
    max_length: int,
    line_by_line: bool,
    offsets: bool,
    segmenter: Optional[str] = None,
) -> Iterator[dict]:
    """Training examples of a stream of lines, each with its 'length' and whether it was 'truncated'.

    Blocks follow run_mlm.py's group_texts over the whole stream: the tokens of each batch of
    lines are appended to what the previous batch left over and cut into max_length blocks; only
    the very last block can be short, and it is kept. With ``line_by_line``, one example per line,
    cut to max_length tokens with the final [SEP] kept.
    """
    names = ["input_ids", "special_tokens_mask"] + (["offset_mapping"] if offsets else [])
    carry: dict[str, list] = {name: [] for name in names}
    for batch in _batches(lines):
        encoded = encode_batch(batch, tokenizer, offsets=offsets, segmenter=segmenter)
        if line_by_line:
            for row in range(len(batch)):
                example = {name: encoded[name][row] for name in names}
                cut = len(example["input_ids"]) > max_length
                if cut:  # keep the final [SEP]
                    example = {name: values[: max_length - 1] + values[-1:] for name, values in example.items()}
                yield {**example, "length": len(example["input_ids"]), "truncated": cut}
            continue
        for name in names:
            carry[name].extend(chain.from_iterable(encoded[name]))
        usable = len(carry["input_ids"]) // max_length * max_length
        for start in range(0, usable, max_length):
            yield {name: carry[name][start : start + max_length] for name in names} | {
                "length": max_length,
                "truncated": False,
            }
        for name in names:
            del carry[name][:usable]
    if carry["input_ids"]:  # the last, short block is kept
        yield carry | {"length": len(carry["input_ids"]), "truncated": False}


def _collect(rows: Iterator[dict]) -> Examples:
    columns: dict[str, list] = {}
    tokens = truncated = 0
    for row in rows:
        tokens, truncated = tokens + row.pop("length"), truncated + row.pop("truncated")
        for name, values in row.items():
            columns.setdefault(name, []).append([list(v) for v in values] if name == "offset_mapping" else values)
    return Examples(columns, tokens, truncated)


def blocks(
    corpus: Corpus, tokenizer, max_length: int, whole_word_mask: bool, segmenter: Optional[str] = None
) -> Examples:
    """run_mlm.py's group_texts over the whole corpus: concatenated lines cut into max_length blocks."""
    examples = _collect(examples_from_lines(corpus.lines, tokenizer, max_length, False, whole_word_mask, segmenter))
    if examples.tokens < 2:
        raise PlmError("the corpus is too short to train on: it makes fewer than 2 tokens.")
    return examples


def lines(
    corpus: Corpus, tokenizer, max_length: int, whole_word_mask: bool, segmenter: Optional[str] = None
) -> Examples:
    """One example per non-empty line, cut to max_length tokens (the final [SEP] kept)."""
    return _collect(examples_from_lines(corpus.lines, tokenizer, max_length, True, whole_word_mask, segmenter))


def _truncate_pair(first: list, second: list, budget: int, rng: random.Random) -> None:
    """BERT's truncate_seq_pair: trim the longer segment, from the front or the back at random."""
    while len(first) + len(second) > budget:
        longer = first if len(first) > len(second) else second
        del longer[0 if rng.random() < 0.5 else -1]


def nsp_pairs(corpus: Corpus, tokenizer, max_length: int, seed: int) -> Examples:
    """Next-sentence pairs as in the BERT paper: segment B is the true continuation half the time.

    Lines longer than half of max_length are cut into pieces first. Each document's lines are
    gathered into chunks of about max_length tokens, each chunk split at a random line into A and
    B; half the time B is replaced by a segment starting at a random line of another document (of
    a distant part of the same document, for a one-document corpus).
    Label 0: B follows A; 1: B is random (BertForPreTraining's next_sentence_label).
    """
    rng = random.Random(seed)
    ids = _encode_lines(corpus.lines, tokenizer, special_tokens=False, offsets=False)["input_ids"]
    budget = max_length - 3  # [CLS] A [SEP] B [SEP]
    piece = max(budget // 2, 1)  # a line longer than this is cut, so a chunk holds several segments
    documents, start = [], 0
    for document in corpus.documents:
        segments = [
            line[i : i + piece] for line in ids[start : start + len(document)] for i in range(0, len(line), piece)
        ]
        documents.append(segments)
        start += len(document)
    documents = [document for document in documents if document]
    if len(documents) == 1:
        corpus.notes.append(
            "the corpus is one document (no blank lines between documents), so random next segments "
            "for next-sentence prediction come from distant parts of it."
        )
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    columns: dict[str, list] = {
        "input_ids": [],
        "token_type_ids": [],
        "special_tokens_mask": [],
        "next_sentence_label": [],
    }
    for doc_index, document in enumerate(documents):
        target = rng.randint(2, budget) if rng.random() < SHORT_PAIR_PROBABILITY else budget
        chunk: list[list[int]] = []
        length, i, first_line = 0, 0, 0
        while i < len(document):
            if not chunk:
                first_line = i
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                split = 1 if len(chunk) < 2 else rng.randint(1, len(chunk) - 1)
                first = [token for segment in chunk[:split] for token in segment]
                is_random = len(chunk) == 1 or rng.random() < 0.5
                if is_random:
                    second = _random_segment(documents, doc_index, (first_line, i), target - len(first), rng)
                    i -= len(chunk) - split  # the unused lines start the next chunk
                else:
                    second = [token for segment in chunk[split:] for token in segment]
                _truncate_pair(first, second, budget, rng)
                if first and second:
                    columns["input_ids"].append([cls, *first, sep, *second, sep])
                    columns["token_type_ids"].append([0] * (len(first) + 2) + [1] * (len(second) + 1))
                    columns["special_tokens_mask"].append([1] + [0] * len(first) + [1] + [0] * len(second) + [1])
                    columns["next_sentence_label"].append(int(is_random))
                chunk, length = [], 0
            i += 1
    if len(columns["input_ids"]) < 2:
        raise PlmError(
            "the corpus is too short for next-sentence pairs: it needs at least two lines of text; "
            "use --objective mlm."
        )
    return Examples(columns, sum(len(row) for row in columns["input_ids"]))


def _random_segment(
    documents: list[list[list[int]]], doc_index: int, chunk: tuple[int, int], target: int, rng
) -> list[int]:
    """Tokens from a random line of another document onwards, up to about ``target`` of them.

    In a one-document corpus the line is at least 3 lines away from the chunk (first, last) that
    segment A comes from, so B is neither A's continuation nor a repeat of it.
    """
    if len(documents) > 1:
        other = rng.randrange(len(documents) - 1)
        document = documents[other + (other >= doc_index)]
        start = rng.randrange(len(document))
    else:
        document = documents[0]
        distant = [j for j in range(len(document)) if j < chunk[0] - 2 or j > chunk[1] + 2]
        start = rng.choice(distant) if distant else rng.randrange(len(document))
    tokens: list[int] = []
    for segment in document[start:]:
        tokens.extend(segment)
        if len(tokens) >= max(target, 1):
            break
    return tokens


def split_validation(count: int, share: float, cap: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, validation): a random ``share`` of examples held out, at most ``cap``, at least 1."""
    if count < 2:
        raise PlmError("the corpus makes only one training example; give more text to hold some out for validation.")
    held_out = min(max(1, round(count * share)), cap, count - 1)
    order = np.random.default_rng(seed).permutation(count)
    return sorted(order[held_out:].tolist()), sorted(order[:held_out].tolist())


def describe(corpus: Corpus) -> str:
    """One line about the corpus for the run's log."""
    return describe_counts(len(corpus.documents), sum(len(d) for d in corpus.documents), corpus.sources)


def describe_counts(documents: int, lines: int, sources: list[str]) -> str:
    """'N documents, M lines from a.txt, b.txt, c.txt and 2 more'."""
    names = ", ".join(sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
    return f"{documents} documents, {lines} lines from {names}"
