"""Each side of a benchmark in a fresh Python process, the machine it ran on, and medians.

plm sets process-wide state (on the CPU it keeps freed memory for reuse), and a run warms caches
and thread pools for whatever runs after it in the same process. So the parent script starts
every run as ``python SCRIPT --side NAME ...`` and reads the JSON line the child prints last,
with the child's peak resident memory added. Sides alternate (A B A B ...) because this host's
speed drifts by 10-30% over minutes; medians are reported.
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def run_side(script: str, side: str, arguments: list[str]) -> dict:
    """Run ``script --side side arguments`` in a new interpreter: the dict it reported, with its wall time."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, script, "--side", side, *arguments], stdout=subprocess.PIPE, text=True, check=True
    )
    process_seconds = time.perf_counter() - started
    return {**json.loads(completed.stdout.strip().splitlines()[-1]), "process_seconds": process_seconds}


def report(result: dict) -> None:
    """The child's result, with its peak resident memory, as the last line of its standard output."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({**result, "peak_rss_mb": round(peak)}), flush=True)


def alternate(script: str, sides: dict[str, list[str]], repeats: int, once: tuple[str, ...] = ()) -> dict:
    """Run every side ``repeats`` times, interleaved (A B A B ...); sides in ``once`` run in the first round only.

    sides: name -> the arguments of its child. Returns name -> [the dict of each run].
    """
    results = {name: [] for name in sides}
    for round_ in range(repeats):
        for name, arguments in sides.items():
            if name in once and round_ > 0:
                continue
            results[name].append(run_side(script, name, arguments))
            print(f"  {name:<14} {results[name][-1]}", flush=True)
    return results


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


_LIBRARIES = """
import json, torch, transformers
print(json.dumps({
    "torch_threads": torch.get_num_threads(),
    "simd": torch.backends.cpu.get_cpu_capability(),
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
}))
"""


def machine() -> dict:
    """What the figures were measured on: CPU model, cores, torch's threads and build, bf16 instructions, GPU.

    torch and transformers are asked in a child process: the parent stays small, because a child
    forked from it starts with (and reports, as its peak) the parent's resident memory.
    """
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    libraries = subprocess.run([sys.executable, "-c", _LIBRARIES], stdout=subprocess.PIPE, text=True, check=True)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cpu_bf16_instructions": sorted(flags & {"avx512_bf16", "amx_bf16"}) or "none",
        **json.loads(libraries.stdout.strip().splitlines()[-1]),
        "python": platform.python_version(),
    }


def describe(machine: dict) -> str:
    """One line for a table's caption."""
    bf16 = machine["cpu_bf16_instructions"]
    return (
        f"{machine['cpu']}, {machine['cores']} cores ({machine['simd']}, bf16 instructions: "
        f"{bf16 if isinstance(bf16, str) else ', '.join(bf16)}), {machine['gpu'] or 'no GPU'}; "
        f"torch {machine['torch']}, transformers {machine['transformers']}"
    )
