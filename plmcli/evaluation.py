"""Scoring a fine-tuned classifier on labelled data: the engine of `plm evaluate`.

The texts go through the same batched, length-sorted inference as `plm predict`; the metrics
through evaluate's API (plmcli.metrics). The report directory (default ``<model>/eval``) is
written whole or not at all: metrics.json, confusion_matrix.png and errors.csv (every
misclassified row with all its input columns, the most confident mistakes first). Columns are
those given, else the ones the model was trained on when the file has them, else detected; a
multi-label model's rows are right only when their whole label set is. A regression model's report
has MSE, RMSE, MAE, Pearson, Spearman and R² in the target's units, scatter.png (predicted against
true) and errors.csv with every row, the largest absolute error first.
"""

from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from plmcli import console, data, reporting, textfiles, vocabulary
from plmcli.config import EvaluateConfig
from plmcli.errors import PlmError
from plmcli.formats import to_csv
from plmcli.inference import load_for_inference
from plmcli.outputs import Claim, check_output_dir, check_places, claimed, staged_dir


@dataclass
class EvaluationResult:
    """What `plm evaluate` found and where it wrote its report."""

    output: Path
    metrics: dict  # metrics.json's content
    # misclassified rows, most confident first: input columns + predicted_label, predicted_score; for a
    # regression model every row, largest absolute error first: input columns + predicted_value, error
    errors: list[dict]


def evaluate(config: EvaluateConfig) -> EvaluationResult:
    """Score the model of ``config`` on its labelled data, as its task does, and write the report directory."""
    from plmcli.tasks import use_of

    use = use_of(config.model, config.allow_pickle)  # a missing or broken model is said before anything else
    check_places(config.places())
    output = check_output_dir(config.report_dir(), config.overwrite)
    with claimed(output) as claim, textfiles.recording():  # no other plm run writes this report meanwhile
        return use.evaluate(config, claim)


def evaluate_sequences(config: EvaluateConfig, claim: Claim) -> EvaluationResult:
    """evaluate for a sentence classifier or regressor."""
    frame = data.read_table(config.data, config.encoding)
    classifier = load_for_inference(config)
    saved = classifier.settings
    columns = data.detect_columns(
        frame,
        config.data,
        config.text_column or _present(saved.text_column, frame),
        config.label_column or _present(saved.label_column, frame),
        pair_column=config.text_pair_column or saved.text_pair_column,
    )
    separator = classifier.separator if classifier.multi_label else None
    rows = data.labelled_rows(frame, columns, separator, config.data, config.encoding, config.drop_invalid)
    if not rows.texts:
        raise PlmError(f"{config.data} has no row with both a text and a label.")
    if len(rows.kept) < len(frame):
        console.warn(f"--drop-invalid: skipped {len(frame) - len(rows.kept)} rows with an empty text or label.")
    coverage = vocabulary.check(
        chain(rows.texts, rows.pairs or ()), classifier.tokenizer, config.data, vocabulary.USE_REMEDY
    )
    if classifier.regression:
        return _evaluate_regression(config, claim, frame, classifier, columns, rows, coverage)
    label_names = classifier.label_names
    label2id = {name: i for i, name in enumerate(label_names)}
    given = {name for y in rows.labels for name in y} if separator else set(rows.labels)
    unknown = sorted(given - set(label2id))
    if unknown:
        raise PlmError(
            f"{config.data} has labels the model does not know: {data.quote_labels(unknown)}; "
            f"the model's labels are: {', '.join(label_names)}."
        )
    pair = f", pair column '{columns.pair}'" if columns.pair else ""
    console.info(
        f"Evaluating on {len(rows.texts)} rows: text column '{columns.text}'{pair}, label column '{columns.label}'."
    )

    if classifier.multi_label:
        probabilities, long_texts = classifier(rows.texts, config.batch_size, rows.pairs)
    else:
        raw, probabilities, long_texts = classifier.raw_and_calibrated(rows.texts, config.batch_size, rows.pairs)
    chosen = classifier.chosen(probabilities)
    from plmcli import metrics as scoring

    if classifier.multi_label:
        references = np.zeros_like(chosen)
        for row, labels in enumerate(rows.labels):
            references[row, [label2id[name] for name in labels]] = 1
        report = scoring.report_at_thresholds(probabilities, references, label_names, classifier.thresholds)
        wrong = (chosen != references).any(axis=1)
        confidence = np.abs(probabilities - classifier.thresholds).mean(axis=1)  # how sure the mistake was
    else:
        references = np.array([label2id[y] for y in rows.labels])
        predictions = probabilities.argmax(axis=1)
        report = scoring.classification_report(predictions, references, label_names)
        wrong = predictions != references
        confidence = probabilities.max(axis=1)
    metrics = {
        "data": config.data,
        "model": config.model,
        "samples": len(rows.texts),
        "task": "multi-label" if classifier.multi_label else "single-label",
        "text_column": columns.text,
        "text_pair_column": columns.pair,
        "label_column": columns.label,
        **report,
        "misclassified": int(wrong.sum()),
        "long_texts": {"count": long_texts, "handling": "sliding" if classifier.sliding else "truncate"},
        "truncated_texts": 0 if classifier.sliding else long_texts,
        "vocabulary": coverage,
    }
    if not classifier.multi_label:
        from plmcli import calibration

        metrics["calibration"] = {
            **classifier.calibrator.describe(),
            "before": calibration.report(raw, references),
            "after": calibration.report(probabilities.astype(np.float64), references),
        }
        metrics["coverage"] = calibration.coverage(probabilities, references)
        if config.target_accuracy is not None:
            metrics["target_accuracy"] = calibration.threshold_for(
                probabilities, references, config.target_accuracy
            ) or {"target_accuracy": config.target_accuracy, "min_score": None}
    records = frame.to_dict("records")
    errors = []
    for i in np.argsort(-confidence, kind="stable"):
        if wrong[i]:
            picked = [label_names[j] for j in np.flatnonzero(chosen[i])]
            errors.append(
                {
                    **records[rows.kept[i]],
                    "predicted_label": (separator or "").join(picked),
                    "predicted_score": float(probabilities[i].max()),
                }
            )
    with staged_dir(claim) as staging:
        reporting.write_json(staging / "metrics.json", metrics)
        (staging / "errors.csv").write_text(to_csv(errors, list(errors[0])) if errors else "", encoding="utf-8")
        reporting.plot_confusion_matrix(
            staging / "confusion_matrix.png",
            report["confusion_matrix"],
            label_names,
            f"{config.model} on {config.data}",
            [*label_names, "(none)"] if classifier.multi_label else None,
        )
        if not classifier.multi_label:
            title = f"{config.model} on {config.data}"
            reporting.plot_reliability(staging / "reliability.png", raw, probabilities, references, title)
            reporting.plot_coverage(staging / "coverage.png", probabilities, references, metrics["coverage"], title)
        reporting.write_manifest(staging / "manifest.json", config, {}, [config.data])
    return EvaluationResult(output=claim.path, metrics=metrics, errors=errors)


def _evaluate_regression(
    config: EvaluateConfig, claim: Claim, frame, classifier, columns, rows, coverage: dict
) -> EvaluationResult:
    """A regression model's report: metrics in the target's units, scatter.png, errors.csv (largest errors first)."""
    from plmcli import metrics as scoring

    true = np.asarray(data.numeric_targets(rows, columns.label, config.data, config.encoding, len(frame)))
    console.info(f"Evaluating on {len(rows.texts)} rows: text column '{columns.text}', target '{columns.label}'.")
    outputs, long_texts = classifier(rows.texts, config.batch_size, rows.pairs)
    predicted = classifier.values(outputs)
    metrics = {
        "data": config.data,
        "model": config.model,
        "samples": len(rows.texts),
        "task": "regression",
        "text_column": columns.text,
        "text_pair_column": columns.pair,
        "label_column": columns.label,
        **scoring.regression_report(predicted, true),
        "long_texts": {"count": long_texts, "handling": "sliding" if classifier.sliding else "truncate"},
        "truncated_texts": 0 if classifier.sliding else long_texts,
        "vocabulary": coverage,
    }
    records = frame.to_dict("records")
    errors = [
        {**records[rows.kept[i]], "predicted_value": float(predicted[i]), "error": float(predicted[i] - true[i])}
        for i in np.argsort(-np.abs(predicted - true), kind="stable")
    ]
    with staged_dir(claim) as staging:
        reporting.write_json(staging / "metrics.json", metrics)
        (staging / "errors.csv").write_text(to_csv(errors, list(errors[0])), encoding="utf-8")
        reporting.plot_scatter(
            staging / "scatter.png", true, predicted, columns.label, f"{config.model} on {config.data}"
        )
        reporting.write_manifest(staging / "manifest.json", config, {}, [config.data])
    return EvaluationResult(output=claim.path, metrics=metrics, errors=errors)


def _present(column, frame):
    """The model's training column name when this table has it, else None (detect it)."""
    return column if column in frame.columns else None
