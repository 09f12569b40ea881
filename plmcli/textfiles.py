"""A user's file as text: gzip undone, UTF-16 and UTF-32 read by their byte-order mark, binary refused.

Every reader of text (tables, lines to predict, corpora) starts here, so a ``.csv.gz`` reads as
its CSV, a spreadsheet exported as UTF-16 reads as its text, and bytes that are plainly not text
(a ZIP archive such as an .xlsx workbook, NUL bytes, control characters) get one line saying so,
never advice to try another 8-bit encoding.

Within a run (``recording``) every file read here is remembered by the size and sha256 of the
bytes actually read, in the same pass: the manifest and --resume record those, and a file whose
bytes differ between two reads of one run stops it in one line.
"""

import codecs
import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from plmcli.errors import RUNTIME_FAILURE, PlmError, undecodable

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a ZIP archive (.xlsx, .docx, .zip), or an empty one
BOMS = (  # UTF-32's marks first: UTF-32-LE's begins with UTF-16-LE's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
CONTROL = bytes(sorted(set(range(32)) - {9, 10, 12, 13}))  # bytes text does not hold (tab, newlines, form feed aside)
SAMPLE = 1 << 16  # how much of a file is looked at for control characters


_read: Optional[dict[str, tuple[int, str]]] = None  # the current run's files: {resolved path: (bytes, sha256)}


@contextmanager
def recording() -> Iterator[None]:
    """Remember what the run reads (see the module's docstring); a run within a run shares the outer record."""
    global _read
    if _read is not None:
        yield
        return
    _read = {}
    try:
        yield
    finally:
        _read = None


def _note(path: Path, size: int, digest: str) -> None:
    """Remember a whole read of ``path``; refuse a file that read differently before in this run."""
    if _read is None:
        return
    seen = _read.setdefault(str(Path(path).resolve()), (size, digest))
    if seen != (size, digest):
        raise PlmError(
            f"{path} changed while this run was reading it; run again once nothing is writing to it.", RUNTIME_FAILURE
        )


def read_digest(path: Path) -> tuple[int, str]:
    """The size and sha256 of ``path`` as this run read it (read now, and remembered, if it has not been)."""
    if _read is not None and str(Path(path).resolve()) in _read:
        return _read[str(Path(path).resolve())]
    hashing = _Hashing(open(path, "rb", buffering=0))
    with hashing:
        while hashing.read(1 << 20):
            pass
    _note(path, hashing.size, hashing.digest.hexdigest())
    return hashing.size, hashing.digest.hexdigest()


class _Hashing(io.RawIOBase):
    """A binary file that hashes the bytes read through it."""

    def __init__(self, raw) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.raw.readinto(buffer)
        if count:
            self.digest.update(memoryview(buffer)[:count])
            self.size += count
        return count

    def close(self) -> None:
        self.raw.close()
        super().close()


def read_bytes(path: Path) -> bytes:
    """A file's bytes, decompressed when they are gzip: named ``.gz``, or starting with gzip's magic number."""
    raw = path.read_bytes()
    _note(path, len(raw), hashlib.sha256(raw).hexdigest())
    if raw[:2] != GZIP_MAGIC and path.suffix.lower() != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise PlmError(f"{path} is not a valid gzip file ({exc}).") from exc


def decode(raw: bytes, name: str, encoding: str, hint: str) -> str:
    """``raw`` as text: UTF-16 or UTF-32 where a byte-order mark says so, else ``encoding`` (UTF-8 drops its mark).

    Binary data is refused in one line naming what it looks like; ``hint`` (what to pass or do)
    ends the line for text in another encoding.
    """
    for bom, codec in BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError as exc:
                hint = "its byte-order mark says UTF-16 or UTF-32; check the file."
                raise undecodable(name, raw, codec, hint) from exc
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    if not codecs.lookup(codec).name.startswith(("utf-16", "utf-32")):  # there, NUL bytes are text
        _refuse_binary(raw, name)
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise undecodable(name, raw, codec, hint) from exc


def _refuse_binary(raw: bytes, name: str) -> None:
    """Refuse bytes that are plainly not text: a ZIP archive, a NUL byte, or more than 1% control bytes."""
    if raw[:4] in ZIP_MAGICS:
        raise PlmError(
            f"{name} is a ZIP archive (an Excel .xlsx workbook, a .docx, or zipped files), not text; "
            "save it as CSV, or unzip it."
        )
    sample = raw[:SAMPLE]
    nul = sample.find(b"\x00")
    controls = len(sample) - len(sample.translate(None, CONTROL))
    if nul >= 0 or controls > len(sample) // 100:
        raise binary_error(name, raw.count(b"\n", 0, nul) + 1 if nul >= 0 else None)


def binary_error(name: str, nul_line=None) -> PlmError:
    """The one line for a file that holds binary data (``nul_line``: where its first NUL byte is)."""
    where = f" (a NUL byte on line {nul_line})" if nul_line else ""
    return PlmError(
        f"{name} holds binary data, not text{where}; plm reads CSV, TSV, JSON, JSONL and text files "
        "(also gzipped) and Parquet."
    )


def read_text(path: Path, encoding: str, hint: str) -> str:
    """A text file's content (see ``decode``), gunzipped first where it is gzip."""
    return decode(read_bytes(path), str(path), encoding, hint)


def byte_lines(path: Path) -> Iterator[bytes]:
    """A text file's lines as bytes, read as a stream: gunzipped (as ``read_bytes``), UTF-16 or UTF-32 with a
    byte-order mark re-encoded as UTF-8, binary data at its start refused."""
    with open(path, "rb") as raw:
        compressed = raw.peek(2)[:2] == GZIP_MAGIC or path.suffix.lower() == ".gz"
    hashing = _Hashing(open(path, "rb", buffering=0))  # the file's sha256, taken in this same pass
    buffered = io.BufferedReader(hashing)
    try:
        with gzip.GzipFile(fileobj=buffered) if compressed else buffered as stream:
            head = stream.peek(SAMPLE)  # what the buffer holds: a few KiB at least, unless the file is shorter
            codec = next((codec for bom, codec in BOMS if head.startswith(bom)), None)
            if codec is None:
                _refuse_binary(head, str(path))  # a NUL byte further on is for the reader to find, by line
                yield from stream
            else:
                text = io.TextIOWrapper(stream, encoding=codec, newline="")
                yield from (line.encode("utf-8") for line in text)
                text.detach()  # the stream stays open: the rest of the file is still to hash
            while buffered.read(1 << 20):  # what gzip left unread is in the file's sha256 too
                pass
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # other OSErrors (permissions, EIO) are not this
        raise PlmError(f"{path} is not a valid gzip file ({exc}).") from exc
    finally:
        hashing.close()
    _note(path, hashing.size, hashing.digest.hexdigest())
