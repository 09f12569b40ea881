"""Scores that mean what they say: temperature scaling, a top-score map, and how well scores match accuracy.

After training, a single-label classifier's logits are divided by one temperature T, fitted on
the validation set to minimise the negative log-likelihood (Guo et al., 2017, "On Calibration of
Modern Neural Networks"; scipy's bounded scalar search). Dividing by T keeps every argmax, so
labels do not change, only the scores. T is saved with the model (``config.json``,
``plm.temperature``) and applied wherever plm reports a probability.

One temperature moves every score the same way. A fine-tuned model is often too sure of the
texts it finds hard (scores of 0.6-0.9 right less often than that) while right about the ones it
finds easy: T then trades one error for the other. ``--calibration beta`` adds, after T, a map of
the top score fitted on the same rows: beta calibration (Kull, Silva Filho and Flach, 2017,
"Beyond sigmoids"), logit(s') = a ln s - b ln(1 - s) + c with a, b >= 0, so higher scores stay
higher. The other labels share 1 - s' in the ratios they had; a top score is never mapped below
the second label's (it is held just above it), so the label does not change. It is saved as ``plm.top_score_map``.

Figures: expected calibration error (ECE: 15 equal-width bins of the top score, the gap between
mean score and accuracy in each, weighted by the bin's share of rows), NLL and the Brier score.
"""

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

BINS = 15
LIMITS = (0.05, 20.0)  # a fitted temperature stays within these
EDGE = 1e-7  # scores are kept this far from 0 and 1 where a logarithm is taken
TIE_MARGIN = 1e-6  # a remapped top score stays this far above the second, in float32 too
MIN_BETA_ROWS = 20  # a top-score map is fitted with at least this many right and as many wrong validation rows


@dataclass(frozen=True)
class Calibrator:
    """What turns a single-label model's logits into the scores plm reports: a temperature, then a top-score map."""

    temperature: float = 1.0
    top_score_map: Optional[dict] = None  # {"method": "beta", "a": ..., "b": ..., "c": ...}

    @classmethod
    def of(cls, settings: dict) -> "Calibrator":
        """From ``temperature`` and ``top_score_map`` in ``config.json``'s ``plm`` section or a metrics.json report."""
        return cls(float(settings.get("temperature") or 1.0), settings.get("top_score_map"))

    def describe(self) -> dict:
        """Its settings, as metrics.json and /metadata show them."""
        return {"temperature": self.temperature, "top_score_map": self.top_score_map}

    def phrase(self) -> str:
        """'temperature 1.09', or 'temperature 1.09 and a beta map of the top score', for messages."""
        words = f"temperature {self.temperature:.3g}"
        return words + (f" and a {self.top_score_map['method']} map of the top score" if self.top_score_map else "")

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """(rows, labels) calibrated probabilities of ``logits``, in float64."""
        probabilities = softmax(logits, self.temperature)
        if self.top_score_map is None:
            return probabilities
        return remap_top(probabilities, beta_map(self.top_score_map))


def beta_map(parameters: dict):
    """The beta-calibration function of a top score: s -> sigmoid(a ln s - b ln(1 - s) + c)."""
    a, b, c = (float(parameters[key]) for key in ("a", "b", "c"))

    def mapped(score: np.ndarray) -> np.ndarray:
        score = np.clip(score, EDGE, 1 - EDGE)
        return 1 / (1 + np.exp(-(a * np.log(score) - b * np.log1p(-score) + c)))

    return mapped


def remap_top(probabilities: np.ndarray, mapped) -> np.ndarray:
    """Each row's top score replaced by ``mapped(top)``, the others sharing the rest in their ratios; argmax kept.

    A new top s' below the second label's new score (1 - s') p2 / (1 - s) would change the label, so s' is
    held just above the score where the two meet, p2 / (1 - s + p2).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    rows = np.arange(len(probabilities))
    top = probabilities.argmax(axis=1)
    score = probabilities[rows, top]
    rest = np.clip(1 - score, 0.0, 1.0)
    second = np.sort(probabilities, axis=1)[:, -2] if probabilities.shape[1] > 1 else np.zeros(len(score))
    new = np.minimum(np.maximum(mapped(score), second / np.maximum(rest + second, EDGE) + TIE_MARGIN), 1.0)
    scale = np.where(rest > 0, (1 - new) / np.maximum(rest, EDGE), 0.0)
    remapped = probabilities * scale[:, None]
    remapped[rows, top] = np.where(rest > 0, new, 1.0)
    return remapped


def fit_beta(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """The beta map of the top score that minimises the log loss of "the top label is right" on ``labels``.

    A logistic regression of correctness on (ln s, -ln(1 - s)) with both slopes kept at 0 or above
    (scipy's L-BFGS-B), so the map never lowers a higher score below a lower one.
    """
    from scipy.optimize import minimize

    probabilities = np.asarray(probabilities, dtype=np.float64)
    score = np.clip(probabilities.max(axis=1), EDGE, 1 - EDGE)
    right = (probabilities.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    features = np.stack([np.log(score), -np.log1p(-score), np.ones_like(score)], axis=1)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = features @ theta
        # log(1 + e^z) - right * z, the logistic loss, and its gradient
        value = float(np.mean(np.logaddexp(0.0, z) - right * z))
        gradient = features.T @ (1 / (1 + np.exp(-z)) - right) / len(z)
        return value, gradient

    found = minimize(loss, np.array([1.0, 1.0, 0.0]), jac=True, method="L-BFGS-B",
                     bounds=[(0.0, None), (0.0, None), (None, None)])  # fmt: skip
    a, b, c = (round(float(value), 6) for value in found.x)
    return {"method": "beta", "a": a, "b": b, "c": c}


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
    below = float(confidence[last + 1]) if last + 1 < len(confidence) else -1.0  # the first row left out
    return {
        "target_accuracy": target,
        "min_score": _short_threshold(float(confidence[last]), below),
        "coverage": round((last + 1) / len(confidence), 4),
        "rows": last + 1,
        "accuracy": round(float(accuracy[last]), 4),
    }


def _short_threshold(lowest_answered: float, highest_left_out: float) -> float:
    """The shortest decimal at or below ``lowest_answered`` and above ``highest_left_out``: a --min-score to type.

    Rounded to the nearest, a threshold can land above the lowest answered score and leave that row out.
    """
    for digits in range(2, 9):
        value = math.floor(lowest_answered * 10**digits) / 10**digits
        if value > highest_left_out:
            return value
    return lowest_answered


def ranked(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top scores, most confident first, and whether each of those rows is right."""
    confidence = probabilities.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    return confidence[order], (probabilities.argmax(axis=1) == np.asarray(labels))[order]
