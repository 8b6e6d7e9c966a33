"""A zero-cost stand-in model: CTC posteriors of the right shape and frame rate, computed by nobody.

``phonestream bench --streams N --model null`` puts it behind the server's scheduler to measure
everything *but* the model (cutting windows, batching, stitching, decoding, events): all the worker's
time is then spent outside the model.

Its output looks like a peaky CTC model on speech: mostly blank, a phoneme every few frames (about 9 a
second), each frame dominated by one symbol. The frames come from a table drawn once from a seeded
generator; each window gets a read-only view of the next stretch of it, so a call allocates nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from ..phones import ARPABET
from .base import CTCModel, StreamingDefaults, Vocabulary


def shipped_windows() -> StreamingDefaults:
    """The shipped default model's windows and presets, read from its ``phonestream.json``, so that
    ``bench --model null`` without window options measures what a server with the default model does."""
    from . import DEFAULT_MODEL_DIR  # the package imports this module's siblings first
    from .backbone import MODEL_FILE

    return StreamingDefaults.from_dict(json.loads((DEFAULT_MODEL_DIR / MODEL_FILE).read_text())["streaming"])


class NullModel(CTCModel):
    """Random-looking CTC log posteriors at 50 frames per second (16 kHz, 320-sample stride), no compute.

    A window of ``n`` samples has ``n // 320`` frames, as the default model's encoder gives.

    Args:
        seed: seeds the frame table (same seed, same outputs for the same sequence of calls).
        table_frames: frames in the table that windows are cut from, cycled.
    """

    sample_rate = 16000
    frame_stride = 320
    vocab = Vocabulary(("<blank>", *ARPABET), 0)
    description = "null (random CTC posteriors, no compute)"

    def __init__(self, seed: int = 0, table_frames: int = 1 << 14) -> None:
        self.streaming_defaults = shipped_windows()
        self._table = _peaky_table(np.random.default_rng(seed), table_frames, len(self.vocab))
        self._next = 0

    def num_frames(self, n_samples: int) -> int:
        return n_samples // self.frame_stride

    def log_probs_batch(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        size = len(self._table) // 2  # the table holds its first half twice: any slice up to `size` is contiguous
        for w in windows:
            n = self.num_frames(len(w))
            if n > size:
                raise ValueError(f"null model: window of {n} frames is longer than its table ({size})")
            out.append(self._table[self._next : self._next + n])
            self._next = (self._next + n) % size
        return out

    def warmup(self, batch_sizes: Iterable[int] = (1,), window: int | None = None) -> None:
        """Nothing to warm up."""


def _peaky_table(rng: np.random.Generator, frames: int, vocab_size: int) -> np.ndarray:
    """``[2 * frames, vocab_size]`` float32 log posteriors (the second half repeats the first): runs of
    blank (1-6 frames) and of one phoneme (1-3 frames), the leading symbol holding most of the mass (as
    peaky as the shipped model on speech: about half the frames have a phoneme above e^-5, the beam
    search's candidate threshold)."""
    best = np.zeros(frames, np.int64)
    t = 0
    while t < frames:
        t += int(rng.integers(1, 7))  # blank run
        n = int(rng.integers(1, 4))
        best[t : t + n] = rng.integers(1, vocab_size)
        t += n
    rest = rng.dirichlet(np.full(vocab_size, 0.05), frames) + 1e-9  # the rest on one or two symbols, never 0
    rest[np.arange(frames), best] = 0.0
    lead = 1 - 10 ** rng.uniform(-3.5, -0.5, frames)  # median 0.99, a tenth under 0.84
    rest /= rest.sum(axis=1, keepdims=True)
    speech = best != 0
    rest[speech] *= 0.2  # beside a phoneme, most of the rest is blank
    rest[speech, 0] += 0.8
    probs = rest * (1 - lead)[:, None]
    probs[np.arange(frames), best] = lead
    table = np.log(np.concatenate([probs, probs])).astype(np.float32)
    table.flags.writeable = False
    return table
