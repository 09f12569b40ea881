"""A real 8-class set of short descriptions for the calibration and tuning benchmarks: Debian packages.

Every package in Debian's archive has a one-line description written by its maintainer ("Fun
puzzle game with dominos", "Key exchange daemon") and a section the archive files it under. The
task is to tell a package's section from its description: very short texts (6 words on average),
8 topical sections that overlap (a network daemon may be filed under admin, net or utils), and
imbalanced (673 graphics rows, 2,291 utils rows).

The data is the package index of Debian 12 "bookworm" main (amd64) that apt keeps on every
Debian machine; nothing is copied into this repository:

    apt-get update      # /var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages*

A description that appears more than once among the chosen sections is dropped (a package and
its "-dbg" twin, or the same text filed under two sections). Each section's rows are shuffled
with a fixed seed and split, the same share of each going to the test set.
``python bench/debian.py OUT_DIR`` writes ``train.csv`` and ``test.csv`` (columns ``text,label``).
"""

import argparse
import glob
import hashlib
import random
import subprocess
from pathlib import Path

from split_files import write_split

INDEX = "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages*"
SECTIONS = ("admin", "games", "graphics", "net", "science", "sound", "text", "utils")


def read_index(pattern: str = INDEX) -> tuple[str, str]:
    """The text of apt's package index (plain or lz4-compressed, as apt keeps it) and its sha256."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SystemExit(f"no package index matches {pattern}: run `apt-get update` on Debian 12, or pass --index.")
    path = paths[0]
    if path.endswith(".lz4"):
        data = subprocess.run(["lz4cat", path], stdout=subprocess.PIPE, check=True).stdout
    else:
        data = Path(path).read_bytes()
    return data.decode("utf-8"), hashlib.sha256(data).hexdigest()


def descriptions(text: str) -> dict[str, list[str]]:
    """The short description of every package in SECTIONS, by section, in index order (each text once)."""
    rows = []
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] not in " \t")
        section = fields.get("Section", "").rsplit("/", 1)[-1]  # "contrib/net" files under net
        if section in SECTIONS and fields.get("Description"):
            rows.append((fields["Description"].strip(), section))
    seen: dict[str, int] = {}
    for description, _ in rows:
        seen[description] = seen.get(description, 0) + 1
    by_section: dict[str, list[str]] = {name: [] for name in SECTIONS}
    for description, section in rows:
        if seen[description] == 1:
            by_section[section].append(description)
    return by_section


def write_sets(out: Path, test_share: float = 0.3, seed: int = 0, index: str = INDEX) -> tuple[Path, Path, str]:
    """Write OUT/train.csv and OUT/test.csv, ``test_share`` of each section in the test set.

    Returns their paths and the index's sha256 (the archive changes with each point release).
    """
    text, digest = read_index(index)
    rng = random.Random(seed)
    train, test = [], []
    for section, texts in descriptions(text).items():
        texts = texts[:]
        rng.shuffle(texts)
        cut = round(test_share * len(texts))
        test += [(description, section) for description in texts[:cut]]
        train += [(description, section) for description in texts[cut:]]
    rng.shuffle(train)
    rng.shuffle(test)
    return (*write_split(out, train, test), digest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--test-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", default=INDEX, help="apt's package index (a glob) [default: %(default)s]")
    args = parser.parse_args()
    train, test, digest = write_sets(args.out, args.test_share, args.seed, args.index)
    print(train, test, f"index sha256 {digest}", sep="\n")


if __name__ == "__main__":
    main()
