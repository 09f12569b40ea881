"""Where words begin in text without spaces, for whole-word masking (``plm pretrain --whole-word-mask``).

transformers' whole-word masking counts a token as a new word when its characters do not follow
the previous token's: right for spaced scripts, but a run of Chinese characters between two
punctuation marks becomes one "word". Chinese-BERT-wwm's recipe segments the text into words
first. Here jieba (its dictionary ships in its wheel, so it works offline; ``pip install
'plm[chinese]'``) does it: each token that begins a segmented word, or does not follow the
previous token, starts a word, and the offsets the collator reads are rewritten so that it sees
exactly those words (consecutive within a word, a gap between words).
"""

import logging
from collections.abc import Iterable
from functools import lru_cache

from plmcli.errors import PlmError

JIEBA = "jieba"
CJK_SHARE = 0.05  # segment when at least this share of the text's characters are CJK ideographs
SAMPLE_CHARACTERS = 1_000_000


def is_ideograph(char: str) -> bool:
    """A CJK unified ideograph (Chinese hanzi, Japanese kanji, Korean hanja), as BERT's tokenizer defines them."""
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def needs_segmenter(lines: Iterable[str]) -> bool:
    """True when the text's first characters (about a million) are at least ``CJK_SHARE`` ideographs."""
    seen = ideographs = 0
    for line in lines:
        seen += len(line)
        ideographs += sum(map(is_ideograph, line))
        if seen >= SAMPLE_CHARACTERS:
            break
    return seen > 0 and ideographs / seen >= CJK_SHARE


def check_segmenter() -> str:
    """The segmenter's name and version for the run's messages; a one-line error when jieba is missing."""
    try:
        import jieba
    except ImportError:
        raise PlmError(
            "--whole-word-mask on Chinese text needs a word segmenter: pip install 'plm[chinese]' (jieba, which "
            "works offline), or leave out --whole-word-mask."
        ) from None
    return f"jieba {getattr(jieba, '__version__', '')}".strip()


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary load is announced on stderr otherwise
    segmenter = jieba.Tokenizer()
    segmenter.initialize()
    return segmenter


def word_starts(line: str) -> set[int]:
    """The character positions of ``line`` where a segmented word begins."""
    return {start for _, start, _ in _jieba().tokenize(line)}


def without_spaces(line: str, offsets: list) -> list[list[int]]:
    """Each token's (start, end) in ``line`` with the white space at its start left out."""
    trimmed = []
    for start, end in offsets:
        while start < end and line[start].isspace():
            start += 1
        trimmed.append([start, end])
    return trimmed


def regroup(line: str, offsets: list, special: list) -> list[list[int]]:
    """Offsets for the collator's whole-word rule that make each segmented word of ``line`` one word.

    A token starts a word when it is the first after a special token, when its characters do not
    follow the previous token's, or when a segmented word begins at its first character. Tokens of
    one word get consecutive offsets, and a new word leaves a gap of one.
    """
    starts = word_starts(line)
    regrouped, position, previous_end = [], 0, None
    for (start, end), is_special in zip(offsets, special):
        if is_special:
            regrouped.append([0, 0])
            previous_end = None
            continue
        if previous_end is None or start != previous_end or start in starts:
            position += 1
        regrouped.append([position, position + 1])
        position += 1
        previous_end = end
    return regrouped
