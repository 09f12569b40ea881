"""The Trainer side of a run: TrainingArguments, plm's Trainer and callbacks, and training itself.

``training_arguments`` holds what every task trains with (batch size, learning rate schedule,
checkpoints every ``save_steps``, seeds, precision); a task adds its own arguments (evaluation,
sampling, best-model choice). ``train`` runs the Trainer with plm's progress bar, checkpoints
plm can trust (plmcli.checkpoints) and a clean stop on SIGINT / SIGTERM.
"""

import importlib.util
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from plmcli import checkpoints, interrupts, memory
from plmcli.errors import Interrupted, PlmError

# The validation figures the progress bar reports after each evaluation.
EVALUATION_FIGURES = (
    *("f1", "accuracy", "micro_f1", "macro_f1", "weighted_f1", "subset_accuracy", "loss", "rmse", "pearson"),
)


def progress_callback():
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class ProgressBar(TrainerCallback):
        """One training bar on stderr with the latest loss, instead of the Trainer's printed log dicts."""

        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(
                    total=state.max_steps, desc="Training", unit="step", file=sys.stderr, dynamic_ncols=True
                )

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}")
            if self.bar is not None and logs and "eval_loss" in logs:
                figures = ", ".join(
                    f"{key[5:].replace('_', '-')} {value:.4f}"
                    for key, value in logs.items()
                    if key.startswith("eval_") and key[5:] in EVALUATION_FIGURES
                )
                self.bar.write(f"epoch {logs.get('epoch', 0):.0f}, step {state.global_step}: validation {figures}")

        def on_train_end(self, args, state, control, **kwargs):
            self.close()

        def close(self):
            """End the bar's line, also when training stops on an error or a signal."""
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return ProgressBar()


DIVERGED = 10.0  # a training loss above 10x its first figure (and 5 above it) has exploded


def divergence_callback(saving):
    """A callback that stops a diverging run before it saves another checkpoint: PlmError, exit 1.

    Before each log and each save it reads the loss summed over every step (``saving.loss_sum``, the
    raw step losses: the Trainer's own log replaces NaN by an average) and stops when that sum is
    NaN or infinite, or when the mean loss since the last look exceeds both DIVERGED times and 5
    more than the first such mean. Checkpoints already saved are kept. Under torchrun every rank
    reads the same sum (one all-reduce per look), so all stop together.
    """
    import math

    import torch.distributed as dist
    from transformers import TrainerCallback

    from plmcli.errors import RUNTIME_FAILURE, PlmError

    class StopOnDivergence(TrainerCallback):
        first = None  # the mean loss over the first steps looked at
        looked = (0, 0.0)  # (step, loss sum) at the last look

        def on_step_end(self, args, state, control, **kwargs):
            if not (control.should_log or control.should_save or state.global_step >= state.max_steps):
                return
            total = saving.loss_sum  # a 0-d tensor once a step has run
            if dist.is_available() and dist.is_initialized():
                total = total.detach().clone()
                dist.all_reduce(total)
                total = total / dist.get_world_size()
            total = float(total)
            step, before = self.looked
            mean = (total - before) / max(state.global_step - step, 1)
            self.looked = (state.global_step, total)
            if math.isfinite(mean) and self.first is None:
                self.first = mean
            if math.isfinite(mean) and mean <= max(DIVERGED * self.first, self.first + 5):
                return
            what = f"is {mean:.4g}" if math.isfinite(mean) else "is NaN or infinite"
            kept = (
                f"; the checkpoints before it are kept in {Path(args.output_dir)} (--overwrite starts again)"
                if saving.last
                else ""
            )
            start = f" (it started at {self.first:.4g})" if self.first is not None and math.isfinite(mean) else ""
            raise PlmError(
                f"training diverged at step {state.global_step} of {state.max_steps}: the loss {what}{start}. "
                f"Try a lower --lr (this run used {args.learning_rate:g}){kept}.",
                RUNTIME_FAILURE,
            )

    return StopOnDivergence()


def train(
    command: list[str], resume_from=None, settings=None, state=None, callbacks=(), parts=None, **trainer_arguments
):
    """Build plm's Trainer, train (from ``resume_from``, a checkpoint, if given), and return both.

    The Trainer shows plm's progress bar instead of printed log dicts, writes checkpoints that plm
    completes with a manifest (holding ``settings`` and ``state``), and on the first SIGINT / SIGTERM
    saves a checkpoint at the end of the step and raises Interrupted with the command that resumes.
    ``parts`` (such as ``length_parts``) splits each training batch into parts trained one after another.
    """
    from safetensors import SafetensorError
    from transformers import PrinterCallback

    args = trainer_arguments["args"]
    run_dir = Path(args.output_dir)
    created = [path for path in (run_dir, run_dir.parent) if not path.exists()]
    resumed = checkpoints.read_manifest(resume_from) if resume_from else {"step": 0, "state": {}}
    saving = checkpoints.checkpoint_callback(settings or {}, state or {}, resumed["state"].get("loss_sum", 0.0))
    progress, stopper = progress_callback(), checkpoints.stop_on_signal()
    trimming = memory.memory_callback()  # on CPU, where freed memory is kept for reuse
    seeding = checkpoints.seed_each_epoch(args.data_seed if args.data_seed is not None else args.seed)
    diverging = divergence_callback(saving)
    callbacks = [progress, stopper, saving, diverging, seeding, *callbacks, *([trimming] if trimming else [])]
    trainer = checkpoints.trainer_class()(**trainer_arguments, callbacks=callbacks)
    trainer.plm_checkpoints = saving
    trainer.plm_parts = parts
    trainer.remove_callback(PrinterCallback)
    try:
        with interrupts.graceful():
            output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except BaseException as exc:
        unfinished = checkpoints.unfinished_save(run_dir, trainer.state.global_step)
        if unfinished is None:
            raise
        failure = checkpoints.save_failed(unfinished, exc)  # the Trainer was writing it: its files are removed
        if isinstance(exc, (OSError, RuntimeError, SafetensorError)):
            raise failure from exc
        raise
    finally:
        progress.close()
        checkpoints.discard_if_empty(created)  # a run that failed before its first checkpoint leaves nothing
    received = stopper.stopped_by or interrupts.requested()
    if received is not None:
        name = signal.Signals(received).name
        if stopper.stopped_by is None or saving.last is None:
            raise Interrupted(received, name)
        kept = [argument for argument in command if argument != "--overwrite"]  # --resume replaces it
        resume = shlex.join([*kept, *([] if "--resume" in kept else ["--resume"])])
        raise Interrupted(
            received,
            name,
            f"interrupted by {name} at step {trainer.state.global_step} of {trainer.state.max_steps}; "
            f"saved {saving.last}. Continue with: {resume}",
        )
    trainer.plm_training_loss = float(saving.loss_sum) / max(trainer.state.global_step, 1)  # also across a resume
    return trainer, output


# What a separate forward and backward pass costs, in padded token positions of work: measured on a
# 2-core CPU with MiniLM on CoNLL-2003 batches of 32 (a part costs about as much as 160 more positions).
PART_COST = 160


def length_parts(inputs: dict) -> list[dict]:
    """A padded training batch as parts of similar lengths, each cut to its longest row, or the batch whole.

    The rows are sorted by length and cut where the padding saved outweighs the cost of one more pass
    (PART_COST). The parts hold every row once and every position of it but padding, so when the
    task's loss is a sum over rows divided by a constant (as ``word_weighted_loss``), the parts' losses
    and gradients add up to the batch's: the same step as the random batch, with less padding. A batch
    that is not right-padded, or that holds a tensor these rules do not cover, is left whole.
    """
    import torch

    mask = inputs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.size(0) < 2:
        return [inputs]
    if not bool((mask[:, 1:] <= mask[:, :-1]).all()):  # padding on the left
        return [inputs]
    batch, width = mask.shape
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.size(0) == batch:
            if value.dim() >= 2 and value.size(1) != width:
                return [inputs]
        elif isinstance(value, torch.Tensor):
            return [inputs]
    lengths = mask.sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    longest = lengths[order].tolist()  # the first row of a part is its longest
    # best[j]: the least work for the first j sorted rows; cut[j]: where its last part starts
    best, cut = [0.0] + [float("inf")] * batch, [0] * (batch + 1)
    for end in range(1, batch + 1):
        for start in range(end):
            work = best[start] + (end - start) * longest[start] + PART_COST
            if work < best[end]:
                best[end], cut[end] = work, start
    bounds, end = [], batch
    while end > 0:
        bounds.append((cut[end], end))
        end = cut[end]
    if len(bounds) == 1:
        return [inputs]
    parts = []
    for start, end in reversed(bounds):
        rows, keep = order[start:end], max(int(longest[start]), 1)
        parts.append(
            {
                key: (value[rows][:, :keep].contiguous() if value.dim() >= 2 else value[rows])
                if isinstance(value, torch.Tensor)
                else value
                for key, value in inputs.items()
            }
        )
    return parts


def training_arguments(config, output_dir: Path, device: str, precision: str, lr: float, task_arguments: dict):
    """The Trainer's arguments for a run: what every task shares, then ``task_arguments`` (which may override)."""
    from transformers import TrainingArguments

    shared = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size * 2,
        "learning_rate": lr,
        "weight_decay": config.weight_decay,
        "warmup_steps": config.warmup_ratio,  # a float below 1 is a share of the total steps
        "lr_scheduler_type": "linear",
        "num_train_epochs": config.epochs,
        "max_steps": getattr(config, "max_steps", None) or -1,
        "save_strategy": "steps",  # checkpoints for --resume; the finished model is written whole by the run
        "save_steps": config.save_steps,
        "logging_strategy": "steps",
        "logging_steps": 0.05,  # a loss point every 5% of training
        "seed": config.seed,
        "data_seed": config.seed,
        "use_cpu": device == "cpu",
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "disable_tqdm": True,  # plm's own progress bar replaces the printed log dicts
        "report_to": getattr(config, "report_to", "none"),
    }
    return TrainingArguments(**(shared | task_arguments))


# --report-to: the package each tracker needs, and the environment variable that says where it logs.
TRACKERS = {
    "tensorboard": ("tensorboard", "TENSORBOARD_LOGGING_DIR"),
    "mlflow": ("mlflow", "MLFLOW_TRACKING_URI"),
    "wandb": ("wandb", "WANDB_DIR"),
}


def check_tracker(name: str) -> None:
    """Refuse --report-to TRACKER before anything runs when the tracker's package is missing."""
    if name != "none" and importlib.util.find_spec(TRACKERS[name][0]) is None:
        raise PlmError(f"--report-to {name} needs the {name} package: pip install 'plm[{name}]'.")


@contextmanager
def tracking(name: str, logs: Path) -> Iterator[None]:
    """Within the block the tracker logs to ``logs`` (the run's OUTPUT/logs), unless its own variable says where."""
    variable = TRACKERS[name][1] if name in TRACKERS else None
    if variable is None or variable in os.environ:
        yield
        return
    logs.mkdir(parents=True, exist_ok=True)
    os.environ[variable] = (logs / "mlruns").resolve().as_uri() if name == "mlflow" else str(logs)
    try:
        yield
    finally:
        os.environ.pop(variable, None)
