"""Offline metrics through evaluate's API.

``evaluate.load("accuracy")`` fetches its script from the Hub, so plm defines its metric as an
``evaluate.Metric`` subclass here: the same ``compute(predictions=..., references=...)`` call,
with no network and no scikit-learn. One pass yields accuracy, macro and weighted F1,
per-class precision/recall/F1/support and the confusion matrix.
"""

import datasets
import evaluate
import numpy as np


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


class ClassificationMetric(evaluate.Metric):
    """Single-label classification metrics from integer predictions and references."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy, macro/weighted F1, per-class precision, recall, F1 and support, confusion matrix.",
            citation="",
            inputs_description="predictions and references: class ids (int); label_names: the name of each id.",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
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
            "per_class": {
                name: {
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i, name in enumerate(label_names)
            },
            "confusion_matrix": matrix.tolist(),
        }


def classification_report(predictions, references, label_names: list[str]) -> dict:
    """All classification metrics of class-id predictions against references."""
    metric = ClassificationMetric(keep_in_memory=True)
    return metric.compute(predictions=predictions, references=references, label_names=label_names)


def trainer_metrics(label_names: list[str]):
    """A Trainer ``compute_metrics`` that logs the headline figures (accuracy, macro and weighted F1)."""

    def compute_metrics(eval_prediction) -> dict:
        predictions = np.argmax(eval_prediction.predictions, axis=-1)
        report = classification_report(predictions, eval_prediction.label_ids, label_names)
        return {key: report[key] for key in ("accuracy", "macro_f1", "weighted_f1")}

    return compute_metrics
