"""The minimal POPE scorer: metrics against hand-computed values."""

import pytest

from mmaccel.zoo.score import pope_metrics


def test_pope_metrics_by_hand():
    answers = ["yes", "yes", "yes", "no", "no", "no"]
    predictions = ["yes", "yes", "no", "yes", "no", "yes."]  # "yes." is neither yes nor no under exact match
    m = pope_metrics(predictions, answers)
    # TP=2 FP=1 FN=1; accuracy 3/6; yes-ratio 3/6; FPR 1/3
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(0.5)
    assert m["false_positive_rate"] == pytest.approx(1 / 3)


def test_zero_denominators_give_zero():
    m = pope_metrics(["no", "no"], ["no", "no"])
    assert m["precision"] == m["recall"] == m["f1"] == 0.0 and m["accuracy"] == 1.0


def test_first_letter():
    from mmaccel.zoo.score import first_letter

    assert first_letter(" B") == "B" and first_letter("The answer is C.") == "C"
    assert first_letter("(D) ring") == "D" and first_letter("none") == ""
