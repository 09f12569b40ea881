"""Config -> masked-language-model pretraining in the HF Trainer, with before/after evidence.

The corpus, the model and the output directory are checked before anything is written. A
share of the examples is held out and masked once with a fixed seed; masked-LM loss,
perplexity and masked-token accuracy (and NSP accuracy for mlm+nsp) are measured on exactly
those masked inputs before and after training, a batch at a time, scoring only the masked
positions (no full-vocabulary logits are kept). Training runs the prediction head at the
masked positions only (see plmcli.speed); the saved model is a standard BertForMaskedLM or
BertForPreTraining.
"""

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from plmcli import checkpoints, console, corpus, corpus_cache, modeling, reporting, speed
from plmcli.config import PretrainConfig, default_learning_rate
from plmcli.config import resume_settings as config_resume_settings
from plmcli.outputs import check_output_dir, staged_dir, writing
from plmcli.training import train


@dataclass
class PretrainResult:
    """What a pretrain run produced: where the model is and what metrics.json says about it."""

    output: Path
    metrics: dict  # metrics.json's content: the same for the same seed and data
    timing: dict  # runtime_seconds, tokens_per_second (in manifest.json)
    notes: list[str] = field(default_factory=list)


def _learning_rate(config: PretrainConfig, hidden_size: int) -> float:
    if config.lr:
        return config.lr
    if config.from_scratch:  # new weights take (and need) larger steps: BERT used 1e-4 at batch 256
        return 5e-4 if hidden_size < 768 else 1e-4
    return default_learning_rate(hidden_size)


def _examples(config: PretrainConfig, text: corpus.Corpus, tokenizer, max_length: int) -> corpus.Examples:
    if config.objective == "mlm+nsp":
        return corpus.nsp_pairs(text, tokenizer, max_length, config.seed)
    if config.line_by_line:
        return corpus.lines(text, tokenizer, max_length, config.whole_word_mask)
    return corpus.blocks(text, tokenizer, max_length, config.whole_word_mask)


def masking_collator(tokenizer, config: PretrainConfig, seed: Optional[int] = None):
    """DataCollatorForLanguageModeling for the run (seeded: the same masks every time it is built).

    With whole-word masking every chosen word becomes [MASK] (transformers' collator does no random
    replacement there), and the offsets it reads are padded to the batch's longest example.
    """
    from transformers import DataCollatorForLanguageModeling

    whole_words = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if config.whole_word_mask else {}
    collator = DataCollatorForLanguageModeling(
        tokenizer,
        mlm_probability=config.mlm_probability,
        whole_word_mask=config.whole_word_mask,
        seed=seed,
        **whole_words,
    )
    if not config.whole_word_mask:
        return collator

    def collate(examples: list[dict]) -> dict:
        longest = max(len(example["input_ids"]) for example in examples)
        padded = []
        for example in examples:
            filler = [[0, 0]] * (longest - len(example["offset_mapping"]))
            offsets = example["offset_mapping"]
            padded.append(
                {
                    **example,
                    "offset_mapping": filler + offsets if tokenizer.padding_side == "left" else offsets + filler,
                }
            )
        return collator(padded)

    return collate


def masked_batches(examples: corpus.Examples, collator, batch_size: int) -> list[dict]:
    """The held-out examples masked once, in fixed batches, so before and after see the same inputs."""
    rows = [{name: values[i] for name, values in examples.columns.items()} for i in range(len(examples))]
    return [collator(rows[start : start + batch_size]) for start in range(0, len(rows), batch_size)]


def evaluate_masked_lm(model, batches: list[dict], device: str) -> dict:
    """Masked-LM loss, perplexity and masked-token accuracy (and NSP accuracy) over the held-out batches."""
    import torch
    import torch.nn.functional as F

    model.eval()
    loss_sum, masked, correct, pairs, pairs_correct = 0.0, 0, 0, 0, 0
    with torch.inference_mode():
        for batch in batches:
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            output = model(**batch)
            logits = output.logits if hasattr(output, "logits") else output.prediction_logits
            labels = batch["labels"][batch["labels"] != -100]  # (masked,)
            if logits.dim() == 3:  # a model that scores every position: (batch, len, vocab)
                logits = logits[batch["labels"] != -100]
            logits = logits.float()  # (masked, vocab)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(-1) == labels).sum().item()
            masked += len(labels)
            if "next_sentence_label" in batch:
                guesses = output.seq_relationship_logits.argmax(-1)
                pairs_correct += (guesses == batch["next_sentence_label"].view(-1)).sum().item()
                pairs += len(guesses)
    model.train()
    loss = loss_sum / max(masked, 1)
    result = {
        "loss": round(loss, 4),
        "perplexity": round(math.exp(min(loss, 700.0)), 2),
        "accuracy": round(correct / max(masked, 1), 4),
        "masked_tokens": masked,
    }
    if pairs:
        result["nsp_accuracy"] = round(pairs_correct / pairs, 4)
    return result


def training_arguments(config: PretrainConfig, output_dir: Path, device: str, precision: str, lr: float):
    """The Trainer's arguments for a pretraining run."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        learning_rate=lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the total steps
        lr_scheduler_type="linear",
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        eval_strategy="no",  # plm measures the held-out set itself, before and after
        save_strategy="steps",  # checkpoints for --resume; the finished model is written whole by plm
        save_steps=config.save_steps,
        logging_strategy="steps",
        logging_steps=0.05,
        train_sampling_strategy="group_by_length" if config.line_by_line else "random",
        remove_unused_columns=False,  # the collator needs special_tokens_mask (and offsets for whole words)
        include_num_input_tokens_seen="non_padding",  # tokens/s counts real tokens, not padding
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        disable_tqdm=True,
        report_to="none",
    )


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Continue (or start) masked-LM pretraining on a corpus and write the model to ``config.output``."""
    source = None if config.from_scratch else modeling.resolve(config.model, config.allow_pickle)
    local_model = (source.location,) if source and source.local else ()
    output = check_output_dir(
        config.output, config.overwrite, tuple(config.corpus) + local_model, resume=config.resume
    )
    run = checkpoints.run_dir(output)
    resume_from = checkpoints.newest_complete(run, config.output) if config.resume else None
    # Files are streamed and tokenized once into the on-disk cache; stdin and NSP pairs (which need
    # whole documents) are read into memory.
    streamed = config.objective == "mlm" and "-" not in config.corpus
    if streamed:
        files, sources = corpus_cache.read_files(config.corpus)
        text = corpus_cache.scan(files, sources)
        corpus_lines, corpus_sha256, summary = corpus_cache.lines(files), text.sha256, text.describe()
        documents, line_count = text.documents, text.lines
    else:
        text = corpus.read_corpus(config.corpus)
        corpus_lines, summary = text.lines, corpus.describe(text)
        corpus_sha256 = hashlib.sha256("\n".join(corpus_lines).encode("utf-8")).hexdigest()
        documents, line_count = len(text.documents), len(corpus_lines)
    console.info(f"Corpus: {summary}.")
    device = modeling.choose_device(config.device)
    precision, precision_reason = checkpoints.resumed_precision(
        resume_from, config.precision, modeling.training_precision(config.precision, device)
    )

    modeling.quiet_libraries(with_datasets=True)
    from datasets import Dataset
    from transformers import set_seed

    set_seed(config.seed)
    notes = []
    if config.from_scratch:
        tokenizer = (
            modeling.load_tokenizer(modeling.ModelSource(str(resume_from), str(resume_from), local=True))
            if resume_from is not None  # the vocabulary the interrupted run trained
            else modeling.train_wordpiece(corpus_lines, config.vocab_size, config.max_length)
        )
        model = modeling.new_bert(config.size, tokenizer, config.objective, config.max_length)
        base_name = f"a new BERT-{config.size} (from scratch, {len(tokenizer)}-token WordPiece vocabulary)"
        lineage = [base_name]
    else:
        tokenizer = modeling.load_tokenizer(source)
        model, head_note = modeling.load_for_pretraining(source, config.objective)
        base_name, lineage = source.name, modeling.lineage(source)
        if head_note:
            console.info(head_note)
    max_length = min(config.max_length, modeling.model_limit(tokenizer, model))
    if max_length < config.max_length:
        console.warn(f"--max-length {config.max_length} is more than {base_name} takes; using {max_length}.")
    if streamed:
        cached = corpus_cache.tokenized(
            text, tokenizer, max_length, config.line_by_line, config.whole_word_mask, config.preprocessing_workers
        )
        if cached.cached:
            console.info(f"Reusing the corpus tokenized by an earlier run ({cached.location}).")
        dataset, total_tokens, truncated = cached.dataset, cached.tokens, cached.truncated
    else:
        examples = _examples(config, text, tokenizer, max_length)
        for note in text.notes:
            console.warn(note)
        dataset, total_tokens, truncated = Dataset.from_dict(examples.columns), examples.tokens, examples.truncated
    if truncated:
        notes.append(f"{truncated} lines were longer than {max_length} tokens and were truncated.")
        console.warn(notes[-1])
    train_indices, validation_indices = corpus.split_validation(
        len(dataset), config.validation_split, config.max_validation_examples, config.seed
    )
    validation_examples = corpus_cache.examples_of(dataset, validation_indices)
    train_set, train_tokens = dataset.select(train_indices), total_tokens - validation_examples.tokens
    lr = _learning_rate(config, model.config.hidden_size)
    unit = "pairs" if config.objective == "mlm+nsp" else "lines" if config.line_by_line else "blocks"
    console.info(
        f"Model: {base_name} ({type(model).__name__}); {len(train_set)} training and "
        f"{len(validation_examples)} held-out {unit} of up to {max_length} tokens; {device}, {precision}, "
        f"learning rate {lr:g}{'' if config.lr else ' (default)'}."
    )

    speed.masked_positions_only(model)
    if device == "cpu":
        speed.for_cpu_training(model)
    model.to(device)
    collator = masking_collator(tokenizer, config)
    held_out = masked_batches(  # batches no larger than training's: measuring never raises the peak memory
        validation_examples, masking_collator(tokenizer, config, config.seed), config.batch_size
    )
    resume_settings = config_resume_settings(
        config,
        corpus_sha256=corpus_sha256,
        model=base_name,
        max_length=max_length,
        lr=lr,
        preprocessing_workers=config.preprocessing_workers if streamed and not config.line_by_line else 1,
        precision=precision,
        processes=console.world_size(),
    )
    if resume_from is not None:
        saved = checkpoints.start_from(resume_from, config, resume_settings)
        before = saved["state"]["before"]  # measured on the base model by the interrupted run
    else:
        checkpoints.clear(run)
        console.info("Measuring the held-out set before training ...")
        before = evaluate_masked_lm(model, held_out, device)

    with staged_dir(output) as staging:
        trainer, train_output = train(
            config.command,
            resume_from=resume_from,
            settings=resume_settings,
            state={"before": before},
            model=model,
            args=training_arguments(config, run, device, precision, lr),
            train_dataset=train_set,
            data_collator=collator,
            processing_class=tokenizer,
        )
        after = evaluate_masked_lm(model, held_out, device)
        speed.standard(model)
        runtime = train_output.metrics["train_runtime"]
        tokens_seen = trainer.state.num_input_tokens_seen
        timing = {
            "runtime_seconds": round(runtime, 2),
            "tokens_per_second": round(tokens_seen / max(runtime, 1e-9), 1),
        }
        lineage = [*lineage, f"pretrain ({config.objective}) on {', '.join(text.sources[:3])} -> {config.output}"]
        metrics = {
            "validation": {"before": before, "after": after, "examples": len(validation_examples)},
            "perplexity_ratio": round(before["perplexity"] / max(after["perplexity"], 1e-9), 4),
            "train": {
                "loss": round(trainer.plm_training_loss, 4),
                "resumed_from": str(resume_from) if resume_from else None,
                "examples": len(train_set),
                "tokens": train_tokens,
                "epochs": config.epochs,
                "steps": train_output.global_step,
                "batch_size": config.batch_size,
                "learning_rate": lr,
                "tokens_seen": tokens_seen,
            },
            "objective": config.objective,
            "examples": unit,
            "max_length": max_length,
            "mlm_probability": config.mlm_probability,
            "whole_word_mask": config.whole_word_mask,
            "from_scratch": config.from_scratch,
            "base_model": base_name,
            "corpus": {
                "sources": text.sources,
                "documents": documents,
                "lines": line_count,
                "tokens": total_tokens,
            },
            "device": device,
            "precision": precision,
            "precision_reason": precision_reason,
            "seed": config.seed,
            "world_size": trainer.args.world_size,
            "effective_batch_size": config.batch_size * trainer.args.world_size,
            "lineage": lineage,
        }
        if console.is_main_process():  # one writer under torchrun / accelerate
            with writing(output):  # a full disk leaves what was there as it was
                model.save_pretrained(staging)
                tokenizer.save_pretrained(staging)
                reporting.write_json(staging / "metrics.json", metrics)
                reporting.write_pretrain_card(staging, config, metrics, timing)
                reporting.plot_loss_curve(
                    staging / "loss_curve.png",
                    trainer.state.log_history,
                    after["loss"],
                    train_output.global_step,
                    initial_validation_loss=before["loss"],
                )
                reporting.write_manifest(  # last: it records every file written before it
                    staging / "manifest.json",
                    config,
                    {
                        "base_model": base_name,
                        "learning_rate": lr,
                        "max_length": max_length,
                        "device": device,
                        "precision": precision,
                        "precision_reason": precision_reason,
                    },
                    [*text.sources, *local_model],
                    timing,
                )
    return PretrainResult(output=output, metrics=metrics, timing=timing, notes=notes)
