"""Cold start, as whole processes: `plm --help`, a one-text `plm predict`, and the plain-HF script that does the same.

The plain script is what a user writes to classify one text: import transformers, load the
tokenizer and the model, one forward pass, print the label. Each command is a fresh process;
they alternate --repeats times; the medians of wall time and of peak resident memory (from
wait4's rusage, per process) are reported.

Usage:
    python bench/cold_start.py [MODEL_DIR] [--repeats 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = Path(__file__).resolve().parent / "out" / "sst2-plm"
TEXT = "A gripping, beautifully acted film."
PLAIN_SCRIPT = """
import sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()
with torch.inference_mode():
    probabilities = model(**tokenizer(sys.argv[2], return_tensors="pt")).logits.softmax(-1)[0]
print(model.config.id2label[int(probabilities.argmax())], round(float(probabilities.max()), 4))
"""


def timed(command: list[str]) -> dict:
    """Wall seconds and peak resident MB of one process."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed: {errors.read().decode()[-500:]}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def measure(model: str = str(MODEL), repeats: int = 5) -> dict:
    plm = [str(Path(sys.executable).with_name("plm"))]
    commands = {
        "plm_help": plm + ["--help"],
        "plm_predict_one": plm + ["predict", "--model", model, "--device", "cpu", TEXT],
        "plain_hf_one": [sys.executable, "-c", PLAIN_SCRIPT, model, TEXT],
    }
    runs = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            runs[name].append(timed(command))
            print(f"  {name:<16} {runs[name][-1]['seconds']:.2f} s", flush=True)
    summary = {"repeats": repeats, "text": TEXT}
    for name, results in runs.items():
        summary[name] = {
            "seconds": round(statistics.median(r["seconds"] for r in results), 2),
            "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in results)),
        }
    summary["predict_time_ratio"] = round(
        summary["plm_predict_one"]["seconds"] / summary["plain_hf_one"]["seconds"], 2
    )  # plm's wall time as a share of the plain script's
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(MODEL))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(args.model, args.repeats), indent=2))


if __name__ == "__main__":
    main()
