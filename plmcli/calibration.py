"""Scores that mean what they say: temperature scaling, and how well scores match accuracy.

After training, a single-label classifier's logits are divided by one temperature T, fitted on
the validation set to minimise the negative log-likelihood (Guo et al., 2017, "On Calibration of
Modern Neural Networks"; scipy's bounded scalar search). Dividing by T keeps every argmax, so
labels do not change, only the scores. T is saved with the model (``config.json``,
``plm.temperature``) and applied wherever plm reports a probability. Figures: expected
calibration error (ECE: 15 equal-width bins of the top score, the gap between mean score and
accuracy in each, weighted by the bin's share of rows), NLL and the Brier score.
"""

from typing import Optional

import numpy as np

BINS = 15
LIMITS = (0.05, 20.0)  # a fitted temperature stays within these


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(rows, labels) probabilities of ``logits / temperature``."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the mean NLL of softmax(logits / T) on ``labels`` (rows,).

    The NLL is convex in 1/T; scipy's bounded scalar search over log T within LIMITS finds it.
    """
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(softmax(logits, float(np.exp(log_t))), labels),
        bounds=tuple(np.log(LIMITS)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return round(float(np.exp(found.x)), 4)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The mean -log p(true label)."""
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """ECE of the top label: sum over equal-width bins of (rows in bin / rows) x |accuracy - mean top score|."""
    points = reliability(probabilities, labels, bins)
    total = sum(rows for _, _, rows in points)
    return float(sum(rows / total * abs(accuracy - score) for score, accuracy, rows in points))


def report(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """ECE (15 bins, top label), NLL, Brier score, mean top score and accuracy of (rows, labels) scores."""
    labels = np.asarray(labels)
    one_hot = np.eye(probabilities.shape[1])[labels]
    return {
        "ece": round(expected_calibration_error(probabilities, labels), 4),
        "nll": round(negative_log_likelihood(probabilities, labels), 4),
        "brier": round(float(((probabilities - one_hot) ** 2).sum(axis=1).mean()), 4),
        "mean_top_score": round(float(probabilities.max(axis=1).mean()), 4),
        "accuracy": round(float((probabilities.argmax(axis=1) == labels).mean()), 4),
    }


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[tuple[float, float, int]]:
    """(mean top score, accuracy, rows) of each non-empty bin: the points of a reliability diagram.

    A top score of exactly k / bins falls in bin k - 1 (bins are closed on the right), as in Guo et al.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return [
        (float(confidence[which == k].mean()), float(correct[which == k].mean()), int((which == k).sum()))
        for k in range(bins)
        if (which == k).any()
    ]


COVERAGES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)  # the shares of rows the coverage table answers


def coverage(probabilities: np.ndarray, labels: np.ndarray, shares=COVERAGES) -> list[dict]:
    """Accuracy of the most confident share of rows, for each share, with the lowest top score answered.

    What ``plm predict --min-score`` trades: a threshold at ``min_score`` answers about that share
    of such rows, at about that accuracy.
    """
    confidence, correct = ranked(probabilities, labels)
    table = []
    for share in shares:
        count = max(1, int(np.ceil(share * len(confidence))))
        table.append(
            {
                "coverage": share,
                "rows": count,
                "accuracy": round(float(correct[:count].mean()), 4),
                "min_score": round(float(confidence[count - 1]), 4),
            }
        )
    return table


def threshold_for(probabilities: np.ndarray, labels: np.ndarray, target: float) -> Optional[dict]:
    """The lowest --min-score whose answered rows (top score at or above it) reach ``target`` accuracy, or None."""
    confidence, correct = ranked(probabilities, labels)
    accuracy = np.cumsum(correct) / np.arange(1, len(correct) + 1)  # of the i+1 most confident rows
    ends = np.append(confidence[1:] != confidence[:-1], True)  # where a run of equal scores ends
    reaching = np.flatnonzero(ends & (accuracy >= target))
    if not len(reaching):
        return None
    last = int(reaching[-1])
    return {
        "target_accuracy": target,
        "min_score": round(float(confidence[last]), 4),
        "coverage": round((last + 1) / len(confidence), 4),
        "rows": last + 1,
        "accuracy": round(float(accuracy[last]), 4),
    }


def ranked(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top scores, most confident first, and whether each of those rows is right."""
    confidence = probabilities.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    return confidence[order], (probabilities.argmax(axis=1) == np.asarray(labels))[order]
