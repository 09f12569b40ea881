"""Fine-tuning a sequence classifier: single-label, multi-label (``--multi-label``) or on text pairs.

``SequenceTask`` is what every task on labelled text shares (regression builds on it too): the
labelled file read and split before any model loads, a sequence-classification head on the base
encoder, dynamic padding and length-grouped batches (each batch holds texts of similar length,
so little compute goes to padding), evaluation each epoch with early stopping on ``--metric``,
and the validation set predicted at the end. ``ClassificationTask`` adds labels: class weights
for imbalance, per-class metrics, tuned multi-label thresholds, a confusion matrix, and whether
predict may run the model in bf16.
"""

from dataclasses import fields
from itertools import chain
from pathlib import Path
from typing import Optional

import numpy as np

from plmcli import console, data, modeling, reporting, textfiles
from plmcli.config import default_learning_rate
from plmcli.errors import RUNTIME_FAILURE, PlmError
from plmcli.inference import scores
from plmcli.settings import ModelSettings
from plmcli.tasks.base import Built, Finished, Task

MULTI_LABEL_CONFUSION = " (multi-label: rows with each true label, by predicted label)"


class SequenceTask(Task):
    """A text (or text-pair) model with a sequence-level head, trained on a labelled file."""

    problem_type = "single_label_classification"

    def inputs(self) -> tuple[str, ...]:
        return tuple(item for item in (self.config.data, self.config.validation) if item)

    def read(self) -> None:
        config = self.config
        self.labelled = self.load_data()
        self.lineage_step = f"finetune on {config.data}"
        columns = self.labelled.columns
        pair = f", pair column '{columns.pair}'" if columns.pair else ""
        console.info(
            f"Data: {len(self.labelled.train_texts)} training and {len(self.labelled.validation_texts)} validation "
            f"rows; text column '{columns.text}'{pair}, {self.describe_targets()}"
        )
        if self.labelled.dropped_rows:
            console.warn(f"--drop-invalid: skipped {self.labelled.dropped_rows} rows with an empty text or label.")

    def load_data(self) -> data.ClassificationData:
        raise NotImplementedError

    def texts(self):
        return self.config.data, chain(self.labelled.train_texts, self.labelled.train_pairs or ())

    def describe_targets(self) -> str:
        raise NotImplementedError

    def head_names(self) -> list[str]:
        """The names of the head's outputs (id2label)."""
        return self.labelled.label_names

    def targets(self, labels: list) -> list:
        """What the loss compares the model's outputs with, for the labels of ``labelled``."""
        return labels

    def build(self, source, device: str, precision: str, resume_from: Optional[Path]) -> Built:
        config, labelled = self.config, self.labelled
        self.resume_from = resume_from
        tokenizer = modeling.load_tokenizer(source)
        model, new_weights = modeling.load_for_classification(source, self.head_names(), self.problem_type)
        if new_weights:
            console.info(new_weights)
        max_length = min(config.max_length, modeling.model_limit(tokenizer, model))
        if max_length < config.max_length:
            console.warn(f"--max-length {config.max_length} is more than {source.name} takes; using {max_length}.")
        lr = config.lr or default_learning_rate(model.config.hidden_size)
        console.info(
            f"Model: {source.name} with a new {self.head_description()}; "
            f"{device}, {precision}, learning rate {lr:g}{'' if config.lr else ' (default for its width)'}."
        )
        segment_ids = modeling.reads_segment_ids(model)
        if labelled.columns.pair and not segment_ids:
            console.info(
                f"{type(model).__name__} has no segment ids (token_type_ids): it tells the two texts of a pair "
                "apart by the separator tokens between them."
            )
        train_set, train_truncated = data.tokenize(
            labelled.train_texts,
            self.targets(labelled.train_labels),
            tokenizer,
            max_length,
            labelled.train_pairs,
            segment_ids,
        )
        validation_set, validation_truncated = data.tokenize(
            labelled.validation_texts,
            self.targets(labelled.validation_labels),
            tokenizer,
            max_length,
            labelled.validation_pairs,
            segment_ids,
        )
        self.truncated = {"train": train_truncated, "validation": validation_truncated}
        if train_truncated or validation_truncated:
            what = "pairs" if labelled.columns.pair else "texts"
            self.notes.append(
                f"{train_truncated + validation_truncated} {what} were longer than {max_length} tokens and were "
                f"truncated ({train_truncated} in training, {validation_truncated} in validation)."
            )
            console.warn(self.notes[-1])
        from transformers import DataCollatorWithPadding, EarlyStoppingCallback

        columns = labelled.columns
        return Built(
            model=model,
            tokenizer=tokenizer,
            train_set=train_set,
            eval_set=validation_set,
            collator=DataCollatorWithPadding(tokenizer),
            lr=lr,
            max_length=max_length,
            base_name=source.name,
            lineage=modeling.lineage(source),
            resolved={
                **self.resolved_data(source),
                "text_column": columns.text,
                "text_pair_column": columns.pair,
                "label_column": columns.label,
                **self.resolved_targets(),
            },
            compute_metrics=self.trainer_metrics(),
            compute_loss_func=self.loss_function(),
            callbacks=[EarlyStoppingCallback(config.early_stopping)] if config.early_stopping else [],
            arguments=self.training_arguments(),
        )

    def head_description(self) -> str:
        raise NotImplementedError

    def token_lengths(self, tokenizer) -> list[int]:
        """Each training example's length in tokens, untruncated (pairs together), for plm tune's --max-length."""
        texts, pairs = self.labelled.train_texts, self.labelled.train_pairs
        encoded = tokenizer(texts, pairs, truncation=False) if pairs else tokenizer(texts, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def resolved_data(self, source) -> dict:
        """What the run read (the data files' sha256, the split, the base model, the metric), compared on --resume."""
        config = self.config
        return {
            "data_sha256": _digest(config.data),
            "validation_sha256": _digest(config.validation) if config.validation else None,
            "validation_split": None if config.validation else config.validation_split,
            "model": source.name,
            "metric": config.metric if config.early_stopping else None,
        }

    def resolved_targets(self) -> dict:
        """What the run decided about the targets, compared on --resume."""
        return {}

    def trainer_metrics(self):
        raise NotImplementedError

    def loss_function(self):
        """A Trainer ``compute_loss_func``, or None for the model's own loss."""
        return None

    def training_arguments(self) -> dict:
        """Evaluation each epoch (and with early stopping, checkpoints with it and the best model kept)."""
        config = self.config
        stopping = config.early_stopping is not None
        checkpointing = (
            {
                "save_strategy": "epoch",  # with each evaluation: the best model is loaded back at the end
                "load_best_model_at_end": True,
                "metric_for_best_model": config.metric,
                "greater_is_better": config.metric not in ("loss", "mse", "rmse", "mae"),
            }
            if stopping
            else {}
        )
        return {
            "eval_strategy": "epoch" if config.epochs > 1 or stopping else "no",  # the final evaluation always runs
            **checkpointing,
            "train_sampling_strategy": "group_by_length",  # batches of similar lengths: little padding
            "average_tokens_across_devices": False,  # a weighted loss is a batch mean, not a sum over tokens
            "restore_callback_states_from_checkpoint": True,  # early stopping's patience survives a --resume
        }

    def finish(self, trainer, train_output, built: Built, device: str, precision: str) -> Finished:
        config = self.config
        prediction = trainer.predict(built.eval_set)  # on every rank: it gathers across them
        outputs, references = prediction.predictions, prediction.label_ids  # in predict's (length-grouped) order
        if not np.isfinite(outputs).all():
            raise PlmError(
                "the trained model gives NaN or infinite outputs on the validation set: training diverged. "
                f"Try a lower --lr (this run used {built.lr:g}).",
                RUNTIME_FAILURE,
            )
        report, model_settings = self.report(outputs, references, trainer, built, device, precision)
        warning = reporting.baseline_warning(report)
        if warning:
            self.notes.append(warning)
        columns = self.labelled.columns
        known = {item.name for item in fields(ModelSettings)}
        model_settings = ModelSettings(
            task=self.task_name(),
            text_column=columns.text,
            text_pair_column=columns.pair,
            label_column=columns.label,
            max_length=built.max_length,
            **{key: value for key, value in model_settings.items() if key in known and key != "task"},
        ).to_dict()
        metrics = {
            "validation": {"loss": float(prediction.metrics["test_loss"]), **report},
            "train": {
                "loss": trainer.plm_training_loss,
                "resumed_from": str(self.resume_from) if self.resume_from else None,
                "samples": len(built.train_set),
                "epochs": config.epochs,
                "learning_rate": built.lr,
                "batch_size": config.batch_size,
                "steps": train_output.global_step,
            },
            "validation_samples": len(built.eval_set),
            "task": self.task_name(),
            "columns": {"text": columns.text, "pair": columns.pair, "label": columns.label},
            **self.target_metrics(),
            "max_length": built.max_length,
            "truncated_texts": self.truncated,
        }
        if config.early_stopping:
            metrics["early_stopping"] = self.early_stopping_report(trainer.state)
        timing = {
            "runtime_seconds": round(train_output.metrics["train_runtime"], 2),
            "samples_per_second": round(train_output.metrics["train_samples_per_second"], 2),
        }
        resolved = {**model_settings, **self.resolved_targets()}  # manifest.json: labels or the target's scale
        return Finished(metrics=metrics, timing=timing, model_settings=model_settings, resolved=resolved)

    def report(self, outputs, references, trainer, built: Built, device: str, precision: str) -> tuple[dict, dict]:
        """The validation report from the outputs (rows, head outputs) and references, and config.json's settings.

        The rows come in the Trainer's evaluation order (length-grouped), not the validation set's.
        """
        raise NotImplementedError

    def task_name(self) -> str:
        raise NotImplementedError

    def target_metrics(self) -> dict:
        """What metrics.json says about the targets (labels and class weights, or the target's scale)."""
        return {}

    def early_stopping_report(self, state) -> dict:
        config = self.config
        best_step = state.best_global_step or state.global_step
        from plmcli.training import EVALUATION_FIGURES

        self.notes.append(
            f"Early stopping: the best {config.metric} ({state.best_metric:.4f}) came at step {best_step}; "
            + (
                f"training stopped at step {state.global_step} of {state.max_steps}."
                if state.global_step < state.max_steps
                else f"training ran all {state.max_steps} steps."
            )
            + " The model saved is the best one."
        )
        return {
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

    def plot_loss(self, staging: Path, trainer, metrics: dict) -> None:
        stopping = metrics.get("early_stopping")
        reporting.plot_loss_curve(
            staging / "loss_curve.png",
            trainer.state.log_history,
            metrics["validation"]["loss"],
            stopping["best_step"] if stopping else metrics["train"]["steps"],
            best_step=stopping["best_step"] if stopping else None,
        )


class ClassificationTask(SequenceTask):
    """A classifier over the user's label names (softmax, or a sigmoid per label with --multi-label)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.problem_type = "multi_label_classification" if config.multi_label else "single_label_classification"

    def load_data(self) -> data.ClassificationData:
        config = self.config
        return data.load_classification(
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

    def describe_targets(self) -> str:
        labelled = self.labelled
        names = labelled.label_names
        kind = " (multi-label)" if labelled.multi_label else ""
        return (
            f"label column '{labelled.columns.label}'; {len(names)} labels{kind}: "
            f"{', '.join(console.printable(name) for name in names[:10])}"
            f"{' ...' if len(names) > 10 else ''}"
        )

    def targets(self, labels: list) -> list:
        labelled = self.labelled
        return data.multi_hot(labels, len(labelled.label_names)) if labelled.multi_label else labels

    def head_description(self) -> str:
        return f"{len(self.labelled.label_names)}-label classification head"

    def resolved_targets(self) -> dict:
        return {"labels": self.labelled.label_names, "multi_label": self.labelled.multi_label}

    def trainer_metrics(self):
        from plmcli import metrics as scoring

        return scoring.trainer_metrics(self.labelled.label_names, self.labelled.multi_label)

    def loss_function(self):
        self.weighting = class_weighting(self.config.class_weights, self.labelled)
        weights = self.weighting["weights"]
        if not weights:
            return None
        console.info(
            f"Class weights ({self.weighting['reason']}): "
            + ", ".join(f"{name} {weight:.2f}" for name, weight in weights.items())
        )
        return weighted_cross_entropy(list(weights.values()))

    def report(self, outputs, references, trainer, built: Built, device: str, precision: str) -> tuple[dict, dict]:
        from plmcli import metrics as scoring

        labelled = self.labelled
        names = labelled.label_names
        settings = {"multi_label": labelled.multi_label}
        if labelled.multi_label:
            probabilities = scores(outputs, multi_label=True)
            references = references.astype(np.int8)
            thresholds = scoring.tune_thresholds(probabilities, references)
            at_half = scoring.report_at_thresholds(probabilities, references, names, 0.5)
            report = scoring.report_at_thresholds(probabilities, references, names, thresholds)
            report["at_threshold_0.5"] = {key: at_half[key] for key in scoring.HEADLINE[True]}
            settings.update(label_separator=labelled.label_separator, thresholds=thresholds)
        else:
            report = scoring.classification_report(outputs.argmax(-1), references, names)
            counts = np.bincount(references, minlength=len(names))  # what always answering one label scores
            report["majority_baseline"] = {
                "label": names[int(counts.argmax())],
                "accuracy": round(float(counts.max() / counts.sum()), 4),
            }
            report["calibration"], calibrator = self.calibrate(outputs, references)
            settings["temperature"] = calibrator.temperature
            if calibrator.top_score_map is not None:
                settings["top_score_map"] = calibrator.top_score_map
        self.precision_check = None
        if precision in ("bf16", "fp16"):
            model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # no autocast
            check = reduced_precision_check(
                model,
                built.tokenizer,
                built.eval_set,
                built.eval_set["labels"],  # in row order, as batched_logits returns its logits
                precision,
                device,
                self.config.batch_size * 2,
                settings.get("thresholds"),
            )
            settings["inference_precision"] = check["inference_precision"]
            console.info(
                f"Validation labels in {precision}: {check['label_agreement_with_fp32']:.2%} the same as in "
                f"fp32; on a CPU, predict and evaluate with --precision auto will run it in "
                f"{check['inference_precision']}."
            )
            self.precision_check = check
        return report, settings

    def calibrate(self, logits: np.ndarray, references: np.ndarray) -> tuple[dict, object]:
        """The calibration fitted on the validation logits (--calibration none: raw softmax) and its report.

        The figures after are measured on the rows it was fitted on, so they are optimistic: plm
        evaluate on other data gives the honest figure.
        """
        from plmcli import calibration

        method = self.config.calibration
        # With every validation row right, the NLL falls forever as T shrinks: nothing to fit, scores stay raw.
        errors = int((logits.argmax(-1) != references).sum())
        fitted = method != "none" and errors > 0
        if method != "none" and not errors:
            self.notes.append(
                "Scores are not calibrated: every validation row is right, so no temperature can be fitted "
                "(a larger or harder validation set can)."
            )
        temperature = calibration.fit_temperature(logits, references) if fitted else 1.0
        top_score_map = None
        if fitted and method == "beta":
            if min(errors, len(references) - errors) >= calibration.MIN_BETA_ROWS:
                top_score_map = calibration.fit_beta(calibration.softmax(logits, temperature), references)
            else:
                self.notes.append(
                    f"Scores are calibrated by the temperature alone: a top-score map needs at least "
                    f"{calibration.MIN_BETA_ROWS} right and {calibration.MIN_BETA_ROWS} wrong validation rows "
                    f"(there are {len(references) - errors} and {errors})."
                )
        calibrator = calibration.Calibrator(temperature, top_score_map)
        before, after = calibration.softmax(logits), calibrator(logits)
        self.reliability = (before, after, references)  # for reliability.png
        return {
            "method": method,
            **calibrator.describe(),
            "before": calibration.report(before, references),
            "after": calibration.report(after, references),
            "fitted_on": "the validation rows these figures are measured on (optimistic)" if fitted else None,
            "validation_errors": errors,
        }, calibrator

    def task_name(self) -> str:
        return "multi-label" if self.labelled.multi_label else "single-label"

    def target_metrics(self) -> dict:
        return {
            "labels": self.labelled.label_names,
            "class_weights": self.weighting,
            "inference_precision": self.precision_check,
        }

    def write(self, staging: Path, trainer, built: Built, metrics: dict, timing: dict) -> None:
        labelled = self.labelled
        reporting.write_finetune_card(staging, self.config, built.base_name, labelled, metrics, timing)
        self.plot_loss(staging, trainer, metrics)
        reporting.plot_confusion_matrix(
            staging / "confusion_matrix.png",
            metrics["validation"]["confusion_matrix"],
            labelled.label_names,
            "validation set" + (MULTI_LABEL_CONFUSION if labelled.multi_label else ""),
            [*labelled.label_names, "(none)"] if labelled.multi_label else None,
        )
        if not labelled.multi_label:
            reporting.plot_reliability(staging / "reliability.png", *self.reliability, "validation set")


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
    for multi-label, each label at its tuned threshold) is at most half a point lower. ``references``
    are in the validation set's row order, as ``batched_logits`` returns logits. Returns the choice
    and the evidence.
    """
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
    return textfiles.read_digest(Path(path))[1] if Path(path).is_file() else path


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
