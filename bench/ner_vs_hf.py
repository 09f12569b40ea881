"""Named entities on CoNLL-2003: plm finetune --task token-classification against transformers' run_ner.py recipe.

Every side trains the bundled MiniLM on the same CoNLL-2003 training sentences (the file as
distributed, IOB1; the plain side gets plm's IOB2 conversion of them, as the Hub's copy of the
data has IOB2 tags) with the same epochs, batch size (32), learning rate (plm's default for the
model's width, 1e-4), warmup and weight decay, and is scored on the same validation file with the
same entity metric (seqeval, strict IOB2). The sides:

- plm: ``plm finetune --task token-classification`` with its defaults (random batches, each trained
  in length-sorted parts with less padding, each word weighted alike in the loss, the CPU speed-ups,
  ``--precision auto``: bf16 where the CPU has bf16 instructions, fp32 elsewhere);
- hf: run_ner.py's recipe: AutoModelForTokenClassification, the first sub-token of each word
  labelled (-100 elsewhere), truncation at 128 tokens, DataCollatorForTokenClassification, random
  batches, fp32 (its default);
- hf_bf16: the same with ``bf16=True``, so the precision is not the whole difference.

Each run has a fresh process; sides alternate --repeats times. Reported: training samples/s
(sentences, the Trainer's count; plm counts windows, as many as sentences at 128 tokens), entity
F1 on validation, the process's wall time and peak resident memory, and plm's ratios.

Usage:
    python bench/ner_vs_hf.py [--sentences 3000] [--epochs 1] [--repeats 1] [--seed 42] [--sides plm,hf,hf_bf16]
"""

import argparse
import json
import tempfile
from pathlib import Path

from isolated import alternate, machine, median, report

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"
OUT = Path(__file__).resolve().parent / "out" / "ner-plm"
SIDES = ("plm", "hf", "hf_bf16")


def plain_hf(words, tags, dev_words, dev_tags, names, output_dir: str, epochs: float, bf16: bool, seed: int) -> dict:
    """run_ner.py: tokenize_and_align_labels (first sub-token labelled), the token collator, Trainer."""
    from datasets import Dataset
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from plmcli import modeling
    from plmcli.metrics import entity_report

    model_dir = str(modeling.bundled_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    set_seed(seed)
    label2id = {name: i for i, name in enumerate(names)}
    model = AutoModelForTokenClassification.from_pretrained(
        model_dir, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id
    )

    def align(batch):
        encoded = tokenizer(batch["tokens"], truncation=True, max_length=128, is_split_into_words=True)
        labels = []
        for index, sentence_tags in enumerate(batch["tags"]):
            previous, row = None, []
            for word in encoded.word_ids(index):
                row.append(-100 if word is None or word == previous else label2id[sentence_tags[word]])
                previous = word
            labels.append(row)
        encoded["labels"] = labels
        return encoded

    train = Dataset.from_dict({"tokens": words, "tags": tags}).map(
        align, batched=True, remove_columns=["tokens", "tags"]
    )
    dev = Dataset.from_dict({"tokens": dev_words, "tags": dev_tags}).map(
        align, batched=True, remove_columns=["tokens", "tags"]
    )
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=1e-4,
        weight_decay=0.01,
        warmup_steps=0.06,
        num_train_epochs=epochs,
        save_strategy="no",
        report_to="none",
        seed=seed,
        use_cpu=True,
        bf16=bf16,
        disable_tqdm=True,
        logging_strategy="no",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
    )
    result = trainer.train()
    output = trainer.predict(dev)
    predicted = []
    for row, labels in zip(output.predictions.argmax(-1), output.label_ids):
        predicted.append([names[int(p)] for p, label in zip(row, labels) if label != -100])
    # A word cut off by truncation has no prediction: it counts as O, as run_ner's metric would drop it.
    predicted = [p + ["O"] * (len(gold) - len(p)) for p, gold in zip(predicted, dev_tags)]
    figures = entity_report(predicted, dev_tags)
    return {"samples_per_second": result.metrics["train_samples_per_second"], "f1": figures["f1"]}


def run_plm(sentences: int, epochs: float, seed: int) -> dict:
    from plmcli.config import FinetuneConfig
    from plmcli.run import finetune

    result = finetune(
        FinetuneConfig(
            data=str(DATA / "train.txt"),
            validation=str(DATA / "valid.txt"),
            task="token-classification",
            max_train_samples=sentences,
            epochs=epochs,
            output=str(OUT),
            overwrite=True,
            device="cpu",
            seed=seed,
        )
    )
    return {
        "learning_rate": result.metrics["train"]["learning_rate"],
        "precision": result.metrics["precision"],
        "samples_per_second": result.timing["samples_per_second"],
        "runtime_seconds": result.timing["runtime_seconds"],
        "f1": result.metrics["validation"]["f1"],
        "per_type_f1": {name: row["f1"] for name, row in result.metrics["validation"]["per_type"].items()},
    }


def run_child(args) -> None:
    if args.side == "plm":
        return report(run_plm(args.sentences, args.epochs, args.seed))
    from plmcli import tokendata

    train = tokendata.read_tagged(str(DATA / "train.txt"))
    dev = tokendata.read_tagged(str(DATA / "valid.txt"))
    count = args.sentences or len(train.words)
    names = sorted({tag for tags in train.tags for tag in tags})
    with tempfile.TemporaryDirectory() as scratch:
        report(
            plain_hf(
                train.words[:count],
                train.tags[:count],
                dev.words,
                dev.tags,
                names,
                scratch,
                args.epochs,
                args.side == "hf_bf16",
                args.seed,
            )
        )


def measure(sentences, epochs: float, repeats: int, sides: list[str], seed: int) -> dict:
    common = ["--epochs", str(epochs), "--seed", str(seed), *(["--sentences", str(sentences)] if sentences else [])]
    runs = alternate(__file__, {side: common for side in sides}, repeats)
    summary = {"sentences": sentences or "all", "epochs": epochs, "seed": seed, "machine": machine()}
    for name, results in runs.items():
        summary[name] = {
            "samples_per_second": round(median(results, "samples_per_second"), 1),
            "f1": round(median(results, "f1"), 4),
            "process_seconds": round(median(results, "process_seconds"), 1),
            "peak_rss_mb": round(median(results, "peak_rss_mb")),
            "each_run": results,
        }
    if "plm" in runs:
        plm = summary["plm"]
        summary["ratios"] = {
            name: {
                "throughput": round(plm["samples_per_second"] / summary[name]["samples_per_second"], 2),
                "f1_difference": round(plm["f1"] - summary[name]["f1"], 4),
                "peak_rss": round(plm["peak_rss_mb"] / summary[name]["peak_rss_mb"], 2),
            }
            for name in runs
            if name != "plm"
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=None, help="training sentences (default: all 14,041)")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42, help="of both sides: initial weights and data order")
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--output", help="also write the summary to this JSON file")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one run, in a child process
    args = parser.parse_args()
    if args.side:
        return run_child(args)
    summary = measure(args.sentences, args.epochs, args.repeats, args.sides.split(","), args.seed)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
