"""`plm check DATA`: a data doctor before spending compute.

Usage:
    plm check reviews.csv
    plm check ../shared/data/sst2/train.tsv --validation ../shared/data/sst2/dev.tsv
    plm check tickets.jsonl --max-length 256 --format json
    plm check ../shared/data/conll2003/train.txt
    plm check sentences.jsonl --task token-classification
"""

import json
from typing import Annotated, Optional

import typer

from plmcli import console
from plmcli.config import CheckConfig, defaults
from plmcli.options import (
    EncodingOption,
    LabelColumnOption,
    LabelledDataArgument,
    MaxLengthOption,
    Task,
    TextColumnOption,
    TextPairColumnOption,
)

DEFAULT = defaults(CheckConfig)


def check(
    data: LabelledDataArgument,
    validation: Annotated[
        Optional[str], typer.Option(help="A validation file: report texts it shares with DATA.")
    ] = DEFAULT.validation,
    text_column: TextColumnOption = DEFAULT.text_column,
    text_pair_column: TextPairColumnOption = DEFAULT.text_pair_column,
    label_column: LabelColumnOption = DEFAULT.label_column,
    multi_label: Annotated[
        bool, typer.Option("--multi-label", help="Rows may have several labels, like 'sports|politics'.")
    ] = DEFAULT.multi_label,
    label_separator: Annotated[
        str, typer.Option(help="What separates the labels of a --multi-label cell.")
    ] = DEFAULT.label_separator,
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="Model whose tokenizer measures lengths. [default: bundled MiniLM]"),
    ] = DEFAULT.model,
    max_length: MaxLengthOption = DEFAULT.max_length,
    format: Annotated[str, typer.Option(help="table or json.", case_sensitive=False)] = DEFAULT.format,
    encoding: EncodingOption = DEFAULT.encoding,
    task: Annotated[
        Task,
        typer.Option(
            help="What the data trains: a CoNLL file is read as token-classification data whatever this says.",
            case_sensitive=False,
        ),
    ] = DEFAULT.task,
) -> None:
    """Check labelled data: labels, imbalance, empty, duplicate and conflicting rows, overlap, lengths."""
    config = CheckConfig(
        data=data,
        validation=validation,
        text_column=text_column,
        label_column=label_column,
        text_pair_column=text_pair_column,
        multi_label=multi_label,
        label_separator=label_separator,
        model=model,
        max_length=max_length,
        format=format.lower(),
        encoding=encoding,
        task=task.value,
    )
    from plmcli.checking import findings
    from plmcli.tasks import use_of_data

    use = use_of_data(config.data, config.task)
    report = use.check(config)
    if config.format == "json":
        console.out(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        console.out(use.check_summary(report) or summary(report, findings(report)))


def summary(report: dict, notes: list[str]) -> str:
    """The report as a short page: figures first, then what to act on."""
    total = sum(report["labels"].values()) or 1
    labels = [[name, count, f"{count / total:.1%}"] for name, count in report["labels"].items()]
    percentiles = ", ".join(f"{k} {v}" for k, v in report["token_length_percentiles"].items())
    lines = [
        f"{report['data']}: {report['rows']} rows; text column '{report['text_column']}', "
        + (f"pair column '{report['text_pair_column']}', " if report["text_pair_column"] else "")
        + f"label column '{report['label_column']}'"
        + (" (multi-label)" if report["multi_label"] else ""),
        "",
        console.format_table(["label", "rows", "share"], labels),
        "",
        f"imbalance (largest / smallest label): {report['imbalance_ratio']}",
        f"empty texts: {report['empty_texts']}, empty labels: {report['empty_labels']}",
        f"duplicate rows: {report['duplicate_rows']}",
        *[f"  {text[:70]!r}" for text in report["duplicate_rows_examples"]],
        f"texts with more than one label: {report['texts_with_several_labels']}",
    ]
    lines += [
        f"  {e['text'][:70]!r}: {', '.join(map(console.printable, e['labels']))}"
        for e in report["texts_with_several_labels_examples"]
    ]
    if "validation" in report:
        lines.append(f"validation texts also in the data: {report['validation_texts_also_in_data']}")
        lines += [f"  {text[:70]!r}" for text in report["validation_overlap_examples"]]
    lines += [
        f"token lengths: {percentiles}; longer than {report['max_length']}: {report['truncated_at_max_length']:.1%}",
        "",
    ]
    lines += [f"- {note}" for note in notes] or ["- nothing to fix."]
    return "\n".join(lines)
