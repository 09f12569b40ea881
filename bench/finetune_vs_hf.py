"""Fine-tuning throughput and accuracy: plm against the same run in plain Hugging Face.

Both train the bundled MiniLM on the same SST-2 rows with the same hyper-parameters (batch 32,
plm's default learning rate for it, 1e-4, linear decay after 6% warmup, weight decay 0.01, max
length 128, 1 epoch, fp32) and are scored on the same dev set. The plain run is what
run_glue.py does with dynamic padding: tokenise, DataCollatorWithPadding, random batches,
Trainer. Each run has a fresh process, as a command would; runs alternate (plm, HF, plm, HF,
...) because this host's speed drifts; medians are reported.

Usage:
    python bench/finetune_vs_hf.py [--samples 4000] [--repeats 1]
"""

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch
from isolated import report, run_side

from plmcli import modeling
from plmcli.config import FinetuneConfig
from plmcli.data import load_classification
from plmcli.training import finetune

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
MODEL_OUT = Path(__file__).resolve().parent / "out" / "sst2-plm"  # kept for bench/predict_vs_pipeline.py


def plain_hf(texts, labels, dev_texts, dev_labels, output_dir: str, lr: float, seed: int = 42) -> dict:
    """The plain Hugging Face fine-tuning run: dynamic padding, random batches."""
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    model_dir = str(modeling.bundled_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=128)

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
        seed=seed,
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    result = trainer.train()
    predictions = trainer.predict(dev)
    accuracy = float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())
    return {"samples_per_second": result.metrics["train_samples_per_second"], "accuracy": accuracy}


def run_plm(samples: int, output_dir: str) -> dict:
    result = finetune(
        FinetuneConfig(
            data=str(DATA / "train.tsv"),
            validation=str(DATA / "dev.tsv"),
            max_train_samples=samples,
            epochs=1,
            output=output_dir,
            overwrite=True,
            device="cpu",
        )
    )
    return {
        "learning_rate": result.metrics["train"]["learning_rate"],
        "samples_per_second": result.timing["samples_per_second"],
        "accuracy": result.metrics["validation"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--side", choices=["plm", "hf"], help=argparse.SUPPRESS)  # one run, in a child process
    parser.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "plm":
        return report(run_plm(args.samples, str(MODEL_OUT)))
    if args.side == "hf":
        # The exact rows plm trains on, handed to the plain run too.
        rows = load_classification(
            str(DATA / "train.tsv"), str(DATA / "dev.tsv"), 0.1, 42, max_train_samples=args.samples
        )
        to_int = [int(name) for name in rows.label_names]
        texts, labels = rows.train_texts, [to_int[i] for i in rows.train_labels]
        dev_texts, dev_labels = rows.validation_texts, [to_int[i] for i in rows.validation_labels]
        with tempfile.TemporaryDirectory() as scratch:
            return report(plain_hf(texts, labels, dev_texts, dev_labels, scratch, args.lr))

    results = {"plm": [], "hf": []}
    for _ in range(args.repeats):
        results["plm"].append(run_side(__file__, "plm", ["--samples", str(args.samples)]))
        print("plm", results["plm"][-1], flush=True)
        lr = results["plm"][-1]["learning_rate"]  # the same run: plm's resolved learning rate
        results["hf"].append(run_side(__file__, "hf", ["--samples", str(args.samples), "--lr", repr(lr)]))
        print("hf ", results["hf"][-1], flush=True)

    def median(name, key):
        return statistics.median(r[key] for r in results[name])

    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "samples": args.samples,
        "repeats": args.repeats,
        "plm_samples_per_second": round(median("plm", "samples_per_second"), 1),
        "hf_dynamic_padding_samples_per_second": round(median("hf", "samples_per_second"), 1),
        "throughput_ratio": round(median("plm", "samples_per_second") / median("hf", "samples_per_second"), 2),
        "plm_dev_accuracy": round(median("plm", "accuracy"), 4),
        "hf_dev_accuracy": round(median("hf", "accuracy"), 4),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
