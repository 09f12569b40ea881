"""Scoring a fine-tuned classifier on labelled data: the engine of `plm evaluate`.

The texts go through the same batched, length-sorted inference as `plm predict`; the metrics
through evaluate's API (plmcli.metrics). The report directory (default ``<model>/eval``) is
written whole or not at all: metrics.json, confusion_matrix.png and errors.csv (every
misclassified row with all its input columns, the most confident mistakes first).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plmcli import console, data, reporting
from plmcli.config import EvaluateConfig
from plmcli.errors import PlmError
from plmcli.inference import load_for_inference, to_csv
from plmcli.outputs import check_output_dir, staged_dir


@dataclass
class EvaluationResult:
    """What `plm evaluate` found and where it wrote its report."""

    output: Path
    metrics: dict  # metrics.json's content
    errors: list[dict]  # misclassified rows, most confident first: input columns + predicted_label, predicted_score


def evaluate(config: EvaluateConfig) -> EvaluationResult:
    """Score the model of ``config`` on its labelled data and write the report directory."""
    output = check_output_dir(
        config.output or str(Path(config.model) / "eval"), config.overwrite, (config.data,), marker="metrics.json"
    )
    frame = data.read_table(config.data)
    columns = data.detect_columns(frame, config.data, config.text_column, config.label_column)
    texts, labels, kept = data.labelled_rows(frame, columns)
    if not texts:
        raise PlmError(f"{config.data} has no row with both a text and a label.")
    if len(kept) < len(frame):
        console.warn(f"skipped {len(frame) - len(kept)} rows with an empty text or label.")
    classifier = load_for_inference(config.model, config.device, config.precision, config.max_length)
    label_names = classifier.label_names
    label2id = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(labels) - set(label2id))
    if unknown:
        raise PlmError(
            f"{config.data} has labels the model does not know: {data.quote_labels(unknown)}; "
            f"the model's labels are: {', '.join(label_names)}."
        )
    console.info(f"Evaluating on {len(texts)} rows: text column '{columns.text}', label column '{columns.label}'.")

    probabilities, truncated = classifier(texts, config.batch_size)
    predictions = probabilities.argmax(axis=1)
    references = np.array([label2id[y] for y in labels])
    from plmcli.metrics import classification_report

    report = classification_report(predictions, references, label_names)
    metrics = {
        "data": config.data,
        "model": config.model,
        "samples": len(texts),
        "text_column": columns.text,
        "label_column": columns.label,
        **report,
        "misclassified": int((predictions != references).sum()),
        "truncated_texts": truncated,
    }
    records = frame.to_dict("records")
    wrong = [i for i in np.argsort(-probabilities.max(axis=1), kind="stable") if predictions[i] != references[i]]
    errors = [
        {
            **records[kept[i]],
            "predicted_label": label_names[predictions[i]],
            "predicted_score": float(probabilities[i, predictions[i]]),
        }
        for i in wrong
    ]
    with staged_dir(output) as staging:
        reporting.write_json(staging / "metrics.json", metrics)
        (staging / "errors.csv").write_text(to_csv(errors, list(errors[0])) if errors else "", encoding="utf-8")
        reporting.plot_confusion_matrix(
            staging / "confusion_matrix.png",
            report["confusion_matrix"],
            label_names,
            f"{config.model} on {config.data}",
        )
    return EvaluationResult(output=output, metrics=metrics, errors=errors)
