"""`plm pretrain` over a corpus larger than memory would like: peak memory, and a second run that skips tokenizing.

Writes a text corpus of --megabytes MB (SST-2 sentences in shuffled documents of 4-12 lines, blank
lines between them), then runs `plm pretrain` on it twice with the bundled model, each run a fresh
process with an empty tokenized-corpus cache the first time (PLM_CACHE) and the same cache the
second time, for a few training steps only: what is measured is reading, tokenizing and loading
the corpus. Prints, and writes to bench/out/large_corpus.json, each run's wall time and peak
resident memory (the child's own ru_maxrss, from wait4). With --also-megabytes M, a smaller corpus is measured the
same way first, to show that memory does not grow with the corpus. With --one-line, the corpus
is measured as lines and as one line (long lines are cut while reading: memory should match).

    python bench/large_corpus.py --megabytes 500 --also-megabytes 50
    python bench/large_corpus.py --megabytes 20 --one-line
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SST2 = HERE.parent.parent / "shared" / "data" / "sst2" / "train.tsv"


def write_corpus(path: Path, megabytes: int, seed: int = 0, one_line: bool = False) -> int:
    """SST-2 sentences in random documents until the file holds ``megabytes`` MB; returns its size in bytes.

    With ``one_line`` the same text is one line: spaces where the line breaks were.
    """
    sentences = [line.split("\t", 1)[1].strip() for line in SST2.read_text(encoding="utf-8").splitlines()[1:]]
    rng, target, written = random.Random(seed), megabytes * 1_000_000, 0
    with open(path, "w", encoding="utf-8") as stream:
        while written < target:
            document = "\n".join(rng.choices(sentences, k=rng.randint(4, 12))) + "\n\n"
            document = document.replace("\n", " ") if one_line else document
            stream.write(document)
            written += len(document.encode("utf-8"))
    return path.stat().st_size


def run_pretrain(corpus: Path, output: Path, cache: Path, steps: int) -> dict:
    """One `plm pretrain` process: wall time, peak RSS, whether it tokenized or reused the cache.

    About 100 blocks are held out (a block of 128 tokens is about 515 bytes of this text), so the
    before/after perplexity, which plm measures on every run, stays a small part of the time.
    """
    share = f"{100 * 515 / corpus.stat().st_size:.6f}"
    command = [
        sys.executable, "-m", "plmcli", "pretrain", str(corpus), "--output", str(output), "--overwrite",
        "--max-steps", str(steps), "--batch-size", "8", "--max-length", "128", "--device", "cpu",
        "--validation-split", share,
    ]  # fmt: skip
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command, env={**os.environ, "PLM_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=log
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        log.seek(0)
        stderr = log.read()
    if process.returncode != 0:
        sys.exit(f"plm pretrain failed:\n{stderr[-3000:]}")
    metrics = json.loads((output / "metrics.json").read_text())
    return {
        "wall_seconds": round(wall, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),  # ru_maxrss is in KiB on Linux
        "tokenized": "Tokenizing the corpus into" in stderr,
        "reused_cache": "Reusing the corpus tokenized by an earlier run" in stderr,
        "blocks": metrics["train"]["examples"] + metrics["validation"]["examples"],
        "corpus_tokens": metrics["corpus"]["tokens"],
    }


def measure(megabytes: int, scratch: Path, steps: int) -> dict:
    corpus = scratch / f"corpus-{megabytes}mb.txt"
    size = write_corpus(corpus, megabytes)
    cache = scratch / f"cache-{megabytes}"
    first = run_pretrain(corpus, scratch / "out", cache, steps)
    second = run_pretrain(corpus, scratch / "out", cache, steps)
    corpus.unlink()
    shutil.rmtree(cache, ignore_errors=True)
    return {"corpus_bytes": size, "first_run": first, "second_run": second}


def measure_one_line(megabytes: int, scratch: Path, steps: int) -> dict:
    """The same text as lines and as one line, each tokenized by a first run: peak memory side by side."""
    results = {}
    for shape in ("lines", "one_line"):
        corpus = scratch / f"corpus-{megabytes}mb-{shape}.txt"
        write_corpus(corpus, megabytes, one_line=shape == "one_line")
        results[shape] = run_pretrain(corpus, scratch / "out", scratch / f"cache-{shape}", steps)
        corpus.unlink()
        shutil.rmtree(scratch / f"cache-{shape}", ignore_errors=True)
    results["memory_ratio_one_line_to_lines"] = round(
        results["one_line"]["peak_rss_gib"] / results["lines"]["peak_rss_gib"], 3
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=500)
    parser.add_argument("--also-megabytes", type=int, help="measure a smaller corpus first, for comparison")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--scratch", help="where the corpus and cache go (default: a temporary directory)")
    parser.add_argument("--one-line", action="store_true", help="compare the corpus as lines and as one line")
    args = parser.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="plm-large-corpus-"))
    scratch.mkdir(parents=True, exist_ok=True)
    results = {"cpu_threads": os.cpu_count(), "steps": args.steps}
    if args.one_line:
        results[f"{args.megabytes}MB"] = measure_one_line(args.megabytes, scratch, args.steps)
        shutil.rmtree(scratch, ignore_errors=True)
        print(json.dumps(results, indent=2))
        return
    for megabytes in ([args.also_megabytes] if args.also_megabytes else []) + [args.megabytes]:
        results[f"{megabytes}MB"] = measure(megabytes, scratch, args.steps)
        print(json.dumps({f"{megabytes}MB": results[f"{megabytes}MB"]}), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "large_corpus.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
