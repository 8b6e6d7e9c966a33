"""Does confidence mean something? Mark each hypothesis phoneme correct or wrong, then measure.

A hypothesis phoneme is *correct* when the minimum-edit alignment with the reference (rapidfuzz's
Levenshtein editops) keeps it as a match; it is *wrong* when the alignment substitutes or inserts it.
(Deletions are reference phonemes with no hypothesis phoneme, so they carry no confidence.)

Two summaries: the area under the ROC curve of confidence separating correct from wrong phonemes
(0.5 = no information, 1 = perfect ranking), and a reliability table: per confidence bin, how many
phonemes fell in it, their mean confidence and the fraction that were correct (a calibrated confidence
has the two equal; the expected calibration error is their count-weighted mean gap).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein


def mark_correct(ref: Sequence[str], hyp: Sequence[str]) -> list[bool]:
    """Per hypothesis phoneme: kept as a match by the minimum-edit alignment with ``ref``."""
    ok = [True] * len(hyp)
    for op in Levenshtein.editops(list(ref), list(hyp)):
        if op.tag in ("replace", "insert"):
            ok[op.dest_pos] = False
    return ok


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None if one class is empty."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def reliability(scores: Sequence[float], labels: Sequence[bool], bins: int = 10) -> list[dict[str, Any]]:
    """Per confidence bin ``[lo, hi)`` (the last one closed): count, mean confidence, accuracy."""
    s = np.clip(np.asarray(scores, np.float64), 0, 1)
    y = np.asarray(labels, bool)
    idx = np.minimum((s * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        rows.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "n": n,
                     "confidence": round(float(s[m].mean()), 3) if n else None,
                     "accuracy": round(float(y[m].mean()), 3) if n else None})
    return rows


def summarise(scores: Sequence[float], labels: Sequence[bool], bins: int = 10) -> dict[str, Any]:
    """AUROC, expected calibration error, counts and the reliability table."""
    table = reliability(scores, labels, bins)
    n = len(scores)
    ece = sum(r["n"] * abs(r["confidence"] - r["accuracy"]) for r in table if r["n"]) / n if n else None
    a = auroc(scores, labels)
    return {"phonemes": n, "correct": int(np.sum(labels)) if n else 0,
            "auroc": None if a is None else round(a, 4), "ece": None if ece is None else round(ece, 4),
            "reliability": table}
