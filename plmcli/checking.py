"""The data doctor behind `plm check`: what is wrong with a labelled file before compute is spent.

It reads the file as `plm finetune` would (same readers, same column detection) and reports
rows, label distribution and imbalance, empty and duplicate rows, texts that carry two different
labels, texts shared with a validation file, and token-length percentiles with the share that
``max_length`` would truncate. Texts are compared after folding runs of white space; a pair
compares as both its texts, and a multi-label row's label is its set of labels.
"""

from collections import Counter, defaultdict
from itertools import chain

import numpy as np

from plmcli import data, modeling, vocabulary
from plmcli.config import CheckConfig

EXAMPLES = 5  # examples listed per finding
IMBALANCE_WARNING = 3.0  # largest class / smallest class above which class weights are worth it


def _fold(text: str) -> str:
    return " ".join(text.split())


def check(config: CheckConfig) -> dict:
    """The report of ``config.data`` (and its overlap with ``config.validation``) as a dict."""
    frame = data.read_table(config.data, config.encoding)
    columns = data.detect_columns(
        frame, config.data, config.text_column, config.label_column, pair_column=config.text_pair_column
    )
    texts = frame[columns.text].tolist()
    pairs = frame[columns.pair].tolist() if columns.pair else None
    labels = [label.strip() for label in frame[columns.label].tolist()]
    if config.multi_label:
        labels = [config.label_separator.join(data.split_labels(y, config.label_separator)) for y in labels]
    empty_texts = sum(1 for i, t in enumerate(texts) if not t.strip() or (pairs is not None and not pairs[i].strip()))
    empty_labels = sum(1 for y in labels if not y)
    kept = [  # a multi-label row with no label is a row none applies to: finetune keeps it
        i
        for i, (t, y) in enumerate(zip(texts, labels))
        if t.strip() and (y or config.multi_label) and (pairs is None or pairs[i].strip())
    ]
    rows = [(_fold(texts[i]) + (f" ||| {_fold(pairs[i])}" if pairs else ""), labels[i]) for i in kept]

    if config.multi_label:
        counts = Counter(name for _, y in rows for name in y.split(config.label_separator) if name)
    else:
        counts = Counter(y for _, y in rows)
    distribution = {name: counts[name] for name in data.sort_labels(set(counts))}
    imbalance = max(counts.values()) / min(counts.values()) if counts else None

    row_counts = Counter(rows)
    duplicate_rows = sum(n - 1 for n in row_counts.values() if n > 1)
    labels_of = defaultdict(set)
    for text, label in rows:
        labels_of[text].add(label)
    conflicting = {text: sorted(found) for text, found in labels_of.items() if len(found) > 1}
    report = {
        "data": config.data,
        "text_column": columns.text,
        "text_pair_column": columns.pair,
        "label_column": columns.label,
        "multi_label": config.multi_label,
        "rows": len(frame),
        "empty_texts": empty_texts,
        "empty_labels": 0 if config.multi_label else empty_labels,
        "rows_without_labels": empty_labels if config.multi_label else None,
        "labels": distribution,
        "imbalance_ratio": round(imbalance, 2) if imbalance else None,
        "duplicate_rows": duplicate_rows,
        "duplicate_rows_examples": [t for (t, _), n in row_counts.most_common(EXAMPLES) if n > 1],
        "texts_with_several_labels": len(conflicting),
        "texts_with_several_labels_examples": [
            {"text": text, "labels": found} for text, found in list(conflicting.items())[:EXAMPLES]
        ],
    }
    if config.validation is not None:
        validation = data.read_table(config.validation, config.encoding)
        given = columns.text if columns.text in validation.columns else config.text_column
        validation_text = data.detect_columns(validation, config.validation, given, need_label=False).text
        shared = sorted({_fold(t) for t in validation[validation_text]} & set(labels_of))
        report["validation"] = config.validation
        report["validation_texts_also_in_data"] = len(shared)
        report["validation_overlap_examples"] = shared[:EXAMPLES]

    modeling.quiet_libraries()
    tokenizer = modeling.load_tokenizer(modeling.resolve(config.model))
    encoded = tokenizer([texts[i] for i in kept], [pairs[i] for i in kept] if pairs else None)["input_ids"]
    lengths = np.array([len(ids) for ids in encoded]) if rows else np.zeros(1)
    report["token_length_percentiles"] = {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)} | {
        "max": int(lengths.max())
    }
    report["max_length"] = config.max_length
    report["truncated_at_max_length"] = round(float((lengths > config.max_length).mean()), 4)
    report["vocabulary"] = vocabulary.measure(chain(texts, pairs or ()), tokenizer)
    return report


def coverage_finding(report: dict) -> list[str]:
    """check's sentence on the [UNK] share of the data's tokens, when it is above vocabulary.WARN_SHARE."""
    line = vocabulary.sentence(report["vocabulary"], "", vocabulary.TRAINING_REMEDY)
    return [line] if line else []


def findings(report: dict) -> list[str]:
    """What a user should act on, in plain sentences."""
    notes = []
    if report["empty_texts"] or report["empty_labels"]:
        notes.append(
            f"{report['empty_texts']} rows have an empty text and {report['empty_labels']} an empty label; "
            "finetune skips them."
        )
    if len(report["labels"]) < 2:
        notes.append("fewer than 2 labels: a classifier cannot be trained on this file.")
    if report["imbalance_ratio"] and report["imbalance_ratio"] > IMBALANCE_WARNING:
        notes.append(
            f"the largest label has {report['imbalance_ratio']}x the rows of the smallest; "
            "watch macro-F1, not only accuracy."
        )
    if report["duplicate_rows"]:
        notes.append(f"{report['duplicate_rows']} rows repeat an earlier row (same text and label).")
    if report["texts_with_several_labels"]:
        notes.append(
            f"{report['texts_with_several_labels']} texts appear with more than one label; "
            "no model can get both right."
        )
    if report.get("validation_texts_also_in_data"):
        notes.append(
            f"{report['validation_texts_also_in_data']} validation texts also appear in the data: "
            "validation scores will be optimistic."
        )
    if report["truncated_at_max_length"]:
        notes.append(
            f"{report['truncated_at_max_length']:.1%} of texts are longer than --max-length {report['max_length']} "
            f"tokens (p99 is {report['token_length_percentiles']['p99']})."
        )
    return notes + coverage_finding(report)
