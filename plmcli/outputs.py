"""Writing results without losing anything: refuse to clobber, stage, then rename into place.

A model directory is built in a hidden staging directory beside its final place and renamed
into place only when complete, so a crash, a full disk or Ctrl-C never leaves a half-written
model under the final name, and ``--overwrite`` keeps the old model until the new one is whole.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from plmcli import console
from plmcli.errors import RUNTIME_FAILURE, PlmError

CHECKPOINTS = "checkpoints"  # where a training run keeps its checkpoints, under its output directory


def check_output_dir(
    output: str, overwrite: bool, inputs: tuple[str, ...] = (), marker: str = "config.json", resume: bool = False
) -> Path:
    """The output directory, refused when it is a file, or non-empty without ``overwrite`` or ``resume``.

    ``--overwrite`` replaces only a directory plm wrote (one holding ``marker``: config.json for a
    model, metrics.json for an evaluation; or the checkpoints of an unfinished run), never the
    working directory, one of its parents, or a directory that holds one of ``inputs``.
    With ``resume`` the directory is the unfinished run's.
    """
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise PlmError(f"--output {output} is a file; expected a directory.")
    _check_parents(path, output)
    if resume:  # which checkpoint, if any, is for checkpoints.newest_complete to say
        return path
    unfinished = (path / CHECKPOINTS).is_dir() and any((path / CHECKPOINTS).glob("checkpoint-*"))
    if not path.is_dir() or not any(path.iterdir()):
        return path
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
    for item in inputs:
        if item != "-" and (resolved == Path(item).resolve() or resolved in Path(item).resolve().parents):
            raise PlmError(f"--output {output} holds the input {item}; choose another --output.")
    if not (path / marker).is_file() and not unfinished:
        what = "a model directory" if marker == "config.json" else "a directory plm wrote"
        raise PlmError(f"--overwrite replaces only {what}, and {output} has no {marker}; choose another --output.")
    return path


def check_output_file(output: str, overwrite: bool, inputs: tuple[str, ...] = ()) -> Path:
    """An output file that may be written: not a directory, not an input, not an existing file unless ``overwrite``."""
    path = Path(output)
    if any(item != "-" and Path(item).resolve() == path.resolve() for item in inputs):
        raise PlmError(f"--output {output} is the input file; choose another --output.")
    if path.is_dir():
        raise PlmError(f"--output {output} is a directory; expected a file name.")
    if path.exists() and not overwrite:
        raise PlmError(f"{output} already exists; pass --overwrite to replace it, or choose another --output.")
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


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``final``, on failure it is removed.

    In a distributed run every rank gets the same staging path, only rank 0 creates, finishes,
    renames or removes it, and the rename waits until every rank has left the block.
    """
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
            if final.exists():
                backup = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
                os.replace(final, backup / final.name)
                os.replace(staging, final)
                shutil.rmtree(backup, ignore_errors=True)
            else:
                os.replace(staging, final)
    finally:
        if main and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary sibling, so readers see the old file or the new one, never half."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; a written file gets the usual mode
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


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
