"""Masked-LM pretraining throughput and held-out perplexity: plm against the same run in plain Hugging Face.

The corpus is the sentences of the first 20,000 rows of SST-2's train.tsv. Both runs start from
the bundled MiniLM (a new masked-LM head), train on the same max-length-128 blocks
(run_mlm.py's group_texts) for the same number of steps of batch 32 with the same learning
rate, warmup, weight decay and seed, in fp32 on the CPU, and are scored on the same held-out
blocks, masked once with a fixed seed. The plain run is run_mlm.py's recipe:
BertForMaskedLM + DataCollatorForLanguageModeling + Trainer. Each run has a fresh process, as a
command would; runs alternate (plm, HF, ...) because this host's speed drifts; medians are
reported.

Usage:
    python bench/pretrain_vs_hf.py [--rows 20000] [--steps 10] [--repeats 3]
    python bench/pretrain_vs_hf.py --device cuda --precision bf16 --steps 500 --corpus sentences.txt
"""

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path
from typing import Optional

from isolated import alternate, median, report

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
MODEL_OUT = Path(__file__).resolve().parent / "out" / "pretrain-plm"


def write_corpus(rows: int, path: Path) -> None:
    """The 'sentence' column of the first ``rows`` rows of train.tsv, one per line."""
    with open(DATA / "train.tsv", newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        sentences = [row["sentence"].strip() for _, row in zip(range(rows), reader)]
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")


def held_out_split(corpus_path: Path, model: Optional[str], seed: int = 42):
    """plm's blocks of the corpus split as plm splits them, and the held-out blocks masked as plm masks them."""
    from transformers import DataCollatorForLanguageModeling

    from plmcli import corpus, modeling
    from plmcli.tasks.masked_lm import masked_batches

    source = modeling.resolve(model)
    tokenizer = modeling.load_tokenizer(source)
    examples = corpus.blocks(corpus.read_corpus([str(corpus_path)]), tokenizer, 128, whole_word_mask=False)
    train_indices, validation_indices = corpus.split_validation(len(examples), 0.05, 2000, seed)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    held_out = masked_batches(examples.split(validation_indices), collator, 32)  # as plm at --batch-size 32
    return tokenizer, examples.split(train_indices), held_out


def plain_hf(tokenizer, train, held_out, steps: int, lr: float, output_dir: str, args, seed: int = 42) -> dict:
    """run_mlm.py's training: BertForMaskedLM, DataCollatorForLanguageModeling, Trainer."""
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from plmcli import modeling
    from plmcli.tasks.masked_lm import evaluate_masked_lm

    set_seed(seed)
    model = AutoModelForMaskedLM.from_pretrained(modeling.resolve(args.model).location, dtype=torch.float32)
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=32,
        learning_rate=lr,
        weight_decay=0.01,
        warmup_steps=0.06,
        max_steps=steps,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=args.device == "cpu",
        bf16=args.precision == "bf16",
        fp16=args.precision == "fp16",
        disable_tqdm=True,
        logging_strategy="no",
        include_num_input_tokens_seen="non_padding",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(
            {"input_ids": train.columns["input_ids"], "special_tokens_mask": train.columns["special_tokens_mask"]}
        ),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15),
        processing_class=tokenizer,
    )
    result = trainer.train()
    return {
        "tokens_per_second": trainer.state.num_input_tokens_seen / result.metrics["train_runtime"],
        "after": evaluate_masked_lm(model, held_out, args.device),
    }


def run_plm(corpus_path: Path, steps: int, args) -> dict:
    from plmcli.config import PretrainConfig
    from plmcli.run import pretrain

    result = pretrain(
        PretrainConfig(
            corpus=[str(corpus_path)],
            model=args.model,
            output=str(MODEL_OUT),
            max_steps=steps,
            batch_size=32,
            overwrite=True,
            device=args.device,
            precision=args.precision,
            lr=args.lr,
        )
    )
    metrics = result.metrics
    return {
        "learning_rate": metrics["train"]["learning_rate"],
        "tokens_per_second": result.timing["tokens_per_second"],
        "before": metrics["validation"]["before"],
        "after": metrics["validation"]["after"],
    }


def measure(
    rows: int = 20000, steps: int = 10, repeats: int = 3, corpus_file=None, model=None, device="cpu", precision="fp32"
) -> dict:
    """Alternating runs of plm and the plain script; medians of throughput, perplexity and peak memory."""
    with tempfile.TemporaryDirectory() as scratch:
        corpus_path = Path(corpus_file) if corpus_file else Path(scratch) / "sst2-sentences.txt"
        if not corpus_file:
            write_corpus(rows, corpus_path)
        common = ["--corpus", str(corpus_path), "--steps", str(steps), "--device", device, "--precision", precision]
        common += ["--model", model] if model else []
        common += ["--lr", "1e-4"]  # plm's default for continued pretraining of a 384-wide encoder, given to both
        runs = alternate(__file__, {"plm": common, "hf": common}, repeats)
    summary = {
        "corpus": corpus_file or f"the first {rows} sentences of SST-2 train.tsv",
        "steps": steps,
        "batch": "32 x 128 tokens",
        "device": device,
        "precision": precision,
        "runs": {name: len(r) for name, r in runs.items()},
        "perplexity_before": runs["plm"][0]["before"]["perplexity"],
    }
    for name, results in runs.items():
        summary[name] = {
            "tokens_per_second": round(median(results, "tokens_per_second"), 1),
            "perplexity_after": round(statistics.median(r["after"]["perplexity"] for r in results), 1),
            "masked_accuracy_after": round(statistics.median(r["after"]["accuracy"] for r in results), 4),
            "peak_rss_mb": round(median(results, "peak_rss_mb")),
        }
    summary["ratios"] = {
        "tokens_per_second": round(summary["plm"]["tokens_per_second"] / summary["hf"]["tokens_per_second"], 2),
        "peak_rss": round(summary["plm"]["peak_rss_mb"] / summary["hf"]["peak_rss_mb"], 2),
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="base model (default: the bundled MiniLM)")
    parser.add_argument("--corpus", default=None, help="a text file instead of SST-2's first --rows sentences")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="for both runs")
    parser.add_argument("--side", choices=["plm", "hf"], help=argparse.SUPPRESS)  # one run, in a child process
    parser.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        from plmcli import modeling

        modeling.quiet_libraries(with_datasets=True)
    if args.side == "plm":
        return report(run_plm(Path(args.corpus), args.steps, args))
    if args.side == "hf":
        tokenizer, train, held_out = held_out_split(Path(args.corpus), args.model)
        with tempfile.TemporaryDirectory() as scratch:
            return report(plain_hf(tokenizer, train, held_out, args.steps, args.lr, scratch, args))
    summary = measure(args.rows, args.steps, args.repeats, args.corpus, args.model, args.device, args.precision)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
