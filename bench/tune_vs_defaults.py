"""What a time budget buys: `plm tune --budget B` against `plm finetune` with its defaults, on a held-out test set.

Data: a real 8-class set (``--set``, see ``bench/sets.py``; default: Debian package descriptions
by archive section): a training file, of which both commands hold out the same stratified 10%
for validation, and a test set that neither sees.

- defaults: ``plm finetune train.csv`` (3 epochs, batch 32, lr 1e-4 for MiniLM's width, ...).
- tune: ``plm tune train.csv --budget B --metric M`` (``--metric``, default accuracy: the figure
  the test set compares), timed as the process's wall time (the budget must hold
  to within a minute).

Both models are scored by ``plm evaluate test.csv``. Prints accuracy and macro-F1 of each, the
difference, the number of trials and how many were pruned, and writes bench/results-tune-SET.json.

    python bench/tune_vs_defaults.py [--budget 20m] [--set debian]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sets
from isolated import describe, machine

HERE = Path(__file__).resolve().parent


def plm(*arguments: str) -> float:
    """Run plm with ``arguments``; its wall time in seconds."""
    script = Path(sys.executable).with_name("plm")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "plmcli"]
    command += list(arguments)
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    print(completed.stdout, flush=True)
    if completed.returncode != 0:
        sys.exit(f"Error: {' '.join(command)} exited {completed.returncode}")
    return seconds


def scored(model: Path, test: Path) -> dict:
    report = model / "test-eval"
    plm("evaluate", str(test), "--model", str(model), "--output", str(report))
    metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="20m")
    parser.add_argument("--metric", default="accuracy", help="the validation metric tune optimises")
    sets.add_arguments(parser, train_per_class=750, test_per_class=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="[default: bench/results-tune-SET.json]")
    args = parser.parse_args()
    args.output = args.output or HERE / f"results-tune-{args.set}.json"

    with tempfile.TemporaryDirectory(prefix="plm-tune-") as scratch:
        directory = Path(scratch)
        train, test, data = sets.write(args, directory)
        tuned_dir, defaults_dir = directory / "tuned", directory / "defaults"
        searched = ["--budget", args.budget, "--metric", args.metric]
        tune_seconds = plm("tune", str(train), *searched, "--output", str(tuned_dir))
        report = json.loads((tuned_dir / "tune.json").read_text(encoding="utf-8"))
        tuned = scored(tuned_dir, test)
        defaults_seconds = plm("finetune", str(train), "--output", str(defaults_dir))
        defaults = scored(defaults_dir, test)

    where = machine()
    budget = report["budget_seconds"]
    print(f"\n{data['source']}: {data['train_rows']} rows to train and validate on, {data['test_rows']} test rows; "
          f"{describe(where)}")  # fmt: skip
    print(f"{'model':<34} {'test accuracy':>14} {'macro-F1':>9} {'wall s':>8}")
    print(f"{'plm finetune (defaults)':<34} {defaults['accuracy']:>14.4f} {defaults['macro_f1']:>9.4f} "
          f"{defaults_seconds:>8.0f}")  # fmt: skip
    print(f"{'plm tune --budget ' + args.budget:<34} {tuned['accuracy']:>14.4f} {tuned['macro_f1']:>9.4f} "
          f"{tune_seconds:>8.0f}")  # fmt: skip
    print(
        f"{len(report['trials'])} trials ({report['pruned']} pruned); best trial {report['best']['number']}: "
        f"{report['best']['params']}; tune took {tune_seconds:.0f} s of a {budget:.0f} s budget "
        f"({tune_seconds - budget:+.0f} s); accuracy {tuned['accuracy'] - defaults['accuracy']:+.4f} over the defaults"
    )
    summary = {
        "data": data,
        "defaults": {**defaults, "seconds": round(defaults_seconds, 1)},
        "tune": {
            **tuned,
            "budget": args.budget,
            "metric": args.metric,
            "seconds": round(tune_seconds, 1),
            "trials": len(report["trials"]),
            "pruned": report["pruned"],
            "best": report["best"],
            "validation_by_trial": [(t["number"], t["state"], t["value"]) for t in report["trials"]],
            "rss_mb_after_each_trial": [t["rss_mb"] for t in report["trials"]],
        },
        "accuracy_difference": round(tuned["accuracy"] - defaults["accuracy"], 4),
        "machine": where,
    }
    args.output.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
