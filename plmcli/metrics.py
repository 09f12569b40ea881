"""Offline metrics through evaluate's API.

``evaluate.load("accuracy")`` fetches its script from the Hub, so plm defines its metric as an
``evaluate.Metric`` subclass here: the same ``compute(predictions=..., references=...)`` call,
with no network and no scikit-learn. One pass yields accuracy, macro and weighted F1,
per-class precision/recall/F1/support and the confusion matrix; for multi-label data, micro and
macro F1, subset accuracy and per-label figures, with each label's decision threshold; for a
numeric target, MSE, RMSE, MAE, Pearson and Spearman correlation and R²; for tagged words,
entity precision, recall and F1 per type (seqeval, an optional extra, in strict IOB2 mode).
"""

import warnings

import datasets
import evaluate
import numpy as np


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


def _per_class(label_names: list[str], precision, recall, f1, support) -> dict:
    """{label: {precision, recall, f1, support}} from per-label arrays."""
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(label_names)
    }


def _metric_info(description: str, inputs: str, feature) -> evaluate.MetricInfo:
    """An offline metric's description: predictions and references of the same ``feature`` type."""
    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description=inputs,
        features=datasets.Features({"predictions": feature, "references": feature}),
    )


class ClassificationMetric(evaluate.Metric):
    """Single-label classification metrics from integer predictions and references."""

    def _info(self) -> evaluate.MetricInfo:
        return _metric_info(
            "Accuracy, macro/weighted F1, per-class precision, recall, F1 and support, confusion matrix.",
            "predictions and references: class ids (int); label_names: the name of each id.",
            datasets.Value("int64"),
        )

    def _compute(self, predictions, references, label_names: list[str]) -> dict:
        num_labels = len(label_names)
        matrix = np.zeros((num_labels, num_labels), dtype=np.int64)  # (true, predicted)
        np.add.at(matrix, (np.asarray(references), np.asarray(predictions)), 1)
        true_positives = np.diag(matrix).astype(float)
        support = matrix.sum(axis=1)
        precision = _safe_divide(true_positives, matrix.sum(axis=0))
        recall = _safe_divide(true_positives, support)
        f1 = _safe_divide(2 * precision * recall, precision + recall)
        present = (support > 0) | (matrix.sum(axis=0) > 0)
        return {
            "accuracy": float(true_positives.sum() / max(1, matrix.sum())),
            # Over the labels that occur (in the references or the predictions), as scikit-learn does.
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "weighted_f1": float((f1 * support).sum() / max(1, support.sum())),
            "per_class": _per_class(label_names, precision, recall, f1, support),
            "confusion_matrix": matrix.tolist(),
        }


class MultiLabelMetric(evaluate.Metric):
    """Multi-label metrics from 0/1 prediction and reference vectors (one entry per label)."""

    def _info(self) -> evaluate.MetricInfo:
        return _metric_info(
            "Micro and macro F1, subset accuracy, per-label precision, recall, F1 and support.",
            "predictions and references: 0/1 per label; label_names: the name of each position.",
            datasets.Sequence(datasets.Value("int8")),
        )

    def _compute(self, predictions, references, label_names: list[str]) -> dict:
        predicted, true = np.asarray(predictions, dtype=bool), np.asarray(references, dtype=bool)
        true_positives = (predicted & true).sum(axis=0).astype(float)
        predicted_count, support = predicted.sum(axis=0), true.sum(axis=0)
        precision = _safe_divide(true_positives, predicted_count)
        recall = _safe_divide(true_positives, support)
        f1 = _safe_divide(2 * precision * recall, precision + recall)
        micro_precision = true_positives.sum() / max(1, predicted_count.sum())
        micro_recall = true_positives.sum() / max(1, support.sum())
        present = (support > 0) | (predicted_count > 0)
        return {
            "subset_accuracy": float((predicted == true).all(axis=1).mean()),  # every label of the row right
            "micro_f1": float(
                _safe_divide(np.array(2 * micro_precision * micro_recall), np.array(micro_precision + micro_recall))
            ),
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "per_class": _per_class(label_names, precision, recall, f1, support),
            # rows: true label; columns: predicted label, then '(none)' for rows given no label at all
            "confusion_matrix": np.concatenate(
                [
                    true.T.astype(np.int64) @ predicted.astype(np.int64),
                    (true & ~predicted.any(axis=1, keepdims=True)).sum(axis=0)[:, None],
                ],
                axis=1,
            ).tolist(),
        }


THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)  # the candidates tune_thresholds tries


def tune_thresholds(probabilities: np.ndarray, references: np.ndarray, min_positives: int = 5) -> list[float]:
    """Each label's decision threshold: the candidate with the best F1 of that label on these rows.

    Ties go to the candidate nearest 0.5; a label with fewer than ``min_positives`` positive rows
    keeps 0.5 (one or two rows would pick a threshold by chance).
    """
    chosen = []
    for column in range(probabilities.shape[1]):
        truth = references[:, column].astype(bool)
        if truth.sum() < min_positives:
            chosen.append(0.5)
            continue
        predicted = probabilities[:, column][None, :] >= THRESHOLDS[:, None]  # (candidates, rows)
        true_positives = (predicted & truth).sum(axis=1)
        f1 = 2 * true_positives / (predicted.sum(axis=1) + truth.sum())
        best = np.flatnonzero(f1 == f1.max())
        chosen.append(float(THRESHOLDS[best[np.argmin(np.abs(THRESHOLDS[best] - 0.5))]]))
    return chosen


def multi_label_report(predictions, references, label_names: list[str]) -> dict:
    """All multi-label metrics of 0/1 predictions (rows, labels) against 0/1 references."""
    metric = MultiLabelMetric(keep_in_memory=True)
    return metric.compute(predictions=predictions, references=references, label_names=label_names)


def report_at_thresholds(probabilities: np.ndarray, references, label_names: list[str], thresholds) -> dict:
    """multi_label_report of each label's probability at or above its threshold, the thresholds in per_class."""
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=float), (len(label_names),))  # one, or one a label
    report = multi_label_report((probabilities >= thresholds).astype(np.int8), references, label_names)
    for name, threshold in zip(label_names, thresholds.tolist()):
        report["per_class"][name]["threshold"] = threshold
    return report


def classification_report(predictions, references, label_names: list[str]) -> dict:
    """All classification metrics of class-id predictions against references."""
    metric = ClassificationMetric(keep_in_memory=True)
    return metric.compute(predictions=predictions, references=references, label_names=label_names)


HEADLINE = {False: ("accuracy", "macro_f1", "weighted_f1"), True: ("micro_f1", "macro_f1", "subset_accuracy")}


def trainer_metrics(label_names: list[str], multi_label: bool = False):
    """A Trainer ``compute_metrics`` that logs the headline figures (HEADLINE); multi-label at threshold 0.5."""

    def compute_metrics(eval_prediction) -> dict:
        if multi_label:
            predicted = (eval_prediction.predictions > 0).astype(np.int8)  # sigmoid(logit) > 0.5
            report = multi_label_report(predicted, eval_prediction.label_ids.astype(np.int8), label_names)
        else:
            predictions = np.argmax(eval_prediction.predictions, axis=-1)
            report = classification_report(predictions, eval_prediction.label_ids, label_names)
        return {key: report[key] for key in HEADLINE[multi_label]}

    return compute_metrics


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (what Spearman's correlation correlates)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=float)
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2  # the mean of ranks start+1 .. end
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation; 0.0 where either side is constant (it is undefined there)."""
    a, b = a - a.mean(), b - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / scale) if scale > 0 else 0.0


class RegressionMetric(evaluate.Metric):
    """Metrics of a numeric target from predicted and true values (in the target's own units)."""

    def _info(self) -> evaluate.MetricInfo:
        return _metric_info(
            "MSE, RMSE, MAE, Pearson and Spearman correlation, R².",
            "predictions and references: numbers (float).",
            datasets.Value("float64"),
        )

    def _compute(self, predictions, references) -> dict:
        predicted, true = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
        errors = predicted - true
        mse = float((errors**2).mean())
        variance = float(((true - true.mean()) ** 2).mean())
        return {
            "mse": mse,
            "rmse": float(np.sqrt(mse)),
            "mae": float(np.abs(errors).mean()),
            "pearson": _pearson(predicted, true),
            "spearman": _pearson(_ranks(predicted), _ranks(true)),
            "r2": 1.0 - mse / variance if variance > 0 else 0.0,
        }


def regression_report(predictions, references) -> dict:
    """All regression metrics of predicted values against true ones."""
    metric = RegressionMetric(keep_in_memory=True)
    return metric.compute(predictions=np.asarray(predictions, float), references=np.asarray(references, float))


def trainer_regression_metrics(mean: float, std: float):
    """A Trainer ``compute_metrics`` for a target standardised as (y - mean) / std: figures in the target's units."""

    def compute_metrics(eval_prediction) -> dict:
        predicted = np.asarray(eval_prediction.predictions, dtype=float).reshape(-1) * std + mean
        true = np.asarray(eval_prediction.label_ids, dtype=float).reshape(-1) * std + mean
        return regression_report(predicted, true)

    return compute_metrics


class EntityMetric(evaluate.Metric):
    """Entity-level precision, recall and F1 per type (seqeval, strict IOB2: an entity counts only when whole)."""

    def _info(self) -> evaluate.MetricInfo:
        return _metric_info(
            "Entity precision, recall and F1 per type, micro and macro (seqeval, strict IOB2), token accuracy.",
            "predictions and references: one list of IOB2 tags per sentence.",
            datasets.Sequence(datasets.Value("string")),
        )

    def _compute(self, predictions, references) -> dict:
        try:
            from seqeval.metrics import classification_report as seqeval_report
            from seqeval.scheme import IOB2
        except ImportError:
            from plmcli.errors import PlmError

            raise PlmError("entity scores need seqeval: pip install 'plm[ner]'.") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval warns of types with no entity predicted
            table = seqeval_report(
                references, predictions, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
            )
        per_type = {
            name: {
                "precision": round(float(row["precision"]), 4),
                "recall": round(float(row["recall"]), 4),
                "f1": round(float(row["f1-score"]), 4),
                "support": int(row["support"]),
            }
            for name, row in table.items()
            if not name.endswith(" avg")
        }
        micro, macro = table.get("micro avg", {}), table.get("macro avg", {})
        words = sum(len(tags) for tags in references)
        right = sum(p == r for pred, ref in zip(predictions, references) for p, r in zip(pred, ref))
        return {
            "f1": round(float(micro.get("f1-score", 0.0)), 4),
            "precision": round(float(micro.get("precision", 0.0)), 4),
            "recall": round(float(micro.get("recall", 0.0)), 4),
            "macro_f1": round(float(macro.get("f1-score", 0.0)), 4),
            "accuracy": round(right / max(1, words), 4),  # of words
            "per_type": per_type,
        }


def entity_report(predictions: list[list[str]], references: list[list[str]]) -> dict:
    """EntityMetric of IOB2 tag sequences (one list a sentence) against references."""
    return EntityMetric(keep_in_memory=True).compute(predictions=predictions, references=references)
