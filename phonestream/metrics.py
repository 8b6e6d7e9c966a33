"""Metrics: how fast a run was, how late its phonemes came, and how far it is from a reference.

Edit distances use rapidfuzz (C++, works on sequences of symbols, gives the edit operations for the
substitution/deletion/insertion breakdown). Per-stream timings and delays are :class:`Distribution` s of
bounded size (exact count, sum and max; percentiles from a fixed-size reservoir), so a stream of any
length costs the same few tens of kilobytes.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterable, Sequence
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


class Distribution:
    """avg, p50, p95 and max of a stream of values in bounded memory, for streams that run for hours.

    Count, sum and max are exact. The percentiles come from a uniform random sample of at most
    ``capacity`` values (reservoir sampling, Vitter's algorithm R, seeded: the same values give the same
    summary), so they are exact while fewer values have been seen (82 s of 20 ms frames at the default
    4096) and within about a percentile point of the truth beyond. Memory: ``8 * capacity`` bytes at most.
    """

    def __init__(self, capacity: int = 4096, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.count = 0
        self.total = 0.0
        self.max = float("-inf")
        self._sample = array("d")
        self._random = random.Random(seed)

    def __len__(self) -> int:
        return self.count

    def add(self, value: float) -> None:
        value = float(value)
        self.total += value
        self.max = max(self.max, value)
        self.count += 1
        if len(self._sample) < self.capacity:
            self._sample.append(value)
        else:
            # the count-th value replaces a random slot with probability capacity / count, which keeps
            # every value seen so far in the sample with the same chance
            slot = self._random.randrange(self.count)
            if slot < self.capacity:
                self._sample[slot] = value

    def extend(self, values: Iterable[float]) -> None:
        """:meth:`add` each value (the same result), in bulk while the sample has room: a stream adds a
        value per frame, and a call per value was most of a live window's bookkeeping."""
        values = [float(v) for v in values]
        if not values:
            return
        total = self.total
        for value in values:
            total += value
        self.total = total
        self.max = max(self.max, *values)
        room = max(0, min(len(values), self.capacity - len(self._sample)))
        self._sample.extend(values[:room])
        self.count += room
        for value in values[room:]:
            self.count += 1
            slot = self._random.randrange(self.count)
            if slot < self.capacity:
                self._sample[slot] = value

    def summary(self, scale: float = 1.0, digits: int = 4) -> dict[str, float | None]:
        """avg, p50, p95 and max times ``scale``, as :func:`stats` gives them."""
        if not self.count:
            return stats([], scale, digits)
        a = np.frombuffer(self._sample, np.float64) * scale
        return {"avg": round(self.total / self.count * scale, digits),
                "p50": round(float(np.percentile(a, 50)), digits), "p95": round(float(np.percentile(a, 95)), digits),
                "max": round(self.max * scale, digits)}


@dataclass
class StreamStats:
    """Collects one stream's timings and delays; :meth:`summary` turns them into the summary metrics.

    Memory does not grow with the stream's length except for the phoneme transcript (2 bytes a phoneme
    when kept): timings and delays are :class:`Distribution` s.
    """

    sample_rate: int
    keep_phonemes: bool = True
    chunk_seconds: Distribution = field(default_factory=Distribution)
    delays: Distribution = field(default_factory=Distribution)
    wall_delays: Distribution = field(default_factory=Distribution)
    frame_delays: Distribution = field(default_factory=Distribution)
    committed: int = 0
    audio_samples: int = 0
    _symbols: dict[str, int] = field(default_factory=dict)  # phoneme -> code in _codes
    _codes: array = field(default_factory=lambda: array("H"))

    @property
    def phonemes(self) -> list[str]:
        """The committed phonemes (when ``keep_phonemes``), in order."""
        names = list(self._symbols)
        return [names[c] for c in self._codes]

    def add_step(self, seconds: float) -> None:
        self.chunk_seconds.add(seconds)

    def add_frames(self, received_s: float, first_end_s: float, n: int, frame_s: float) -> None:
        """Frames finalised by a step: frame k ends at ``first_end_s + k * frame_s``."""
        if n:
            self.frame_delays.extend((received_s - (first_end_s + frame_s * np.arange(n))).tolist())

    def add_phoneme(self, p: Phoneme, step_seconds: float) -> None:
        self.committed += 1
        delay = p.committed_at - p.end
        self.delays.add(delay)
        self.wall_delays.add(delay + step_seconds)
        if self.keep_phonemes:
            self._codes.append(self._symbols.setdefault(p.phoneme, len(self._symbols)))

    def summary(self) -> dict[str, Any]:
        audio_s = self.audio_samples / self.sample_rate
        compute = self.chunk_seconds.total
        return {
            "audio_s": round(audio_s, 3),
            "chunks": len(self.chunk_seconds),
            "chunk_ms": self.chunk_seconds.summary(1000, 2),
            "compute_s": round(compute, 3),
            "rtf": round(compute / audio_s, 4) if audio_s else None,
            "emission_delay_s": self.delays.summary(1, 3),
            "emission_delay_wall_s": self.wall_delays.summary(1, 3),
            "frame_delay_s": self.frame_delays.summary(1, 3),
            "phonemes": self.committed,
            "phoneme_string": " ".join(self.phonemes) if self.keep_phonemes else None,
        }
