"""Text regression: `plm finetune --task regression` against TF-IDF + ridge regression, on human ratings.

Data: the sentence-level sentiment ratings of the VADER paper (Hutto & Gilbert, ICWSM 2014): 10,605
sentences from Rotten Tomatoes movie reviews (Pang & Lee's 2,000 reviews, cut into sentences),
each rated by at least 20 screened human raters on a -4 (extremely negative) .. +4 (extremely
positive) scale; the target is their mean (1,417 distinct values). ``--corpus`` picks one of the
paper's other three sets instead (tweets, NYT editorial sentences, Amazon review sentences). The
files ship on PyPI in the source distribution of ``vaderSentiment==3.3.2`` (MIT licence), in
``additional_resources/hutto_ICWSM_2014.tar.gz``; its wheel, and so an installed vaderSentiment,
does not have them. Nothing is copied into this repository: at run time the script runs

    python -m pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d TMP

(or takes that tarball from ``--sdist PATH``), checks its sha256, reads
``hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt`` (tab-separated: id, mean rating, text)
out of the inner tarball, drops repeated texts (their first row is kept), shuffles the rows with
``--seed`` and writes three CSVs with the columns ``text,score`` into a temporary directory: the
first ``--test-rows`` rows are the test set, the next ``--validation-rows`` plm's validation file
(only reported on: nothing is selected with it), the next ``--train-rows`` the training set.

Both sides learn from the same training rows and are scored on the same test rows:

- tfidf_ridge: scikit-learn TfidfVectorizer (word 1-2 grams, sublinear tf, lowercased, every term
  seen in training) and RidgeCV, its alpha picked from 13 values in 1e-3 .. 1e3 by 5-fold
  cross-validation on the training rows, refitted on all of them (the CV error is flat for
  alphas up to about 0.1 on this data, so the smallest is often picked); the usual strong linear
  baseline for single-sentence ratings. Timed in this process (vectorise, fit, predict).
- plm: ``plm finetune train.csv --validation validation.csv --task regression --epochs N`` from
  the bundled MiniLM (N is --epochs, 1 unless told; every other setting plm's default: batch 32,
  lr 1e-4, max length 128, seed 42), then ``plm evaluate test.csv --model DIR --format json``;
  its Pearson, Spearman and RMSE are read from that JSON. Timed as the two processes' wall time
  (start, import, train, write the model, score the test set, write the report).

Prints a table (method, Pearson, Spearman, RMSE, wall seconds) and plm's Pearson over the
baseline's, and writes them, with the data's provenance and the machine, to
bench/results-regression.json.

Needs scikit-learn, which is not a plm dependency:

    pip install scikit-learn
    python bench/regression_vs_tfidf.py [--train-rows 3000] [--test-rows 1000] [--epochs 1]

The defaults (3,000 training rows, one epoch: 94 steps of 32) keep plm's fine-tune near ten
minutes on a 2-core CPU; ``--epochs 3`` is plm's own default and takes three times as long.
"""

import argparse
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from isolated import describe, machine

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-regression.json"
PACKAGE = "vaderSentiment==3.3.2"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
CORPORA = {
    "movie": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
}


def fetch_sdist(scratch: Path) -> Path:
    """vaderSentiment's source distribution from the package index, by pip."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PACKAGE]
    command += ["-d", str(scratch)]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return next(scratch.glob("vaderSentiment-3.3.2.tar.gz"))


def read_ratings(sdist: Path, corpus: str) -> list[tuple[str, float]]:
    """(text, mean rating) rows of one ground-truth file, repeated texts dropped (the first kept)."""
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        sys.exit(f"Error: {sdist} is not {PACKAGE}'s source distribution (sha256 {digest}).")
    with tarfile.open(sdist) as outer:
        inner_bytes = outer.extractfile(INNER).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile(f"hutto_ICWSM_2014/{CORPORA[corpus]}").read()
    rows, seen = [], set()
    for line in raw.decode("utf-8").splitlines():
        if not line.strip():
            continue
        _, rating, text = line.split("\t")
        text = " ".join(text.split())
        if text and text not in seen:
            seen.add(text)
            rows.append((text, float(rating)))
    return rows


def write_csv(path: Path, rows: list[tuple[str, float]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["text", "score"])
        writer.writerows((text, f"{score:g}") for text, score in rows)


def scores(truth, predicted) -> dict:
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    truth, predicted = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    return {
        "pearson": float(pearsonr(truth, predicted)[0]),
        "spearman": float(spearmanr(truth, predicted)[0]),
        "rmse": float(np.sqrt(np.mean((truth - predicted) ** 2))),
    }


def tfidf_ridge(train, test) -> dict:
    """TF-IDF word 1-2 grams + ridge regression, alpha by 5-fold CV on the training rows."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import RidgeCV

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    features = vectorizer.fit_transform([text for text, _ in train])
    model = RidgeCV(alphas=np.logspace(-3, 3, 13), cv=5).fit(features, [score for _, score in train])
    predicted = model.predict(vectorizer.transform([text for text, _ in test]))
    seconds = time.perf_counter() - started
    return {
        **scores([score for _, score in test], predicted),
        "seconds": seconds,
        "alpha": float(model.alpha_),
        "features": features.shape[1],
    }


def plm_command() -> list[str]:
    """The `plm` script beside this interpreter, else the same CLI as a module."""
    script = Path(sys.executable).with_name("plm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "plmcli"]


def run(command: list[str], env: dict) -> tuple[str, float]:
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f"Error: {' '.join(command)} exited {completed.returncode}; its output:\n{completed.stdout}")
    return completed.stdout, seconds


def plm(directory: Path, epochs: float) -> dict:
    """Fine-tune the bundled MiniLM on train.csv, score it on test.csv."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    model = directory / "model"
    _, train_seconds = run(
        [
            *plm_command(),
            "finetune",
            str(directory / "train.csv"),
            "--validation",
            str(directory / "validation.csv"),
            "--task",
            "regression",
            "--output",
            str(model),
            "--epochs",
            f"{epochs:g}",
        ],
        env,
    )
    output, evaluate_seconds = run(
        [*plm_command(), "evaluate", str(directory / "test.csv"), "--model", str(model), "--format", "json"], env
    )
    try:
        metrics = json.loads(output)
    except json.JSONDecodeError:  # something else on stdout: the report on disk has the same figures
        metrics = json.loads((model / "eval" / "metrics.json").read_text(encoding="utf-8"))
    return {
        "pearson": metrics["pearson"],
        "spearman": metrics["spearman"],
        "rmse": metrics["rmse"],
        "seconds": train_seconds + evaluate_seconds,
        "finetune_seconds": train_seconds,
        "evaluate_seconds": evaluate_seconds,
        "test_rows_scored": metrics.get("samples"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=3000)
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--validation-rows", type=int, default=500, help="plm's --validation file (reported only)")
    parser.add_argument("--epochs", type=float, default=1.0, help="plm's --epochs (its own default is 3)")
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="movie")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the rows before the split")
    parser.add_argument("--sdist", type=Path, help="vaderSentiment-3.3.2.tar.gz already downloaded (offline)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        import numpy as np
        import scipy  # noqa: F401  (scikit-learn's own dependency)
        import sklearn  # noqa: F401
    except ImportError:
        sys.exit("Error: this benchmark needs scikit-learn: pip install scikit-learn")

    with tempfile.TemporaryDirectory(prefix="plm-regression-") as scratch:
        directory = Path(scratch)
        rows = read_ratings(args.sdist or fetch_sdist(directory), args.corpus)
        order = np.random.default_rng(args.seed).permutation(len(rows))
        rows = [rows[i] for i in order]
        test = rows[: args.test_rows]
        validation = rows[args.test_rows : args.test_rows + args.validation_rows]
        train = rows[args.test_rows + args.validation_rows :][: args.train_rows]
        if len(train) < args.train_rows:
            sys.exit(f"Error: {args.corpus} has {len(rows)} rows: too few for these --*-rows.")
        for name, part in (("train", train), ("validation", validation), ("test", test)):
            write_csv(directory / f"{name}.csv", part)
        print(
            f"{args.corpus}: {len(rows)} distinct texts; train {len(train)}, validation {len(validation)}, "
            f"test {len(test)} (seed {args.seed})",
            flush=True,
        )
        baseline = tfidf_ridge(train, test)
        print(f"tfidf_ridge: {baseline}", flush=True)
        ours = plm(directory, args.epochs)
        print(f"plm: {ours}", flush=True)

    where = machine()
    epochs = f"{args.epochs:g} epoch{'' if args.epochs == 1 else 's'}"
    table = [(f"plm (MiniLM, {epochs})", ours), ("TF-IDF + ridge", baseline)]
    print(f"\n{len(train)} training rows, {len(test)} test rows; {describe(where)}")
    print(f"{'method':<26} {'Pearson':>8} {'Spearman':>9} {'RMSE':>7} {'wall s':>8}")
    for name, figures in table:
        print(
            f"{name:<26} {figures['pearson']:>8.4f} {figures['spearman']:>9.4f} "
            f"{figures['rmse']:>7.4f} {figures['seconds']:>8.1f}"
        )
    ratio = ours["pearson"] / baseline["pearson"]
    print(f"plm / baseline Pearson: {ratio:.3f}")
    summary = {
        "data": {
            "package": PACKAGE,
            "sdist_sha256": SDIST_SHA256,
            "file": f"{INNER} -> hutto_ICWSM_2014/{CORPORA[args.corpus]}",
            "target": "mean human sentiment rating, -4 .. +4",
            "distinct_texts": len(rows),
            "seed": args.seed,
            "train_rows": len(train),
            "validation_rows": len(validation),
            "test_rows": len(test),
        },
        "plm": {"epochs": args.epochs, **{k: round(v, 4) if isinstance(v, float) else v for k, v in ours.items()}},
        "tfidf_ridge": {k: round(v, 4) if isinstance(v, float) else v for k, v in baseline.items()},
        "pearson_ratio_plm_over_baseline": round(ratio, 3),
        "machine": where,
    }
    args.output.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
