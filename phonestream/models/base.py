"""The contract every acoustic model backend fulfils.

The streamer only needs four facts from a model: the sample rate it wants, how many input samples one
output frame advances (the frame stride), how many frames a window of ``n`` samples yields, and the
per-frame log posteriors for a window. Everything model specific (Hugging Face CTC checkpoints, a frozen
backbone with a CTC head, the shipped Whisper-encoder model) hides behind :class:`CTCModel`, so a user
cannot tell from the API which kind is loaded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


class ModelError(ValueError):
    """A model could not be loaded or does not fit its vocabulary (one-line message for the user)."""


@dataclass(frozen=True)
class Vocabulary:
    """Output symbols of a CTC head; ``symbols[blank_id]`` is the CTC blank.

    ``skip_ids`` are outputs that are never phonemes (padding, word delimiters, unk): the decoders treat
    them like the blank so they never reach the user.
    """

    symbols: tuple[str, ...]
    blank_id: int
    skip_ids: frozenset[int] = field(default_factory=frozenset)

    def __len__(self) -> int:
        return len(self.symbols)


@dataclass(frozen=True)
class StreamingDefaults:
    """Window sizes a model recommends for streaming (ms); each must be a multiple of its frame stride."""

    # For wav2vec2-base on a 2-core CPU: a 1.28 s window per 0.64 s of new audio costs about twice the
    # offline compute (RTF ~0.3), and chunk + lookahead keeps emission delay p95 near 0.8 s; see
    # `phonestream bench --config 640/480/160 --config 640/640/240` for the measured trade-off.
    chunk_ms: int = 640
    left_ms: int = 480
    right_ms: int = 160


class CTCModel(ABC):
    """A CTC acoustic model: audio window in, per-frame log posteriors out."""

    #: Sample rate the model expects, in Hz.
    sample_rate: int
    #: Input samples per output frame (320 = 20 ms at 16 kHz for wav2vec2 and Whisper).
    frame_stride: int
    vocab: Vocabulary
    #: Longest window the model accepts in one pass (seconds), or None if unbounded.
    max_window_s: float | None = None
    streaming_defaults: StreamingDefaults = StreamingDefaults()
    #: A short human-readable description (architecture, size) shown in summaries.
    description: str = ""

    @abstractmethod
    def num_frames(self, n_samples: int) -> int:
        """Frames the model emits for a window of ``n_samples`` samples."""

    @abstractmethod
    def log_probs_batch(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Log posteriors, one ``[num_frames(len(w)), len(vocab)]`` float32 array per window.

        Windows are mono float32 at :attr:`sample_rate`. Implementations run them in as few forward
        passes as they can (equal-length windows together) without letting padding change any result.
        """

    def log_probs(self, window: np.ndarray) -> np.ndarray:
        """Log posteriors ``[T, V]`` for one window."""
        return self.log_probs_batch([window])[0]

    def warmup(self) -> None:
        """Run one short pass so the first real chunk does not pay for lazy initialisation."""
        self.log_probs(np.zeros(self.sample_rate, dtype=np.float32))
