"""Checkpoints that can be trusted: written whole or not at all, checked before a resume.

A run checkpoints into ``OUTPUT/checkpoints/checkpoint-N``. Each checkpoint is written into a
hidden staging directory beside it, flushed, and renamed into place; its manifest
(``plm-checkpoint.json``: the size and sha256 of every file, the run's settings and plm's own
state) is written last, so a checkpoint without a manifest that matches its files is one a
kill or a full disk cut short. ``--resume`` takes the newest checkpoint whose files all match,
skips newer ones with a warning, refuses optimizer, scheduler or RNG state that is missing, and
refuses settings that differ from the interrupted run's unless the user allows it. The Trainer
reads the checkpoint (safetensors weights; its other files with ``weights_only=True``).
"""

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Optional

from plmcli import console, interrupts
from plmcli.errors import BAD_INPUT, RUNTIME_FAILURE, PlmError
from plmcli.outputs import CHECKPOINTS, fsync_tree, wait_for_all
from plmcli.reporting import file_digest

MANIFEST = "plm-checkpoint.json"
PREFIX = "checkpoint-"
REQUIRED = ("model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json")  # and rng_state*.pth
KEEP = 2  # newest complete checkpoints kept (the best one under early stopping is kept too)
DEFAULT_SAVE_STEPS = 500
SYNC_STEPS = 10  # under torchrun, ranks agree on a stop request every this many steps


def run_dir(output: Path) -> Path:
    """Where a run writes its checkpoints."""
    return Path(output) / CHECKPOINTS


def _step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-([0-9]+)", path.name)
    return int(match.group(1)) if match else -1


def listed(directory: Path) -> list[Path]:
    """The checkpoint-N directories under ``directory``, newest (highest N) first."""
    if not directory.is_dir():
        return []
    found = [path for path in directory.iterdir() if path.is_dir() and _step(path) >= 0]
    return sorted(found, key=_step, reverse=True)


def problem(checkpoint: Path) -> Optional[str]:
    """Why ``checkpoint`` cannot be resumed from (missing, truncated or changed files), or None."""
    try:
        manifest = json.loads((checkpoint / MANIFEST).read_text(encoding="utf-8"))
        recorded = manifest["files"]
        well_formed = (
            isinstance(recorded, dict)
            and isinstance(manifest["settings"], dict)
            and isinstance(manifest["step"], int)
            and all(
                isinstance(entry, dict) and isinstance(entry["bytes"], int) and isinstance(entry["sha256"], str)
                for entry in recorded.values()
            )
        )
    except FileNotFoundError:
        return f"{MANIFEST} is missing (its save did not finish)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        well_formed = False
    if not well_formed:
        return f"{MANIFEST} is unreadable"
    if any(Path(name).name != name or name.startswith(".") or name == MANIFEST for name in recorded):
        return f"{MANIFEST} lists files outside the checkpoint"
    for name in REQUIRED:
        if name not in recorded:
            return f"it has no {name}"
    if not any(name.startswith("rng_state") for name in recorded):
        return "it has no RNG state (rng_state.pth)"
    for name, expected in recorded.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} is truncated or changed ({path.stat().st_size} bytes; {expected['bytes']} were written)"
        if file_digest(path) != expected["sha256"]:
            return f"{name} does not match the sha256 recorded when it was written"
    return None


def read_manifest(checkpoint: Path) -> dict:
    """A complete checkpoint's manifest: {step, files, settings, state}."""
    return json.loads((checkpoint / MANIFEST).read_text(encoding="utf-8"))


def newest_complete(directory: Path, output: str) -> Path:
    """The newest checkpoint whose files all match its manifest; newer broken ones are skipped with a warning."""
    candidates = listed(directory)
    if not candidates:
        raise PlmError(f"nothing to resume: {output} holds no checkpoints. Run again without --resume.", BAD_INPUT)
    skipped = []
    for checkpoint in candidates:
        reason = problem(checkpoint)
        if reason is None:
            for name, why in skipped:
                console.warn(f"skipping {name}: {why}.")
            return checkpoint
        skipped.append((checkpoint.name, reason))
    raise PlmError(
        f"no complete checkpoint to resume in {directory}: "
        + "; ".join(f"{name}: {why}" for name, why in skipped)
        + ". Start again with --overwrite.",
        RUNTIME_FAILURE,
    )


def check_settings(saved: dict, current: dict, allow_changes: bool) -> list[str]:
    """The differences between the interrupted run's settings and these; refused unless ``allow_changes``."""
    current = json.loads(json.dumps(current))  # compare as the manifest stores them
    changes = [
        f"{key} {json.dumps(saved.get(key))} -> {json.dumps(current.get(key))}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]
    if changes and not allow_changes:
        raise PlmError(
            "the checkpoint was written with other settings: "
            + "; ".join(changes)
            + ". Resume with the same settings, or pass --allow-changed-settings."
        )
    return changes


def start_from(checkpoint: Path, settings: dict, allow_changes: bool) -> dict:
    """Check these settings against the checkpoint's, say where training resumes, return its manifest."""
    saved = read_manifest(checkpoint)
    changes = check_settings(saved["settings"], settings, allow_changes)
    if changes:
        console.warn(f"resuming with changed settings: {'; '.join(changes)}.")
    console.info(f"Resuming from {checkpoint} (step {saved['step']}).")
    return saved


def resumed_precision(checkpoint: Optional[Path], requested: str, chosen: tuple[str, str]) -> tuple[str, str]:
    """(precision, reason) for a run: on --resume with --precision auto, the one the interrupted run used.

    auto on a CPU is measured; a resumed run keeps what was measured then rather than being refused
    because a new measurement came out the other side of the line.
    """
    if checkpoint is None or requested != "auto":
        return chosen
    recorded = read_manifest(checkpoint).get("settings", {}).get("precision")
    return (recorded, "auto, as in the run being resumed") if recorded in ("fp32", "bf16", "fp16") else chosen


def clear(directory: Path) -> None:
    """Remove the checkpoints of a run that --overwrite replaces (a fresh run starts without any)."""
    if console.is_main_process() and directory.is_dir():
        shutil.rmtree(directory)


def remove_partials(directory: Path) -> None:
    """Remove the staging directories of saves that a kill cut short."""
    if console.is_main_process() and directory.is_dir():
        for path in directory.glob(f".{PREFIX}*.partial"):
            shutil.rmtree(path, ignore_errors=True)


def _write_manifest(directory: Path, step: int, settings: dict, state: dict) -> None:
    files = {
        path.name: {"bytes": path.stat().st_size, "sha256": file_digest(path)}
        for path in sorted(directory.iterdir())
        if path.is_file()
    }
    text = json.dumps({"step": step, "files": files, "settings": settings, "state": state}, indent=2)
    with open(directory / MANIFEST, "w", encoding="utf-8") as stream:
        stream.write(text + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def _rotate(directory: Path, best: Optional[str]) -> None:
    """Keep the KEEP newest checkpoints plm wrote (those with a manifest) and the best one; remove older ones."""
    written = [checkpoint for checkpoint in listed(directory) if (checkpoint / MANIFEST).is_file()]
    keep = set(written[:KEEP]) | ({Path(best)} if best else set())
    for checkpoint in written:
        if checkpoint not in keep:
            shutil.rmtree(checkpoint, ignore_errors=True)


def discard_if_empty(directories: list[Path]) -> None:
    """Remove the directories a failed run created and left empty (its checkpoints dir, then the output)."""
    if console.is_main_process():
        for directory in directories:
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()


def save(trainer, settings: dict, state: dict) -> Path:
    """Write the Trainer's full state as ``checkpoint-<step>``: staged, flushed, manifest last, renamed."""
    from safetensors import SafetensorError
    from transformers.trainer_callback import ExportableState

    directory = Path(trainer.args.output_dir)
    step = trainer.state.global_step
    final = directory / f"{PREFIX}{step}"
    staging = directory / f".{PREFIX}{step}.partial"
    main = trainer.args.should_save
    trainer.store_flos()
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    wait_for_all()
    try:
        trainer.save_model(str(staging), _internal_call=True)
        trainer._save_optimizer_and_scheduler(str(staging))
        trainer._save_scaler(str(staging))
        trainer._save_rng_state(str(staging))  # every rank writes its own
        if trainer.state.best_global_step:
            best = directory / f"{PREFIX}{trainer.state.best_global_step}"
            if best == final or best.is_dir():
                trainer.state.best_model_checkpoint = str(best)
        if main:
            for callback in [*trainer.callback_handler.callbacks, trainer.control]:
                if isinstance(callback, ExportableState):  # early stopping's patience counter, for a resume
                    trainer.state.stateful_callbacks[callback.__class__.__name__] = callback.state()
            trainer.state.save_to_json(str(staging / "trainer_state.json"))
        wait_for_all()
        if main:
            fsync_tree(staging)
            loss_sum = trainer.plm_loss_before + trainer._total_loss_scalar + float(trainer._tr_loss.item())
            _write_manifest(staging, step, settings, {**state, "loss_sum": loss_sum})
            if final.is_dir():
                shutil.rmtree(final)
            elif final.exists():
                final.unlink()  # not a checkpoint: a stray file under its name
            os.replace(staging, final)
            _rotate(directory, trainer.state.best_model_checkpoint)
    except (OSError, RuntimeError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:200]
        raise PlmError(
            f"could not write checkpoint {final}: {reason}. The earlier checkpoints are intact.", RUNTIME_FAILURE
        ) from exc
    finally:
        if main and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    wait_for_all()
    return final


def _seed_each_epoch(sampler, seed: int) -> None:
    """Make a shuffling sampler's order a function of (seed, epoch) alone, not of the global RNG's state.

    A resume in mid-epoch then replays the interrupted epoch's order before skipping the batches
    already trained on. The Trainer announces each epoch through ``set_epoch``.
    """
    import torch

    class EpochSeeded(type(sampler)):
        def set_epoch(self, epoch: int) -> None:
            self.plm_epoch = epoch

        def __iter__(self):
            self.generator = torch.Generator().manual_seed(seed + self.plm_epoch)
            self.plm_epoch += 1  # without a set_epoch call, the next pass still gets a new order
            return super().__iter__()

    sampler.__class__ = EpochSeeded
    sampler.plm_epoch = 0


def trainer_class():
    """transformers' Trainer, saving its checkpoints through ``save`` and stopping on a signal."""
    from transformers import Trainer

    class CheckpointingTrainer(Trainer):
        plm_settings: dict  # recorded in each checkpoint and compared on --resume
        plm_state: dict  # what plm needs back on --resume (pretrain's before-training figures)
        plm_loss_before = 0.0  # the training loss summed over the steps before a resume
        plm_last_checkpoint: Optional[Path] = None

        def _save_checkpoint(self, model, trial):
            self.plm_last_checkpoint = save(self, self.plm_settings, self.plm_state)

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if sampler is not None and hasattr(sampler, "generator"):
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                _seed_each_epoch(sampler, seed)
            return sampler

        def evaluate(self, *args, **kwargs):
            import torch

            with torch.random.fork_rng(devices=[]):  # evaluating never shifts the training's random draws
                return super().evaluate(*args, **kwargs)

    return CheckpointingTrainer


def stop_on_signal():
    """A callback that, once SIGINT or SIGTERM has arrived, saves a checkpoint and ends training at the step's end.

    ``stopped_by`` is then the signal's number. It also skips the Trainer's checkpoint after the
    last step: the finished model is written whole by plm.
    """
    import torch
    import torch.distributed as dist
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        stopped_by: Optional[int] = None

        def on_step_end(self, args, state, control, **kwargs):
            received = interrupts.requested()
            stop = received is not None
            if dist.is_available() and dist.is_initialized():
                # Every rank must stop at the same step; they agree every SYNC_STEPS steps (a device sync).
                stop = False
                if state.global_step % SYNC_STEPS == 0:
                    flag = torch.tensor([int(received is not None)], device=args.device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    stop = bool(flag.item())
            if stop:
                self.stopped_by = received or signal.SIGTERM
                console.warn(
                    f"{signal.Signals(self.stopped_by).name} received: saving a checkpoint at step "
                    f"{state.global_step}; send it again to stop at once."
                )
                control.should_save = True
                control.should_training_stop = True
            elif state.global_step >= state.max_steps and args.save_strategy == "steps":
                control.should_save = False

    return StopOnSignal()
