"""Metrics: how fast a run was, how late its phonemes came, and how far it is from a reference.

Edit distances use rapidfuzz (C++, works on sequences of symbols, gives the edit operations for the
substitution/deletion/insertion breakdown). Per-stream sample lists use compact ``array('d')`` storage
so an hour-long stream costs a few hundred kilobytes.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

from .events import Phoneme


def stats(values: Sequence[float], scale: float = 1.0, digits: int = 4) -> dict[str, float | None]:
    """avg, p50, p95 and max of ``values`` times ``scale`` (None everywhere when empty)."""
    if len(values) == 0:
        return {"avg": None, "p50": None, "p95": None, "max": None}
    a = np.asarray(values, dtype=np.float64) * scale
    return {"avg": round(float(a.mean()), digits), "p50": round(float(np.percentile(a, 50)), digits),
            "p95": round(float(np.percentile(a, 95)), digits), "max": round(float(a.max()), digits)}


@dataclass(frozen=True)
class EditCounts:
    """Edit-distance alignment counts of a hypothesis against a reference."""

    ref_len: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Error rate (PER when the symbols are phonemes); 0 for an empty reference and hypothesis."""
        return self.errors / self.ref_len if self.ref_len else float(self.errors > 0)

    def __add__(self, other: "EditCounts") -> "EditCounts":
        return EditCounts(self.ref_len + other.ref_len, self.substitutions + other.substitutions,
                          self.deletions + other.deletions, self.insertions + other.insertions)


def edit_counts(ref: Sequence[str], hyp: Sequence[str]) -> EditCounts:
    """Minimum-edit alignment of ``hyp`` against ``ref``, split into S/D/I."""
    ops = Levenshtein.editops(list(ref), list(hyp))
    s = sum(op.tag == "replace" for op in ops)
    d = sum(op.tag == "delete" for op in ops)
    i = sum(op.tag == "insert" for op in ops)
    return EditCounts(len(ref), s, d, i)


def compare(stream: Sequence[str], offline: Sequence[str]) -> dict[str, Any]:
    """How far a streamed phoneme string is from the offline one (offline taken as the reference)."""
    c = edit_counts(offline, stream)
    return {"edit_distance": c.errors, "ratio": round(c.rate, 4),
            "agreement": round(1 - Levenshtein.normalized_distance(list(offline), list(stream)), 4)}


@dataclass
class StreamStats:
    """Collects one stream's timings and delays; :meth:`summary` turns them into the summary metrics."""

    sample_rate: int
    keep_phonemes: bool = True
    chunk_seconds: array = field(default_factory=lambda: array("d"))
    delays: array = field(default_factory=lambda: array("d"))
    wall_delays: array = field(default_factory=lambda: array("d"))
    frame_delays: array = field(default_factory=lambda: array("d"))
    phonemes: list[str] = field(default_factory=list)
    committed: int = 0
    audio_samples: int = 0

    def add_step(self, seconds: float) -> None:
        self.chunk_seconds.append(seconds)

    def add_frames(self, received_s: float, first_end_s: float, n: int, frame_s: float) -> None:
        """Frames finalised by a step: frame k ends at ``first_end_s + k * frame_s``."""
        if n:
            ends = first_end_s + frame_s * np.arange(n)
            self.frame_delays.extend((received_s - ends).tolist())

    def add_phoneme(self, p: Phoneme, step_seconds: float) -> None:
        self.committed += 1
        delay = p.committed_at - p.end
        self.delays.append(delay)
        self.wall_delays.append(delay + step_seconds)
        if self.keep_phonemes:
            self.phonemes.append(p.phoneme)

    def summary(self) -> dict[str, Any]:
        audio_s = self.audio_samples / self.sample_rate
        compute = float(sum(self.chunk_seconds))
        return {
            "audio_s": round(audio_s, 3),
            "chunks": len(self.chunk_seconds),
            "chunk_ms": stats(self.chunk_seconds, 1000, 2),
            "compute_s": round(compute, 3),
            "rtf": round(compute / audio_s, 4) if audio_s else None,
            "emission_delay_s": stats(self.delays, 1, 3),
            "emission_delay_wall_s": stats(self.wall_delays, 1, 3),
            "frame_delay_s": stats(self.frame_delays, 1, 3),
            "phonemes": self.committed,
            "phoneme_string": " ".join(self.phonemes) if self.keep_phonemes else None,
        }
