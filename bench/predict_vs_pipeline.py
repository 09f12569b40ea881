"""Prediction speed: `plm predict --file dev.tsv` against transformers' pipeline and a hand-written loop.

All classify the 872 SST-2 dev sentences with the same fine-tuned model (the one
bench/finetune_vs_hf.py writes), on the CPU, in fp32 unless --precision says otherwise:

- plm: what ``plm predict --file dev.tsv --output preds.csv`` does (read the file, load the model,
  predict, write the CSV), called in-process;
- pipeline_default: ``pipeline("text-classification")`` at its default batch size, as it is
  usually called;
- pipeline_32: the same with ``batch_size=32``;
- sorted_loop: a careful hand-written fp32 loop (the reference, whatever --precision says):
  tokenise, sort by length, batches of 64 (plm's default) under inference_mode, labels put back
  in input order.

Two figures for each: the whole process (start Python, import, load, classify: what a user waits
for) and the prediction alone (the model loaded: tokenising and classifying). Each run has a
fresh process; sides alternate --repeats times; medians are reported, with the share of labels
each side shares with the fp32 loop.

Usage:
    python bench/predict_vs_pipeline.py [MODEL_DIR] [--repeats 3]
"""

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

from isolated import alternate, median, report

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "dev.tsv"
MODEL = Path(__file__).resolve().parent / "out" / "sst2-plm"
SIDES = ("plm", "pipeline_default", "pipeline_32", "sorted_loop")


def dev_texts() -> list[str]:
    with open(DEV, newline="", encoding="utf-8") as stream:
        return [row["content"] for row in csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)]


def run_plm(model: str, precision: str) -> tuple[float, list[str]]:
    """plm predict on the dev file, to a CSV: (texts/s of the prediction itself, labels)."""
    from plmcli.config import PredictConfig
    from plmcli.prediction import predict

    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "preds.csv"
        config = PredictConfig(file=str(DEV), model=model, output=str(output), device="cpu", precision=precision)
        result = predict(config)
        with open(output, newline="", encoding="utf-8") as stream:
            return result.texts_per_second, [row["predicted_label"] for row in csv.DictReader(stream)]


def run_pipeline(model: str, texts: list[str], batch_size: dict, precision: str) -> tuple[float, list[str]]:
    import torch
    from transformers import pipeline

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    classify = pipeline("text-classification", model=model, device="cpu", dtype=dtype, **batch_size)
    started = time.perf_counter()
    labels = [result["label"] for result in classify(texts)]
    return len(texts) / (time.perf_counter() - started), labels


def run_sorted_loop(model: str, texts: list[str]) -> tuple[float, list[str]]:
    """The reference: fp32 whatever --precision says."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    classifier = AutoModelForSequenceClassification.from_pretrained(model).eval()
    started = time.perf_counter()
    encoded = tokenizer(texts, truncation=True, max_length=512)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    labels = [None] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
            for i, index in zip(batch, classifier(**inputs).logits.argmax(-1).tolist()):
                labels[i] = classifier.config.id2label[index]
    return len(texts) / (time.perf_counter() - started), labels


def run_child(args) -> None:
    texts = dev_texts()
    if args.side == "plm":
        texts_per_second, labels = run_plm(args.model, args.precision)
    elif args.side == "sorted_loop":
        texts_per_second, labels = run_sorted_loop(args.model, texts)
    else:
        batch_size = {} if args.side == "pipeline_default" else {"batch_size": 32}
        texts_per_second, labels = run_pipeline(args.model, texts, batch_size, args.precision)
    report({"prediction_texts_per_second": texts_per_second, "labels": labels})


def measure(model: str = str(MODEL), repeats: int = 3, precision: str = "fp32") -> dict:
    common = [model, "--precision", precision]
    runs = alternate(__file__, {side: common for side in SIDES}, repeats)
    reference = runs["sorted_loop"][0]["labels"]
    texts = len(reference)
    summary = {"texts": texts, "precision": precision, "runs": {name: len(r) for name, r in runs.items()}}
    for name, results in runs.items():
        summary[name] = {
            "process_seconds": round(median(results, "process_seconds"), 2),
            "process_texts_per_second": round(texts / median(results, "process_seconds"), 1),
            "prediction_texts_per_second": round(median(results, "prediction_texts_per_second"), 1),
            "labels_as_fp32_loop": round(
                statistics.mean(sum(a == b for a, b in zip(r["labels"], reference)) / texts for r in results), 4
            ),
            "peak_rss_mb": round(median(results, "peak_rss_mb")),
        }
    summary["ratios"] = {
        kind: {
            name: round(summary["plm"][f"{kind}_texts_per_second"] / summary[name][f"{kind}_texts_per_second"], 2)
            for name in SIDES[1:]
        }
        for kind in ("process", "prediction")
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(MODEL))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="plm's and the pipeline's")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one run, in a child process
    args = parser.parse_args()
    if args.side:
        return run_child(args)
    summary = measure(args.model, args.repeats, args.precision)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
