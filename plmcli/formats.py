"""Predictions as text: a table, JSON (a list of objects), JSON lines or CSV, whole or a chunk at a time.

``render`` writes a whole result. ``ChunkWriter`` writes CSV, JSON and JSON lines a chunk of rows
at a time, the same text ``render`` gives for all of them at once, so that predict can write a
file of any length in flat memory (a table, whose column widths depend on every row, is written whole).
"""

import json
from collections.abc import Callable

from plmcli import console

FORMAT_BY_SUFFIX = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".txt": "table"}


def to_csv(rows: list[dict], columns: list[str], header: bool = True) -> str:
    """Rows as CSV text (with a header line), lines ended by LF; scores with 6 decimals.

    A field holding a comma, a quote, CR or LF is quoted (the csv module, ending lines with LF,
    would leave a lone CR bare, and a reader would take it for a line end); a row of one empty
    field is written "" so that it is not a blank line.
    """

    def field(value) -> str:
        text = "" if value is None else f"{value:.6f}" if isinstance(value, float) else str(value)
        return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text

    def line(fields: list[str]) -> str:
        return '""\n' if fields == [""] else ",".join(fields) + "\n"

    head = line([field(c) for c in columns]) if header else ""
    return head + "".join(line([field(row.get(c)) for c in columns]) for row in rows)


def _objects(rows: list[dict], columns: list[str]) -> list[dict]:
    return [{c: row.get(c) for c in columns} for row in rows]


def render(rows: list[dict], columns: list[str], shown_columns: list[str], output_format: str) -> str:
    """All the rows as a table (``shown_columns``), JSON, JSON lines or CSV (every one of ``columns``)."""
    if output_format == "table":

        def cell(value):
            return "" if value is None else f"{value:.4f}" if isinstance(value, float) else value

        body = [[cell(row[c]) for c in shown_columns] for row in rows]
        return console.format_table(shown_columns, body) + "\n"
    parts: list[str] = []
    writer = ChunkWriter(parts.append, output_format, columns)
    writer.add(rows)
    writer.close()
    return "".join(parts)


class ChunkWriter:
    """Hands ``write`` the text of the rows of each chunk in turn, as CSV, JSON or JSON lines; ``close`` ends it."""

    def __init__(self, write: Callable[[str], None], output_format: str, columns: list[str]) -> None:
        self.write, self.format, self.columns = write, output_format, columns
        self.count = 0  # rows written so far

    def add(self, rows: list[dict]) -> None:
        if self.format == "csv":
            self.write(to_csv(rows, self.columns, header=self.count == 0))
        elif self.format == "jsonl":
            self.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in _objects(rows, self.columns)))
        elif rows:  # json: one list, its items as json.dumps(..., indent=1) writes them, without '[\n' and '\n]'
            items = json.dumps(_objects(rows, self.columns), ensure_ascii=False, indent=1)[2:-2]
            self.write(("[\n" if self.count == 0 else ",\n") + items)
        self.count += len(rows)

    def close(self) -> None:
        if self.format == "json":
            self.write("\n]\n" if self.count else "[]\n")
