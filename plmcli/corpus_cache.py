"""Corpora larger than memory: read as a stream, tokenized once into an on-disk Arrow cache.

``scan`` reads every corpus file once as bytes: it checks that the text is UTF-8 without NUL
bytes (naming the file and line when not), counts lines and documents, and takes the sha256 of
the content. ``tokenized`` then looks the corpus up in the cache, keyed by those hashes, the
tokenizer and the example settings; on a miss it streams the files line by line through the
tokenizer, cuts run_mlm.py's blocks with the remainder carried from one batch to the next (or
keeps one example per line), and writes them to Arrow in batches, so memory stays flat however
large the corpus is. A second run over the same corpus memory-maps the cached examples and skips
tokenizing. A file lock makes the first process build and the others (ranks of a torchrun launch,
or a second plm run) wait and reuse it.
"""

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from plmcli import console, textfiles
from plmcli.corpus import Examples, cut_long, describe_counts, examples_from_lines, expand
from plmcli.errors import RUNTIME_FAILURE, PlmError

FORMAT = 2  # bump when the cached examples change (2: offsets without a token's leading white space)


@dataclass
class Scan:
    """What one pass over the corpus files found."""

    files: list[Path]
    sources: list[str]
    digests: list[str]  # sha256 of each file's (decompressed) content
    lines: int = 0  # non-empty lines
    documents: int = 0  # runs of non-empty lines separated by blank lines
    notes: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.digests).encode()).hexdigest()

    def describe(self) -> str:
        return describe_counts(self.documents, self.lines, self.sources)


def cache_root() -> Path:
    """Where tokenized corpora are kept: $PLM_CACHE, else $XDG_CACHE_HOME/plm, else ~/.cache/plm."""
    if os.environ.get("PLM_CACHE"):
        return Path(os.environ["PLM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "plm"


def _pieces(path: Path, number: int, raw: bytes) -> list[str]:
    """The stripped lines in one raw line of a file ('' for a blank one); CR, LF and CRLF all end a line."""
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise PlmError(
            f"{path} line {number} is not UTF-8 text ({exc.reason}); "
            "convert it to UTF-8 first, e.g. iconv -f latin1 -t utf-8."
        ) from exc
    if "\x00" in text:
        raise textfiles.binary_error(str(path), number)
    pieces = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [part for piece in (pieces[:-1] if text.endswith(("\n", "\r")) else pieces) for part in cut_long(piece)]


def scan(files: list[Path], sources: list[str]) -> Scan:
    """One pass over the files: validate, count lines and documents, hash the content."""
    result = Scan(files=files, sources=sources, digests=[])
    for path in files:
        digest, in_document = hashlib.sha256(), False
        for number, raw in enumerate(textfiles.byte_lines(path), 1):
            digest.update(raw)
            for line in _pieces(path, number, raw):
                if line:
                    result.lines += 1
                    result.documents += not in_document
                in_document = bool(line)
        result.digests.append(digest.hexdigest())
    if result.lines == 0:
        raise PlmError(f"the corpus has no text: {', '.join(sources)} {'is' if len(sources) == 1 else 'are'} empty.")
    return result


def lines(files: list[Path], digests: list[str]) -> Iterator[str]:
    """Every non-empty line of the files, in order, read as a stream and checked against the scan's ``digests``.

    A file whose content differs from what ``scan`` hashed stops the stream (and so a cache
    build, before its entry is published): the key would describe other data.
    """
    for path, expected in zip(files, digests, strict=True):
        digest = hashlib.sha256()
        for number, raw in enumerate(textfiles.byte_lines(path), 1):
            digest.update(raw)
            yield from (line for line in _pieces(path, number, raw) if line)
        if digest.hexdigest() != expected:
            raise PlmError(
                f"{path} changed while this run was reading it; run again once nothing is writing to it.",
                RUNTIME_FAILURE,
            )


def _examples(
    files: list[str],
    digests: list[str],
    tokenizer,
    max_length: int,
    line_by_line: bool,
    offsets: bool,
    segmenter: Optional[str] = None,
) -> Iterator[dict]:
    """Training examples of the files (what datasets' generator calls, once per shard of files)."""
    stream = lines([Path(f) for f in files], digests)
    return examples_from_lines(stream, tokenizer, max_length, line_by_line, offsets, segmenter)


def _features(offsets: bool):
    from datasets import Features, Sequence, Value

    columns = {
        "input_ids": Sequence(Value("int32")),
        "special_tokens_mask": Sequence(Value("int8")),
        "length": Value("int32"),
        "truncated": Value("bool"),
    }
    if offsets:
        columns["offset_mapping"] = Sequence(Sequence(Value("int32"), length=2))
    return Features(columns)


@dataclass
class Tokenized:
    """The corpus's examples (a memory-mapped datasets.Dataset) and what a run reports about them."""

    dataset: object  # datasets.Dataset with input_ids, special_tokens_mask (, offset_mapping)
    tokens: int
    truncated: int
    cached: bool  # True when a previous run had tokenized this corpus
    location: Path


def tokenized(
    corpus: Scan,
    tokenizer,
    max_length: int,
    line_by_line: bool,
    whole_word_mask: bool,
    workers: int = 1,
    segmenter: Optional[str] = None,
) -> Tokenized:
    """The corpus's examples from the cache, tokenizing (with ``workers`` processes) on a miss."""
    from filelock import FileLock

    key = hashlib.sha256(
        json.dumps(
            {
                "format": FORMAT,
                "corpus": corpus.digests,
                "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
                "max_length": max_length,
                "line_by_line": line_by_line,
                "whole_word_mask": whole_word_mask,
                **({"segmenter": segmenter} if segmenter else {}),  # its name and version
                # with several workers each process cuts blocks over its own files
                "shards": 1 if line_by_line or workers <= 1 else min(workers, len(corpus.files)),
            }
        ).encode()
    ).hexdigest()[:32]
    root = cache_root() / "corpora"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlmError(
            f"cannot keep tokenized corpora in {root} ({exc.strerror}); set PLM_CACHE to a writable directory.",
            RUNTIME_FAILURE,
        ) from exc
    location = root / key
    with FileLock(str(root / f"{key}.lock")):
        loaded = _load(location)
        if loaded is None:
            _build(corpus, tokenizer, max_length, line_by_line, whole_word_mask, workers, location, segmenter)
        dataset, stats = loaded or _load(location)
    if stats["tokens"] < 2:
        raise PlmError("the corpus is too short to train on: it makes fewer than 2 tokens.")
    return Tokenized(dataset, stats["tokens"], stats["truncated"], loaded is not None, location)


def _load(location: Path):
    """(dataset, stats) from the cache, or None when it is missing or damaged (it is then built again)."""
    from datasets import load_from_disk

    if not (location / "plm-stats.json").is_file():
        return None
    try:
        stats = json.loads((location / "plm-stats.json").read_text())
        dataset = load_from_disk(str(location))
        if not isinstance(stats.get("tokens"), int) or not len(dataset):
            raise ValueError("incomplete")
        return dataset, stats
    except Exception as exc:  # whatever the damage (Arrow, JSON, a missing shard), the cure is to rebuild
        console.warn(f"the tokenized corpus in {location} is damaged ({type(exc).__name__}); tokenizing again.")
        shutil.rmtree(location, ignore_errors=True)
        return None


def _build(
    corpus: Scan, tokenizer, max_length, line_by_line, whole_word_mask, workers, location: Path, segmenter=None
) -> None:
    """Tokenize the corpus into a staging directory beside ``location`` and rename it into place when whole."""
    import pyarrow.compute as pc
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    staging = location.parent / f".{location.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    # datasets splits a list into shards (whole files) for the workers; a tuple is one stream,
    # so blocks run across file boundaries as they do in memory.
    files = [str(path) for path in corpus.files]
    console.info(f"Tokenizing the corpus into {location} (once; later runs reuse it) ...")
    try:
        built = Dataset.from_generator(
            _examples,
            features=_features(whole_word_mask),
            cache_dir=str(staging / "build"),
            gen_kwargs={
                "files": files if workers > 1 else tuple(files),
                "digests": list(corpus.digests) if workers > 1 else tuple(corpus.digests),  # sharded as the files
                "tokenizer": tokenizer,
                "max_length": max_length,
                "line_by_line": line_by_line,
                "offsets": whole_word_mask,
                "segmenter": segmenter,
            },
            num_proc=min(workers, len(files)) if workers > 1 else None,
        )
        columns = built.select_columns(["length", "truncated"]).with_format("arrow")[:]  # summed in Arrow
        stats = {
            "tokens": pc.sum(columns["length"]).as_py() or 0,
            "truncated": pc.sum(pc.cast(columns["truncated"], "int64")).as_py() or 0,
        }
        built.remove_columns(["length", "truncated"]).save_to_disk(str(staging / "examples"))
        (staging / "examples" / "plm-stats.json").write_text(json.dumps(stats))
        os.replace(staging / "examples", location)
    except DatasetGenerationError as exc:
        cause = exc.__cause__
        raise (cause if isinstance(cause, PlmError) else exc) from cause
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def examples_of(dataset, indices: list[int]):
    """Rows of the cached dataset as corpus.Examples (for the held-out set, a few thousand rows at most)."""
    rows = dataset.select(indices).to_dict()
    return Examples(rows, sum(len(ids) for ids in rows["input_ids"]))


def read_files(items: list[str]) -> tuple[list[Path], list[str]]:
    """The files the CORPUS arguments name (no stdin), and their names as given."""
    files, seen = [], set()
    for path in (path for item in items for path in expand(item)):
        if path.resolve() in seen:
            console.warn(f"{path} is named twice; it is read once.")
        else:
            files.append(path)
            seen.add(path.resolve())
    return files, [str(path) for path in files]
