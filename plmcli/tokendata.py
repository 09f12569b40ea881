"""Token-classification data (a tag per word, as for NER or POS): files -> sentences of words and tags, checked hard.

Reads CoNLL (CoNLL-2003 as found in the wild: a word per line, columns separated by spaces or by
tabs, the word first and the tag last, blank lines between sentences, ``-DOCSTART-`` lines between
documents), CoNLL-U (FORM and a tag column, UPOS by default; comments, multiword ranges and empty
nodes skipped; ``# newdoc`` between documents) and JSON, JSONL or Parquet tables with a list of
words and a list of tags per row, each also gzipped. Tag names stay the user's. The scheme is found
from the tags and entity tags become IOB2: BIOES (or BILOU) when E- or S- tags appear; IOB1 when
more entities start with I- than with B- (CoNLL-2003 itself: its B- only splits two adjacent
entities of one type, 72 times in 23,499 entities of train), so that an IOB2 file's few stray
I-X after O are kept as written and listed in ``Sentences.invalid`` for the caller to warn about,
never fixed silently. Tags with no B-/I- prefix at all (POS) are "plain". Every bad input is one
PlmError line naming the line or row; predictions go back into a CoNLL file as one more column
(``conll_lines``, then ``add_column`` or ``write_conll``).
"""

import io
import json
import re
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TextIO

import numpy as np

from plmcli import textfiles
from plmcli.data import _normalise, _read_json_records, _text, table_kind
from plmcli.errors import PlmError

CONLL_SUFFIXES = (".conll", ".conllu", ".iob", ".iob2", ".bio", ".bioes")
TABLE_KINDS = ("JSON", "JSONL", "Parquet")
DOCSTART = "-DOCSTART-"
CONLLU_COLUMNS = 10
CONLLU_UPOS = 4  # the default tag column of a CoNLL-U file (1-based); 5 is XPOS
# Column names people use, most specific first; matched case-insensitively, ignoring spaces, '-' and '_'.
WORDS_COLUMN_NAMES = ("tokens", "words")
TAGS_COLUMN_NAMES = ("tags", "ner_tags", "labels", "ner")
ENTITY_TAG = re.compile(r"([BIESLU])-(.*)", re.DOTALL)  # L- and U- are BILOU's E- and S-
TAG_LIKE = re.compile(r"O|[BIESLU]-\S+")
WHITESPACE = re.compile(r"\s")
TO_IOB2 = {"B-": "B-", "I-": "I-", "E-": "I-", "S-": "B-", "L-": "I-", "U-": "B-"}
SNIFF_LINES = 50  # lines of a .txt that is_tagged_file looks at
WORDS_EXAMPLE = '["EU", "rejects", "German"]'
TAGS_EXAMPLE = '["B-ORG", "O", "B-MISC"]'

# What a line of a CoNLL or CoNLL-U file is; the reader and add_column walk files by these alone.
BLANK, DOCSTART_LINE, NEWDOC, SKIP, WORD = "blank", "docstart", "newdoc", "skip", "word"
ENDS_SENTENCE = (BLANK, DOCSTART_LINE, NEWDOC)
CONLLU_RANGE = re.compile(r"\d+-\d+|\d+\.\d+")  # a multiword token (1-2) or an empty node (8.1): no word of its own


@dataclass
class Sentences:
    """A token-classification file read and checked: words, their tags, and where each sentence came from."""

    words: list[list[str]]  # each sentence's words
    tags: list[list[str]]  # each sentence's tags: IOB2 for entity schemes, as written for "plain"; [] without tags
    documents: list[int]  # the document of each sentence, from 0 (all 0 when the file marks no documents)
    scheme: str  # as found in the file: "IOB1", "IOB2", "BIOES" (BILOU too) or "plain"
    source: str  # the path as given
    lines: list[int]  # the 1-based line (CoNLL) or row (tables) on which each sentence starts
    # (sentence, word, previous tag or '' at a sentence start, tag) of each I-X (or BIOES E-X) that follows
    # neither B-X nor I-X, as the file wrote them; for IOB2 and BIOES only, as IOB1 has no such thing
    invalid: list[tuple[int, int, str, str]] = field(default_factory=list)
    converted: bool = False  # the tags were rewritten to IOB2 (scheme IOB1 or BIOES)
    has_tags: bool = True  # False for words alone (a one-column CoNLL file, a table with no tags column)

    @property
    def tag_names(self) -> list[str]:
        """The label set: "O", then B- and I- of each entity type (both, so that I-X exists for a type seen only
        as one-word entities); for "plain", the tags found, sorted."""
        if self.scheme == "plain":
            return sorted({tag for sentence in self.tags for tag in sentence})
        return ["O"] + [f"{prefix}-{kind}" for kind in self.entity_types for prefix in "BI"]

    @property
    def entity_types(self) -> list[str]:
        """The entity types (PER, LOC...) sorted; [] for plain tags."""
        if self.scheme == "plain":
            return []
        return sorted({tag[2:] for sentence in self.tags for tag in sentence if tag != "O"})


@dataclass
class _Read:
    """What a reader found, before the tags are checked: ``locate(sentence, word)`` names the place in the file."""

    words: list[list[str]]
    tags: list[list[str]] | None
    documents: list[int]
    lines: list[int]
    locate: Callable[[int, int], str]


def read_tagged(
    path: str,
    encoding: str = "utf-8",
    tag_column: int | None = None,
    words_column: str | None = None,
    tags_column: str | None = None,
    require_tags: bool = True,
) -> Sentences:
    """Read a CoNLL, CoNLL-U, JSON, JSONL or Parquet file (by extension; any other but .csv reads as CoNLL).

    ``tag_column`` (1-based) picks a CoNLL file's tag column (default: the last; CoNLL-U: 4, UPOS);
    ``words_column`` and ``tags_column`` name a table's columns (default: detected by name). With
    ``require_tags=False`` a file of words alone reads with ``has_tags=False`` (for predict); tags
    that are there are checked all the same.
    """
    file = _existing(path)
    kind = table_kind(file)
    if kind in TABLE_KINDS:
        if tag_column is not None:
            raise PlmError(f"--tag-column picks a column of a CoNLL file; {path} is {kind}: use --tags-column.")
        read = _read_rows(file, path, kind, encoding, words_column, tags_column, require_tags)
    elif kind == "CSV":
        raise PlmError(
            f"{path} is a CSV file; token-classification data is CoNLL (a word and its tag per line) or JSON, "
            "JSONL or Parquet with a list of words and a list of tags per row."
        )
    else:
        if words_column is not None or tags_column is not None:
            raise PlmError(
                f"--tokens-column and --tags-column name columns of a JSON, JSONL or Parquet file; {path} is "
                "CoNLL: use --tag-column."
            )
        read = _read_conll(file, path, encoding, tag_column, require_tags)
    _check_words(read.words, read.locate, path)
    if read.tags is None:
        return Sentences(read.words, [], read.documents, "plain", path, read.lines, has_tags=False)
    scheme, tags, invalid = _resolve_scheme(read.tags, read.locate, path)
    return Sentences(
        read.words, tags, read.documents, scheme, path, read.lines, invalid, converted=scheme in ("IOB1", "BIOES")
    )


def _existing(path: str) -> Path:
    file = Path(path)
    if not file.exists():
        raise PlmError(f"file not found: {path}")
    if file.is_dir():
        raise PlmError(f"{path} is a directory; expected a CoNLL, CoNLL-U, JSON, JSONL or Parquet file.")
    return file


def is_conllu(path: str) -> bool:
    """Whether ``path`` is named as CoNLL-U (.conllu, .conllu.gz): what ``add_column``'s ``conllu`` wants."""
    return Path(path).name.lower().endswith((".conllu", ".conllu.gz"))


def _kind(line: str, conllu: bool) -> str:
    """What ``line`` holds: BLANK, DOCSTART_LINE, NEWDOC (CoNLL-U's comment), SKIP (no word) or WORD."""
    if not line.strip():
        return BLANK
    if conllu:
        if line.startswith("#"):
            return NEWDOC if line[1:].lstrip().startswith("newdoc") else SKIP
        return SKIP if CONLLU_RANGE.fullmatch(line.split("\t", 1)[0]) else WORD
    if line.lstrip().startswith(DOCSTART) and line.split(None, 1)[0] == DOCSTART:
        return DOCSTART_LINE
    return WORD


def conll_lines(path: str, encoding: str = "utf-8") -> list[str]:
    """A CoNLL or CoNLL-U file's lines without their line endings (LF or CRLF), gunzipped and decoded."""
    text = _text(_existing(path), encoding)
    lines = text.split("\n")  # not splitlines: a form feed or U+2028 inside a word is not a line break
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _read_conll(file: Path, source: str, encoding: str, tag_column: int | None, require_tags: bool) -> _Read:
    conllu = is_conllu(source)
    sentences: list[list[tuple[int, list[str]]]] = []  # (line number, columns) of each word
    documents: list[int] = []
    current: list[tuple[int, list[str]]] = []
    document = 0
    tab_line = space_line = 0  # the first line of each kind, for the error
    for number, line in enumerate(conll_lines(source, encoding), 1):
        kind = _kind(line, conllu)
        if kind == WORD:
            if conllu:
                fields = line.split("\t")
                if len(fields) != CONLLU_COLUMNS:
                    raise PlmError(
                        f"{source} line {number} has {len(fields)} tab-separated columns where CoNLL-U has "
                        f"{CONLLU_COLUMNS}; fix that line."
                    )
            else:
                line = line.rstrip(" \t")
                if "\t" in line:
                    fields = [column.strip(" ") for column in line.split("\t")]
                    tab_line = tab_line or number
                else:
                    fields = [column for column in line.split(" ") if column]  # runs of spaces align columns
                    if len(fields) > 1:
                        space_line = space_line or number
                if tab_line and space_line:
                    raise PlmError(
                        f"{source} mixes tab-separated and space-separated columns (line {tab_line} uses tabs, "
                        f"line {space_line} spaces); use one separator throughout."
                    )
            current.append((number, fields))
            continue
        if kind in ENDS_SENTENCE and current:
            sentences.append(current)
            documents.append(document)
            current = []
        if kind in (DOCSTART_LINE, NEWDOC) and documents and documents[-1] == document:
            document += 1
    if current:
        sentences.append(current)
        documents.append(document)
    if not sentences:
        raise PlmError(
            f"{source} has no sentences; expected a word and its tag per line, with a blank line after each sentence."
        )
    column = _tag_column(sentences, source, tag_column, conllu)
    word_column = 1 if conllu else 0  # CoNLL-U's FORM comes after its ID
    lines = [[number for number, _ in sentence] for sentence in sentences]
    words = [[fields[word_column] for _, fields in sentence] for sentence in sentences]
    tags = None
    if column is not None:
        tags = [[fields[column - 1] for _, fields in sentence] for sentence in sentences]
        if conllu:
            _refuse_empty_conllu_tags(tags, lines, source, column)
    elif require_tags:
        raise PlmError(
            f"{source} has words but no tag column: each line holds a word alone; plm finetune --task "
            "token-classification needs a tag in the last column (like 'Paris B-LOC')."
        )
    return _Read(words, tags, documents, [first[0] for first in lines], lambda s, w: f"line {lines[s][w]}")


def _tag_column(sentences: list[list[tuple[int, list[str]]]], source: str, tag_column: int | None, conllu: bool):
    """The 1-based tag column, once every word line is seen to have the same columns; None for words alone."""
    if conllu:
        if tag_column is not None and not 3 <= tag_column <= CONLLU_COLUMNS:
            raise PlmError(
                f"--tag-column {tag_column} does not fit {source}: CoNLL-U has {CONLLU_COLUMNS} columns and the "
                f"word is column 2; pick one from 3 to {CONLLU_COLUMNS} (4 is UPOS, 5 XPOS)."
            )
        return tag_column or CONLLU_UPOS
    counts = Counter(len(fields) for sentence in sentences for _, fields in sentence)
    width = counts.most_common(1)[0][0]
    if len(counts) > 1:
        number, fields = next((n, f) for sentence in sentences for n, f in sentence if len(f) != width)
        raise PlmError(
            f"{source} line {number} has {len(fields)} columns where most lines have {width}; give every word "
            "line the same columns, the word first and the tag last."
        )
    if tag_column is None:
        return width if width > 1 else None
    if not 2 <= tag_column <= width:
        fit = f"pick one from 2 to {width}" if width > 1 else "it has no tag column"
        raise PlmError(
            f"--tag-column {tag_column} does not fit {source}: column 1 is the word and its lines have {width} "
            f"column{'s' if width > 1 else ''}; {fit}."
        )
    return tag_column


def _refuse_empty_conllu_tags(tags: list[list[str]], lines: list[list[int]], source: str, column: int) -> None:
    for s, sentence in enumerate(tags):
        if "_" in sentence:
            raise PlmError(
                f"{source} line {lines[s][sentence.index('_')]}: column {column} holds '_' (no value); pick a "
                "filled column with --tag-column (4 is UPOS, 5 XPOS)."
            )


def _read_rows(
    file: Path,
    source: str,
    kind: str,
    encoding: str,
    words_column: str | None,
    tags_column: str | None,
    require_tags: bool,
) -> _Read:
    records, columns = _records(file, source, kind, encoding)
    words_name = _pick_column(columns, words_column, WORDS_COLUMN_NAMES, source, "--tokens-column", "words", True)
    tags_name = _pick_column(columns, tags_column, TAGS_COLUMN_NAMES, source, "--tags-column", "tags", require_tags)
    words: list[list[str]] = []
    tags: list[list[str]] = []
    for row, record in enumerate(records, 1):
        row_words = _as_list(record.get(words_name), source, row, words_name, WORDS_EXAMPLE)
        if not row_words:
            raise PlmError(f"{source} row {row} has 0 words (a sentence of 0 tokens); remove the row.")
        for number, word in enumerate(row_words, 1):
            if not isinstance(word, str):
                raise PlmError(f"{source} row {row}: word {number} is {word!r}, not text; words must be strings.")
        words.append(row_words)
        if tags_name is None:
            continue
        row_tags = _as_list(record.get(tags_name), source, row, tags_name, TAGS_EXAMPLE)
        if any(isinstance(tag, (int, float)) and not isinstance(tag, bool) for tag in row_tags):
            raise PlmError(
                f"{source}: tags in column '{tags_name}' are numbers; plm needs tag names like B-PER (map them with "
                "the dataset's label names)."
            )
        for number, tag in enumerate(row_tags, 1):
            if not isinstance(tag, str):
                raise PlmError(f"{source} row {row}: tag {number} is {tag!r}, not a name; tags are names like B-PER.")
        if len(row_tags) != len(row_words):
            raise PlmError(
                f"{source} row {row} has {len(row_words)} words but {len(row_tags)} tags; give each word one tag."
            )
        tags.append(row_tags)
    rows = list(range(1, len(words) + 1))
    return _Read(words, tags if tags_name else None, [0] * len(words), rows, lambda s, w: f"row {s + 1}, word {w + 1}")


def _records(file: Path, source: str, kind: str, encoding: str) -> tuple[list[dict], list[str]]:
    """A table's rows as dicts that keep lists as lists (read_table would turn them into JSON text)."""
    try:
        if kind == "Parquet":
            import pyarrow.parquet

            table = pyarrow.parquet.read_table(io.BytesIO(textfiles.read_bytes(file)))
            records, columns = table.to_pylist(), [str(name) for name in table.column_names]
        else:
            records = _read_json_records(file, _text(file, encoding), lines=kind == "JSONL")
            columns = list(dict.fromkeys(key for record in records for key in record))
    except (json.JSONDecodeError, ValueError, OSError) as exc:
        raise PlmError(f"cannot read {source} as {kind}: {' '.join(str(exc).split())}") from exc
    except RecursionError as exc:
        raise PlmError(f"cannot read {source} as {kind}: it is nested too deeply.") from exc
    if not records:
        raise PlmError(f"{source} has no rows; expected one sentence per row, a list of words and a list of tags.")
    return records, columns


def _pick_column(
    columns: list[str], given: str | None, names: tuple[str, ...], source: str, option: str, what: str, required: bool
) -> str | None:
    found = ", ".join(columns)
    if given is not None:
        if given not in columns:
            raise PlmError(f"missing column '{given}' in {source}; found: {found}. Use {option} to pick one.")
        return given
    by_name = {_normalise(column): column for column in columns}
    for name in names:
        if _normalise(name) in by_name:
            return by_name[_normalise(name)]
    if required:
        looked = " or ".join(f"'{name}'" for name in names)
        raise PlmError(f"{source} has no {what} column ({looked}); found: {found}. Use {option} to pick one.")
    return None


def _as_list(value: object, source: str, row: int, column: str, example: str) -> list:
    if isinstance(value, list):
        return value
    shown = "null" if value is None else repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    raise PlmError(f"{source} row {row}: column '{column}' holds {shown}, not a list; expected a list like {example}.")


def _check_words(words: list[list[str]], locate: Callable[[int, int], str], source: str) -> None:
    """Refuse empty words and words with whitespace: a tokenizer would give them no piece, or split them."""
    for s, sentence in enumerate(words):
        for w, word in enumerate(sentence):
            if not word:
                raise PlmError(f"{source} {locate(s, w)}: the word is empty; every word needs a character at least.")
            if WHITESPACE.search(word):
                raise PlmError(
                    f"{source} {locate(s, w)}: word {word!r} contains whitespace; give each word its own entry "
                    "and tag (like 'New' B-LOC, 'York' I-LOC)."
                )


def _resolve_scheme(
    tags: list[list[str]], locate: Callable[[int, int], str], source: str
) -> tuple[str, list[list[str]], list[tuple[int, int, str, str]]]:
    """(scheme found, tags as IOB2 or plain, invalid transitions): the rule is in the module docstring."""
    first: dict[str, tuple[int, int]] = {}  # each distinct tag -> (sentence, word) where it first appears
    for s, sentence in enumerate(tags):
        for tag in set(sentence).difference(first):
            first[tag] = (s, sentence.index(tag))
    entity = plain = None
    for tag in sorted(first, key=first.__getitem__):  # in file order, so the error names the first bad tag
        where = locate(*first[tag])
        if not tag:
            raise PlmError(f"{source} {where}: the tag is empty; every word needs a tag (O outside entities).")
        if WHITESPACE.search(tag):
            raise PlmError(f"{source} {where}: tag {tag!r} contains whitespace; a tag is one name like B-PER.")
        if tag == "O":
            continue
        match = ENTITY_TAG.fullmatch(tag)
        if match and not match.group(2):
            raise PlmError(f"{source} {where}: tag '{tag}' has no entity type (expected like {tag}PER).")
        if match:
            entity = entity or tag
        else:
            plain = plain or tag
    if entity and plain:
        raise PlmError(
            f"{source} mixes entity tags like '{entity}' ({locate(*first[entity])}) with tags without a B-/I- "
            f"prefix like '{plain}' ({locate(*first[plain])}); tag entities B-X/I-X and other words O, or use no "
            "prefixes at all."
        )
    if plain:
        return "plain", tags, []
    starts = ends = 0  # entities begun by B- or S-; E-/S- tags
    loose = []  # I-X (or E-X) that follows neither B-X nor I-X: IOB1's way to begin an entity, else invalid
    for s, sentence in enumerate(tags):
        previous = ""
        for w, tag in enumerate(sentence):
            head = tag[0]
            if head in "ESLU":
                ends += 1
            if head in "BSU":
                starts += 1
            elif head in "IEL" and (previous[2:] != tag[2:] or previous[0] not in "BI"):
                loose.append((s, w, previous, tag))
            previous = tag
    if ends:
        if len(loose) > starts:
            raise PlmError(
                f"{source} mixes tagging schemes: {ends} E-/S- tags (BIOES) and {len(loose)} entities that start "
                f"with I- (IOB1), more than the {starts} that start with B- or S-; use one scheme throughout."
            )
        return "BIOES", [bioes_to_iob2(sentence) for sentence in tags], loose
    if len(loose) > starts:
        return "IOB1", [to_iob2(sentence) for sentence in tags], []
    return "IOB2", tags, loose


def to_iob2(tags: list[str]) -> list[str]:
    """IOB1 -> IOB2 for one sentence: an I-X that begins an entity (after O, another type, or first) becomes B-X."""
    converted = []
    previous = "O"
    for tag in tags:
        if tag != "O" and tag[:2] not in ("B-", "I-"):
            raise ValueError(f"to_iob2 takes IOB tags (O, B-X, I-X); found {tag!r}")
        begins = tag[:2] == "I-" and previous[2:] != tag[2:]  # "O"[2:] is "", never a type
        converted.append("B-" + tag[2:] if begins else tag)
        previous = tag
    return converted


def bioes_to_iob2(tags: list[str]) -> list[str]:
    """BIOES (or BILOU) -> IOB2 for one sentence: S-X becomes B-X and E-X becomes I-X (U- and L- likewise)."""
    converted = []
    for tag in tags:
        if tag != "O" and tag[:2] not in TO_IOB2:
            raise ValueError(f"bioes_to_iob2 takes BIOES tags (O, B-X, I-X, E-X, S-X); found {tag!r}")
        converted.append(tag if tag == "O" else TO_IOB2[tag[:2]] + tag[2:])
    return converted


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word + 1) of each entity of an IOB2 sentence, strictly: an entity is a B-X and the
    I-X that follow it; an I-X after O or another type belongs to no entity."""
    entities = []
    kind, start = None, 0
    for index, tag in enumerate([*tags, "O"]):  # the O closes an entity that runs to the end
        if kind is not None and tag != f"I-{kind}":
            entities.append((kind, start, index))
            kind = None
        if tag.startswith("B-"):
            kind, start = tag[2:], index
        elif tag != "O" and not tag.startswith("I-"):
            raise ValueError(f"spans takes IOB2 tags (O, B-X, I-X); found {tag!r}")
    return entities


def split_by_document(sentences: Sentences, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) sentence indices, each sorted: with 2+ documents, whole documents held out.

    Documents are taken in a seeded order while they fit in ``fraction`` of the sentences; when
    none fits, the smallest is held out alone, so a document is never split and train always keeps
    one. With one document, a seeded share of its sentences is held out. The same seed gives the
    same split.
    """
    count = len(sentences.words)
    if count < 2:
        raise PlmError(
            f"{sentences.source} has {count} sentence{'s' if count != 1 else ''}; holding some out for validation "
            "needs 2 at least (or pass --validation with a file)."
        )
    if not 0 < fraction < 1:
        raise PlmError(f"--validation-split must be between 0 and 1; got {fraction}.")
    rng = np.random.default_rng(seed)
    wanted = min(max(1, round(count * fraction)), count - 1)
    by_document: dict[int, list[int]] = {}
    for index, document in enumerate(sentences.documents):
        by_document.setdefault(document, []).append(index)
    if len(by_document) < 2:
        held = set(rng.permutation(count)[:wanted].tolist())
    else:
        names = sorted(by_document)
        order = [names[i] for i in rng.permutation(len(names))]
        chosen, size = [], 0
        for document in order:
            if size + len(by_document[document]) <= wanted:
                chosen.append(document)
                size += len(by_document[document])
        if not chosen:
            chosen = [min(order, key=lambda document: len(by_document[document]))]
        held = {index for document in chosen for index in by_document[document]}
    return [i for i in range(count) if i not in held], sorted(held)


def is_tagged_file(path: str) -> bool:
    """Whether ``path`` is token-classification data by its name: a CoNLL or CoNLL-U suffix (.conll, .conllu,
    .iob, .iob2, .bio, .bioes, each also .gz), or a .txt whose first lines look like CoNLL: a -DOCSTART- line
    first, or lines that all have the same 2+ columns and end in an IOB tag (O, B-X, I-X...)."""
    name = Path(path).name.lower()
    suffix = Path(name[:-3] if name.endswith(".gz") else name).suffix
    if suffix in CONLL_SUFFIXES:
        return True
    if suffix != ".txt":
        return False
    try:
        with closing(textfiles.byte_lines(Path(path))) as stream:
            head = [line.decode("utf-8", "replace").rstrip("\r\n") for line in islice(stream, SNIFF_LINES)]
    except (PlmError, OSError):  # unreadable or binary: the reader that gets it says why
        return False
    rows = [line.split() for line in head if line.strip()]
    if rows and rows[0][0] == DOCSTART:
        return True
    return (
        bool(rows)
        and len({len(row) for row in rows}) == 1
        and len(rows[0]) > 1
        and all(TAG_LIKE.fullmatch(row[-1]) for row in rows)
    )


def column_separator(lines: list[str], conllu: bool = False) -> str:
    """The separator of a CoNLL file's columns: a tab where its word lines use tabs (always, for CoNLL-U), else a
    space."""
    if conllu or any("\t" in line.rstrip(" \t") for line in lines if _kind(line, False) == WORD):
        return "\t"
    return " "


def add_column(
    lines: list[str], predicted: list[list[str]], separator: str | None = None, conllu: bool = False
) -> str:
    """The file's text with ``predicted[i][j]`` (sentence i, word j, in read_tagged's order) added as a last column.

    Blank lines, comments and CoNLL-U's multiword and empty-node lines stay as they were; a
    -DOCSTART- line gets an O, so that every line keeps the same columns. ``separator`` defaults to
    the file's own (``column_separator``). ``conllu`` says the lines are CoNLL-U's.
    """
    separator = separator or column_separator(lines, conllu)
    written = []
    sentence, word, inside = -1, 0, False
    for line in lines:
        kind = _kind(line, conllu)
        if kind == WORD:
            if not inside:
                sentence, word, inside = sentence + 1, 0, True
            if sentence >= len(predicted) or word >= len(predicted[sentence]):
                raise ValueError(f"predicted has no tag for sentence {sentence} word {word}")
            written.append(line.rstrip(" \t") + separator + predicted[sentence][word])
            word += 1
            continue
        if kind in ENDS_SENTENCE and inside:
            if word != len(predicted[sentence]):
                raise ValueError(f"sentence {sentence} has {word} words but {len(predicted[sentence])} predicted tags")
            inside = False
        written.append(line.rstrip(" \t") + separator + "O" if kind == DOCSTART_LINE else line)
    if inside and word != len(predicted[sentence]):
        raise ValueError(f"sentence {sentence} has {word} words but {len(predicted[sentence])} predicted tags")
    if sentence + 1 != len(predicted):
        raise ValueError(f"the file has {sentence + 1} sentences but predicted has {len(predicted)}")
    return "".join(line + "\n" for line in written)


def write_conll(
    destination: str | Path | TextIO,
    lines: list[str],
    predicted: list[list[str]],
    separator: str | None = None,
    conllu: bool = False,
) -> None:
    """Write ``add_column``'s text to a path (UTF-8) or an open text stream; nothing is written if it fails."""
    text = add_column(lines, predicted, separator, conllu)
    if isinstance(destination, (str, Path)):
        Path(destination).write_text(text, encoding="utf-8")
    else:
        destination.write(text)
