"""`plm predict --file` on long files: time, texts/s and peak memory, which should not grow with the file.

Writes text files of each --lines count (SST-2 training sentences, repeated in a shuffled order),
then runs `plm predict --file LINES.txt --output OUT.csv` on each in a fresh process with the
model bench/out/sst2-plm (written by bench/finetune_vs_hf.py, or any classifier given with --model).
Prints, and writes to bench/out/large_predict.json, each run's wall time, texts/s over the whole
process, and peak resident memory (the child's own ru_maxrss, from wait4), with the largest run's
memory as a ratio of the smallest's.

    python bench/large_predict.py --lines 50000 200000
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SST2 = HERE.parent.parent / "shared" / "data" / "sst2" / "train.tsv"
MODEL = HERE / "out" / "sst2-plm"


def write_lines(path: Path, count: int, seed: int = 0) -> None:
    """``count`` SST-2 sentences, one per line, drawn in a shuffled order (repeated when count exceeds them)."""
    sentences = [line.split("\t", 1)[1].strip() for line in SST2.read_text(encoding="utf-8").splitlines()[1:]]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as stream:
        for start in range(0, count, len(sentences)):
            rng.shuffle(sentences)
            stream.write("".join(sentence + "\n" for sentence in sentences[: count - start]))


def run_predict(model: Path, lines: Path, output: Path) -> dict:
    """One `plm predict` process: wall seconds, texts/s, peak resident MB."""
    command = [
        sys.executable,
        "-m",
        "plmcli",
        "predict",
        "--model",
        str(model),
        "--file",
        str(lines),
        "--output",
        str(output),
        "--overwrite",
        "--device",
        "cpu",
    ]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status):
            log.seek(0)
            raise SystemExit(f"plm predict failed: {log.read()[-800:]}")
    count = sum(1 for _ in open(lines, encoding="utf-8"))
    return {
        "lines": count,
        "seconds": round(seconds, 1),
        "texts_per_second": round(count / seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--model", type=Path, default=MODEL)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in args.lines:
            lines = Path(scratch) / f"lines-{count}.txt"
            write_lines(lines, count)
            runs.append(run_predict(args.model, lines, Path(scratch) / "out.csv"))
            print(json.dumps(runs[-1]), flush=True)
    result = {
        "runs": runs,
        "memory_ratio_largest_to_smallest": round(runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3),
    }
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "large_predict.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
