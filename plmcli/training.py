"""Config -> TrainingArguments + Trainer: fine-tuning a sequence classifier.

Everything a user can get wrong (files, columns, labels, the model, the output directory) is
checked before the first weight is loaded or the first file written. Training runs in the
HF Trainer with dynamic padding and length-grouped batches (each batch holds texts of similar
length, so little compute goes to padding); the model is written to a staging directory and
renamed into place when complete.
"""

import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from plmcli import checkpoints, console, data, interrupts, modeling, reporting, speed
from plmcli.config import FinetuneConfig, default_learning_rate
from plmcli.config import resume_settings as config_resume_settings
from plmcli.errors import Interrupted
from plmcli.inference import scores
from plmcli.outputs import check_output_dir, staged_dir, writing


@dataclass
class FinetuneResult:
    """What a finetune run produced: where the model is and what metrics.json says about it."""

    output: Path
    metrics: dict  # metrics.json's content: the same for the same seed and data
    timing: dict  # runtime_seconds, samples_per_second (in manifest.json)
    notes: list[str] = field(default_factory=list)  # what the summary should point out


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


MULTI_LABEL_CONFUSION = " (multi-label: rows with each true label, by predicted label)"
EVALUATION_FIGURES = ("accuracy", "micro_f1", "macro_f1", "weighted_f1", "subset_accuracy", "loss")


def train(command: list[str], resume_from=None, settings=None, state=None, callbacks=(), **trainer_arguments):
    """Build plm's Trainer, train (from ``resume_from``, a checkpoint, if given), and return both.

    The Trainer shows plm's progress bar instead of printed log dicts, writes checkpoints that plm
    completes with a manifest (holding ``settings`` and ``state``), and on the first SIGINT / SIGTERM
    saves a checkpoint at the end of the step and raises Interrupted with the command that resumes.
    """
    from safetensors import SafetensorError
    from transformers import PrinterCallback

    args = trainer_arguments["args"]
    run_dir = Path(args.output_dir)
    created = [path for path in (run_dir, run_dir.parent) if not path.exists()]
    resumed = checkpoints.read_manifest(resume_from) if resume_from else {"step": 0, "state": {}}
    saving = checkpoints.checkpoint_callback(settings or {}, state or {}, resumed["state"].get("loss_sum", 0.0))
    progress, stopper = progress_callback(), checkpoints.stop_on_signal()
    memory = speed.memory_callback()  # on CPU, where freed memory is kept for reuse
    seeding = checkpoints.seed_each_epoch(args.data_seed if args.data_seed is not None else args.seed)
    callbacks = [progress, stopper, saving, seeding, *callbacks, *([memory] if memory else [])]
    trainer = checkpoints.trainer_class()(**trainer_arguments, callbacks=callbacks)
    trainer.plm_checkpoints = saving
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


def training_arguments(config: FinetuneConfig, output_dir: Path, device: str, precision: str, lr: float):
    """The Trainer's arguments for a fine-tuning run.

    Checkpoints (for --resume) go to ``output_dir`` every ``config.save_steps`` steps; with early
    stopping, every epoch after its evaluation instead, and the best is loaded back at the end.
    """
    from transformers import TrainingArguments

    stopping = config.early_stopping is not None
    checkpointing = (
        {
            "save_strategy": "epoch",  # with each evaluation: the best model is loaded back at the end
            "load_best_model_at_end": True,
            "metric_for_best_model": config.metric,
            "greater_is_better": config.metric != "loss",
        }
        if stopping
        else {"save_strategy": "steps", "save_steps": config.save_steps}
    )
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        learning_rate=lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the total steps
        lr_scheduler_type="linear",
        num_train_epochs=config.epochs,
        eval_strategy="epoch" if config.epochs > 1 or stopping else "no",  # the final evaluation always runs
        **checkpointing,
        logging_strategy="steps",
        logging_steps=0.05,  # a loss point every 5% of training
        train_sampling_strategy="group_by_length",  # batches of similar lengths: little padding
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        disable_tqdm=True,  # plm's own progress bar replaces the printed log dicts
        average_tokens_across_devices=False,  # a class-weighted loss is a batch mean, not a sum over tokens
        restore_callback_states_from_checkpoint=True,  # early stopping's patience survives a --resume
        report_to="none",
    )


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Fine-tune a sequence classifier on a labelled file and write it to ``config.output``."""
    source = modeling.resolve(config.model, config.allow_pickle)
    inputs = tuple(item for item in (config.data, config.validation) if item)
    output = check_output_dir(
        config.output, config.overwrite, inputs + ((source.location,) if source.local else ()), resume=config.resume
    )
    resume_from = checkpoints.newest_complete(checkpoints.run_dir(output), config.output) if config.resume else None
    labelled = data.load_classification(
        config.data,
        config.validation,
        config.validation_split,
        config.seed,
        config.text_column,
        config.label_column,
        config.max_train_samples,
        config.text_pair_column,
        config.multi_label,
        config.label_separator,
        config.encoding,
        config.drop_invalid,
    )
    columns = labelled.columns
    pair = f", pair column '{columns.pair}'" if columns.pair else ""
    kind = " (multi-label)" if labelled.multi_label else ""
    console.info(
        f"Data: {len(labelled.train_texts)} training and {len(labelled.validation_texts)} validation rows; "
        f"text column '{columns.text}'{pair}, label column '{columns.label}'; "
        f"{len(labelled.label_names)} labels{kind}: {', '.join(labelled.label_names[:10])}"
        f"{' ...' if len(labelled.label_names) > 10 else ''}"
    )
    if labelled.dropped_rows:
        console.warn(f"--drop-invalid: skipped {labelled.dropped_rows} rows with an empty text or label.")
    device = modeling.choose_device(config.device)
    precision, precision_reason = checkpoints.resumed_precision(
        resume_from, config.precision, modeling.training_precision(config.precision, device)
    )

    modeling.quiet_libraries(with_datasets=True)
    import numpy as np
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, set_seed

    from plmcli import metrics as scoring

    tokenizer = modeling.load_tokenizer(source)
    set_seed(config.seed)  # the new head's initial weights come from this seed too
    model, new_weights = modeling.load_for_classification(source, labelled.label_names, labelled.multi_label)
    if new_weights:
        console.info(new_weights)
    speed.score_first_token_only(model)
    if device == "cpu":
        speed.for_cpu_training(model)
    max_length = min(config.max_length, modeling.model_limit(tokenizer, model))
    if max_length < config.max_length:
        console.warn(f"--max-length {config.max_length} is more than {source.name} takes; using {max_length}.")
    lr = config.lr or default_learning_rate(model.config.hidden_size)
    console.info(
        f"Model: {source.name} with a new {len(labelled.label_names)}-label classification head; "
        f"{device}, {precision}, learning rate {lr:g}{'' if config.lr else ' (default for its width)'}."
    )
    weighting = class_weighting(config.class_weights, labelled)
    if weighting["weights"]:
        console.info(
            f"Class weights ({weighting['reason']}): "
            + ", ".join(f"{name} {weight:.2f}" for name, weight in weighting["weights"].items())
        )

    def targets(labels: list) -> list:
        return data.multi_hot(labels, len(labelled.label_names)) if labelled.multi_label else labels

    train_set, train_truncated = data.tokenize(
        labelled.train_texts, targets(labelled.train_labels), tokenizer, max_length, labelled.train_pairs
    )
    validation_set, validation_truncated = data.tokenize(
        labelled.validation_texts,
        targets(labelled.validation_labels),
        tokenizer,
        max_length,
        labelled.validation_pairs,
    )
    notes = []
    if train_truncated or validation_truncated:
        what = "pairs" if columns.pair else "texts"
        notes.append(
            f"{train_truncated + validation_truncated} {what} were longer than {max_length} tokens and were truncated "
            f"({train_truncated} in training, {validation_truncated} in validation)."
        )
        console.warn(notes[-1])

    resume_settings = config_resume_settings(
        config,
        data_sha256=_digest(config.data),
        validation_sha256=_digest(config.validation) if config.validation else None,
        validation_split=None if config.validation else config.validation_split,
        text_column=columns.text,
        text_pair_column=columns.pair,
        label_column=columns.label,
        labels=labelled.label_names,
        multi_label=labelled.multi_label,
        model=source.name,
        max_length=max_length,
        lr=lr,
        metric=config.metric if config.early_stopping else None,
        precision=precision,
        processes=console.world_size(),
    )
    run = checkpoints.run_dir(output)
    if resume_from is not None:
        checkpoints.start_from(resume_from, config, resume_settings)
    else:
        checkpoints.clear(run)

    with staged_dir(output) as staging:
        weights = weighting["weights"]
        trainer, train_output = train(
            config.command,
            resume_from=resume_from,
            settings=resume_settings,
            callbacks=[EarlyStoppingCallback(config.early_stopping)] if config.early_stopping else [],
            model=model,
            args=training_arguments(config, run, device, precision, lr),
            train_dataset=train_set,
            eval_dataset=validation_set,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            compute_metrics=scoring.trainer_metrics(labelled.label_names, labelled.multi_label),
            compute_loss_func=weighted_cross_entropy(list(weights.values())) if weights else None,
        )
        prediction = trainer.predict(validation_set)  # on every rank: it gathers across them
        speed.standard(model)
        timing = {
            "runtime_seconds": round(train_output.metrics["train_runtime"], 2),
            "samples_per_second": round(train_output.metrics["train_samples_per_second"], 2),
        }
        settings = {
            "text_column": columns.text,
            "text_pair_column": columns.pair,
            "label_column": columns.label,
            "multi_label": labelled.multi_label,
        }
        if labelled.multi_label:
            probabilities = scores(prediction.predictions, multi_label=True)
            references = prediction.label_ids.astype(np.int8)
            thresholds = scoring.tune_thresholds(probabilities, references)
            at_half = scoring.report_at_thresholds(probabilities, references, labelled.label_names, 0.5)
            report = scoring.report_at_thresholds(probabilities, references, labelled.label_names, thresholds)
            report["at_threshold_0.5"] = {key: at_half[key] for key in scoring.HEADLINE[True]}
            settings.update(label_separator=labelled.label_separator, thresholds=thresholds)
        else:
            report = scoring.classification_report(
                prediction.predictions.argmax(-1), prediction.label_ids, labelled.label_names
            )
        precision_check = None
        if precision in ("bf16", "fp16"):
            model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # no autocast
            precision_check = reduced_precision_check(
                model,
                tokenizer,
                validation_set,
                validation_set["labels"],  # in row order, as batched_logits returns: predict's may be length-grouped
                precision,
                device,
                config.batch_size * 2,
                settings.get("thresholds"),
            )
            settings["inference_precision"] = precision_check["inference_precision"]
            console.info(
                f"Validation labels in {precision}: {precision_check['label_agreement_with_fp32']:.2%} the same as in "
                f"fp32; on a CPU, predict and evaluate with --precision auto will run it in "
                f"{precision_check['inference_precision']}."
            )
        model.config.plm = settings  # how plm predict and evaluate read data for this model
        state = trainer.state
        metrics = {
            "validation": {"loss": float(prediction.metrics["test_loss"]), **report},
            "train": {
                "loss": trainer.plm_training_loss,
                "resumed_from": str(resume_from) if resume_from else None,
                "samples": len(train_set),
                "epochs": config.epochs,
                "learning_rate": lr,
                "batch_size": config.batch_size,
                "steps": train_output.global_step,
            },
            "validation_samples": len(validation_set),
            "task": "multi-label" if labelled.multi_label else "single-label",
            "columns": {"text": columns.text, "pair": columns.pair, "label": columns.label},
            "labels": labelled.label_names,
            "class_weights": weighting,
            "max_length": max_length,
            "truncated_texts": {"train": train_truncated, "validation": validation_truncated},
            "device": device,
            "precision": precision,
            "precision_reason": precision_reason,
            "inference_precision": precision_check,
            "world_size": trainer.args.world_size,
            "effective_batch_size": config.batch_size * trainer.args.world_size,
            "lineage": [*modeling.lineage(source), f"finetune on {config.data} -> {config.output}"],
        }
        if config.early_stopping:
            best_step = state.best_global_step or state.global_step
            metrics["early_stopping"] = {
                "patience": config.early_stopping,
                "metric": config.metric,
                "best_step": best_step,
                "best_value": state.best_metric,
                "last_step": state.global_step,
                "planned_steps": state.max_steps,
                "stopped_early": state.global_step < state.max_steps,
                "evaluations": [
                    {"step": entry["step"]}
                    | {k[5:]: v for k, v in entry.items() if k.startswith("eval_") and k[5:] in EVALUATION_FIGURES}
                    for entry in state.log_history
                    if "eval_loss" in entry
                ],
            }
            notes.append(
                f"Early stopping: the best {config.metric} ({state.best_metric:.4f}) came at step {best_step}; "
                + (
                    f"training stopped at step {state.global_step} of {state.max_steps}."
                    if state.global_step < state.max_steps
                    else f"training ran all {state.max_steps} steps."
                )
                + " The model saved is the best one."
            )
        if console.is_main_process():  # one writer under torchrun / accelerate
            with writing(output):  # a full disk leaves what was there as it was
                model.save_pretrained(staging)
                tokenizer.save_pretrained(staging)
                reporting.write_json(staging / "metrics.json", metrics)
                reporting.write_finetune_card(staging, config, source.name, labelled, metrics, timing)
                reporting.plot_loss_curve(
                    staging / "loss_curve.png",
                    trainer.state.log_history,
                    metrics["validation"]["loss"],
                    metrics["early_stopping"]["best_step"] if config.early_stopping else train_output.global_step,
                    best_step=metrics["early_stopping"]["best_step"] if config.early_stopping else None,
                )
                reporting.plot_confusion_matrix(
                    staging / "confusion_matrix.png",
                    report["confusion_matrix"],
                    labelled.label_names,
                    "validation set" + (MULTI_LABEL_CONFUSION if labelled.multi_label else ""),
                    [*labelled.label_names, "(none)"] if labelled.multi_label else None,
                )
                reporting.write_manifest(  # last: it records every file written before it
                    staging / "manifest.json",
                    config,
                    {
                        **settings,
                        "labels": labelled.label_names,
                        "learning_rate": lr,
                        "max_length": max_length,
                        "device": device,
                        "precision": precision,
                        "class_weights": weighting["weights"],
                        "base_model": source.name,
                    },
                    [path for path in (config.data, config.validation) if path]
                    + ([source.location] if source.local else []),
                    timing,
                )
    return FinetuneResult(output=output, metrics=metrics, timing=timing, notes=notes)


def reduced_precision_check(
    model,
    tokenizer,
    validation_set,
    references,
    precision: str,
    device: str,
    batch_size: int,
    thresholds: Optional[list[float]] = None,
) -> dict:
    """May predict run this model in ``precision`` (bf16 or fp16)? Its validation labels against fp32's.

    It may where at least 99.5% of the labels are the same as fp32's and accuracy (exact-set accuracy
    for multi-label, each label at its tuned threshold) is at most half a point lower. Returns the
    choice and the evidence.
    """
    import numpy as np

    from plmcli.inference import batched_logits

    types = validation_set["token_type_ids"] if "token_type_ids" in validation_set.column_names else None
    inputs = (validation_set["input_ids"], types, tokenizer, model, batch_size, device)
    multi_label = model.config.problem_type == "multi_label_classification"
    references = np.asarray(references)

    def labels(logits: np.ndarray) -> np.ndarray:
        if multi_label:
            return (scores(logits, multi_label=True) >= np.asarray(thresholds or 0.5)).astype(np.int8)
        return logits.argmax(-1)

    def accuracy(predicted: np.ndarray) -> float:
        right = (predicted == references).all(-1) if multi_label else predicted == references
        return round(float(right.mean()), 4)

    reduced, full = labels(batched_logits(*inputs, precision)), labels(batched_logits(*inputs, "fp32"))
    same = (reduced == full).all(-1) if multi_label else reduced == full
    agreement = float(same.mean())
    accuracies = {precision: accuracy(reduced), "fp32": accuracy(full)}
    safe = agreement >= 0.995 and accuracies[precision] >= accuracies["fp32"] - 0.005
    return {
        "inference_precision": precision if safe else "fp32",
        "label_agreement_with_fp32": round(agreement, 4),
        "accuracy": accuracies,
        "rows": len(references),
    }


def _digest(path: str) -> str:
    """A data file's sha256 (what --resume compares); a name that is not a file stands for itself."""
    return reporting.file_digest(Path(path)) if Path(path).is_file() else path


IMBALANCE = 3.0  # --class-weights auto: weigh the loss when the largest class has more than 3x the smallest's rows


def class_weighting(mode: str, labelled) -> dict:
    """What --class-weights decides: {mode, weights: {label: weight} or None, counts, reason}.

    Weights are n / (classes x count), scikit-learn's "balanced": a class's rows weigh in inverse
    proportion to its frequency, and the weighted average over the training rows is 1.
    """
    names = labelled.label_names
    if labelled.multi_label:
        counts = [sum(i in row for row in labelled.train_labels) for i in range(len(names))]
        reason = "multi-label: each label's decision threshold is tuned on the validation set instead"
        return {"mode": mode, "weights": None, "counts": dict(zip(names, counts)), "reason": reason}
    counts = [0] * len(names)
    for label in labelled.train_labels:
        counts[label] += 1
    ratio = max(counts) / min(counts)
    if mode == "none":
        reason = "--class-weights none"
    elif ratio <= IMBALANCE:
        reason = (
            f"the largest class has {ratio:.1f}x the rows of the smallest, at most {IMBALANCE:g}x: balanced enough"
        )
    else:
        total = len(labelled.train_labels)
        weights = {name: total / (len(names) * count) for name, count in zip(names, counts)}
        reason = f"the largest class has {ratio:.1f}x the rows of the smallest"
        return {"mode": mode, "weights": weights, "counts": dict(zip(names, counts)), "reason": reason}
    return {"mode": mode, "weights": None, "counts": dict(zip(names, counts)), "reason": reason}


def weighted_cross_entropy(weights: list[float]):
    """A Trainer ``compute_loss_func``: cross-entropy with a weight per class (the weighted mean over the batch)."""
    import torch

    table = torch.tensor(weights, dtype=torch.float32)

    def compute_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        return torch.nn.functional.cross_entropy(logits.float(), labels, weight=table.to(logits.device))

    return compute_loss
