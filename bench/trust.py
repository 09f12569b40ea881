"""Calibrated scores and abstention on a real 8-class set: `plm finetune`, `evaluate`, `predict --min-score`.

Data: a real 8-class set (``--set``, see ``bench/sets.py``; default: Debian package descriptions
by archive section), a training file and a test set the model never sees, split in two halves A
and B with a fixed seed.

1. ``plm finetune train.csv --calibration beta`` with every other default (3 epochs; the 10%
   validation split). It fits the temperature, then the top-score map; a copy of the model without
   ``plm.top_score_map`` is exactly what the default ``--calibration temperature`` saves (same
   weights, same temperature, fitted first either way), so one training serves both.
2. For each calibration, ``plm evaluate`` on A (with ``--target-accuracy T``), B and the whole test
   set: ECE (15 bins, top label), NLL and mean top score with the calibration and without it (raw
   softmax), on rows it never saw; the coverage table; the lowest --min-score that reaches T on A.
3. ``plm predict`` on the test set with each calibration: the labels must be the same.
4. ``plm predict --file B.csv --min-score S`` with the S chosen on A (default calibration): the share
   of B's rows it answers and their accuracy, against what A's table predicted.

Prints the figures and writes them to bench/results-trust-SET.json (``--output``).

    python bench/trust.py [--set debian] [--target 0.95]
"""

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import sets
from isolated import describe, machine

HERE = Path(__file__).resolve().parent
CALIBRATIONS = ("temperature", "beta")


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


def temperature_only(model: Path, copy: Path) -> None:
    """``model`` as --calibration temperature would have saved it: the same, without plm.top_score_map."""
    shutil.copytree(model, copy)
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    config["plm"].pop("top_score_map", None)
    (copy / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def answered_with(model: Path, path: Path, chosen: dict, output: Path) -> dict:
    """``plm predict --min-score`` on ``path``: how many rows it answers and how many of those are right."""
    plm("predict", "--model", str(model), "--file", str(path), "--output", str(output),
        "--min-score", str(chosen["min_score"]))  # fmt: skip
    with open(output, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))  # the file's columns, then predicted_label (empty: abstained)
    kept = [row for row in rows if row["predicted_label"]]
    return {
        "min_score": chosen["min_score"],
        "rows": len(rows),
        "answered": len(kept),
        "share": round(len(kept) / len(rows), 4),
        "accuracy": round(sum(row["predicted_label"] == row["label"] for row in kept) / max(len(kept), 1), 4),
        "predicted_on_A": chosen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sets.add_arguments(parser, train_per_class=750, test_per_class=500)
    parser.add_argument("--target", type=float, default=0.95, help="the accuracy --min-score is chosen for on A")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="[default: bench/results-trust-SET.json]")
    args = parser.parse_args()
    args.output = args.output or HERE / f"results-trust-{args.set}.json"

    with tempfile.TemporaryDirectory(prefix="plm-trust-") as scratch:
        directory = Path(scratch)
        train, test, data = sets.write(args, directory)
        first, second = halves(test, directory, args.seed)
        models = {name: directory / f"model-{name}" for name in CALIBRATIONS}
        plm("finetune", str(train), "--calibration", "beta", "--output", str(models["beta"]))
        temperature_only(models["beta"], models["temperature"])
        fitted = json.loads((models["beta"] / "metrics.json").read_text())["validation"]["calibration"]
        figures: dict = {name: {} for name in CALIBRATIONS}
        for method, model in models.items():
            for name, path in (("A", first), ("B", second), ("test", test)):
                report = directory / f"eval-{method}-{name}"
                extra = ["--target-accuracy", str(args.target)] if name == "A" else []
                print(plm("evaluate", str(path), "--model", str(model), "--output", str(report), *extra), flush=True)
                figures[method][name] = json.loads((report / "metrics.json").read_text())
        labels = {}
        for method, model in models.items():
            predicted = directory / f"test-{method}.csv"
            plm("predict", "--model", str(model), "--file", str(test), "--output", str(predicted))
            with open(predicted, newline="", encoding="utf-8") as stream:
                labels[method] = [row["predicted_label"] for row in csv.DictReader(stream)]
        same = labels["temperature"] == labels["beta"]
        chosen = figures["temperature"]["A"]["target_accuracy"]
        answered = None
        if chosen["min_score"] is not None:
            answered = answered_with(models["temperature"], second, chosen, directory / "B-predicted.csv")

    where = machine()
    print(f"\n{data['source']}: {data['train_rows']} training rows; {data['test_rows']} test rows in halves A and B; "
          f"{describe(where)}")  # fmt: skip
    print(f"fitted on the {fitted['before']['accuracy']:.4f}-accurate validation split: temperature "
          f"{fitted['temperature']:.4g}, top-score map {fitted['top_score_map']}")  # fmt: skip
    print(f"{'held-out rows':<16} {'accuracy':>8} {'ECE raw':>8} {'temperature':>12} {'+ beta map':>11} "
          f"{'NLL raw':>8} {'temperature':>12} {'+ beta map':>11}")  # fmt: skip
    for name in ("A", "B", "test"):
        raw = figures["temperature"][name]["calibration"]["before"]
        by = {method: figures[method][name]["calibration"]["after"] for method in CALIBRATIONS}
        print(f"{name + ' (' + str(figures['beta'][name]['samples']) + ')':<16} {raw['accuracy']:>8.4f} "
              f"{raw['ece']:>8.4f} {by['temperature']['ece']:>12.4f} {by['beta']['ece']:>11.4f} "
              f"{raw['nll']:>8.4f} {by['temperature']['nll']:>12.4f} {by['beta']['nll']:>11.4f}")  # fmt: skip
    print(f"the test set's {len(labels['beta'])} predicted labels are the same with either calibration: {same}")
    if answered is not None:
        print(
            f"predict --min-score {answered['min_score']:.4f} (the lowest reaching {args.target} on A, where it "
            f"answered {chosen['coverage']:.1%} at {chosen['accuracy']:.4f}): on B it answers {answered['answered']} "
            f"of {answered['rows']} rows ({answered['share']:.1%}) at accuracy {answered['accuracy']:.4f}, "
            f"against {figures['temperature']['B']['accuracy']:.4f} answering all"
        )
    summary = {
        "data": data,
        "validation_calibration": fitted,
        **{
            method: {
                name: {key: figures[method][name][key] for key in ("samples", "accuracy", "calibration", "coverage")}
                for name in ("A", "B", "test")
            }
            for method in CALIBRATIONS
        },
        "labels_identical": same,
        "target_accuracy_on_A": chosen,
        "predict_B_with_min_score_from_A": answered,
        "machine": where,
    }
    args.output.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
