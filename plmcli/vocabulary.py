"""How much of a text the tokenizer can read, and adding what it cannot (``plm pretrain --extend-vocab``).

A WordPiece or Unigram vocabulary maps any character it has never seen to [UNK]: the bundled model's
(bert-base-uncased's) reads two thirds of a Chinese review as unknowns, and a model trained on them
learns nothing from those positions. Every command that reads text measures the share of [UNK]
tokens and warns above ``WARN_SHARE``; byte-level BPE (RoBERTa's) reads every byte and never does.
The unit added by ``--extend-vocab`` is the character: a word is [UNK] exactly when one of its
characters is outside the vocabulary, so adding the characters makes every word readable.
"""

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional

from plmcli import console
from plmcli.errors import PlmError

WARN_SHARE = 0.02  # above 2% of tokens [UNK], a model learns visibly less (one in 50 positions is blank)
SAMPLE_TEXTS = 50_000  # coverage is measured on the first texts of a file: at most this many,
SAMPLE_CHARACTERS = 5_000_000  # and at most about this many characters (a second or two of tokenizing)
SHOWN = 10  # uncovered characters named in the warning
BATCH = 1_000


def _encode(tokenizer, texts: list[str]) -> list[tuple[list[int], Optional[list]]]:
    """Each text's token ids, no special tokens, uncut, with character offsets where the tokenizer has them.

    A fast tokenizer's backend (tokenizers) is run directly, its truncation and padding off for
    the call (a transformers tokenizer sets both again on its next call).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [(ids, None) for ids in encoded]
    backend.no_truncation()
    backend.no_padding()
    return [(encoding.ids, encoding.offsets) for encoding in backend.encode_batch(texts, add_special_tokens=False)]


def _unknown_chars(chars: list[str], tokenizer) -> set[str]:
    """The characters, of ``chars``, that the tokenizer reads as [UNK] on their own."""
    unk = tokenizer.unk_token_id
    found = set()
    for start in range(0, len(chars), BATCH):
        batch = chars[start : start + BATCH]
        found.update(char for char, (ids, _) in zip(batch, _encode(tokenizer, batch)) if unk in ids)
    return found


def _readable(counts: Counter) -> list[str]:
    """The characters a vocabulary could hold: not white space, not control characters."""
    return sorted(char for char in counts if not char.isspace() and char.isprintable())


def _ranked(counts: Counter) -> list[tuple[str, int]]:
    """The characters with their counts, most frequent first (ties in character order)."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def reads_everything(tokenizer) -> bool:
    """True for a tokenizer that no text is unknown to: byte-level BPE (RoBERTa's), or one with no [UNK]."""
    pre_tokenizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
    byte_level = pre_tokenizer is not None and b'"ByteLevel"' in pre_tokenizer.__getstate__()  # its JSON
    return tokenizer.unk_token_id is None or byte_level


def _sample(texts: Iterable[str]) -> tuple[list[str], bool]:
    """(the first texts, within the limits; whether that was all of them)."""
    sample, characters = [], 0
    texts = iter(texts)
    for text in texts:
        if text:
            sample.append(text)
            characters += len(text)
            if characters >= SAMPLE_CHARACTERS or len(sample) == SAMPLE_TEXTS:
                return sample, next(texts, None) is None
    return sample, True


@dataclass
class _Scan:
    tokens: int = 0
    unknown: int = 0
    texts_with_unknown: int = 0
    letters: int = 0  # the texts' characters, white space left out
    characters: Counter = field(default_factory=Counter)  # the characters of the [UNK] tokens' spans


def _scan(texts: Iterable[str], tokenizer) -> _Scan:
    """Tokenize ``texts`` a batch at a time, counting tokens, [UNK]s and the characters they stand for.

    A fast tokenizer says where each [UNK] came from (its offsets); for another, every character
    of a text with an [UNK] is a suspect. Either way only characters the tokenizer cannot read on
    their own are kept (see ``_unknown_chars``).
    """
    unk, found = tokenizer.unk_token_id, _Scan()
    batch: list[str] = []
    for text in itertools.chain(texts, [None]):
        if text is not None:
            batch.append(text)
        if len(batch) < BATCH and text is not None or not batch:
            continue
        for line, (ids, offsets) in zip(batch, _encode(tokenizer, batch)):
            found.tokens += len(ids)
            found.letters += len(line) - sum(map(str.isspace, line))
            count = ids.count(unk) if unk is not None else 0
            if not count:
                continue
            found.unknown, found.texts_with_unknown = found.unknown + count, found.texts_with_unknown + 1
            if offsets is None:
                found.characters.update(line)
                continue
            for token, (start, end) in zip(ids, offsets):
                if token == unk:
                    found.characters.update(line[start:end])
        batch = []
    if found.characters:
        unread = _unknown_chars(_readable(found.characters), tokenizer)
        found.characters = Counter({char: n for char, n in found.characters.items() if char in unread})
    return found


def measure(texts: Iterable[str], tokenizer) -> dict:
    """The share of [UNK] tokens (and of texts with any) over the first texts (see ``SAMPLE_TEXTS``).

    ``most_frequent_unknown`` lists the characters behind them, most frequent first, with their
    counts, and ``unread_character_share`` is their share of the text's characters (white space
    aside): the figure to compare across tokenizers, since a Unigram tokenizer (SentencePiece's)
    fuses a run of unknown characters into one [UNK] where WordPiece makes one per word.
    Deterministic: the same texts and tokenizer give the same dict (metrics.json keeps it).
    """
    sample, complete = _sample(texts)
    found = _scan(sample, tokenizer)
    return {
        "texts": len(sample),
        "sampled": not complete,
        "tokens": found.tokens,
        "unknown_tokens": found.unknown,
        "unknown_share": round(found.unknown / max(found.tokens, 1), 4),
        "texts_with_unknown_share": round(found.texts_with_unknown / max(len(sample), 1), 4),
        "unread_character_share": round(sum(found.characters.values()) / max(found.letters, 1), 4),
        "most_frequent_unknown": [[char, n] for char, n in _ranked(found.characters)[:SHOWN]],
    }


_warned: set[tuple[str, float]] = set()  # a tune or audit trains many times on the same texts: say it once


def sentence(report: dict, where: str, remedy: str) -> Optional[str]:
    """What to tell the user when more than ``WARN_SHARE`` of the tokens were [UNK] (``where``: "of FILE" or "")."""
    if report["unknown_share"] <= WARN_SHARE:
        return None
    shown = " ".join(char for char, _ in report["most_frequent_unknown"])
    sampled = f" (its first {report['texts']} texts)" if report["sampled"] else ""
    return (
        f"{report['unknown_share']:.1%} of the tokens{where}{sampled} are [UNK] to the model's vocabulary "
        f"(in {report['texts_with_unknown_share']:.0%} of the texts), so the model cannot read them"
        + (f"; the most frequent unread characters: {shown}" if shown else "")
        + f". {remedy}"
    )


def warn(report: dict, where: str, remedy: str, once: bool = False) -> bool:
    """One Warning line when more than ``WARN_SHARE`` of the tokens of ``where`` were [UNK]; True when it warned.

    With ``once``, texts already warned about in this process (the same place, the same share) are not again.
    """
    said = (where, report["unknown_share"])
    line = sentence(report, f" of {where}", remedy)
    if line is None or (once and said in _warned):
        return False
    _warned.add(said)
    console.warn(line)
    return True


TRAINING_REMEDY = (
    "Add them with `plm pretrain CORPUS --extend-vocab N` and fine-tune its output, "
    "or use a model whose vocabulary covers this text (--model)."
)
USE_REMEDY = "Answers on such text are guesses; see `plm pretrain --extend-vocab` to train a model that reads it."


def check(texts: Iterable[str], tokenizer, where: str, remedy: str = TRAINING_REMEDY, once: bool = False) -> dict:
    """``measure`` and ``warn``: the coverage report of the texts a command read."""
    report = measure(texts, tokenizer)
    warn(report, where, remedy, once)
    return report


def card_line(report: Optional[dict]) -> str:
    """The model card's sentence about the vocabulary's coverage of the training text."""
    if not report or not report["tokens"]:
        return ""
    line = f"- Vocabulary coverage: {report['unknown_share']:.2%} of the training tokens were [UNK]"
    if report["unknown_share"] > WARN_SHARE:
        shown = " ".join(char for char, _ in report["most_frequent_unknown"])
        line += f" (the model could not read them; most frequent: {shown})"
    return line + ".\n"


@dataclass
class Extension:
    """What ``extend`` added: the new tokens and the coverage of the corpus before and after."""

    added: list[str]
    uncovered: int  # distinct characters of the corpus the tokenizer could not read
    before: dict
    after: dict

    def to_dict(self) -> dict:
        return {
            "added_tokens": len(self.added),
            "uncovered_characters": self.uncovered,
            "unknown_share_before": self.before["unknown_share"],
            "unknown_share_after": self.after["unknown_share"],
            "unread_character_share_before": self.before["unread_character_share"],
            "unread_character_share_after": self.after["unread_character_share"],
            "first_added": self.added[:SHOWN],
        }


def uncovered_characters(lines: Iterable[str], tokenizer) -> list[tuple[str, int]]:
    """The characters behind the corpus's [UNK] tokens, most frequent first, with their counts."""
    return _ranked(_scan(lines, tokenizer).characters)


def extend(tokenizer, model, lines, count: int, base_name: str) -> Extension:
    """Add the ``count`` most frequent characters of ``lines`` (a callable giving a fresh iterator of
    the corpus) that ``tokenizer`` cannot read, as whole tokens, and grow the model's embeddings.

    Each new embedding row starts as the mean of the pieces the tokenizer made of the character
    before (when it made any besides [UNK]), else from a normal draw with the old rows' mean and
    covariance (transformers' ``resize_token_embeddings``); a tied MLM decoder grows with it, an
    untied one is grown the same way.
    """
    import torch

    if reads_everything(tokenizer):
        raise PlmError(
            f"--extend-vocab: {base_name}'s tokenizer has no [UNK] token (byte-level): it reads every text "
            "already, so there is nothing to add; leave --extend-vocab out."
        )
    if model.get_input_embeddings() is None:
        raise PlmError(f"--extend-vocab: {type(model).__name__} has no input embeddings that can grow.")
    before = measure(lines(), tokenizer)
    ranked = uncovered_characters(lines(), tokenizer)
    if not ranked:
        raise PlmError(
            f"--extend-vocab {count}: {base_name}'s vocabulary already reads every character of the corpus "
            "(no [UNK]); there is nothing to add; leave --extend-vocab out."
        )
    if len(ranked) < count:
        console.warn(
            f"--extend-vocab {count}: the corpus has only {len(ranked)} characters the vocabulary cannot read; "
            f"adding those {len(ranked)}."
        )
    chosen = [char for char, _ in ranked[:count]]
    pieces = [ids for ids, _ in _encode(tokenizer, chosen)]
    old_size = model.get_input_embeddings().weight.shape[0]
    try:
        added = tokenizer.add_tokens(chosen)
    except (NotImplementedError, AttributeError, ValueError) as exc:
        raise PlmError(f"--extend-vocab: {base_name}'s tokenizer cannot take new tokens ({exc}).") from exc
    if added != len(chosen):
        raise PlmError(
            f"--extend-vocab: {base_name}'s tokenizer took {added} of the {len(chosen)} new tokens; "
            "it cannot be extended this way (use --from-scratch for a new vocabulary)."
        )
    model.resize_token_embeddings(max(len(tokenizer), old_size), mean_resizing=True)
    embeddings = model.get_input_embeddings().weight
    new_ids = tokenizer.convert_tokens_to_ids(chosen)
    first_new = len(tokenizer) - len(chosen)
    with torch.no_grad():
        for new_id, ids in zip(new_ids, pieces):
            known = [i for i in ids if i != tokenizer.unk_token_id]
            if known:
                embeddings[new_id] = embeddings[known].mean(0)
            elif new_id < old_size:  # a spare row of a padded embedding matrix, never trained
                embeddings[new_id] = embeddings[:first_new].mean(0)
    after = measure(lines(), tokenizer)
    console.info(
        f"Vocabulary: added {len(chosen)} characters as tokens ({len(tokenizer)} in all); the corpus's unread "
        f"characters went from {before['unread_character_share']:.1%} to {after['unread_character_share']:.1%}, "
        f"its [UNK] tokens from {before['unknown_share']:.1%} to {after['unknown_share']:.1%}"
        f"{' (its first ' + str(before['texts']) + ' lines)' if before['sampled'] else ''}."
    )
    return Extension(chosen, len(ranked), before, after)
