"""Events a stream produces, and their JSON form (one object per line with ``--json``, and over WebSocket).

Schema (every event has ``type``):

- ``phoneme``: a committed phoneme, never retracted: ``phoneme``, ``start``, ``end`` (seconds of audio,
  from its frames), ``confidence`` (0-1, from its posteriors), ``committed_at`` (seconds of audio
  received when it was committed), ``index`` (0-based position in the stream).
- ``partial``: the provisional tail after the committed phonemes, replacing the previous partial:
  ``phonemes`` (list of symbols), ``received`` (seconds of audio received).
- ``endpoint``: an utterance ended (trailing-silence rules, :mod:`phonestream.endpoint`): ``utterance``
  (0-based id), ``start``, ``end`` (seconds; utterances tile the stream), ``speech_start``,
  ``speech_end`` (its first and last speech frame), ``rule`` (``silence``, ``max_length``,
  ``end_of_stream``). Phonemes before it belong to that utterance.
- ``word``: with an expected text (:mod:`phonestream.check`), the verdict on one expected word, sent once
  its frames are final and never retracted: ``index``, ``word``, ``expected`` / ``heard`` (phonemes),
  ``score`` (0-1), ``verdict`` (``ok``, ``mispronounced``, ``missing``), ``start``, ``end`` (seconds;
  None when missing), ``committed_at``, ``source`` (``cmudict`` or ``espeak-ng`` for a word not in
  the dictionary), ``phonemes`` (per expected phoneme: ``expected``, ``heard``, ``score``, ``start``,
  ``end``), ``inserted`` (phonemes heard before it that belong to no expected word).
- ``summary``: last event of a stream, the run's metrics (see :mod:`phonestream.metrics`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Phoneme:
    """A committed phoneme."""

    phoneme: str
    start: float
    end: float
    confidence: float
    committed_at: float
    index: int = 0

    def to_dict(self) -> dict[str, Any]:
        # spelled out rather than dataclasses.asdict (which deep-copies field by field): a server encodes
        # thousands of these a second
        return {"type": "phoneme", "phoneme": self.phoneme, "start": round(self.start, 3), "end": round(self.end, 3),
                "confidence": round(self.confidence, 4), "committed_at": round(self.committed_at, 3),
                "index": self.index}


@dataclass(frozen=True)
class Partial:
    """The provisional tail: may change with the next step."""

    phonemes: list[str]
    received: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": "partial", "phonemes": list(self.phonemes), "received": round(self.received, 3)}


@dataclass(frozen=True)
class Endpoint:
    """The end of an utterance."""

    utterance: int
    start: float
    end: float
    speech_start: float
    speech_end: float
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "endpoint", "utterance": self.utterance, "start": round(self.start, 3),
                "end": round(self.end, 3), "speech_start": round(self.speech_start, 3),
                "speech_end": round(self.speech_end, 3), "rule": self.rule}


@dataclass(frozen=True)
class Word:
    """The verdict on one expected word of a pronunciation check (:mod:`phonestream.check`)."""

    index: int
    word: str
    expected: list[str]
    heard: list[str]
    score: float | None
    verdict: str
    start: float | None
    end: float | None
    committed_at: float
    source: str = "cmudict"
    phonemes: list[dict[str, Any]] = field(default_factory=list)
    inserted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def r(x: float | None, n: int = 3) -> float | None:
            return None if x is None else round(x, n)

        return {"type": "word", "index": self.index, "word": self.word, "expected": list(self.expected),
                "heard": list(self.heard), "score": r(self.score, 4), "verdict": self.verdict,
                "start": r(self.start), "end": r(self.end), "committed_at": r(self.committed_at),
                "source": self.source, "inserted": list(self.inserted),
                "phonemes": [{**p, "score": r(p.get("score"), 4), "start": r(p.get("start")), "end": r(p.get("end"))}
                             for p in self.phonemes]}


@dataclass(frozen=True)
class Summary:
    """End-of-stream metrics."""

    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "summary", **self.metrics}


Event = Phoneme | Partial | Endpoint | Word | Summary


# one encoder for every event: json.dumps with options builds a new one per call
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def to_json(event: Event) -> str:
    """One event as a compact JSON line (IPA and other non-ASCII symbols kept as they are)."""
    return _ENCODER.encode(event.to_dict())
