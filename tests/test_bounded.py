"""Memory a client can make the server keep is bounded: the LM's shared score cache, and per-stream statistics."""

from __future__ import annotations

import tracemalloc

import numpy as np

from phonestream import beam
from phonestream.beam import BeamDecoder
from phonestream.lm import build_kneser_ney
from phonestream.models.base import Vocabulary
from phonestream.streaming import FrameBlock

VOCAB = Vocabulary(("<b>", "AA", "B", "K", "S", "T", "IY", "N", "|"), 0, frozenset({8}))


def noisy(n: int, seed: int) -> np.ndarray:
    """Posteriors where several phonemes compete, so the beam explores many LM histories."""
    p = np.random.default_rng(seed).dirichlet(np.full(len(VOCAB), 0.3), n)
    return np.log(p + 1e-6).astype(np.float32)


def decode(dec: BeamDecoder, log_probs: np.ndarray, step: int = 16) -> int:
    count = 0
    for start in range(0, len(log_probs), step):
        last = start + step >= len(log_probs)
        count += len(dec.advance(FrameBlock(start, log_probs[start : start + step], log_probs[:0], start * 320, last)))
    return count


def test_lm_score_cache_is_bounded_however_many_weights_clients_pick(monkeypatch):
    monkeypatch.setattr(beam, "LM_ROWS", 32)
    beam.lm_rows.cache_clear()
    lm = build_kneser_ney([["AA", "B", "K", "S", "T", "IY", "N"], ["S", "AA", "T"], ["N", "IY", "K"]] * 5, order=4)
    posteriors = noisy(150, 0)

    def one_stream(weight: float) -> BeamDecoder:
        dec = BeamDecoder(VOCAB, 0.02, 16000, beam=4, lm=lm, lm_weight=weight, insertion_bonus=1.0)
        assert decode(dec, posteriors) > 10
        return dec

    tracemalloc.start()
    try:
        for i in range(10):  # warm up: every table full, and tracemalloc sees what they hold
            one_stream(0.1 + i / 100)
        before = tracemalloc.take_snapshot()
        for i in range(30):  # 30 more streams, each with a weight no stream used before
            last = one_stream(1.0 + i / 100)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    info = beam.lm_rows.cache_info()
    assert info.currsize == beam.LM_TABLES and info.misses == 40
    rows = last._lm._rows.cache_info()
    assert rows.currsize == 32 and rows.misses > 32  # full, and evicting
    assert grown < 50_000, grown  # unbounded, 30 new tables of 50-odd rows would be several hundred KB
    beam.lm_rows.cache_clear()
