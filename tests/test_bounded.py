"""Memory a client can make the server keep is bounded: the LM's shared score cache, and per-stream statistics."""

from __future__ import annotations

import platform
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

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


def test_stream_statistics_stay_the_same_size_for_a_ten_hour_stream():
    """Ten hours of 1 s steps (5 frames of 200 ms, 2 phonemes each; coarser than a real model to keep the
    test fast): once the reservoirs are full (after 4096 values) the statistics take no more memory, and
    their percentiles stay close to the exact ones."""
    from phonestream.events import Phoneme
    from phonestream.metrics import StreamStats, stats

    rng = np.random.default_rng(1)
    st = StreamStats(16000, keep_phonemes=False)
    exact_delays: list[float] = []

    def hours(first: int, last: int) -> None:
        for t in range(first * 3600, last * 3600):
            st.add_step(0.05 + 0.01 * rng.random())
            st.add_frames(t + 1.3, t + 0.2, 5, 0.2)
            st.audio_samples += 16000
            for d in rng.gamma(4.0, 0.2, 2).tolist():
                exact_delays.append(d)
                st.add_phoneme(Phoneme("AA", t, t + 0.1, 0.9, t + 0.1 + d, st.committed), 0.05)

    hours(0, 1)
    tracemalloc.start()
    try:
        hours(1, 2)  # every reservoir is full by now (3600 steps, 21600 frames, 10800 phonemes)
        two_hours = tracemalloc.take_snapshot()
        hours(2, 10)
        ten_hours = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in ten_hours.compare_to(two_hours, "filename")
                if s.traceback[0].filename.endswith("metrics.py"))  # not the test's own list of delays
    assert grown < 2000, grown  # as arrays of every value, eight more hours would add 2.6 MB
    summary = st.summary()
    assert summary["chunks"] == 36000 and summary["phonemes"] == len(exact_delays) == 72000
    assert summary["audio_s"] == 36000 and summary["rtf"] == pytest.approx(0.055, abs=0.001)
    exact = stats(exact_delays, 1, 3)
    assert summary["emission_delay_s"]["avg"] == exact["avg"] and summary["emission_delay_s"]["max"] == exact["max"]
    for q in ("p50", "p95"):
        assert summary["emission_delay_s"][q] == pytest.approx(exact[q], rel=0.05)
    assert summary["frame_delay_s"]["max"] == pytest.approx(1.1) and summary["frame_delay_s"]["p50"] == 0.7


_FRAGMENT = """
import sys, numpy as np
from phonestream import memory
from phonestream.bench import rss_mb
assert memory.tune_allocator()  # as the server does
np.ones(4_000_000 // 8); big = np.ones(4_000_000 // 8); del big  # raises glibc's default mmap threshold
base = rss_mb()
keep, buffers = [], []
for i in range(120):  # 300 KB buffers with a small long-lived object after each, as a server's heap sees
    buffers.append(np.full(300_000 // 8, float(i)))
    keep.append(np.zeros(1000))
peak = rss_mb()
del buffers
memory.trim() if sys.argv[1] == "trim" else None
print(peak - base, rss_mb() - base)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="allocator tuning is glibc's")
@pytest.mark.parametrize("mode", ["default", "trim"])
def test_freed_buffers_leave_the_process(mode):
    """After the server's periodic trim, 36 MB of freed 300 KB buffers go back to the system even with
    small live objects between them; without it (the control) glibc keeps them resident."""
    out = subprocess.run([sys.executable, "-c", _FRAGMENT, mode], capture_output=True, text=True, check=True)
    grown, left = map(float, out.stdout.split())
    assert grown > 30, out.stdout
    if mode == "default":
        assert left > 0.8 * grown, f"the control released {grown - left:.1f} MB: the case no longer fragments"
    else:
        assert left < 0.2 * grown, f"{left:.1f} of {grown:.1f} MB still resident ({mode})"


def test_soak_rss_figures_are_medians_over_a_minute():
    """One /health sample can catch a batch's transient buffers; the soak compares minute medians."""
    from phonestream.client import rss_window

    samples = [(0.0, 180.0), (35.0, 200.0), (60.0, 260.0), (85.0, 202.0), (600.0, 210.0), (640.0, 205.0),
               (660.0, 300.0), (700.0, 206.0)]
    assert rss_window(samples, 30, 90) == 202.0
    assert rss_window(samples, 640, 700) == 206.0
    assert rss_window(samples, 500, 560) == 210.0  # no sample inside: the nearest one
