"""Each side of a benchmark in a fresh Python process.

plm sets process-wide state (on the CPU it keeps freed memory for reuse), and a run warms caches
and thread pools for whatever runs after it in the same process. So the parent script starts
every run as ``python SCRIPT --side NAME ...`` and reads the JSON line the child prints last.
"""

import json
import subprocess
import sys


def run_side(script: str, side: str, arguments: list[str]) -> dict:
    """Run ``script --side side arguments`` in a new interpreter and return the dict it reported."""
    completed = subprocess.run(
        [sys.executable, script, "--side", side, *arguments], stdout=subprocess.PIPE, text=True, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def report(result: dict) -> None:
    """The child's result, as the last line of its standard output."""
    print(json.dumps(result), flush=True)
