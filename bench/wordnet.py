"""A real 8-class text set for the calibration, audit and tuning benchmarks: WordNet noun glosses.

Each WordNet 3.0 noun synset has a gloss (a one-line dictionary definition, like "a fabric
woven from goat hair and camel hair") and a lexicographer file that files it under one of 26
top-level categories (noun.artifact, noun.person, ...), assigned by WordNet's lexicographers.
The task is to tell a definition's category from its text: short texts (9 words on average),
8 classes, some easy to tell apart (animal, food), some not (act, state, attribute,
communication).

The data ships in Debian/Ubuntu's ``wordnet-base`` package (Princeton's WordNet licence, free
to use and redistribute with its notice); nothing is copied into this repository:

    apt-get install wordnet-base      # /usr/share/wordnet/data.noun

Verbs (``--part verbs``: the eight largest verb files, like motion, contact, cognition) are a
harder set of the same kind. ``python bench/wordnet.py OUT_DIR`` writes ``train.csv`` and
``test.csv`` (columns ``text,label``); the other benchmarks import ``write_sets``. Rows are
drawn per class with a fixed seed from the glosses that appear once in the file (a gloss
shared by two synsets is dropped), examples after the gloss's first '; "' are cut off, and
the rows are shuffled.
"""

import argparse
import random
from pathlib import Path

from split_files import write_split

DATA_NOUN = "/usr/share/wordnet/data.noun"
DATA_VERB = "/usr/share/wordnet/data.verb"
# The classes of each part (and the lexicographer file numbers they come from): for nouns, four
# easy ones and four that overlap (act, attribute, communication, state); for verbs, the eight
# largest verb files.
PARTS = {
    "nouns": {
        4: "act",
        5: "animal",
        6: "artifact",
        7: "attribute",
        10: "communication",
        13: "food",
        18: "person",
        26: "state",
    },  # fmt: skip
    "verbs": {
        30: "change",
        31: "cognition",
        32: "communication",
        35: "contact",
        38: "motion",
        40: "possession",
        41: "social",
        42: "stative",
    },  # fmt: skip
}


def glosses(path: str = DATA_NOUN, part: str = "nouns") -> dict[str, list[str]]:
    """The glosses of every synset of ``part`` in its eight classes, by class, in file order (each gloss once)."""
    if not Path(path).is_file():
        raise SystemExit(f"{path} not found: `apt-get install wordnet-base`, or pass --data-noun.")
    seen: dict[str, int] = {}
    rows = []
    with open(path, encoding="latin-1") as handle:
        for line in handle:
            if line.startswith("  "):  # the licence header
                continue
            label = PARTS[part].get(int(line.split(" ", 2)[1]))
            gloss = line.split(" | ", 1)[1].split('; "', 1)[0].strip() if " | " in line else ""
            if label and gloss:
                rows.append((gloss, label))
                seen[gloss] = seen.get(gloss, 0) + 1
    by_class: dict[str, list[str]] = {name: [] for name in sorted(PARTS[part].values())}
    for gloss, label in rows:
        if seen[gloss] == 1:
            by_class[label].append(gloss)
    return by_class


def write_sets(out: Path, train_per_class: int, test_per_class: int, seed: int = 0, path: str = "", part="nouns"):
    """Write OUT/train.csv and OUT/test.csv with the given rows per class; returns their paths."""
    rng = random.Random(seed)
    train, test = [], []
    for label, texts in glosses(path or (DATA_VERB if part == "verbs" else DATA_NOUN), part).items():
        texts = texts[:]
        rng.shuffle(texts)
        if len(texts) < train_per_class + test_per_class:
            raise SystemExit(f"class {label} has {len(texts)} glosses, fewer than the rows asked for")
        test += [(text, label) for text in texts[:test_per_class]]
        train += [(text, label) for text in texts[test_per_class : test_per_class + train_per_class]]
    rng.shuffle(train)
    rng.shuffle(test)
    return write_split(out, train, test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train-per-class", type=int, default=750)
    parser.add_argument("--test-per-class", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=sorted(PARTS), default="nouns")
    parser.add_argument("--data", default="", help=f"WordNet's data file [default: {DATA_NOUN} or {DATA_VERB}]")
    args = parser.parse_args()
    for path in write_sets(args.out, args.train_per_class, args.test_per_class, args.seed, args.data, args.part):
        print(path)


if __name__ == "__main__":
    main()
