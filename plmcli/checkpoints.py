"""Checkpoints that can be trusted: complete or recognisably not, checked before a resume.

A run checkpoints into ``OUTPUT/checkpoints/checkpoint-N``. The Trainer writes each checkpoint;
plm's ``on_save`` callback then flushes it and writes its manifest (``plm-checkpoint.json``: the
size and sha256 of every file, the run's settings and plm's own state) last, so a checkpoint
without a manifest that matches its files is one a kill or a full disk cut short (a failed save
removes its own). ``--resume`` takes the newest checkpoint whose files all match, skips newer ones
with a warning, refuses optimizer, scheduler or RNG state that is missing, and refuses settings
that differ from the interrupted run's unless the user allows it. The Trainer reads the
checkpoint (safetensors weights; its other files with ``weights_only=True``). Only the Trainer's
public surface is used: callbacks, ``training_step``, ``evaluate``.
"""

import contextlib
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


# Keys of manifests written before settings were keyed by the config's field names.
LEGACY_KEYS = {"data (sha256)": "data_sha256", "validation data (sha256)": "validation_sha256"}


def _field_key(key: str) -> str:
    """A settings key as a field name: '--max-length' and 'weight decay' of older manifests read as max_length."""
    if key in LEGACY_KEYS:
        return LEGACY_KEYS[key]
    return key.lstrip("-").replace(" (sha256)", "_sha256").replace("-", "_").replace(" ", "_")


def check_settings(saved: dict, current: dict, allow_changes: bool, options: frozenset = frozenset()) -> list[str]:
    """The differences between the interrupted run's settings and these; refused unless ``allow_changes``.

    Keys are field names; those in ``options`` (the config's fields) are shown as the option that sets them.
    """
    saved = {_field_key(key): value for key, value in saved.items()}
    current = json.loads(json.dumps(current))  # compare as the manifest stores them

    def shown(key: str) -> str:
        return "--" + key.replace("_", "-") if key in options else key

    changes = [
        f"{shown(key)} {json.dumps(saved.get(key))} -> {json.dumps(current.get(key))}"
        for key in sorted(set(saved) | set(current), key=shown)
        if saved.get(key) != current.get(key)
    ]
    if changes and not allow_changes:
        raise PlmError(
            "the checkpoint was written with other settings: "
            + "; ".join(changes)
            + ". Resume with the same settings, or pass --allow-changed-settings."
        )
    return changes


def start_from(checkpoint: Path, config, settings: dict) -> dict:
    """Check these settings against the checkpoint's, say where training resumes, return its manifest."""
    from dataclasses import fields

    saved = read_manifest(checkpoint)
    options = frozenset(item.name for item in fields(config))
    changes = check_settings(saved["settings"], settings, config.allow_changed_settings, options)
    if changes:
        console.warn(f"resuming with changed settings: {'; '.join(changes)}.")
    console.info(f"Resuming from {checkpoint} (step {saved['step']}).")
    return saved


def resumed_precision(checkpoint: Optional[Path], requested: str, chosen: tuple[str, str]) -> tuple[str, str]:
    """(precision, reason) for a run: on --resume with --precision auto, the one the interrupted run used.

    A resumed run keeps the interrupted run's choice rather than being refused when auto would now
    choose otherwise (another machine, or a cached measurement made again).
    """
    if checkpoint is None or requested != "auto":
        return chosen
    recorded = read_manifest(checkpoint).get("settings", {}).get("precision")
    return (recorded, "auto, as in the run being resumed") if recorded in ("fp32", "bf16", "fp16") else chosen


def clear(directory: Path) -> None:
    """Remove the checkpoints of a run that --overwrite replaces (a fresh run starts without any)."""
    if console.is_main_process() and directory.is_dir():
        shutil.rmtree(directory)


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


def checkpoint_callback(settings: dict, state: dict, loss_before: float = 0.0):
    """A callback that makes each checkpoint the Trainer saves one plm can trust, through public hooks only.

    The Trainer writes ``checkpoint-N`` itself; ``on_save`` (called once every rank has written its
    part) flushes the files, writes the manifest last with ``settings``, ``state`` and the training
    loss summed over every step so far, then keeps the KEEP newest checkpoints and the best one.
    ``last`` is the newest complete checkpoint; ``loss_sum`` adds each step's loss (from
    ``training_step``) to ``loss_before``, the sum over the steps before a resume.
    """
    from transformers import TrainerCallback

    class TrustedCheckpoints(TrainerCallback):
        last: Optional[Path] = None
        loss_sum = loss_before  # a float, or a 0-d tensor while training (no sync each step)

        def on_step_end(self, args, state_, control, **kwargs):
            if control.should_save and args.should_save:  # the Trainer saves next: clear its way
                _clear_for_save(Path(args.output_dir) / f"{PREFIX}{state_.global_step}")

        on_epoch_end = on_step_end  # with save_strategy "epoch"

        def on_save(self, args, state_, control, **kwargs):
            directory = Path(args.output_dir)
            checkpoint = directory / f"{PREFIX}{state_.global_step}"
            wait_for_all()  # every rank's RNG state is written
            if args.should_save:
                try:
                    fsync_tree(checkpoint)
                    _write_manifest(
                        checkpoint, state_.global_step, settings, {**state, "loss_sum": float(self.loss_sum)}
                    )
                except OSError as exc:
                    raise save_failed(checkpoint, exc) from exc
                _rotate(directory, state_.best_model_checkpoint)
            wait_for_all()
            self.last = checkpoint

    return TrustedCheckpoints()


def _clear_for_save(checkpoint: Path) -> None:
    """Remove what stands where a checkpoint is about to be written: a stray file, or an old or broken one."""
    if checkpoint.is_dir():
        shutil.rmtree(checkpoint)
    elif checkpoint.exists() or checkpoint.is_symlink():
        checkpoint.unlink()


def save_failed(checkpoint: Path, exc: BaseException) -> PlmError:
    """The one line for a checkpoint that could not be written (disk full, ...); its partial files are removed."""
    if console.is_main_process() and checkpoint.is_dir() and not (checkpoint / MANIFEST).is_file():
        shutil.rmtree(checkpoint, ignore_errors=True)
    reason = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:200]
    return PlmError(
        f"could not write checkpoint {checkpoint}: {reason}. The earlier checkpoints are intact.", RUNTIME_FAILURE
    )


def unfinished_save(directory: Path, step: int) -> Optional[Path]:
    """The checkpoint of ``step`` if the Trainer began writing it and no manifest completed it, else None."""
    checkpoint = Path(directory) / f"{PREFIX}{step}"
    return checkpoint if checkpoint.is_dir() and not (checkpoint / MANIFEST).is_file() else None


def _sampler_of(loader):
    """The sampler under a (possibly accelerate-prepared) training DataLoader, or None."""
    batches = getattr(loader, "batch_sampler", None)
    batches = getattr(batches, "batch_sampler", batches)  # accelerate's BatchSamplerShard wraps torch's BatchSampler
    return getattr(batches, "sampler", None)


def seed_each_epoch(seed: int):
    """A callback that makes each epoch's data order a function of (seed, epoch) alone.

    Length-grouped sampling draws its order from the sampler's own generator, seeded once: the
    order of epoch 2 depends on epoch 1 having been drawn. Seeding it again at each epoch's start
    lets a resume in mid-epoch replay that epoch's order before skipping the batches already
    trained on. Samplers that seed themselves by epoch (accelerate's ``set_epoch``) are left alone.
    """
    import torch
    from transformers import TrainerCallback

    class SeedEachEpoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
            sampler = _sampler_of(train_dataloader)
            if sampler is not None and hasattr(sampler, "generator") and not hasattr(sampler, "set_epoch"):
                sampler.generator = torch.Generator().manual_seed(seed + int(state.epoch + 1e-6))

    return SeedEachEpoch()


def trainer_class():
    """transformers' Trainer, summing the training loss for plm's checkpoints; evaluation never moves its RNG."""
    from transformers import Trainer

    class CheckpointingTrainer(Trainer):
        plm_checkpoints = None  # the checkpoint_callback, which keeps the loss sum
        plm_parts = None  # splits a batch into parts whose summed losses are the batch's (training.length_parts)

        def training_step(self, model, inputs, num_items_in_batch=None):
            parts = self.plm_parts(inputs) if self.plm_parts is not None else [inputs]
            loss = 0
            for index, part in enumerate(parts):
                # gradients of all but the last part stay local; the last one's backward synchronises them all
                last = index == len(parts) - 1
                with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                    loss = loss + super().training_step(model, part, num_items_in_batch)
            if self.plm_checkpoints is not None:
                self.plm_checkpoints.loss_sum = self.plm_checkpoints.loss_sum + loss.detach().float()
            return loss

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
