"""plmcli.metrics: figures checked by hand on a small confusion matrix."""

import numpy as np
import pytest

from plmcli.metrics import classification_report


def test_report_matches_hand_computed_figures():
    # true a,a,a,b,b,c ; predicted a,a,b,b,c,c
    report = classification_report([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 2], ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = (report["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)
    assert (c["precision"], c["recall"], c["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report["weighted_f1"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3) / 6)


def test_a_class_never_predicted_scores_zero_not_nan():
    report = classification_report([0, 0], [0, 1], ["a", "b"])
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_macro_f1_ignores_labels_absent_from_data_and_predictions():
    report = classification_report([0, 1, 0], [0, 1, 0], ["a", "b", "c"])
    assert report["macro_f1"] == 1.0 and report["per_class"]["c"]["support"] == 0


def test_multi_label_report_counts_each_label_and_whole_rows():
    from plmcli.metrics import multi_label_report

    predicted = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    true = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]])
    report = multi_label_report(predicted, true, ["a", "b", "c"])
    assert report["subset_accuracy"] == 0.5  # rows 2 and 4 are wholly right
    # micro: 3 true positives, 5 predicted, 4 true -> precision 0.6, recall 0.75
    assert report["micro_f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert report["per_class"]["b"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert report["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    # rows with true label c were predicted a (once) and never c; the last column counts rows given no label
    assert report["confusion_matrix"] == [[2, 1, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]]


def test_thresholds_are_tuned_per_label_nearest_one_half_on_ties():
    from plmcli.metrics import tune_thresholds

    probabilities = np.array([[0.9, 0.2, 0.7], [0.3, 0.6, 0.1], [0.35, 0.1, 0.2], [0.1, 0.4, 0.3]])
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])
    # a: 0.15-0.30 all give F1 0.8 (0.3 is nearest 0.5); b: anything in (0.4, 0.6] is perfect; c: no positives
    assert tune_thresholds(probabilities, truth, min_positives=1) == [0.3, 0.5, 0.5]
    assert tune_thresholds(probabilities, truth) == [0.5, 0.5, 0.5]  # too few positives to tune on
