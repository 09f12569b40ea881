"""Finding flipped labels: `plm audit` against a TF-IDF + logistic-regression out-of-fold ranking.

Data: WordNet noun glosses in 8 classes (``bench/wordnet.py``; ``apt-get install wordnet-base``),
``--per-class`` rows each (500: 4,000 rows). A fixed share of the labels (``--flip``, 5%: 200
rows), chosen with ``--seed``, is turned into another class drawn at random, and the file is
written to a temporary directory. Both sides rank the same noisy file:

- tfidf_lr: scikit-learn TfidfVectorizer (word 1-2 grams, sublinear tf) and LogisticRegression
  (C=10, lbfgs), out-of-fold probabilities from 5 stratified folds (``cross_val_predict``), rows
  ranked by self-confidence (the out-of-fold probability of the given label), lowest first.
  Timed in this process.
- plm: ``plm audit noisy.csv`` with every default (the bundled MiniLM, 5 folds, 3 epochs each),
  timed as the process's wall time. Two rankings are read from its report: ``out_of_fold.csv``'s
  self-confidence over every row (the same ranking rule as the baseline's), and ``suspects.csv``,
  the rows cleanlab flags, in its order.

For each: the precision of the top N (N = the number of flipped rows), i.e. the share of the N
most suspect rows that were flipped; for cleanlab's flags also their number, precision and recall.
Prints a table and writes bench/results-audit.json.

    python bench/audit_vs_tfidf.py [--per-class 500] [--flip 0.05] [--seed 0]
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

from isolated import describe, machine
from wordnet import write_sets

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-audit.json"


def flip(rows: list[dict], share: float, seed: int) -> set[int]:
    """Turn the labels of ``share`` of the rows (chosen with ``seed``) into another class; their 0-based indices."""
    rng = random.Random(seed)
    labels = sorted({row["label"] for row in rows})
    chosen = set(rng.sample(range(len(rows)), round(share * len(rows))))
    for i in sorted(chosen):
        rows[i]["label"] = rng.choice([label for label in labels if label != rows[i]["label"]])
    return chosen


def top_precision(ranked: list[int], flipped: set[int]) -> float:
    top = ranked[: len(flipped)]
    return sum(i in flipped for i in top) / len(flipped)


def tfidf_lr(rows: list[dict], seed: int) -> tuple[list[int], float]:
    """Rows ranked by the out-of-fold self-confidence of TF-IDF + logistic regression, and the seconds it took."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    texts, labels = [row["text"] for row in rows], [row["label"] for row in rows]
    classes = sorted(set(labels))
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=10.0, max_iter=2000)
    )
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(model, texts, labels, cv=folds, method="predict_proba")
    given = np.array([classes.index(label) for label in labels])
    confidence = probabilities[np.arange(len(rows)), given]
    return [int(i) for i in np.argsort(confidence, kind="stable")], time.perf_counter() - started


def plm_command() -> list[str]:
    script = Path(sys.executable).with_name("plm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "plmcli"]


def plm_audit(data: Path, output: Path, extra: list[str]) -> tuple[list[int], list[int], dict, float]:
    """Rows ranked by plm's out-of-fold self-confidence, cleanlab's flagged rows in order, metrics.json, seconds."""
    command = [*plm_command(), "audit", str(data), "--output", str(output), *extra]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    print(completed.stdout, flush=True)
    if completed.returncode != 0:
        sys.exit(f"Error: plm audit exited {completed.returncode}")
    with open(output / "out_of_fold.csv", newline="", encoding="utf-8") as stream:
        every = list(csv.DictReader(stream))
    ranked = [int(row["row"]) - 1 for row in sorted(every, key=lambda row: float(row["self_confidence"]))]
    with open(output / "suspects.csv", newline="", encoding="utf-8") as stream:
        flagged = [int(row["row"]) - 1 for row in csv.DictReader(stream)]
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    return ranked, flagged, metrics, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=("nouns", "verbs"), default="nouns")
    parser.add_argument("--plm-args", default="", help="more options for plm audit, e.g. '--epochs 1'")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="plm-audit-") as scratch:
        directory = Path(scratch)
        clean, _ = write_sets(directory / "wordnet", args.per_class, 0, args.seed, part=args.part)
        with open(clean, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
        flipped = flip(rows, args.flip, args.seed)
        noisy = directory / "noisy.csv"
        with open(noisy, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, ["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
        print(f"{len(rows)} rows, {len(flipped)} labels flipped (seed {args.seed})", flush=True)

        baseline, baseline_seconds = tfidf_lr(rows, args.seed)
        baseline_precision = top_precision(baseline, flipped)
        print(f"tfidf_lr: top-N precision {baseline_precision:.3f} in {baseline_seconds:.1f} s", flush=True)
        ranked, flagged, metrics, seconds = plm_audit(noisy, directory / "audit", args.plm_args.split())

    ours = top_precision(ranked, flipped)
    flags_top = top_precision(flagged, flipped) if len(flagged) >= len(flipped) else None
    hits = sum(i in flipped for i in flagged)
    flags = {
        "count": len(flagged),
        "precision": round(hits / len(flagged), 4) if flagged else None,
        "recall": round(hits / len(flipped), 4),
        "top_n_precision": round(flags_top, 4) if flags_top is not None else None,
    }
    where = machine()
    n = len(flipped)
    print(f"\n{len(rows)} rows, {n} flipped; {describe(where)}")
    print(f"{'ranking':<48} {'top-' + str(n) + ' precision':>18} {'wall s':>8}")
    print(f"{'plm audit: out-of-fold self-confidence':<48} {ours:>18.3f} {seconds:>8.1f}")
    if flags_top is not None:
        print(f"{'plm audit: cleanlab flags (suspects.csv)':<48} {flags_top:>18.3f} {'':>8}")
    print(f"{'TF-IDF + logistic regression, out-of-fold':<48} {baseline_precision:>18.3f} {baseline_seconds:>8.1f}")
    print(
        f"cleanlab flagged {len(flagged)} rows: precision {flags['precision']}, recall {flags['recall']}; "
        f"plm minus baseline: {ours - baseline_precision:+.3f}"
    )
    summary = {
        "data": {
            "source": f"WordNet 3.0 {args.part} glosses (Debian package wordnet-base), 8 lexicographer classes",
            "rows": len(rows),
            "per_class": args.per_class,
            "flipped": n,
            "seed": args.seed,
        },
        "plm": {
            "command": f"plm audit noisy.csv {args.plm_args}".strip(),
            "top_n_precision_self_confidence": round(ours, 4),
            "cleanlab_flags": flags,
            "cross_validation": metrics["cross_validation"],
            "estimated_label_errors": metrics["estimated_label_errors"],
            "seconds": round(seconds, 1),
        },
        "tfidf_lr": {"top_n_precision": round(baseline_precision, 4), "seconds": round(baseline_seconds, 1)},
        "difference_plm_minus_baseline": round(ours - baseline_precision, 4),
        "machine": where,
    }
    args.output.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
