"""Writing results without losing anything: refuse to clobber, hold the output, stage, then rename into place.

A model directory is built in a hidden staging directory beside its final place and renamed
into place only when complete, so a crash, a full disk or Ctrl-C never leaves a half-written
model under the final name, and ``--overwrite`` keeps the old model until the new one is whole.
The output is held by one plm run at a time (``claimed``, a lock beside it) and checked again at
the rename, which never replaces what appeared there meanwhile; ``--overwrite`` replaces only what
plm wrote (``plm_wrote``); no output is ever a file the command reads (``check_places``).
"""

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TextIO

from plmcli import console
from plmcli.errors import RUNTIME_FAILURE, PlmError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

CHECKPOINTS = "checkpoints"  # where a training run keeps its checkpoints, under its output directory
UNFINISHED = ("checkpoint-*", "fold-*")  # under CHECKPOINTS: a training run's checkpoints, an audit's finished folds
LOGS = "logs"  # where --report-to's tracker logs, under the output directory
MANIFEST = "manifest.json"  # what plm writes last into every output directory (reporting.write_manifest)


def check_places(places) -> None:
    """Refuse, before any work, an output that is one of the run's inputs or another of its outputs.

    ``places`` (a ``config.Places``) names every path the command reads and writes. An output
    file may not be an input file (by name, through a symbolic link, or as a hard link to it) or an
    existing file of an input directory such as the model's; an output directory may not be or hold
    an input; no output may be, or hold, another output. Paths compare as written (``..``
    resolved) and with their links resolved. This holds with --overwrite and --resume alike.
    """
    reads = [(option, path) for option, path in places.reads if path and path != "-" and os.path.lexists(path)]
    writes = [(option, path, True) for option, path in places.directories if path]
    writes += [(option, path, False) for option, path in places.files if path and path != "-"]
    for option, path, directory in writes:
        for source_option, source in reads:
            how = _aliases(Path(path), directory, Path(source))
            if how:
                raise PlmError(f"{option} {path} {how.format(source=source)}; choose another {option}.")
    for index, (option, path, directory) in enumerate(writes):
        for other_option, other, other_directory in writes[index + 1 :]:
            if _same(Path(path), Path(other)):
                raise PlmError(f"{option} {path} and {other_option} {other} are the same file; write them apart.")
            for (outer_option, outer, replaced), (inner_option, inner, _) in (
                ((option, path, directory), (other_option, other, other_directory)),
                ((other_option, other, other_directory), (option, path, directory)),
            ):
                if replaced and _holds(Path(outer), Path(inner)):
                    raise PlmError(
                        f"{inner_option} {inner} is inside {outer_option} {outer}, which the run replaces; "
                        f"choose another {inner_option}."
                    )


def _spellings(path: Path) -> set[Path]:
    """``path`` as written (absolute, ``..`` resolved) and with every link resolved."""
    return {Path(os.path.abspath(path)), path.resolve()}


def _same(path: Path, other: Path) -> bool:
    """The same name either way, or (both existing) the same file: a hard link is the file itself."""
    if _spellings(path) & _spellings(other):
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def _holds(directory: Path, path: Path) -> bool:
    """``path`` is ``directory`` or lies under it, spelled either way."""
    return any(place == name or place in name.parents for place in _spellings(directory) for name in _spellings(path))


def _aliases(output: Path, directory: bool, source: Path) -> Optional[str]:
    """How writing ``output`` (a directory the run replaces, or a file) would touch input ``source``, or None."""
    if (directory or output.is_dir()) and _holds(output, source):
        return "holds the input {source}"
    if _same(output, source):
        return f"is the input {'' if source.is_dir() else 'file '}{{source}}, which this command reads"
    if source.is_dir() and output.is_file():  # a directory such as the model's: its files are read
        if _holds(source, output):
            return "is a file of {source}, which this command reads"
        if any(_same(output, item) for item in source.iterdir() if item.is_file()):
            return "is a link to a file of {source}, which this command reads"
    return None


def check_output_dir(output: str, overwrite: bool, resume: bool = False) -> Path:
    """The output directory, refused when it is a file, or non-empty without ``overwrite`` or ``resume``.

    ``--overwrite`` replaces only a directory that is empty or that plm wrote (see ``plm_wrote``):
    never a directory holding files plm did not write, the working directory or one of its parents
    (``check_places`` has refused one that holds an input). With ``resume`` the directory is the
    unfinished run's.
    """
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise PlmError(f"--output {output} is a file; expected a directory.")
    _check_parents(path, output)
    if resume:  # which checkpoint, if any, is for checkpoints.newest_complete to say
        return path
    if not path.is_dir() or not any(path.iterdir()) or _only_empty_checkpoints(path):
        return path
    unfinished = _names(path) == {CHECKPOINTS} and any(
        any((path / CHECKPOINTS).glob(pattern)) for pattern in UNFINISHED
    )
    if not overwrite:
        if unfinished:
            raise PlmError(
                f"{output} holds the checkpoints of an unfinished run; pass --resume to continue it, "
                "or --overwrite to start again."
            )
        raise PlmError(
            f"{output} already exists and is not empty; pass --overwrite to replace it, or choose another --output."
        )
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise PlmError(f"--output {output} is the working directory or one of its parents; choose another --output.")
    if not unfinished:
        foreign = _not_written_by_plm(path)
        if foreign:
            raise PlmError(
                f"--overwrite replaces only a directory plm wrote, and {output} holds what plm did not write "
                f"({_some(foreign)}), which would be lost; choose another --output."
            )
    return path


def _only_empty_checkpoints(path: Path) -> bool:
    """``path`` holds nothing but the empty checkpoints directory of a run killed before its first checkpoint."""
    return _names(path) == {CHECKPOINTS} and (path / CHECKPOINTS).is_dir() and not _names(path / CHECKPOINTS)


def plm_wrote(path: Path) -> Optional[dict]:
    """The manifest.json of a directory plm wrote (it names the plm version that wrote it), else None."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    versions = manifest.get("versions") if isinstance(manifest, dict) else None
    return manifest if isinstance(versions, dict) and "plm" in versions else None


def _not_written_by_plm(path: Path) -> list[str]:
    """The entries of directory ``path`` that plm did not write, which replacing it would lose.

    Without plm's manifest, every entry; with it, those its manifest does not list, apart from
    checkpoints, tracker logs and directories plm wrote inside it (an evaluation report, ``eval/``).
    """
    manifest = plm_wrote(path)
    if manifest is None:
        return sorted(_names(path))
    listed = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    return sorted(
        name
        for name in _names(path) - set(listed) - {MANIFEST, CHECKPOINTS, LOGS}
        if not ((path / name).is_dir() and plm_wrote(path / name))
    )


def _some(names: list[str]) -> str:
    """'a, b and 2 more' for a message."""
    shown = ", ".join(names[:3])
    return f"{shown} and {len(names) - 3} more" if len(names) > 3 else shown


def _names(path: Path) -> set[str]:
    """The names in directory ``path``; none when it does not exist."""
    try:
        return set(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return set()


def check_output_file(output: str, overwrite: bool, option: str = "--output") -> Path:
    """An output file that may be written: not a directory, and not an existing file unless ``overwrite``
    (``check_places`` has refused one the command reads)."""
    path = Path(output)
    if path.is_dir():
        raise PlmError(f"{option} {output} is a directory; expected a file name.")
    if path.exists() and not overwrite:
        raise PlmError(f"{output} already exists; pass --overwrite to replace it, or choose another {option}.")
    _check_parents(path, output)
    if not path.parent.is_dir():
        raise PlmError(f"cannot write {output}: directory {path.parent} does not exist.")
    return path


def _check_parents(path: Path, output: str) -> None:
    """Refuse an output under an existing file (found before any work, not when the first file is written)."""
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise PlmError(f"cannot write --output {output}: {parent} is a file, not a directory.")


def _shared_staging_name(final: Path) -> Optional[str]:
    """Under torchrun / accelerate launch (WORLD_SIZE > 1), a staging name every rank derives alike; else None.

    The ranks of one launch share TORCHELASTIC_RUN_ID, MASTER_ADDR and MASTER_PORT, so the Trainer
    on every rank finds the checkpoints that rank 0 writes under it.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    run = f"{os.environ.get('TORCHELASTIC_RUN_ID')}-{os.environ.get('MASTER_ADDR')}-{os.environ.get('MASTER_PORT')}"
    return f".{final.name}.partial-{''.join(ch if ch.isalnum() else '-' for ch in run)}"


def wait_for_all() -> None:
    """A barrier across the ranks of a distributed run; nothing in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@dataclass(frozen=True)
class Claim:
    """An output directory held by this run: its path, and the names it held when the run began."""

    path: Path
    present: frozenset  # what the run was allowed to replace (checked by check_output_dir)


@contextmanager
def claimed(output: Path) -> Iterator[Claim]:
    """Hold ``output`` for the run: no other plm run may write it until this one ends.

    An exclusive lock on a hidden file beside it (``.NAME.plm-lock``, holding the process id),
    taken without waiting: a second run into the same output stops at once with one line. The
    names ``output`` holds now are what ``staged_dir`` may replace at the end. Only the main
    process of a distributed run locks. Directories made to hold the lock are removed again
    when the run leaves nothing in them.
    """
    if fcntl is None or not console.is_main_process():  # no flock (Windows): the rename's re-check still holds
        yield Claim(output, frozenset(_names(output)))
        return
    made = [parent for parent in [output.parent, *output.parent.parents] if not parent.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    lock = output.parent / f".{output.name}.plm-lock"
    handle = _lock(lock, output)
    try:
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        _remove_leftovers(output)
        yield Claim(output, frozenset(_names(output)))
    finally:
        os.unlink(lock)  # before the lock goes: a run waiting on this file finds it gone and locks a new one
        os.close(handle)
        for parent in made:
            try:
                parent.rmdir()
            except OSError:  # not empty: the run wrote there
                break


def _remove_leftovers(output: Path) -> None:
    """Remove the staging and backup directories a killed run (kill -9, a power cut) left beside ``output``.

    Only a run holding the output's lock makes them, and this run holds it now: whoever made
    them is gone. Nothing else is touched.
    """
    left = [
        path
        for pattern in (f".{output.name}.partial-*", f".{output.name}.old-*")
        for path in output.parent.glob(pattern)
        if path.is_dir() and not path.is_symlink()
    ]
    if left:
        size = sum(item.stat().st_size for path in left for item in path.rglob("*") if item.is_file())
        for path in left:
            shutil.rmtree(path, ignore_errors=True)
        console.info(
            f"Removed what a run that was killed left beside {output} ({_some([p.name for p in left])}, "
            f"{size / 1e6:.1f} MB)."
        )


def _remove_dead_files(path: Path) -> None:
    """Remove the temporary files of ``path`` (``staged_file``'s) whose process is no longer running."""
    for item in path.parent.glob(f".{path.name}.plm-*-*"):
        pid = item.name[len(f".{path.name}.plm-") :].split("-", 1)[0]
        if pid.isdigit() and item.is_file() and not item.is_symlink() and not _alive(int(pid)):
            try:
                item.unlink()
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _lock(lock: Path, output: Path) -> int:
    """An open descriptor of ``lock`` holding its exclusive flock (the file still under that name), or PlmError."""
    while True:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 32).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise PlmError(
                f"another plm run (process {holder}) is writing {output}; wait for it to end, or choose "
                "another --output."
            ) from None
        try:
            if os.stat(lock).st_ino == os.fstat(handle).st_ino:
                return handle
        except FileNotFoundError:
            pass
        os.close(handle)  # the run that held it removed the file meanwhile: lock the new one


@contextmanager
def staged_dir(claim: Claim) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``claim.path``, on failure it is removed.

    The output is checked again at the rename: if anything appeared in it during the run (other
    than this run's checkpoints), or a file or another directory took its name, it is left as it
    was, the finished result is renamed to a free sibling name (``NAME-2``, ...), and the run
    ends with one line saying where it is (exit 1).

    In a distributed run every rank gets the same staging path, only rank 0 creates, finishes,
    renames or removes it, and the rename waits until every rank has left the block.
    """
    final = claim.path
    main = console.is_main_process()
    shared = _shared_staging_name(final)
    if shared is None:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    else:
        staging = final.parent / shared
        if main:
            shutil.rmtree(staging, ignore_errors=True)  # left by a killed run of the same launch settings
            staging.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
        if shared is not None:
            wait_for_all()  # every rank is done with the staging directory (and its checkpoints)
        if main:
            _finish_tree(staging)
            _publish(staging, claim)
    finally:
        if main and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, claim: Claim) -> None:
    """Rename ``staging`` to ``claim.path``, replacing only what the run was allowed to replace."""
    final = claim.path
    if not final.exists():
        try:
            os.rename(staging, final)  # POSIX never lets this replace a file or a non-empty directory
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise
    if final.exists() and not final.is_dir():
        appeared = ["a file"]
    else:
        appeared = sorted(_names(final) - claim.present - {CHECKPOINTS})
    if appeared:
        raise _kept_aside(staging, final, f"{final} changed during this run ({_some(appeared)} appeared)")
    backup = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, backup / final.name)
    os.replace(staging, final)
    shutil.rmtree(backup, ignore_errors=True)


def _kept_aside(result: Path, final: Path, happened: str) -> PlmError:
    """Move a finished ``result`` to a free name beside ``final``, which is left as it was; the error says where."""
    aside = _free_name(final)
    os.replace(result, aside)
    return PlmError(f"{happened}; it was left as it was, and the finished result is in {aside}.", RUNTIME_FAILURE)


def _free_name(path: Path) -> Path:
    """The first of NAME-2, NAME-3, ... (before the extension of a file) that does not exist beside ``path``."""
    number = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        if not candidate.exists():
            return candidate
        number += 1


@contextmanager
def writing(final: Path) -> Iterator[None]:
    """Turn a failed write of the finished model (disk full, file too large) into one line, exit 1.

    The writes go to the staging directory, so what was under ``final`` is still there as it was.
    """
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:200]
        what = "was left as it was" if final.exists() else "was not created"
        raise PlmError(f"could not write the model to {final}: {reason}. {final} {what}.", RUNTIME_FAILURE) from exc


@contextmanager
def staged_file(path: Path, replace: bool) -> Iterator[TextIO]:
    """A text stream into a temporary sibling of ``path`` that takes its name when the block ends without error.

    Readers see the old file or the new one, never half of it; on an error the temporary file is
    removed and ``path`` is as it was. Without ``replace`` the file gets its name only if nothing
    took that name during the run (a hard link, which never replaces); if something did, it is
    left as it was, the new file goes to a free sibling name, and one line says where (exit 1).
    """
    _remove_dead_files(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.plm-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; a written file gets the usual mode
        if replace:
            os.replace(temporary, path)
        else:
            _link_new(Path(temporary), path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _link_new(temporary: Path, path: Path) -> None:
    """Give ``temporary`` the name ``path`` unless that name is taken (then keep it aside and say so)."""
    try:
        os.link(temporary, path)
        return
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: check, then rename
        if not path.exists():
            os.replace(temporary, path)
            return
    raise _kept_aside(temporary, path, f"{path} was created by something else during this run")


def _finish_tree(directory: Path) -> None:
    """Flush every file to disk and give the tree the usual permissions (mkdtemp makes it private)."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
    fsync_tree(directory)


def fsync_tree(directory: Path) -> None:
    """Flush every file under ``directory`` to disk, so a rename after it publishes complete files."""
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as stream:
                os.fsync(stream.fileno())
