"""Confidence scoring: correct/wrong marking by alignment, AUROC, reliability table."""

import pytest

from phonestream.confidence import auroc, mark_correct, reliability, summarise


def test_mark_correct_follows_the_alignment():
    ref = ["K", "AE", "T"]
    assert mark_correct(ref, ["K", "AE", "T"]) == [True, True, True]
    assert mark_correct(ref, ["K", "EH", "T"]) == [True, False, True]  # substitution
    assert mark_correct(ref, ["K", "AE", "S", "T"]) == [True, True, False, True]  # insertion
    assert mark_correct(ref, ["K", "T"]) == [True, True]  # a deletion marks nothing wrong


def test_auroc_known_cases():
    assert auroc([0.9, 0.8, 0.3, 0.2], [True, False, True, False]) == pytest.approx(0.75)
    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5  # ties count half
    assert auroc([0.9], [True]) is None


def test_reliability_bins_and_ece():
    rows = reliability([0.05, 0.95, 0.95, 1.0], [False, True, False, True], bins=10)
    assert rows[0] == {"bin": "0.0-0.1", "n": 1, "confidence": 0.05, "accuracy": 0.0}
    assert rows[9]["n"] == 3 and rows[9]["accuracy"] == pytest.approx(0.667, abs=1e-3)
    s = summarise([0.05, 0.95, 0.95, 1.0], [False, True, False, True])
    assert s["phonemes"] == 4 and s["correct"] == 2 and 0 <= s["ece"] <= 1 and s["auroc"] == 0.875
