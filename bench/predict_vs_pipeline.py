"""Prediction speed: `plm predict --file dev.tsv` against transformers.pipeline on the same model.

Both classify the 872 SST-2 dev sentences with the same fine-tuned model. plm is timed for the
whole command (reading the file, loading the model, predicting, writing the CSV); the pipeline
for loading and classifying at its default batch size (1), the way it is usually called.
Runs alternate; medians are reported, with the share of labels on which both agree.

Usage:
    python bench/predict_vs_pipeline.py [MODEL_DIR] [--repeats 3]   (default: the model finetune_vs_hf.py wrote)
"""

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

from plmcli.config import PredictConfig
from plmcli.data import read_table
from plmcli.inference import predict

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "dev.tsv"


def run_plm(model: str, output: Path) -> tuple[float, list[str]]:
    started = time.perf_counter()
    predict(PredictConfig(file=str(DEV), model=model, format="csv", output=str(output), overwrite=True, device="cpu"))
    elapsed = time.perf_counter() - started
    with open(output, newline="") as stream:
        labels = [row["predicted_label"] for row in csv.DictReader(stream)]
    return elapsed, labels


def run_pipeline(model: str, texts: list[str]) -> tuple[float, list[str]]:
    from transformers import pipeline

    started = time.perf_counter()
    classify = pipeline("text-classification", model=model, device="cpu")
    labels = [result["label"] for result in classify(texts)]
    return time.perf_counter() - started, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(Path(__file__).resolve().parent / "out" / "sst2-plm"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    texts = read_table(str(DEV))["content"].tolist()
    times = {"plm": [], "pipeline": []}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            seconds, plm_labels = run_plm(args.model, Path(scratch) / "preds.csv")
            times["plm"].append(seconds)
            seconds, pipeline_labels = run_pipeline(args.model, texts)
            times["pipeline"].append(seconds)
            print(f"plm {times['plm'][-1]:.2f} s, pipeline {times['pipeline'][-1]:.2f} s", flush=True)
    plm_time, pipeline_time = statistics.median(times["plm"]), statistics.median(times["pipeline"])
    print(
        json.dumps(
            {
                "texts": len(texts),
                "rows_written": len(plm_labels),
                "plm_seconds": round(plm_time, 2),
                "pipeline_batch1_seconds": round(pipeline_time, 2),
                "plm_texts_per_second": round(len(texts) / plm_time, 1),
                "pipeline_texts_per_second": round(len(texts) / pipeline_time, 1),
                "speedup": round(pipeline_time / plm_time, 2),
                "label_agreement": sum(a == b for a, b in zip(plm_labels, pipeline_labels)) / len(texts),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
