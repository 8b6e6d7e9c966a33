"""The log-mel cache gives exactly log_mel's features for every window, reusing the frames windows share."""

from __future__ import annotations

import numpy as np
import pytest

from phonestream.models.whisper import HOP, MelCache, log_mel
from phonestream.streaming import StreamConfig, Streamer


class _Geometry:
    """The Whisper backbone's window geometry, without loading an encoder."""

    sample_rate, frame_stride, max_window_s = 16000, 2 * HOP, 30.0

    @staticmethod
    def num_frames(n: int) -> int:
        return (n // HOP + 1) // 2


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = np.sin(2 * np.pi * (120 + 40 * np.sin(3 * t)) * t) * (np.sin(2 * np.pi * 2.5 * t) > 0)
    x = 0.3 * voiced + 0.02 * rng.standard_normal(len(t))
    x[4000:12000] = 0.0  # digital silence matches at every hop; the cache must still line windows up right
    return x.astype(np.float32)


def _windows(audio: np.ndarray, config: StreamConfig, seed: int):
    """The windows a live stream cuts from ``audio`` pushed in random pieces."""
    streamer, rng, pos = Streamer(_Geometry(), config), np.random.default_rng(seed), 0
    while pos < len(audio):
        n = int(rng.integers(160, 9000))
        streamer.push(audio[pos : pos + n])
        pos += n
        if pos >= len(audio):
            streamer.finish()
        windows = streamer.ready_windows()
        for w in windows:
            streamer.stitch(w, np.zeros((_Geometry.num_frames(len(w.audio)), 2), np.float32))
        yield from windows


@pytest.mark.parametrize("sizes", [(160, 1280, 200), (240, 1920, 320), (320, 2560, 640)])
@pytest.mark.parametrize("tail", [0, 4800])
def test_streamed_windows_get_log_mel_exactly_and_share_most_frames(sizes, tail):
    cache = MelCache()
    audio = _speechlike(9.0, seed=1)
    count = 0
    for w in _windows(audio, StreamConfig(*sizes), seed=2):
        x = np.concatenate([w.audio, np.zeros(tail, np.float32)])
        np.testing.assert_array_equal(cache(x, len(w.audio)), log_mel(x))
        count += 1
    assert count > 20
    assert cache.reused > 2 * cache.computed  # a chunk (and the tail) per window, not the whole window
    assert len(cache._entries) == 1  # a matched window replaces the one it matched


def test_streams_sharing_one_cache_each_get_their_own_frames():
    cache = MelCache()
    config = StreamConfig(240, 1920, 320)
    one, two = _windows(_speechlike(6.0, 3), config, 4), _windows(_speechlike(6.0, 5) * 0.5, config, 6)
    for a, b in zip(one, two):  # interleaved, as a server's batches take them
        for w in (a, b):
            np.testing.assert_array_equal(cache(w.audio), log_mel(w.audio))
    assert len(cache._entries) == 2
    assert cache.reused > cache.computed


def test_a_changed_sample_is_never_served_from_the_cache():
    cache = MelCache()
    x = _speechlike(3.0, 7)
    cache(x)
    y = x.copy()
    y[20000] += 0.01  # same start, different audio further on
    np.testing.assert_array_equal(cache(y), log_mel(y))
    z = x[3840:].copy()  # a later window of the same audio shares frames; a shift by part of a hop shares none
    np.testing.assert_array_equal(cache(z), log_mel(z))
    w = x[100:].copy()
    computed = cache.computed
    np.testing.assert_array_equal(cache(w), log_mel(w))
    assert cache.computed - computed == len(w) // HOP


def test_memory_is_bounded():
    cache = MelCache(max_bytes=1 << 20, max_seconds=2.0)
    for seed in range(20):  # unrelated windows: nothing matches, the oldest go
        x = _speechlike(1.5, seed)
        np.testing.assert_array_equal(cache(x), log_mel(x))
    assert cache._bytes <= 1 << 20 and len(cache._entries) >= 1
    long = _speechlike(3.0, 99)
    before = len(cache._entries)
    np.testing.assert_array_equal(cache(long), log_mel(long))  # a whole file: computed, not kept
    assert len(cache._entries) == before
