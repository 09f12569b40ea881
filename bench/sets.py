"""The real labelled 8-class sets the trust and tuning benchmarks run on, by name (``--set``).

- ``debian``: Debian packages' one-line descriptions, by archive section (``bench/debian.py``;
  apt's package index). A default fine-tune is over-confident on it: mean top score 0.83 at
  accuracy 0.78.
- ``wordnet-nouns``, ``wordnet-verbs``: WordNet glosses, by lexicographer file
  (``bench/wordnet.py``; ``apt-get install wordnet-base``).

WordNet's sets are drawn with the same rows per class (``--train-per-class``, ``--test-per-class``);
Debian's keep the sections' own sizes, ``--test-share`` of each going to the test set.
"""

import argparse
from pathlib import Path

import debian
import wordnet

NAMES = ("debian", "wordnet-nouns", "wordnet-verbs")


def add_arguments(parser: argparse.ArgumentParser, train_per_class: int, test_per_class: int) -> None:
    parser.add_argument("--set", choices=NAMES, default="debian", help="the labelled set [default: %(default)s]")
    parser.add_argument("--train-per-class", type=int, default=train_per_class, help="WordNet sets only")
    parser.add_argument("--test-per-class", type=int, default=test_per_class, help="WordNet sets only")
    parser.add_argument("--test-share", type=float, default=0.3, help="the debian set only")


def write(args: argparse.Namespace, out: Path) -> tuple[Path, Path, dict]:
    """Write OUT/train.csv and OUT/test.csv of ``args.set`` (seeded): their paths and the set's description."""
    if args.set == "debian":
        train, test, digest = debian.write_sets(out, args.test_share, args.seed)
        source = {
            "source": "Debian 12 bookworm main package descriptions, 8 archive sections",
            "index_sha256": digest,
            "test_share": args.test_share,
        }
    else:
        part = args.set.split("-", 1)[1]
        train, test = wordnet.write_sets(out, args.train_per_class, args.test_per_class, args.seed, part=part)
        source = {"source": f"WordNet 3.0 {part} glosses (Debian package wordnet-base), 8 lexicographer classes"}
    with open(train, encoding="utf-8") as handle:
        train_rows = sum(1 for _ in handle) - 1
    with open(test, encoding="utf-8") as handle:
        test_rows = sum(1 for _ in handle) - 1
    counts = {"train_rows": train_rows, "test_rows": test_rows}
    return train, test, {**source, "name": args.set, "seed": args.seed, **counts}
