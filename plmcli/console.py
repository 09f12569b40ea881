"""The only place that prints: results to stdout, messages to stderr.

Under torchrun or accelerate every rank runs the same command; only the process of global
rank 0 prints, so a distributed run shows one summary.
"""

import os
import sys
from collections.abc import Sequence


def is_main_process() -> bool:
    """True on the process that prints and writes reports (global rank 0, or no launcher)."""
    return os.environ.get("RANK", "0") == "0"


def world_size() -> int:
    """How many processes run this command (WORLD_SIZE under torchrun / accelerate launch; else 1)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def out(text: str = "") -> None:
    """Print a result line to stdout."""
    if is_main_process():
        print(text, file=sys.stdout, flush=True)


def write(text: str) -> None:
    """Write part of a result to stdout as it is (a chunk of predict's CSV or JSON)."""
    if is_main_process():
        sys.stdout.write(text)
        sys.stdout.flush()


def info(message: str) -> None:
    """Print a progress or context message to stderr."""
    if is_main_process():
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Print a warning to stderr."""
    if is_main_process():
        print(f"Warning: {message}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    """Print the one error line of a failed command to stderr (on every rank: each may fail on its own)."""
    print(f"Error: {message}", file=sys.stderr, flush=True)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], max_width: int = 60) -> str:
    """Render rows as a plain, aligned text table; cells longer than max_width are shortened with '...'."""

    def cell(value: object) -> str:
        text = printable(str(value))
        return text if len(text) <= max_width else text[: max_width - 3] + "..."

    body = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in body]
    return "\n".join(lines)


def printable(text: str) -> str:
    """``text`` on one line: newlines, tabs and other control or invisible characters escaped as Python writes them."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for plm's commands: a library's warning as one ``Warning:`` line, no source line."""
    warn(printable(" ".join(str(message).split()))[:300])


def format_pairs(pairs: Sequence[tuple[str, object]]) -> str:
    """Render (name, value) pairs as aligned 'name  value' lines for a summary."""
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in pairs)
