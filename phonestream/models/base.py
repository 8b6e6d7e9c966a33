"""The contract every acoustic model backend fulfils.

The streamer only needs four facts from a model: the sample rate it wants, how many input samples one
output frame advances (the frame stride), how many frames a window of ``n`` samples yields, and the
per-frame log posteriors for a window. Everything model specific (Hugging Face CTC checkpoints, a frozen
backbone with a CTC head, the shipped Whisper-encoder model) hides behind :class:`CTCModel`, so a user
cannot tell from the API which kind is loaded.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class ModelError(ValueError):
    """A model could not be loaded or does not fit its vocabulary (one-line message for the user)."""


#: The optional extra that brings PyTorch and transformers (Hugging Face checkpoints and encoders).
HF_EXTRA = "pip install 'phonestream[hf]'"


#: ``--dtype`` values, the precision a model computes in. ``auto`` is half precision on a CUDA GPU and each
#: backend's CPU precision otherwise (float32 for PyTorch, int8 for the default model's CTranslate2 encoder).
#: Whatever the precision, posteriors come back as float32 and heads and log-softmax run in float32.
DTYPES = ("auto", "float32", "float16", "bfloat16")


def check_dtype(dtype: str) -> str:
    """``dtype`` if it is one of :data:`DTYPES`.

    Raises:
        ModelError: any other value (one line, listing the choices).
    """
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return dtype


def warmup_batch_sizes(max_batch: int, device: str) -> list[int]:
    """Batch sizes to warm a model up for before serving batches of up to ``max_batch`` windows.

    On a GPU, every power of two below ``max_batch`` and ``max_batch`` itself: each new shape pays for
    kernel selection, and the largest for growing the memory pool, so the first real batches of a busy
    server would otherwise be the slowest. On a CPU a new shape costs nothing noticeable: one window.
    """
    if max_batch < 1:
        raise ValueError(f"max batch must be at least 1, got {max_batch}")
    if not device.startswith("cuda"):
        return [1]
    sizes = [1 << k for k in range(max_batch.bit_length()) if 1 << k < max_batch]
    return sizes + [max_batch]


def umask_mode(path: Path) -> None:
    """Give a file or folder the permissions an ordinary ``open()`` or ``mkdir()`` would (0666 or 0777 less
    the umask): safetensors writes 0600 and ``tempfile.mkdtemp`` 0700, which would hide shared model and
    cache files from other users."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)


def has_torch() -> bool:
    """Whether PyTorch and transformers are installed (the default model needs neither)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))
    except (ImportError, ValueError):  # a broken or deliberately blocked install
        return False


def require_hf(what: str) -> None:
    """Raise a one-line :class:`ModelError` naming the extra to install when PyTorch/transformers are absent."""
    if not has_torch():
        raise ModelError(f"{what} needs PyTorch and transformers: {HF_EXTRA}")


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


#: Named latency presets, fastest first; ``balanced`` is a model's default window.
LATENCY_PRESETS = ("low", "balanced", "accurate")


@dataclass(frozen=True)
class StreamingDefaults:
    """Window sizes a model recommends for streaming (ms); each must be a multiple of its frame stride.

    ``chunk_ms``/``left_ms``/``right_ms`` are the ``balanced`` preset. A model may name its own ``low``
    and ``accurate`` windows (``(chunk, left, right)``); otherwise they are derived from the balanced one
    (:meth:`preset`).
    """

    # For wav2vec2-base on a 2-core CPU: a 1.28 s window per 0.64 s of new audio costs about twice the
    # offline compute (RTF ~0.3), and chunk + lookahead keeps emission delay p95 near 0.8 s; see
    # `phonestream bench --config 640/480/160 --config 640/640/240` for the measured trade-off.
    chunk_ms: int = 640
    left_ms: int = 480
    right_ms: int = 160
    low: tuple[int, int, int] | None = None
    accurate: tuple[int, int, int] | None = None

    def preset(self, name: str, stride_ms: float = 20.0) -> tuple[int, int, int]:
        """(chunk, left, right) ms of a latency preset.

        Without a model-specific window, ``low`` halves the chunk and the lookahead and ``accurate``
        doubles the lookahead and adds a chunk of left context, rounded down to whole frames.

        Raises:
            ValueError: ``name`` is not one of :data:`LATENCY_PRESETS`.
        """
        if name not in LATENCY_PRESETS:
            raise ValueError(f"unknown latency preset {name!r} (choose {', '.join(LATENCY_PRESETS)})")
        if name == "balanced":
            return self.chunk_ms, self.left_ms, self.right_ms
        given = self.low if name == "low" else self.accurate
        if given is not None:
            return tuple(int(v) for v in given)  # type: ignore[return-value]

        def frames(ms: float, minimum: int = 0) -> int:
            return int(max(minimum, (ms // stride_ms) * stride_ms))

        if name == "low":
            return frames(self.chunk_ms / 2, int(stride_ms)), self.left_ms, frames(self.right_ms / 2)
        return self.chunk_ms, self.left_ms + self.chunk_ms, self.right_ms * 2

    def to_dict(self) -> dict:
        """The ``streaming`` entry of a model folder's ``phonestream.json``."""
        out: dict = {"chunk_ms": self.chunk_ms, "left_ms": self.left_ms, "right_ms": self.right_ms}
        presets = {k: list(v) for k, v in (("low", self.low), ("accurate", self.accurate)) if v is not None}
        if presets:
            out["presets"] = presets
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "StreamingDefaults":
        """Inverse of :meth:`to_dict`."""
        presets = d.get("presets") or {}
        return cls(int(d["chunk_ms"]), int(d["left_ms"]), int(d["right_ms"]),
                   **{k: tuple(int(x) for x in presets[k]) for k in ("low", "accurate") if k in presets})


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
    #: The pronunciation check's word-score threshold calibrated for this model (``phonestream.json``'s
    #: ``"check": {"threshold": ...}``), or None: :data:`phonestream.check.DEFAULT_THRESHOLD` then.
    check_threshold: float | None = None
    #: A short human-readable description (architecture, size) shown in summaries.
    description: str = ""
    #: Where the model runs (``cpu``, ``cuda``, ``cuda:1``) and the precision it computes in there
    #: (``float32``, ``bfloat16``, ``float16``; ``int8``, ``int8_float16``... for CTranslate2).
    device: str = "cpu"
    precision: str = "float32"
    #: The folder the model was loaded from (None: built in memory or fetched from the hub); files
    #: beside it go with it, such as the phoneme LM ``lm.arpa*`` that ``lm="auto"`` finds.
    source_dir: Path | None = None

    @abstractmethod
    def num_frames(self, n_samples: int) -> int:
        """Frames the model emits for a window of ``n_samples`` samples."""

    @abstractmethod
    def log_probs_batch(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Log posteriors, one ``[num_frames(len(w)), len(vocab)]`` float32 array per window.

        Windows are mono float32 at :attr:`sample_rate`. Implementations run them in as few forward
        passes as they can (equal-length windows together) without letting padding change any result.
        """

    def log_probs_from(self, windows: list[np.ndarray], first: Sequence[int]) -> list[np.ndarray]:
        """:meth:`log_probs_batch` for a caller that reads only frames ``first[i]`` onward of window ``i``
        (the streamer: the left context's frames are never read). A model may leave the earlier frames out:
        output ``i`` always ends with the window's last frame, and its length says where it starts. This
        version computes every frame; a model whose unread frames cost something on their own overrides it."""
        return self.log_probs_batch(windows)

    def log_probs(self, window: np.ndarray) -> np.ndarray:
        """Log posteriors ``[T, V]`` for one window."""
        return self.log_probs_batch([window])[0]

    def warmup(self, batch_sizes: Iterable[int] = (1,), window: int | None = None) -> None:
        """Run a pass per batch size on windows of ``window`` samples (default one second), so the first
        real chunks do not pay for lazy initialisation, kernel selection or memory allocation.

        A server warms up for the batches its scheduler will form (:func:`warmup_batch_sizes`) with its
        streams' window length. The model keeps no state between passes: results are unchanged.
        """
        n = window or self.sample_rate
        audio = (0.01 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)  # quiet noise
        for size in batch_sizes:
            self.log_probs_batch([audio] * int(size))


class Backbone(ABC):
    """A frozen encoder: audio window in, one state vector per frame out (the first half of a
    :class:`~phonestream.models.backbone.BackboneCTCModel`). It has a model's window geometry
    (``sample_rate``, ``frame_stride``, ``num_frames``, ``max_window_s``), so the streamer can cut its
    windows too, as the training recipe does."""

    sample_rate: int
    frame_stride: int
    dim: int
    max_window_s: float | None = None
    description: str = ""
    device: str = "cpu"
    precision: str = "float32"

    @abstractmethod
    def num_frames(self, n_samples: int) -> int:
        """Frames the encoder emits for a window of ``n_samples`` samples."""

    @abstractmethod
    def encode_batch(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """States ``[num_frames(len(w)), dim]`` float32 for each window."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able description from which :func:`~phonestream.models.backbone.load_backbone` rebuilds
        this backbone."""
