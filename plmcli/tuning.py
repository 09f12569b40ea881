"""`plm tune`: the best fine-tuned model a time budget buys.

Each trial is one run of the finetune task (``plmcli.run.execute``) with settings optuna chose:
its TPE sampler (seeded) picks the learning rate (log scale, half to 4x the default for the
model's width), epochs (2-5), batch size, warmup, weight decay, class weights (single-label) and the
max length (finetune's or the training texts' 99th-percentile token length, whichever is
shorter). The first trial trains with finetune's defaults, so the best model is never worse
than the defaults on the validation --metric. A median pruner gets the validation metric after
every epoch and, from the second epoch on, stops a trial that is behind the earlier trials at the
same epoch.

The budget is wall time for the whole command: a trial starts only if it can end within it at
the slowest pace measured so far (its epochs are capped to fit), and one that runs late is
stopped at the deadline and counted as pruned. The best model is kept as trained (not refitted
on more data: its validation figure is the one the search compared, and a refit would cost
another trial's time) and written as a normal finetune output directory, with ``tune.json``
(every trial), ``tuning.png`` and ``study.db`` (optuna's SQLite storage, for ``--resume``).

While it runs, the study and the best trial's model live under ``OUTPUT/checkpoints``; Ctrl-C
or SIGTERM ends the current trial, writes the best model so far and exits 130 / 143.
"""

import contextlib
import gc
import json
import math
import resource
import shlex
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np

from plmcli import checkpoints, console, reporting, textfiles
from plmcli.config import FinetuneConfig, TuneConfig
from plmcli.errors import Interrupted, PlmError
from plmcli.outputs import CHECKPOINTS, LOGS, MANIFEST, check_output_dir, check_places, claimed, staged_dir, writing
from plmcli.run import execute
from plmcli.training import check_tracker, tracking

STUDY = "study.db"
REPORT = "tune.json"
PLOT = "tuning.png"
STUDY_NAME = "plm-tune"
MIN_EPOCHS, MAX_EPOCHS = 2, 5  # a searched trial trains for at least 2 epochs: 1 loses to the defaults' 3
BATCH_SIZES = (16, 32, 64)
LOWER_IS_BETTER = ("loss", "rmse", "mae")


@dataclass
class TuneResult:
    output: Path
    report: dict  # tune.json's content


def _optuna():
    try:
        import optuna
    except ImportError:
        raise PlmError("plm tune needs optuna: pip install 'plm[tune]' (or pip install optuna).") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # plm prints one line per trial instead
    return optuna


def tune(config: TuneConfig) -> TuneResult:
    """Search training settings within ``config.budget``; write the best trial's model to ``config.output``."""
    optuna = _optuna()
    started = time.monotonic()
    deadline = started + config.budget_seconds
    check_places(config.places())
    output = check_output_dir(config.output, config.overwrite, resume=config.resume)
    check_tracker(config.report_to)
    with claimed(output) as claim, textfiles.recording():  # every trial reads the data as the first one did
        store = checkpoints.run_dir(output)
        study = _study(optuna, config, output, store)
        search = Search(config, study, store, started, deadline)
        try:
            search.run(optuna)
        except Interrupted as stop:
            if search.best() is None:
                message = f"{_reason(stop)}; no trial had finished, so nothing was written."
                raise Interrupted(stop.exit_code - 128, "signal", message) from None
            report = search.publish(claim)
            best = report["best"]
            raise Interrupted(
                stop.exit_code - 128,
                "signal",
                f"{_reason(stop)} during trial {search.current}; the best model so far (trial {best['number']}, "
                f"{config.metric} {best['value']:.4f}) and tune.json are in {output}. Continue with: "
                f"{_resume_command(config)}",
            ) from None
        report = search.publish(claim)
    return TuneResult(output=output, report=report)


def _reason(stop: Interrupted) -> str:
    return str(stop).split(";")[0].split(" at step")[0]


def _resume_command(config: TuneConfig) -> str:
    kept = [argument for argument in config.command if argument != "--overwrite"]
    return shlex.join([*kept, *([] if "--resume" in kept else ["--resume"])])


def _study(optuna, config: TuneConfig, output: Path, store: Path):
    """A new study in ``store``, or with --resume the one the interrupted (or finished) tune left in ``output``."""
    direction = "minimize" if config.metric in LOWER_IS_BETTER else "maximize"
    if config.resume:
        kept = output / STUDY
        if not (store / STUDY).is_file():
            if not kept.is_file():
                raise PlmError(f"nothing to resume: {config.output} holds no {STUDY}. Run again without --resume.")
            store.mkdir(parents=True, exist_ok=True)
            shutil.copy2(kept, store / STUDY)
            try:
                return _opened(optuna, config, store, direction)
            except PlmError:  # refused: the output stays as the finished tune left it
                shutil.rmtree(store, ignore_errors=True)
                raise
    else:
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
    return _opened(optuna, config, store, direction)


def _opened(optuna, config: TuneConfig, store: Path, direction: str):
    """The study in ``store`` (new, or resumed when it matches this run's metric and data)."""
    storage = f"sqlite:///{(store / STUDY).resolve()}"
    finished = 0
    if config.resume:
        finished = len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials)
    study = optuna.create_study(
        storage=storage,
        study_name=STUDY_NAME,
        direction=direction,
        load_if_exists=config.resume,
        sampler=optuna.samplers.TPESampler(seed=config.seed + finished),  # a resumed search draws new settings
        # From the second epoch on (epochs are reported as steps 1, 2, ...; optuna prunes from step n_warmup_steps):
        # after one epoch a higher learning rate is often still behind without being worse.
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
    )
    stored = study.user_attrs.get("metric")
    if stored not in (None, config.metric):
        raise PlmError(
            f"the study in {config.output} optimised --metric {stored}; pass that, or start again with --overwrite."
        )
    study.set_user_attr("metric", config.metric)
    read = {  # what each trial trains and is scored on: a file by its sha256, as this run read it
        option: textfiles.read_digest(Path(path))[1] if Path(path).is_file() else path
        for option, path in (("the data file", config.data), ("--validation", config.validation))
        if path
    }
    recorded = study.user_attrs.get("data")
    if recorded is not None and recorded != read:  # trials scored on two data sets do not compare
        changed = [option for option in ("the data file", "--validation") if recorded.get(option) != read.get(option)]
        raise PlmError(
            f"the study in {config.output} was run on other data ({' and '.join(changed)} changed since); "
            "resume with the data it was run on, or start again with --overwrite."
        )
    study.set_user_attr("data", read)
    return study


class Search:
    """The trial loop: the defaults first, then optuna's choices while the budget allows."""

    def __init__(self, config: TuneConfig, study, store: Path, started: float, deadline: float) -> None:
        self.config, self.study, self.store = config, study, store
        self.started, self.deadline = started, deadline
        self.current: Optional[int] = None  # the trial running now
        self.stopped_by = ""  # why no further trial started

    def _ran(self) -> list:
        """The trials that ran to their end or were pruned."""
        return [t for t in self.study.trials if t.state.name in ("COMPLETE", "PRUNED")]

    def best(self):
        complete = [t for t in self.study.trials if t.state.name == "COMPLETE"]
        if not complete:
            return None
        pick = min if self.study.direction.name == "MINIMIZE" else max
        return pick(complete, key=lambda t: t.value)

    def run(self, optuna) -> None:
        config = self.config
        if config.resume:
            self._restore_best()
        if not self._ran():
            self._defaults_trial(optuna)
        while True:
            done = len(self._ran())  # an interrupted trial does not count
            if config.trials is not None and done >= config.trials:
                self.stopped_by = f"--trials {config.trials} reached"
                return
            most_epochs = self._epochs_that_fit()
            if most_epochs < MIN_EPOCHS:
                self.stopped_by = f"the budget left could not fit a trial of {MIN_EPOCHS} epochs at the pace measured"
                return
            self._optuna_trial(optuna, most_epochs)

    # One trial: a finetune run with these settings, reported to the pruner after each epoch.
    def _train(self, number: int, params: dict, trial=None) -> tuple[dict, object]:
        config = self.config
        self.current = number
        directory = self.store / f"trial-{number}"
        shutil.rmtree(directory, ignore_errors=True)
        command = finetune_command(config, params)
        settings = {item.name: getattr(config, item.name) for item in fields(FinetuneConfig)}
        trial_config = FinetuneConfig(
            **{
                **settings,
                **params,
                "output": str(directory),
                "overwrite": True,
                "resume": False,
                "allow_changed_settings": False,
                "command": ["plm", *shlex.split(command)[1:]],
            }
        )
        from plmcli.tasks import for_finetune

        task = for_finetune(trial_config)
        watch = _watch(trial, config.metric, self.deadline)
        task.callbacks.append(watch)
        console.info(f"Trial {number}: {_describe(params)}")
        began = time.monotonic()
        try:
            with tracking(config.report_to, self.store / LOGS / f"trial-{number}"):
                result = execute(task)
        except Interrupted:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        seconds = time.monotonic() - began
        gc.collect()  # the trial's model, optimizer state and data go before the next trial
        if trial is None and watch.stopped:  # the defaults trial cut short: no model worth keeping, nothing to compare
            shutil.rmtree(self.store, ignore_errors=True)  # a study without a trial
            with contextlib.suppress(OSError):
                self.store.parent.rmdir()  # the output, when this run made it
            done, total = watch.steps
            raise PlmError(
                f"--budget {config.budget} ran out during the first trial (the defaults: {done} of {total} training "
                f"steps in {watch.training_seconds:.0f} s, so it needs about "
                f"{seconds + watch.training_seconds * (total / max(done, 1) - 1):.0f} s here); nothing was kept. "
                "Give a larger --budget."
            )
        rows = result.metrics["train"]["samples"]
        epochs_run = result.metrics["train"]["steps"] / max(math.ceil(rows / params["batch_size"]), 1)
        entry = {
            "number": number,
            "params": params,
            "values_per_epoch": watch.values,
            "value": _final(result.metrics, config.metric),
            "state": "PRUNED" if watch.stopped else "COMPLETE",
            "stopped_by": watch.stopped,
            "seconds": round(seconds, 1),
            "train_seconds": result.timing["runtime_seconds"],
            "train_rows": rows,
            "epochs_run": round(epochs_run, 2),
            "learning_rate": result.metrics["train"]["learning_rate"],
            "rss_mb": _rss_mb(),
            "command": command,
        }
        return entry, task

    def _defaults_trial(self, optuna) -> None:
        config = self.config
        params = {
            "lr": config.lr,
            "epochs": int(config.epochs) if float(config.epochs).is_integer() else config.epochs,
            "batch_size": config.batch_size,
            "warmup_ratio": config.warmup_ratio,
            "weight_decay": config.weight_decay,
            "max_length": config.max_length,
            **({"class_weights": config.class_weights} if self._single_label() else {}),
        }
        entry, task = self._train(0, params)
        entry["params"]["lr"] = entry["learning_rate"]
        self.study.set_user_attr("default_lr", entry["learning_rate"])
        self.study.set_user_attr("p99_length", _token_p99(task, self.store / "trial-0"))
        distributions = self._distributions(optuna)
        trial = optuna.trial.create_trial(
            params={**entry["params"], "epochs": max(1, round(entry["params"]["epochs"]))},
            distributions=distributions,
            value=entry["value"],
            intermediate_values=dict(enumerate(entry["values_per_epoch"], 1)),
            user_attrs={"entry": entry},
        )
        self.study.add_trial(trial)
        self._keep(entry)

    def _distributions(self, optuna) -> dict:
        config, attrs = self.config, self.study.user_attrs
        lr = attrs["default_lr"]
        lengths = sorted({min(config.max_length, attrs["p99_length"]), config.max_length})
        found = {
            "lr": optuna.distributions.FloatDistribution(lr / 2, lr * 4, log=True),
            "epochs": optuna.distributions.IntDistribution(MIN_EPOCHS, max(MAX_EPOCHS, math.ceil(config.epochs))),
            "batch_size": optuna.distributions.CategoricalDistribution(sorted({*BATCH_SIZES, config.batch_size})),
            "warmup_ratio": optuna.distributions.FloatDistribution(0.0, 0.2),
            "weight_decay": optuna.distributions.FloatDistribution(0.0, 0.1),
            "max_length": optuna.distributions.CategoricalDistribution(lengths),
        }
        if self._single_label():
            found["class_weights"] = optuna.distributions.CategoricalDistribution(["auto", "none"])
        return found

    def _optuna_trial(self, optuna, most_epochs: int) -> None:
        distributions = self._distributions(optuna)
        distributions["epochs"] = optuna.distributions.IntDistribution(
            MIN_EPOCHS, min(distributions["epochs"].high, most_epochs)
        )
        trial = self.study.ask(distributions)
        params = dict(trial.params)
        params["lr"] = float(f"{params['lr']:.3g}")  # what the reproducing command can say exactly
        params["warmup_ratio"] = round(params["warmup_ratio"], 3)
        params["weight_decay"] = round(params["weight_decay"], 3)
        try:
            entry, _ = self._train(trial.number, params, trial)
        except Interrupted:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        trial.set_user_attr("entry", entry)
        if entry["state"] == "PRUNED":
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            shutil.rmtree(self.store / f"trial-{trial.number}", ignore_errors=True)
            console.info(f"Trial {trial.number} pruned ({entry['stopped_by']}) after {entry['seconds']:.0f} s.")
        else:
            self.study.tell(trial, entry["value"])
            self._keep(entry)

    def _keep(self, entry: dict) -> None:
        """Keep the trial's model if it is the best so far, else remove it."""
        best = self.best()
        number = entry["number"]
        console.info(
            f"Trial {number}: {self.config.metric} {entry['value']:.4f} in {entry['seconds']:.0f} s"
            + (" (best so far)" if best.number == number else f"; best is trial {best.number}")
        )
        for directory in self.store.glob("trial-*"):
            if directory.name != f"trial-{best.number}":
                shutil.rmtree(directory, ignore_errors=True)

    def _restore_best(self) -> None:
        """--resume: the best trial's model was written to OUTPUT by the last run; bring it back beside the study."""
        best = self.best()
        if best is None or (self.store / f"trial-{best.number}").is_dir():
            return
        output = self.store.parent
        ignored = shutil.ignore_patterns(CHECKPOINTS, REPORT, PLOT, STUDY, LOGS)
        shutil.copytree(output, self.store / f"trial-{best.number}", ignore=ignored)
        if (output / LOGS).is_dir() and not (self.store / LOGS).exists():
            shutil.copytree(output / LOGS, self.store / LOGS)

    def _epochs_that_fit(self) -> int:
        """How many epochs the next trial may have and still end within the budget, at the slowest pace so far."""
        entries = [t.user_attrs["entry"] for t in self.study.trials if "entry" in t.user_attrs]
        paces = [e["train_seconds"] / (e["train_rows"] * e["epochs_run"]) for e in entries if e["epochs_run"] > 0]
        overheads = [max(e["seconds"] - e["train_seconds"], 0.0) for e in entries]
        if not paces:
            return MAX_EPOCHS
        left = self.deadline - time.monotonic() - max(overheads)
        rows = entries[0]["train_rows"]
        return min(MAX_EPOCHS, int(left / (max(paces) * rows)))

    def _single_label(self) -> bool:
        return self.config.task == "classification" and not self.config.multi_label

    def publish(self, claim) -> dict:
        """Write the best trial's model with tune.json, tuning.png and the study to the output, in one rename."""
        best = self.best()
        entries = [
            t.user_attrs.get("entry") | {"state": t.state.name}
            for t in self.study.trials
            if t.user_attrs.get("entry") is not None
        ]
        elapsed = time.monotonic() - self.started
        report = {
            "metric": self.config.metric,
            "direction": self.study.direction.name.lower(),
            "budget_seconds": self.config.budget_seconds,
            "elapsed_seconds": round(elapsed, 1),
            "stopped_because": self.stopped_by or "interrupted",
            "trials": entries,
            "completed": sum(e["state"] == "COMPLETE" for e in entries),
            "pruned": sum(e["state"] == "PRUNED" for e in entries),
            "best": {
                "number": best.number,
                "value": best.value,
                "params": best.user_attrs["entry"]["params"],
                "command": best.user_attrs["entry"]["command"],
                "defaults_value": entries[0]["value"] if entries and entries[0]["number"] == 0 else None,
            },
            "kept": "as trained: the model whose validation figure the search compared (no refit on more data)",
        }
        source = self.store / f"trial-{best.number}"
        with staged_dir(claim) as staging, writing(claim.path):
            for item in source.iterdir():
                if item.is_file():
                    shutil.copy2(item, staging / item.name)
            if (self.store / LOGS).is_dir():
                shutil.copytree(self.store / LOGS, staging / LOGS)
            shutil.copy2(self.store / STUDY, staging / STUDY)
            reporting.write_json(staging / REPORT, report)
            reporting.plot_tuning(staging / PLOT, entries, self.config.metric, report["direction"])
            _relist(staging / MANIFEST, self.config)
        return report


def _watch(trial, metric: str, deadline: Optional[float]):
    """A Trainer callback: the validation ``metric`` after each epoch, to the pruner; a stop at the deadline."""
    from transformers import TrainerCallback

    class Watch(TrainerCallback):
        def __init__(self) -> None:
            self.values: list[float] = []
            self.stopped = ""  # why the trial was stopped early, if it was
            self.steps = (0, 0)  # (done, planned) training steps
            self.began: Optional[float] = None
            self.training_seconds = 0.0

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(f"eval_{metric}")
            if value is None:
                return
            self.values.append(float(value))
            if trial is not None:
                trial.report(float(value), len(self.values))
                if trial.should_prune():
                    self.stopped = f"{metric} {value:.4f} after epoch {len(self.values)} is behind earlier trials"
                    control.should_training_stop = True

        def on_train_begin(self, args, state, control, **kwargs):
            self.began = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps = (state.global_step, state.max_steps)
            self.training_seconds = time.monotonic() - (self.began or time.monotonic())
            if deadline is not None and time.monotonic() > deadline:
                self.stopped = "the budget ran out"
                control.should_training_stop = True

    return Watch()


def _final(metrics: dict, metric: str) -> float:
    return float(metrics["validation"][metric])


def _rss_mb() -> float:
    """The process's resident memory now (after the trial's garbage is collected), in MB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _token_p99(task, directory: Path) -> int:
    """The 99th percentile of the training examples' token lengths (the task's), rounded up to a multiple of 8."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    return int(math.ceil(np.percentile(task.token_lengths(tokenizer), 99) / 8) * 8)


def _describe(params: dict) -> str:
    """'lr 0.0002, epochs 4, ...' (the learning rate None: finetune's default for the model's width)."""
    shown = {key: "default" if value is None else f"{value:g}" if isinstance(value, float) else value
             for key, value in params.items()}  # fmt: skip
    return ", ".join(f"{key} {value}" for key, value in shown.items())


# FinetuneConfig fields a reproduce command leaves out: where the run writes and how it is driven; with no
# --early-stopping, finetune's --metric decides nothing.
NOT_REPRODUCED = frozenset(
    {"data", "output", "overwrite", "resume", "allow_changed_settings", "save_steps", "report_to", "command"}
    | {"early_stopping", "metric"}
)


def finetune_command(config: TuneConfig, params: dict) -> str:
    """The `plm finetune` command that trains a trial's model again.

    Derived from FinetuneConfig's fields: each that differs from finetune's default (the data options,
    --device, --precision, ...), then the trial's ``params`` and the seed, always. It has no
    --output: finetune's default, or the user's choice (the tune's own output is taken).
    """
    from dataclasses import fields

    from plmcli.config import FinetuneConfig

    defaults = FinetuneConfig(data=config.data)
    parts = ["plm", "finetune", config.data]
    for item in fields(FinetuneConfig):
        name = item.name
        value = params[name] if name in params else getattr(config, name)
        shown = name in params or name == "seed" or value != getattr(defaults, name)
        if name in NOT_REPRODUCED or not shown or value is None or value is False:
            continue
        if (name == "validation_split" and config.validation) or (
            name == "label_separator" and not config.multi_label
        ):
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(parts)


def _relist(manifest: Path, config: TuneConfig) -> None:
    """The best trial's manifest, listing the files tune added beside the model and the tune command that made it."""
    content = json.loads(manifest.read_text(encoding="utf-8"))
    content["files"] = {
        item.name: {"bytes": item.stat().st_size, "sha256": reporting.file_digest(item)}
        for item in sorted(manifest.parent.iterdir())
        if item.is_file() and item != manifest
    }
    content["tuned_by"] = {"command": config.command, "budget": config.budget, "trials": config.trials}
    reporting.write_json(manifest, content)
