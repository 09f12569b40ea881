"""Masked-language-model pretraining (``--objective mlm``, or ``mlm+nsp`` with next-sentence pairs).

The corpus is read (files are streamed and tokenized once into an on-disk cache; stdin and NSP
pairs, which need whole documents, are read into memory) and a share of the examples is held
out and masked once with a fixed seed. Masked-LM loss, perplexity and masked-token accuracy (and
NSP accuracy) are measured on exactly those masked inputs before and after training, a batch at
a time, scoring only the masked positions (no full-vocabulary logits are kept). Training runs
the prediction head at the masked positions only (see plmcli.speed); the saved model is a
standard BertForMaskedLM or BertForPreTraining.
"""

import hashlib
import math
import sys
from pathlib import Path
from typing import Iterator, Optional

from plmcli import console, corpus, corpus_cache, modeling, reporting, vocabulary, words
from plmcli.config import PretrainConfig, default_learning_rate
from plmcli.tasks.base import Built, Finished, Task


def _learning_rate(config: PretrainConfig, hidden_size: int) -> float:
    if config.lr:
        return config.lr
    if config.from_scratch:  # new weights take (and need) larger steps: BERT used 1e-4 at batch 256
        return 5e-4 if hidden_size < 768 else 1e-4
    return default_learning_rate(hidden_size)


def _examples(
    config: PretrainConfig, text: corpus.Corpus, tokenizer, max_length: int, segmenter: Optional[str]
) -> corpus.Examples:
    if config.objective == "mlm+nsp":
        return corpus.nsp_pairs(text, tokenizer, max_length, config.seed)
    if config.line_by_line:
        return corpus.lines(text, tokenizer, max_length, config.whole_word_mask, segmenter)
    return corpus.blocks(text, tokenizer, max_length, config.whole_word_mask, segmenter)


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


def evaluate_masked_lm(model, batches: list[dict], device: str, precision: str = "fp32") -> dict:
    """Masked-LM loss, perplexity and masked-token accuracy (and NSP accuracy) over the held-out batches.

    The forward passes run in the run's ``precision`` (autocast, as training runs them: bf16 about
    doubles the speed where the hardware has it); the loss is summed in float32.
    """
    import torch
    import torch.nn.functional as F

    model.eval()
    loss_sum, masked, correct, pairs, pairs_correct = 0.0, 0, 0, 0, 0
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype is not None)
    from tqdm.auto import tqdm

    bar = tqdm(batches, desc="Held-out set", unit="batch", file=sys.stderr, disable=None, leave=False)  # on a terminal
    with torch.inference_mode(), autocast:
        for batch in bar:
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


class MaskedLMTask(Task):
    """Continue (or start, with --from-scratch) masked-LM pretraining on a text corpus."""

    def source(self) -> Optional[modeling.ModelSource]:
        return None if self.config.from_scratch else super().source()

    def inputs(self) -> tuple[str, ...]:
        return tuple(self.config.corpus)

    def input_files(self) -> list[str]:
        return list(self.text.sources)

    def read(self) -> None:
        config = self.config
        # Files are streamed and tokenized once into the on-disk cache; stdin and NSP pairs (which need
        # whole documents) are read into memory.
        self.streamed = config.objective == "mlm" and "-" not in config.corpus
        if self.streamed:
            files, sources = corpus_cache.read_files(config.corpus)
            self.text = corpus_cache.scan(files, sources)
            self.files, self.corpus_sha256 = files, self.text.sha256
            summary, self.documents, self.line_count = self.text.describe(), self.text.documents, self.text.lines
        else:
            self.text = corpus.read_corpus(config.corpus)
            summary = corpus.describe(self.text)
            self.corpus_sha256 = hashlib.sha256("\n".join(self.text.lines).encode("utf-8")).hexdigest()
            self.documents, self.line_count = len(self.text.documents), len(self.text.lines)
        self.lineage_step = f"pretrain ({config.objective}) on {', '.join(self.text.sources[:3])}"
        console.info(f"Corpus: {summary}.")
        self.segmenter = None  # whole words are transformers' (characters that follow each other)
        if config.whole_word_mask and words.needs_segmenter(self.lines()):
            self.segmenter = words.check_segmenter()
            console.info(
                f"Whole words: the corpus is Chinese (or Japanese) text without spaces; {self.segmenter} segments it "
                "into words, and every piece of a word is masked together."
            )

    def lines(self) -> Iterator[str]:
        """The corpus's non-empty lines, from the start (files are read again, checked against their scan)."""
        return corpus_cache.lines(self.files, self.text.digests) if self.streamed else iter(self.text.lines)

    def texts(self):
        return ", ".join(self.text.sources[:3]) + (" ..." if len(self.text.sources) > 3 else ""), self.lines()

    def build(self, source, device: str, precision: str, resume_from: Optional[Path]) -> Built:
        config = self.config
        self.resume_from = resume_from
        tokenizer, model, base_name, lineage = self._model(source, resume_from)
        self.extension = (
            vocabulary.extend(tokenizer, model, self.lines, config.extend_vocab, base_name)
            if config.extend_vocab
            else None
        )
        max_length = min(config.max_length, modeling.model_limit(tokenizer, model))
        if max_length < config.max_length:
            console.warn(f"--max-length {config.max_length} is more than {base_name} takes; using {max_length}.")
        dataset, self.total_tokens = self._dataset(tokenizer, max_length)
        train_indices, validation_indices = corpus.split_validation(
            len(dataset), config.validation_split, config.max_validation_examples, config.seed
        )
        self.validation_examples = corpus_cache.examples_of(dataset, validation_indices)
        train_set = dataset.select(train_indices)
        self.train_tokens = self.total_tokens - self.validation_examples.tokens
        lr = _learning_rate(config, model.config.hidden_size)
        self.unit = "pairs" if config.objective == "mlm+nsp" else "lines" if config.line_by_line else "blocks"
        console.info(
            f"Model: {base_name} ({type(model).__name__}); {len(train_set)} training and "
            f"{len(self.validation_examples)} held-out {self.unit} of up to {max_length} tokens; {device}, "
            f"{precision}, learning rate {lr:g}{'' if config.lr else ' (default)'}."
        )
        model.to(device)
        workers = config.preprocessing_workers if self.streamed and not config.line_by_line else 1
        return Built(
            model=model,
            tokenizer=tokenizer,
            train_set=train_set,
            collator=masking_collator(tokenizer, config),
            lr=lr,
            max_length=max_length,
            base_name=base_name,
            lineage=lineage,
            resolved={"corpus_sha256": self.corpus_sha256, "model": base_name, "preprocessing_workers": workers},
            arguments={
                "eval_strategy": "no",  # plm measures the held-out set itself, before and after
                "train_sampling_strategy": "group_by_length" if config.line_by_line else "random",
                "remove_unused_columns": False,  # the collator needs special_tokens_mask (and offsets for whole words)
                "include_num_input_tokens_seen": "non_padding",  # tokens/s counts real tokens, not padding
            },
        )

    def _model(self, source, resume_from: Optional[Path]):
        """(tokenizer, model, base model name, lineage): the base model with an MLM head, or a new BERT."""
        config = self.config
        if not config.from_scratch:
            model, head_note = modeling.load_for_pretraining(source, config.objective)
            if head_note:
                console.info(head_note)
            return modeling.load_tokenizer(source), model, source.name, modeling.lineage(source)
        tokenizer = (
            modeling.load_tokenizer(modeling.ModelSource(str(resume_from), str(resume_from), local=True))
            if resume_from is not None  # the vocabulary the interrupted run trained
            else modeling.train_wordpiece(self.lines(), config.vocab_size, config.max_length)
        )
        model = modeling.new_bert(config.size, tokenizer, config.objective, config.max_length)
        name = f"a new BERT-{config.size} (from scratch, {len(tokenizer)}-token WordPiece vocabulary)"
        return tokenizer, model, name, [name]

    def _dataset(self, tokenizer, max_length: int):
        """(the tokenized examples as a datasets.Dataset, their token count)."""
        config = self.config
        if self.streamed:
            cached = corpus_cache.tokenized(
                self.text,
                tokenizer,
                max_length,
                config.line_by_line,
                config.whole_word_mask,
                config.preprocessing_workers,
                self.segmenter,
            )
            if cached.cached:
                console.info(f"Reusing the corpus tokenized by an earlier run ({cached.location}).")
            dataset, tokens, truncated = cached.dataset, cached.tokens, cached.truncated
        else:
            from datasets import Dataset

            examples = _examples(config, self.text, tokenizer, max_length, self.segmenter)
            for note in self.text.notes:
                console.warn(note)
            dataset, tokens, truncated = Dataset.from_dict(examples.columns), examples.tokens, examples.truncated
        if truncated:
            self.notes.append(f"{truncated} lines were longer than {max_length} tokens and were truncated.")
            console.warn(self.notes[-1])
        return dataset, tokens

    def before_training(self, built: Built, device: str, precision: str, resumed_state: Optional[dict]) -> dict:
        config = self.config
        self.held_out = masked_batches(  # batches no larger than training's: measuring never raises the peak memory
            self.validation_examples, masking_collator(built.tokenizer, config, config.seed), config.batch_size
        )
        if resumed_state is not None:
            self.before = resumed_state["before"]  # measured on the base model by the interrupted run
        else:
            console.info("Measuring the held-out set before training ...")
            self.before = evaluate_masked_lm(built.model, self.held_out, device, precision)
        return {"before": self.before}

    def finish(self, trainer, train_output, built: Built, device: str, precision: str) -> Finished:
        config, before = self.config, self.before
        after = evaluate_masked_lm(built.model, self.held_out, device, precision)
        runtime = train_output.metrics["train_runtime"]
        tokens_seen = trainer.state.num_input_tokens_seen
        timing = {
            "runtime_seconds": round(runtime, 2),
            "tokens_per_second": round(tokens_seen / max(runtime, 1e-9), 1),
        }
        metrics = {
            "validation": {"before": before, "after": after, "examples": len(self.validation_examples)},
            "perplexity_ratio": round(before["perplexity"] / max(after["perplexity"], 1e-9), 4),
            "train": {
                "loss": round(trainer.plm_training_loss, 4),
                "resumed_from": str(self.resume_from) if self.resume_from else None,
                "examples": len(built.train_set),
                "tokens": self.train_tokens,
                "epochs": config.epochs,
                "steps": train_output.global_step,
                "batch_size": config.batch_size,
                "learning_rate": built.lr,
                "tokens_seen": tokens_seen,
            },
            "objective": config.objective,
            "examples": self.unit,
            "max_length": built.max_length,
            "mlm_probability": config.mlm_probability,
            "whole_word_mask": config.whole_word_mask,
            "word_segmenter": self.segmenter,
            "from_scratch": config.from_scratch,
            "extended_vocabulary": self.extension.to_dict() if self.extension else None,
            "base_model": built.base_name,
            "corpus": {
                "sources": self.text.sources,
                "documents": self.documents,
                "lines": self.line_count,
                "tokens": self.total_tokens,
            },
        }
        return Finished(metrics=metrics, timing=timing)

    def write(self, staging: Path, trainer, built: Built, metrics: dict, timing: dict) -> None:
        reporting.write_pretrain_card(staging, self.config, metrics, timing)
        reporting.plot_loss_curve(
            staging / "loss_curve.png",
            trainer.state.log_history,
            metrics["validation"]["after"]["loss"],
            metrics["train"]["steps"],
            initial_validation_loss=metrics["validation"]["before"]["loss"],
        )
