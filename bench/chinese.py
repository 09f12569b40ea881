"""Chinese on the bundled English model: what the vocabulary cannot read, and the fixes side by side.

Data (``../shared/data/chinese/``): ``corpus.txt``, 44,888 unlabelled online-shopping reviews, and
``waimai-train.csv`` / ``waimai-test.csv``, 9,584 / 2,396 food-delivery reviews labelled positive or
negative. The bundled MiniLM's vocabulary (bert-base-uncased's) reads most Chinese characters as
[UNK].

One run, four ways to a classifier, each then ``plm finetune waimai-train.csv`` with plm's defaults
and ``plm evaluate waimai-test.csv``:

1. ``bundled``: finetune the bundled model as it is;
2. ``extend``: ``plm pretrain corpus.txt --extend-vocab N`` (the corpus's N most frequent unread
   characters become tokens), then finetune that;
3. ``scratch``: ``plm pretrain corpus.txt --from-scratch`` (a new WordPiece vocabulary and a new
   BERT of ``--size``), then finetune that;
4. ``extend_wwm``: (2) with ``--whole-word-mask`` (words segmented by jieba).

Every pretraining runs ``--max-steps`` steps of 32 blocks of ``--pretrain-max-length`` tokens (the same
for all three), and every finetune ``--epochs`` epochs (1: a quick run on 2 cores; plm's default is 3).
Also recorded: ``plm check``'s warning on the labelled data, and the [UNK] share of the training
texts as each finetune measured it (metrics.json's ``vocabulary``). Prints a table and each way's
test accuracy over (1)'s, and writes them with the machine to bench/results-chinese.json.

Usage:
    python bench/chinese.py [--max-steps 150] [--pretrain-max-length 64] [--epochs 1] [--extend-vocab 3000]
                            [--size mini] [--ways bundled,extend,scratch,extend_wwm]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from isolated import describe, machine

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinese"
RESULTS = Path(__file__).resolve().parent / "results-chinese.json"
WAYS = ("bundled", "extend", "scratch", "extend_wwm")


def plm_command() -> list[str]:
    """The `plm` script beside this interpreter, else the same CLI as a module."""
    script = Path(sys.executable).with_name("plm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "plmcli"]


def run(arguments: list[str]) -> tuple[str, str, float]:
    """(stdout, stderr, wall seconds) of one plm command; a failed command ends the benchmark."""
    started = time.perf_counter()
    completed = subprocess.run(
        [*plm_command(), *arguments], env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True
    )
    if completed.returncode:
        sys.exit(f"plm {' '.join(arguments)} failed:\n{completed.stderr[-3000:]}")
    return completed.stdout, completed.stderr, time.perf_counter() - started


def pretrain_arguments(way: str, args) -> list[str]:
    common = ["pretrain", str(DATA / "corpus.txt"), "--max-steps", str(args.max_steps), "--seed", str(args.seed)]
    common += ["--max-length", str(args.pretrain_max_length)]
    if way == "extend":
        return [*common, "--extend-vocab", str(args.extend_vocab)]
    if way == "extend_wwm":
        return [*common, "--extend-vocab", str(args.extend_vocab), "--whole-word-mask"]
    return [*common, "--from-scratch", "--size", args.size, "--vocab-size", str(args.vocab_size)]


def one_way(way: str, args, scratch: Path) -> dict:
    result: dict = {"seconds": {}}
    model_args: list[str] = []
    if way != "bundled":
        pretrained = scratch / f"pretrain-{way}"
        _, _, seconds = run([*pretrain_arguments(way, args), "--output", str(pretrained)])
        metrics = json.loads((pretrained / "metrics.json").read_text())
        result["seconds"]["pretrain"] = round(seconds, 1)
        result["pretrain"] = {
            "perplexity_before": metrics["validation"]["before"]["perplexity"],
            "perplexity_after": metrics["validation"]["after"]["perplexity"],
            "steps": metrics["train"]["steps"],
            "extended_vocabulary": metrics.get("extended_vocabulary"),
            "word_segmenter": metrics.get("word_segmenter"),
        }
        model_args = ["--model", str(pretrained)]
    classifier = scratch / f"finetune-{way}"
    _, _, seconds = run(
        ["finetune", str(DATA / "waimai-train.csv"), *model_args, "--output", str(classifier)]
        + ["--epochs", str(args.epochs), "--seed", str(args.seed)]
    )
    result["seconds"]["finetune"] = round(seconds, 1)
    metrics = json.loads((classifier / "metrics.json").read_text())
    result["train_unknown_share"] = metrics["vocabulary"]["unknown_share"]
    result["validation_accuracy"] = metrics["validation"]["accuracy"]
    out, _, _ = run(
        ["evaluate", str(DATA / "waimai-test.csv"), "--model", str(classifier), "--format", "json"]
        + ["--output", str(scratch / f"evaluate-{way}")]
    )
    report = json.loads(out)
    result["test_accuracy"] = report["accuracy"]
    result["test_macro_f1"] = report["macro_f1"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=150, help="pretraining steps of each way")
    parser.add_argument("--pretrain-max-length", type=int, default=64, help="tokens per pretraining block")
    parser.add_argument("--epochs", type=float, default=1.0, help="finetune epochs of each way")
    parser.add_argument("--extend-vocab", type=int, default=3000)
    parser.add_argument("--size", default="mini", help="--from-scratch BERT size")
    parser.add_argument("--vocab-size", type=int, default=8000, help="--from-scratch vocabulary size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ways", default=",".join(WAYS))
    args = parser.parse_args()
    ways = args.ways.split(",")

    check_out, check_err, _ = run(["check", str(DATA / "waimai-train.csv")])
    warning = next((line for line in (check_out + check_err).splitlines() if "[UNK]" in line), None)
    print(f"plm check waimai-train.csv: {warning or 'no [UNK] warning'}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="plm-chinese-") as scratch:
        for way in ways:
            results[way] = one_way(way, args, Path(scratch))
            print(f"{way}: {json.dumps(results[way])}", flush=True)
    base = results.get("bundled", {}).get("test_accuracy")
    print(f"\n{'way':<12} {'[UNK] in training texts':>24} {'test accuracy':>14} {'vs bundled':>11}")
    for way, row in results.items():
        delta = f"{100 * (row['test_accuracy'] - base):+.1f} pts" if base is not None else ""
        print(f"{way:<12} {row['train_unknown_share']:>24.1%} {row['test_accuracy']:>14.4f} {delta:>11}")
    facts = machine()
    print(f"\n{describe(facts)}")
    RESULTS.write_text(
        json.dumps(
            {"settings": vars(args), "machine": facts, "check_warning": warning, "ways": results},
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
