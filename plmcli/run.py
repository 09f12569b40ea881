"""The one run skeleton: every training task plugs into ``execute``.

A task (``plmcli/tasks/``) says what differs: its data, model and head, collator, loss and
metrics, what it measures before and after training, what ``config.json``'s ``plm`` section
tells predict, and its model card. The run does what every task shares, in this order:

1. resolve the base model and check the output directory (nothing is written before every
   input is checked), pick the checkpoint to resume;
2. read and check the data (before any model loads), choose the device and precision;
3. build the model, apply the speed-ups (each checked against the stock model), check the
   settings against the checkpoint's (from the config's fields: see ``config.resume_settings``)
   or clear old checkpoints;
4. train in the HF Trainer (``plmcli.training``), measure, and write the model directory into
   a staging directory that replaces the output only when complete, from one process.
"""

from dataclasses import dataclass, field
from pathlib import Path

from plmcli import checkpoints, console, memory, modeling, reporting, speed, textfiles, vocabulary
from plmcli.config import resume_settings
from plmcli.outputs import LOGS, Claim, check_output_dir, check_places, claimed, staged_dir, writing
from plmcli.tasks.base import Built, Finished, Task


@dataclass
class RunResult:
    """What a run produced: where the model is and what metrics.json says about it."""

    output: Path
    metrics: dict  # metrics.json's content: the same for the same seed and data
    timing: dict
    notes: list[str] = field(default_factory=list)  # what the summary should point out


def execute(task: Task) -> RunResult:
    """Run ``task`` from its config to a finished model directory (see the module's docstring)."""
    from plmcli.training import check_tracker

    config = task.config
    check_tracker(config.report_to)
    source = task.source()
    local_model = (source.location,) if source is not None and source.local else ()
    check_places(config.places())
    output = check_output_dir(config.output, config.overwrite, resume=config.resume)
    with claimed(output) as claim, textfiles.recording():  # no other plm run writes this output until this one ends
        return _run(task, source, claim, local_model)


def _run(task: Task, source, claim: Claim, local_model: tuple[str, ...]) -> RunResult:
    """``execute`` from reading the data on, with the output held by this run."""
    from plmcli.training import tracking, train, training_arguments

    config, output = task.config, claim.path
    run_dir = checkpoints.run_dir(output)
    resume_from = checkpoints.newest_complete(run_dir, config.output) if config.resume else None
    task.read()
    device = modeling.choose_device(config.device)
    if device == "cpu":
        memory.reuse_freed_memory()  # process-wide: freed activations stay in the heap for the next step
    precision, precision_reason = checkpoints.resumed_precision(
        resume_from, config.precision, modeling.training_precision(config.precision, device)
    )
    modeling.quiet_libraries(with_datasets=True)
    from transformers import set_seed

    set_seed(config.seed)  # a new head's initial weights come from the seed too
    built = task.build(source, device, precision, resume_from)
    where, texts = task.texts()
    coverage = vocabulary.check(texts, built.tokenizer, where, once=True)  # once: tune and audit train many times
    speed.adapt(built.model, training=True, cpu=device == "cpu")
    settings = resume_settings(
        config,
        **built.resolved,
        lr=built.lr,
        max_length=built.max_length,
        precision=precision,
        processes=console.world_size(),
    )
    resumed_state = checkpoints.start_from(resume_from, config, settings)["state"] if resume_from else None
    if resume_from is None:
        checkpoints.clear(run_dir)
    state = task.before_training(built, device, precision, resumed_state)

    with staged_dir(claim) as staging, tracking(config.report_to, staging / LOGS):
        arguments = training_arguments(config, run_dir, device, precision, built.lr, built.arguments)
        trainer, train_output = train(
            config.command,
            resume_from=resume_from,
            settings=settings,
            state=state,
            callbacks=[*built.callbacks, *task.callbacks],
            model=built.model,
            args=arguments,
            train_dataset=built.train_set,
            eval_dataset=built.eval_set,
            data_collator=built.collator,
            processing_class=built.tokenizer,
            compute_metrics=built.compute_metrics,
            compute_loss_func=built.compute_loss_func,
            parts=built.batch_parts,
        )
        finished = task.finish(trainer, train_output, built, device, precision)
        metrics = {
            **finished.metrics,
            "device": device,
            "precision": precision,
            "precision_reason": precision_reason,
            "seed": config.seed,
            "world_size": trainer.args.world_size,
            "effective_batch_size": config.batch_size * trainer.args.world_size,
            "lineage": [*built.lineage, f"{task.lineage_step} -> {config.output}"],
            "vocabulary": coverage,
        }
        if console.is_main_process():  # one writer under torchrun / accelerate
            _write(task, staging, output, trainer, built, finished, metrics, local_model)
    return RunResult(output=output, metrics=metrics, timing=finished.timing, notes=task.notes)


def _write(task: Task, staging: Path, output: Path, trainer, built: Built, finished: Finished, metrics, local_model):
    """The run's directory, in staging: weights, tokenizer, metrics.json, the task's reports, manifest.json last."""
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # no autocast wrapper
    speed.standard(model)  # saved as the model transformers would have written
    if finished.model_settings is not None:
        model.config.plm = finished.model_settings  # how plm predict and evaluate read data for this model
    with writing(output):  # a full disk leaves what was there as it was
        task.save_model(staging, model, built.tokenizer)
        reporting.write_json(staging / "metrics.json", metrics)
        task.write(staging, trainer, built, metrics, finished.timing)
        resolved = {
            **finished.resolved,
            "base_model": built.base_name,
            "learning_rate": built.lr,
            "max_length": built.max_length,
            "device": metrics["device"],
            "precision": metrics["precision"],
            "precision_reason": metrics["precision_reason"],
        }
        inputs = task.input_files() + list(local_model)
        reporting.write_manifest(staging / "manifest.json", task.config, resolved, inputs, finished.timing)


def finetune(config) -> RunResult:
    """Fine-tune a sequence classifier (or regressor, with ``task="regression"``) and write it to ``config.output``."""
    from plmcli.tasks import for_finetune

    return execute(for_finetune(config))


def pretrain(config) -> RunResult:
    """Continue (or start) masked-LM pretraining on a corpus and write the model to ``config.output``."""
    from plmcli.tasks.masked_lm import MaskedLMTask

    return execute(MaskedLMTask(config))
