"""Writing a labelled set's train and test rows as the CSV files the benchmarks hand to plm."""

import csv
from pathlib import Path


def write_split(out: Path, train: list[tuple[str, str]], test: list[tuple[str, str]]) -> tuple[Path, Path]:
    """OUT/train.csv and OUT/test.csv (columns ``text,label``) of the (text, label) rows; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with open(out / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    return out / "train.csv", out / "test.csv"
