"""Fine-tuning throughput, accuracy and memory: plm against the same run in plain Hugging Face.

Every run trains the bundled MiniLM on the same SST-2 rows with the same hyper-parameters (batch
32, plm's default learning rate for it, linear decay after 6% warmup, weight decay 0.01, max
length 128, 1 epoch, fp32 unless --precision says otherwise) and is scored on the same 872 dev
sentences. The plain runs are run_glue.py's recipe (tokenise, Trainer) in three configurations:

- hf_max_length: ``padding="max_length"``, run_glue.py's default: every text padded to 128;
- hf_dynamic: DataCollatorWithPadding, random batches padded to their longest text;
- hf_grouped: dynamic padding and ``train_sampling_strategy="group_by_length"``, plain HF's best.

Each run has a fresh process, as a command would. plm and hf_grouped alternate --repeats times;
the slower two run once, in the first round. Medians are reported: training samples/s (the
Trainer's count over its training runtime), dev accuracy, the whole process's wall time (start
Python, import, load, tokenise, train, score the dev set and, for plm, write the model, its
report and plots) and its peak resident memory.

Usage:
    python bench/finetune_vs_hf.py [--samples 1280] [--repeats 3]
"""

import argparse
import json
import tempfile
from pathlib import Path

from isolated import alternate, median, report

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
MODEL_OUT = Path(__file__).resolve().parent / "out" / "sst2-plm"  # the model the predict benchmarks use
PLAIN = {"hf_max_length": "max_length", "hf_dynamic": "dynamic", "hf_grouped": "grouped"}


def plain_hf(texts, labels, dev_texts, dev_labels, output_dir: str, lr: float, padding: str, precision: str) -> dict:
    """run_glue.py's fine-tuning: tokenise, a collator for the padding, Trainer."""
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    from plmcli import modeling

    model_dir = str(modeling.bundled_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    set_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    pad = {"padding": "max_length"} if padding == "max_length" else {}

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=128, **pad)

    train = Dataset.from_dict({"text": texts, "label": labels}).map(encode, batched=True, remove_columns=["text"])
    dev = Dataset.from_dict({"text": dev_texts, "label": dev_labels}).map(
        encode, batched=True, remove_columns=["text"]
    )
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=lr,
        weight_decay=0.01,
        warmup_steps=0.06,
        num_train_epochs=1,
        save_strategy="no",
        report_to="none",
        seed=42,
        use_cpu=True,
        bf16=precision == "bf16",
        disable_tqdm=True,
        logging_strategy="no",
        train_sampling_strategy="group_by_length" if padding == "grouped" else "random",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        data_collator=default_data_collator if padding == "max_length" else DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    result = trainer.train()
    predictions = trainer.predict(dev)
    accuracy = float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())
    return {"samples_per_second": result.metrics["train_samples_per_second"], "accuracy": accuracy}


def run_plm(samples: int, precision: str) -> dict:
    from plmcli.config import FinetuneConfig
    from plmcli.run import finetune

    result = finetune(
        FinetuneConfig(
            data=str(DATA / "train.tsv"),
            validation=str(DATA / "dev.tsv"),
            max_train_samples=samples,
            epochs=1,
            output=str(MODEL_OUT),
            overwrite=True,
            device="cpu",
            precision=precision,
        )
    )
    return {
        "learning_rate": result.metrics["train"]["learning_rate"],
        "samples_per_second": result.timing["samples_per_second"],
        "accuracy": result.metrics["validation"]["accuracy"],
    }


def run_child(args) -> None:
    if args.side == "plm":
        return report(run_plm(args.samples, args.precision))
    from plmcli.data import load_classification

    # The exact rows plm trains on, handed to the plain run too.
    rows = load_classification(str(DATA / "train.tsv"), str(DATA / "dev.tsv"), 0.1, 42, max_train_samples=args.samples)
    to_int = [int(name) for name in rows.label_names]
    texts, labels = rows.train_texts, [to_int[i] for i in rows.train_labels]
    dev_texts, dev_labels = rows.validation_texts, [to_int[i] for i in rows.validation_labels]
    with tempfile.TemporaryDirectory() as scratch:
        report(plain_hf(texts, labels, dev_texts, dev_labels, scratch, args.lr, PLAIN[args.side], args.precision))


def measure(samples: int = 1280, repeats: int = 3, precision: str = "fp32") -> dict:
    """Alternating runs of every side; the summary with medians and ratios against each plain configuration."""
    common = ["--samples", str(samples), "--precision", precision, "--lr", "1e-4"]  # plm's default for MiniLM
    sides = {"plm": common, "hf_grouped": common, "hf_dynamic": common, "hf_max_length": common}
    runs = alternate(__file__, sides, repeats, once=("hf_dynamic", "hf_max_length"))
    assert all(run["learning_rate"] == 1e-4 for run in runs["plm"]), "plm chose another learning rate"
    summary = {"samples": samples, "precision": precision, "runs": {name: len(r) for name, r in runs.items()}}
    for name, results in runs.items():
        summary[name] = {
            "samples_per_second": round(median(results, "samples_per_second"), 1),
            "dev_accuracy": round(median(results, "accuracy"), 4),
            "process_seconds": round(median(results, "process_seconds"), 1),
            "peak_rss_mb": round(median(results, "peak_rss_mb")),
            "each_run": [{key: round(value, 4) for key, value in run.items()} for run in results],
        }
    plm = summary["plm"]["samples_per_second"]
    summary["ratios"] = {name: round(plm / summary[name]["samples_per_second"], 2) for name in PLAIN}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--side", choices=["plm", *PLAIN], help=argparse.SUPPRESS)  # one run, in a child process
    parser.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_child(args)
    print(json.dumps(measure(args.samples, args.repeats, args.precision), indent=2))


if __name__ == "__main__":
    main()
