"""`plm export`: torch fp32 against ONNX fp32 and ONNX int8 of the same fine-tuned model, on the SST-2 dev set.

Data: ../shared/data/sst2 (see its README): the model is ``plm finetune`` of the first
``--train-rows`` (4,000) rows of train.tsv, shuffled with ``--seed``, from the bundled MiniLM with
plm's defaults (``--epochs`` 1 unless told), or the directory given with ``--model``. Both exports
are made by ``plm export`` with ``--check dev.tsv``: ``--quantize none`` and ``--quantize int8
--force`` (forced, so that an int8 graph the check refuses is still measured here; its figures say
whether it passed). Their check figures (agreement, score difference, accuracy) are read from
each export's export.json.

Then each side predicts the dev set in its own fresh process (bench/isolated.py: sides
alternate, ``--repeats`` rounds, medians), as ``plm predict`` runs it (plmcli.inference's
Classifier: tokenised once, batches sorted longest first):

- torch fp32: the fine-tuned directory, ``--precision fp32`` on the CPU;
- ONNX fp32 and ONNX int8: the exported directories, through onnxruntime.

Each side is timed after a warm-up batch: texts/s over every dev sentence at batch 32, and over the
first ``--batch1-rows`` at batch 1. Prints texts/s, their ratio to torch fp32, label agreement with
torch fp32 and accuracy, and writes them with the machine to bench/results-export.json.

    python bench/export_vs_torch.py [--train-rows 4000] [--epochs 1] [--repeats 3]
    python bench/export_vs_torch.py --model runs/sst2 --repeats 1      # an existing model

Targets (issue 27): int8 >= 2x torch fp32 texts/s at batch 32 and >= 1.5x at batch 1, >= 99% label
agreement, at most 0.5 points less accuracy.
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from isolated import alternate, describe, machine, median, report

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "sst2"
RESULTS = HERE / "results-export.json"
SIDES = ("torch fp32", "ONNX fp32", "ONNX int8")


def plm_command() -> list[str]:
    """The installed plm, or this checkout's as a module."""
    script = Path(sys.executable).parent / "plm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "plmcli"]


def run(command: list[str]) -> float:
    """Run a plm command (its output shown), its wall seconds."""
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - started


def training_file(scratch: Path, rows: int, seed: int) -> Path:
    """The first ``rows`` rows of SST-2's train.tsv after a seeded shuffle, as a CSV (sentence, label)."""
    with open(DATA / "train.tsv", encoding="utf-8", newline="") as stream:
        table = list(csv.DictReader(stream, delimiter="\t"))
    random.Random(seed).shuffle(table)
    path = scratch / "train.csv"
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["sentence", "label"])
        writer.writerows((row["sentence"], row["label"]) for row in table[:rows])
    return path


def side(arguments) -> None:
    """One side in this process: texts/s at batch 32 and 1, labels, accuracy on the dev set."""
    sys.path.insert(0, str(HERE.parent))
    from plmcli import data
    from plmcli.config import PredictConfig
    from plmcli.inference import load_for_inference

    frame = data.read_table(arguments.dev)
    texts, labels = frame["content"].tolist(), frame["label"].tolist()
    precision = "fp32" if arguments.side == "torch fp32" else "auto"
    classifier = load_for_inference(
        PredictConfig(texts=["-"], model=arguments.directory, device="cpu", precision=precision), plain_bert=True
    )
    rates = {}
    for batch_size, count in ((32, len(texts)), (1, min(arguments.batch1_rows, len(texts)))):
        classifier.scores(texts[:batch_size], batch_size)  # warm-up: the first pass allocates
        started = time.perf_counter()
        scores, _ = classifier.scores(texts[:count], batch_size)
        rates[batch_size] = count / (time.perf_counter() - started)
        if batch_size == 32:
            predicted = [classifier.label_names[i] for i in scores.argmax(axis=1)]
    accuracy = sum(p == y for p, y in zip(predicted, labels)) / len(labels)
    report(
        {"texts_per_second_32": rates[32], "texts_per_second_1": rates[1], "accuracy": accuracy, "labels": predicted}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="A fine-tuned SST-2 model directory (default: fine-tune one)")
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dev", default=str(DATA / "dev.tsv"))
    parser.add_argument("--batch1-rows", type=int, default=200, help="dev sentences timed at batch 1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", choices=SIDES)
    parser.add_argument("--directory")
    arguments = parser.parse_args()
    if arguments.side:
        side(arguments)
        return
    scratch = Path(tempfile.mkdtemp(prefix="plm-export-bench-"))
    model = arguments.model
    timing = {}
    if model is None:
        model = str(scratch / "model")
        train = training_file(scratch, arguments.train_rows, arguments.seed)
        timing["finetune_seconds"] = run(
            [*plm_command(), "finetune", str(train), "--output", model, "--epochs", str(arguments.epochs)]
            + ["--seed", str(arguments.seed)]
        )
    exports = {"ONNX fp32": scratch / "fp32", "ONNX int8": scratch / "int8"}
    for name, directory in exports.items():
        quantize = ["--quantize", "int8", "--force"] if "int8" in name else []
        timing[f"export_seconds_{name.split()[1]}"] = run(
            [*plm_command(), "export", model, "--output", str(directory), "--check", arguments.dev, *quantize]
        )
    checks = {name: json.loads((directory / "export.json").read_text()) for name, directory in exports.items()}
    common = ["--dev", arguments.dev, "--batch1-rows", str(arguments.batch1_rows)]
    directories = {"torch fp32": model, **{name: str(path) for name, path in exports.items()}}
    runs = alternate(
        __file__,
        {name: [*common, "--directory", directory] for name, directory in directories.items()},
        arguments.repeats,
    )
    reference = runs["torch fp32"][0]["labels"]
    rows = []
    for name in SIDES:
        labels = runs[name][0]["labels"]
        rows.append(
            {
                "side": name,
                "texts_per_second_32": median(runs[name], "texts_per_second_32"),
                "texts_per_second_1": median(runs[name], "texts_per_second_1"),
                "agreement": sum(a == b for a, b in zip(labels, reference)) / len(reference),
                "accuracy": runs[name][0]["accuracy"],
                "peak_rss_mb": median(runs[name], "peak_rss_mb"),
            }
        )
    base = rows[0]
    host = machine()
    print(f"\nSST-2 dev ({len(reference)} sentences), {describe(host)}")
    print(f"{'side':<11} {'texts/s b32':>11} {'x':>6} {'texts/s b1':>10} {'x':>6} {'agree':>7} {'accuracy':>8}")
    for row in rows:
        print(
            f"{row['side']:<11} {row['texts_per_second_32']:>11.1f} "
            f"{row['texts_per_second_32'] / base['texts_per_second_32']:>5.2f}x "
            f"{row['texts_per_second_1']:>10.1f} {row['texts_per_second_1'] / base['texts_per_second_1']:>5.2f}x "
            f"{row['agreement']:>7.2%} {row['accuracy']:>8.4f}"
        )
    int8 = checks["ONNX int8"]
    print(
        f"\nplm export's check of int8 ({int8['variant']}): "
        + "; ".join(
            f"batch {item['batch_size']}: agreement {item['agreement']:.2%}, max score diff "
            f"{item['max_score_difference']:.3g}, accuracy {item['metric']}"
            for item in int8["check"]["int8"]
        )
        + (" -- refused without --force" if int8["forced"] else " -- passed")
    )
    RESULTS.write_text(
        json.dumps(
            {
                "model": arguments.model
                or f"plm finetune of {arguments.train_rows} SST-2 rows, {arguments.epochs} epoch",
                "dev": arguments.dev,
                "sides": rows,
                "export_checks": {name: check["check"] for name, check in checks.items()},
                "int8_variant": int8["variant"],
                "int8_forced": int8["forced"],
                "timing": timing,
                "machine": host,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"Wrote {RESULTS}")


if __name__ == "__main__":
    main()
