"""Evaluation on a labelled manifest: phone error rate streaming and offline, agreement and latency.

A manifest is a TSV with a header, an audio column (``audio`` or ``wav``, paths relative to the
manifest) and a phones column (space-separated symbols, ``phones`` unless told otherwise). Rows with an
empty phones cell are skipped (a dictionary may lack a word) and counted.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioError, load_audio, pieces
from .engine import Recognizer
from .metrics import EditCounts, edit_counts, stats
from .phones import FOLDINGS


class ManifestError(ValueError):
    """A manifest that cannot be used (one-line message for the user)."""


@dataclass(frozen=True)
class Item:
    id: str
    audio: Path
    phones: list[str]


def read_manifest(path: str | Path, phones_column: str = "phones", limit: int | None = None,
                  where: Callable[[dict[str, str]], bool] | None = None) -> tuple[list[Item], int]:
    """Items of a manifest and how many rows were skipped for having no phones.

    Raises:
        ManifestError: missing file, no header, or no audio / phones column.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = reader.fieldnames or []
        audio_col = next((c for c in ("audio", "wav") if c in columns), None)
        if audio_col is None:
            raise ManifestError(f"{path} has no 'audio' or 'wav' column (columns: {', '.join(columns) or 'none'})")
        if phones_column not in columns:
            raise ManifestError(f"{path} has no {phones_column!r} column (columns: {', '.join(columns)})")
        items, skipped = [], 0
        for i, row in enumerate(reader):
            if where is not None and not where(row):
                continue
            phones = (row.get(phones_column) or "").split()
            if not phones:
                skipped += 1
                continue
            items.append(Item(row.get("id") or str(i), path.parent / row[audio_col], phones))
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise ManifestError(f"{path} has no rows with phones in column {phones_column!r}")
    return items, skipped


@dataclass
class SystemScore:
    """Accumulated scores of one system (streaming, offline or a baseline) over a manifest."""

    name: str
    counts: EditCounts = field(default_factory=lambda: EditCounts(0, 0, 0, 0))
    compute_s: float = 0.0
    delays: list[float] = field(default_factory=list)

    def add(self, ref: list[str], hyp: list[str]) -> None:
        self.counts = self.counts + edit_counts(ref, hyp)

    def row(self, audio_s: float) -> dict[str, Any]:
        c = self.counts
        return {
            "system": self.name, "per": round(100 * c.rate, 2), "sub": c.substitutions, "del": c.deletions,
            "ins": c.insertions, "ref_phones": c.ref_len,
            "rtf": round(self.compute_s / audio_s, 4) if audio_s and self.compute_s else None,
            "emission_delay_s": stats(self.delays, 1, 3) if self.delays else None,
        }


def stream_file(recognizer: Recognizer, audio: np.ndarray, feed_ms: int = 20):
    """Stream one signal in ``feed_ms`` pieces; returns (committed phonemes, summary metrics)."""
    stream = recognizer.stream(partials=False)
    feed = max(1, recognizer.model.sample_rate * feed_ms // 1000)
    phonemes = []
    for piece in pieces(audio, feed):
        phonemes += [e for e in stream.accept(piece) if e.to_dict()["type"] == "phoneme"]
    events = stream.finish(offline=False)
    phonemes += [e for e in events if e.to_dict()["type"] == "phoneme"]
    return phonemes, events[-1].metrics


def evaluate(recognizer: Recognizer, items: list[Item], fold: str = "none", feed_ms: int = 20,
             baselines: dict[str, Callable[[Path], list[str]]] | None = None,
             progress: Callable[[Iterator[Item]], Iterator[Item]] | None = None) -> dict[str, Any]:
    """Score streaming and offline decoding (and any baselines) of ``items`` against their phones."""
    fold_fn = FOLDINGS[fold]
    sr = recognizer.model.sample_rate
    systems = {"stream": SystemScore("stream"), "offline": SystemScore("offline")}
    for name in baselines or {}:
        systems[name] = SystemScore(name)
    agreement = EditCounts(0, 0, 0, 0)
    audio_s = 0.0
    errors: list[str] = []
    for item in (progress(iter(items)) if progress else items):
        try:
            audio = load_audio(item.audio, sr)
        except AudioError as err:
            errors.append(str(err))
            continue
        audio_s += len(audio) / sr
        ref = fold_fn(item.phones)
        streamed, summary = stream_file(recognizer, audio, feed_ms)
        systems["stream"].compute_s += summary["compute_s"]
        systems["stream"].delays += [p.committed_at - p.end for p in streamed]
        t0 = time.perf_counter()
        offline = recognizer.transcribe(audio)
        systems["offline"].compute_s += time.perf_counter() - t0
        s_hyp, o_hyp = fold_fn([p.phoneme for p in streamed]), fold_fn([p.phoneme for p in offline])
        systems["stream"].add(ref, s_hyp)
        systems["offline"].add(ref, o_hyp)
        agreement = agreement + edit_counts(o_hyp, s_hyp)
        for name, run in (baselines or {}).items():
            t0 = time.perf_counter()
            hyp = fold_fn(run(item.audio))
            systems[name].compute_s += time.perf_counter() - t0
            systems[name].add(ref, hyp)
    return {
        "utterances": len(items) - len(errors), "audio_s": round(audio_s, 2), "fold": fold,
        "systems": [s.row(audio_s) for s in systems.values()],
        "stream_vs_offline": {"edit_distance": agreement.errors, "ratio": round(agreement.rate, 4)},
        "errors": errors,
    }


__all__ = ["Item", "ManifestError", "read_manifest", "evaluate", "stream_file"]
