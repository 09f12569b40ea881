"""Config -> TrainingArguments + Trainer: fine-tuning a sequence classifier.

Everything a user can get wrong (files, columns, labels, the model, the output directory) is
checked before the first weight is loaded or the first file written. Training runs in the
HF Trainer with dynamic padding and length-grouped batches (each batch holds texts of similar
length, so little compute goes to padding); the model is written to a staging directory and
renamed into place when complete.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from plmcli import console, data, modeling, reporting, speed
from plmcli.config import FinetuneConfig, default_learning_rate
from plmcli.outputs import check_output_dir, staged_dir


@dataclass
class FinetuneResult:
    """What a finetune run produced: where the model is and what metrics.json says about it."""

    output: Path
    metrics: dict  # metrics.json's content
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
            if self.bar is not None and logs and "eval_accuracy" in logs:
                self.bar.write(
                    f"epoch {logs.get('epoch', 0):.0f}: validation accuracy {logs['eval_accuracy']:.4f}, "
                    f"macro-F1 {logs['eval_macro_f1']:.4f}, loss {logs['eval_loss']:.4f}"
                )

        def on_train_end(self, args, state, control, **kwargs):
            self.close()

        def close(self):
            """End the bar's line, also when training stops on an error or a signal."""
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return ProgressBar()


def train(**trainer_arguments):
    """Build a Trainer with plm's progress bar instead of printed log dicts, train, and return both."""
    from transformers import PrinterCallback, Trainer

    progress = progress_callback()
    trainer = Trainer(**trainer_arguments, callbacks=[progress])
    trainer.remove_callback(PrinterCallback)
    try:
        return trainer, trainer.train()
    finally:
        progress.close()


def training_arguments(config: FinetuneConfig, output_dir: Path, device: str, precision: str, lr: float):
    """The Trainer's arguments for a fine-tuning run."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        learning_rate=lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the total steps
        lr_scheduler_type="linear",
        num_train_epochs=config.epochs,
        eval_strategy="epoch" if config.epochs > 1 else "no",  # the final evaluation always runs
        save_strategy="no",  # the finished model is written once, complete, by plm
        logging_strategy="steps",
        logging_steps=0.05,  # a loss point every 5% of training
        train_sampling_strategy="group_by_length",  # batches of similar lengths: little padding
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        disable_tqdm=True,  # plm's own progress bar replaces the printed log dicts
        report_to="none",
    )


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Fine-tune a sequence classifier on a labelled file and write it to ``config.output``."""
    source = modeling.resolve(config.model)
    inputs = tuple(item for item in (config.data, config.validation) if item)
    output = check_output_dir(config.output, config.overwrite, inputs + ((source.location,) if source.local else ()))
    labelled = data.load_classification(
        config.data,
        config.validation,
        config.validation_split,
        config.seed,
        config.text_column,
        config.label_column,
        config.max_train_samples,
    )
    console.info(
        f"Data: {len(labelled.train_texts)} training and {len(labelled.validation_texts)} validation rows; "
        f"text column '{labelled.columns.text}', label column '{labelled.columns.label}'; "
        f"{len(labelled.label_names)} labels: {', '.join(labelled.label_names[:10])}"
        f"{' ...' if len(labelled.label_names) > 10 else ''}"
    )
    if labelled.dropped_rows:
        console.warn(f"skipped {labelled.dropped_rows} rows with an empty text or label.")
    device = modeling.choose_device(config.device)
    precision = modeling.choose_precision(config.precision, device)

    modeling.quiet_libraries(with_datasets=True)
    from transformers import DataCollatorWithPadding, set_seed

    from plmcli.metrics import classification_report, trainer_metrics

    tokenizer = modeling.load_tokenizer(source)
    set_seed(config.seed)  # the new head's initial weights come from this seed too
    model, new_weights = modeling.load_for_classification(source, labelled.label_names)
    if new_weights:
        console.info(new_weights)
    speed.score_first_token_only(model)
    max_length = min(config.max_length, modeling.model_limit(tokenizer, model))
    if max_length < config.max_length:
        console.warn(f"--max-length {config.max_length} is more than {source.name} takes; using {max_length}.")
    lr = config.lr or default_learning_rate(model.config.hidden_size)
    console.info(
        f"Model: {source.name} with a new {len(labelled.label_names)}-label classification head; "
        f"{device}, {precision}, learning rate {lr:g}{'' if config.lr else ' (default for its width)'}."
    )
    train_set, train_truncated = data.tokenize(labelled.train_texts, labelled.train_labels, tokenizer, max_length)
    validation_set, validation_truncated = data.tokenize(
        labelled.validation_texts, labelled.validation_labels, tokenizer, max_length
    )
    notes = []
    if train_truncated or validation_truncated:
        notes.append(
            f"{train_truncated + validation_truncated} texts were longer than {max_length} tokens and were truncated."
        )
        console.warn(notes[-1])

    with staged_dir(output) as staging:
        trainer, train_output = train(
            model=model,
            args=training_arguments(config, staging, device, precision, lr),
            train_dataset=train_set,
            eval_dataset=validation_set,
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            compute_metrics=trainer_metrics(labelled.label_names),
        )
        prediction = trainer.predict(validation_set)
        report = classification_report(prediction.predictions.argmax(-1), prediction.label_ids, labelled.label_names)
        metrics = {
            "validation": {"loss": float(prediction.metrics["test_loss"]), **report},
            "train": {
                "loss": float(train_output.training_loss),
                "samples": len(train_set),
                "epochs": config.epochs,
                "learning_rate": lr,
                "batch_size": config.batch_size,
                "steps": train_output.global_step,
                "runtime_seconds": round(train_output.metrics["train_runtime"], 2),
                "samples_per_second": round(train_output.metrics["train_samples_per_second"], 2),
            },
            "validation_samples": len(validation_set),
            "max_length": max_length,
            "truncated_texts": {"train": train_truncated, "validation": validation_truncated},
            "device": device,
            "precision": precision,
            "lineage": [*modeling.lineage(source), f"finetune on {config.data} -> {config.output}"],
        }
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        reporting.write_json(staging / "metrics.json", metrics)
        reporting.write_finetune_card(staging, config, source.name, labelled, metrics)
        reporting.plot_loss_curve(
            staging / "loss_curve.png",
            trainer.state.log_history,
            metrics["validation"]["loss"],
            train_output.global_step,
        )
        reporting.plot_confusion_matrix(
            staging / "confusion_matrix.png", report["confusion_matrix"], labelled.label_names, "validation set"
        )
    return FinetuneResult(output=output, metrics=metrics, notes=notes)
