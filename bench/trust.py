"""Calibrated scores and abstention on a real 8-class set: `plm finetune`, `evaluate`, `predict --min-score`.

Data: WordNet glosses in 8 classes (``bench/wordnet.py``; ``--part nouns`` or ``verbs``; needs
``apt-get install wordnet-base``): ``--train-per-class`` training rows per class, and a test set
of ``--test-per-class`` per class, split in two halves A and B with a fixed seed.

1. ``plm finetune train.csv`` with every default (3 epochs, temperature fitted on the 10%
   validation split).
2. ``plm evaluate A.csv --target-accuracy T`` and ``plm evaluate B.csv``: ECE (15 bins, top
   label), NLL and mean top score with the model's temperature and without it (raw softmax), on
   rows the temperature never saw; the coverage table; the lowest --min-score that reaches T on A.
3. ``plm predict --file B.csv --min-score S`` with the S chosen on A: the share of B's rows it
   answers and their accuracy, against what A's table predicted.

Prints the figures and writes them to bench/results-trust.json (``--output``).

    python bench/trust.py [--part nouns] [--train-per-class 750] [--test-per-class 500] [--target 0.95]
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from isolated import describe, machine
from wordnet import write_sets

HERE = Path(__file__).resolve().parent


def plm(*arguments: str) -> str:
    script = Path(sys.executable).with_name("plm")
    command = [str(script) if script.exists() else sys.executable, *([] if script.exists() else ["-m", "plmcli"])]
    command += list(arguments)
    print("$", " ".join(command), flush=True)
    completed = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        sys.exit(f"Error: {' '.join(command)} exited {completed.returncode}")
    return completed.stdout


def halves(test: Path, directory: Path, seed: int) -> tuple[Path, Path]:
    with open(test, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    random.Random(seed).shuffle(rows)
    paths = []
    for name, part in (("A.csv", rows[: len(rows) // 2]), ("B.csv", rows[len(rows) // 2 :])):
        with open(directory / name, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, ["text", "label"])
            writer.writeheader()
            writer.writerows(part)
        paths.append(directory / name)
    return paths[0], paths[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("nouns", "verbs"), default="nouns")
    parser.add_argument("--train-per-class", type=int, default=750)
    parser.add_argument("--test-per-class", type=int, default=500)
    parser.add_argument("--target", type=float, default=0.95, help="the accuracy --min-score is chosen for on A")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=HERE / "results-trust.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="plm-trust-") as scratch:
        directory = Path(scratch)
        train, test = write_sets(directory, args.train_per_class, args.test_per_class, args.seed, part=args.part)
        first, second = halves(test, directory, args.seed)
        model = directory / "model"
        plm("finetune", str(train), "--output", str(model))
        trained = json.loads((model / "metrics.json").read_text())["validation"]["calibration"]
        figures = {}
        for name, path in (("A", first), ("B", second)):
            report = directory / f"eval-{name}"
            extra = ["--target-accuracy", str(args.target)] if name == "A" else []
            print(plm("evaluate", str(path), "--model", str(model), "--output", str(report), *extra), flush=True)
            figures[name] = json.loads((report / "metrics.json").read_text())
        chosen = figures["A"]["target_accuracy"]
        answered = None
        if chosen is not None:
            predictions = directory / "B-predicted.csv"
            plm("predict", "--model", str(model), "--file", str(second), "--output", str(predictions),
                "--min-score", str(chosen["min_score"]))  # fmt: skip
            with open(predictions, newline="", encoding="utf-8") as stream:
                rows = list(csv.DictReader(stream))  # B's columns, then predicted_label (empty: abstained)
            kept = [row for row in rows if row["predicted_label"]]
            answered = {
                "min_score": chosen["min_score"],
                "rows": len(rows),
                "answered": len(kept),
                "share": round(len(kept) / len(rows), 4),
                "accuracy": round(sum(row["predicted_label"] == row["label"] for row in kept) / max(len(kept), 1), 4),
                "predicted_on_A": chosen,
            }

    where = machine()
    print(f"\nWordNet {args.part}, 8 classes: {args.train_per_class * 8} training rows; test halves A and B of "
          f"{args.test_per_class * 4} rows each; {describe(where)}")  # fmt: skip
    print(f"temperature {figures['A']['calibration']['temperature']:.4g} (fitted on the validation split: ECE "
          f"{trained['before']['ece']:.4f} -> {trained['after']['ece']:.4f} there)")  # fmt: skip
    for name in ("A", "B"):
        calibration = figures[name]["calibration"]
        print(
            f"{name}: accuracy {figures[name]['accuracy']:.4f}; ECE raw {calibration['before']['ece']:.4f} -> "
            f"calibrated {calibration['after']['ece']:.4f}; NLL {calibration['before']['nll']:.4f} -> "
            f"{calibration['after']['nll']:.4f}; mean top score {calibration['before']['mean_top_score']:.4f} -> "
            f"{calibration['after']['mean_top_score']:.4f}"
        )
    if answered is not None:
        print(
            f"predict --min-score {answered['min_score']:.4f} (the lowest reaching {args.target} on A, where it "
            f"answered {chosen['coverage']:.1%} at {chosen['accuracy']:.4f}): on B it answers {answered['answered']} "
            f"of {answered['rows']} rows ({answered['share']:.1%}) at accuracy {answered['accuracy']:.4f}, "
            f"against {figures['B']['accuracy']:.4f} answering all"
        )
    summary = {
        "data": {
            "source": f"WordNet 3.0 {args.part} glosses, 8 lexicographer classes",
            "seed": args.seed,
            "train_rows": args.train_per_class * 8,
            "half_rows": args.test_per_class * 4,
        },  # fmt: skip
        "validation_calibration": trained,
        "A": {key: figures["A"][key] for key in ("accuracy", "calibration", "coverage", "target_accuracy")},
        "B": {key: figures["B"][key] for key in ("accuracy", "calibration", "coverage")},
        "predict_B_with_min_score_from_A": answered,
        "machine": where,
    }
    args.output.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
