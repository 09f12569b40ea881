"""plmcli.metrics: figures checked by hand on a small confusion matrix."""

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
