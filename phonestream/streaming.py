"""Streaming: cut arriving audio into model windows and stitch the frames that belong to each chunk.

Each step runs the model on ``left context + chunk + right context`` and keeps only the chunk's frames,
the same arithmetic as transformers' strided CTC chunking (logits ``[left : n - right]``), but driven by
audio as it arrives. All sizes are multiples of the model's frame stride, so window frame ``j`` is global
frame ``window_start / stride + j`` and a kept frame is the same frame the offline pass computes; with
enough context its posteriors are the offline ones. Frames of the right context are returned too, as
*provisional* frames: the decoder may show them, never commit them.

Only the audio still needed as left context is kept, so memory is bounded however long the stream runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .models.base import Backbone, CTCModel

if TYPE_CHECKING:
    from .decoding import FrameSummary


class ConfigError(ValueError):
    """Streaming sizes that the model cannot use (one-line message for the user)."""


@dataclass(frozen=True)
class StreamConfig:
    """Window sizes in milliseconds: the new audio per step, and the context on each side."""

    chunk_ms: int
    left_ms: int
    right_ms: int

    @classmethod
    def for_model(cls, model: CTCModel, chunk_ms: int | None = None, left_ms: int | None = None,
                  right_ms: int | None = None, latency: str = "balanced") -> "StreamConfig":
        """The model's sizes for a latency preset (``low``, ``balanced``, ``accurate``), overridden
        where a value is given.

        Raises:
            ConfigError: an unknown preset name.
        """
        try:
            chunk, left, right = model.streaming_defaults.preset(latency, 1000 * model.frame_stride / model.sample_rate)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return cls(chunk if chunk_ms is None else chunk_ms, left if left_ms is None else left_ms,
                   right if right_ms is None else right_ms)

    def samples(self, model: CTCModel | Backbone) -> tuple[int, int, int]:
        """(chunk, left, right) in samples, checked against the model.

        Raises:
            ConfigError: a size is not positive (chunk) / negative (context), not a multiple of the
                frame stride, or the window is too short or too long for the model.
        """
        sr, stride = model.sample_rate, model.frame_stride
        stride_ms = 1000 * stride / sr
        sizes = (("chunk", self.chunk_ms, 1), ("left", self.left_ms, 0), ("right", self.right_ms, 0))
        for name, value, minimum in sizes:
            if value < minimum:
                what = "positive" if minimum else "zero or more"
                raise ConfigError(f"--{name}-ms must be {what}, got {value}")
            if (value * sr) % (1000 * stride):
                raise ConfigError(f"--{name}-ms={value} is not a multiple of the model's frame stride "
                                  f"({stride_ms:g} ms)")
        chunk, left, right = (v * sr // 1000 for v in (self.chunk_ms, self.left_ms, self.right_ms))
        if model.num_frames(chunk + right) < 1:
            raise ConfigError(f"chunk + right context ({self.chunk_ms + self.right_ms} ms) is shorter than one "
                              "model frame")
        if model.max_window_s is not None and (chunk + left + right) > model.max_window_s * sr:
            raise ConfigError(f"window of {self.chunk_ms + self.left_ms + self.right_ms} ms exceeds the model's "
                              f"limit of {model.max_window_s:g} s")
        return chunk, left, right


@dataclass
class Window:
    """One model step: the audio to run and which of its frames are final.

    ``first_frame`` is the global index of the window's frame 0; frames ``[keep_from, keep_to)`` (global)
    are final. ``received`` is how many samples had arrived when the step became possible.
    """

    audio: np.ndarray
    first_frame: int
    keep_from: int
    keep_to: int
    received: int
    last: bool

    @property
    def needed_from(self) -> int:
        """The first of the window's frames that the stream reads (the left context's are only context):
        what :meth:`~phonestream.models.base.CTCModel.log_probs_from` is told."""
        return self.keep_from - self.first_frame


@dataclass
class FrameBlock:
    """Posteriors coming out of one step: final frames then provisional (lookahead) frames.

    ``frames``, when given, is what greedy decoding and endpointing read from each frame of ``final`` then
    ``provisional``, computed for a whole batch of windows at once (:func:`~phonestream.decoding.summarize_frames`);
    without it they compute the same from the posteriors.
    """

    start_frame: int
    final: np.ndarray
    provisional: np.ndarray
    received: int
    last: bool
    frames: FrameSummary | None = None


class Streamer:
    """Turns pushed audio into :class:`Window` s and their model output into :class:`FrameBlock` s.

    The two halves are separate so that a server can collect ready windows from many streams and run
    them through the model in one batch: ``push`` -> ``ready_windows`` -> model -> ``stitch``. Cutting
    windows needs only the model's geometry, so a :class:`~phonestream.models.base.Backbone` may stand in
    for the model there (the training recipe encodes the windows itself; ``step`` needs a CTC model).
    """

    def __init__(self, model: CTCModel | Backbone, config: StreamConfig) -> None:
        self.model = model
        self.config = config
        self.chunk, self.left, self.right = config.samples(model)
        self.stride = model.frame_stride
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # global sample index of _buf[0]
        self._pieces: list[np.ndarray] = []  # pushed after _buf, joined to it when windows are cut
        self.received = 0  # samples pushed so far
        self.next_frame = 0  # first frame not yet final
        self._pending = 0  # windows handed out and not yet stitched
        self._finished = False

    def push(self, samples: np.ndarray) -> None:
        """Append mono float32 samples at the model's rate."""
        if self._finished:
            raise RuntimeError("stream already finished")
        if len(samples):
            # kept apart until the next window is cut: joining every 20 ms piece to the buffer copied the
            # whole buffer each time
            self._pieces.append(np.asarray(samples, np.float32))
            self.received += len(samples)

    def finish(self) -> None:
        """Mark the end of the audio: the remaining frames become computable."""
        self._finished = True

    @property
    def missing(self) -> int:
        """Samples still to be pushed before the next window can be cut (0 or less: it can be now)."""
        return self.next_frame * self.stride + self.chunk + self.right - self.received

    def ready_windows(self) -> list[Window]:
        """Windows that can run now (possibly several after a large push), in order.

        Each window's frames are final once stitched, so the caller must :meth:`stitch` them in order
        before asking again.
        """
        if self._pending:
            raise RuntimeError("stitch the previous windows before asking for more")
        ready = self.missing <= 0
        if self._pieces and (ready or self._finished):
            self._buf = np.concatenate([self._buf, *self._pieces])  # a window can be cut: it needs them
            self._pieces = []
        windows = []
        frame = self.next_frame
        total = self.model.num_frames(self.received) if self._finished else None
        while True:
            start = frame * self.stride
            end = start + self.chunk + self.right
            if end > self.received and not self._finished:
                break
            if total is not None and frame >= total:
                break
            end = min(end, self.received)
            w_start = max(0, start - self.left)
            audio = self._buf[w_start - self._buf_start : end - self._buf_start]
            w_frames = self.model.num_frames(len(audio))
            keep_to = min(frame + self.chunk // self.stride, w_start // self.stride + w_frames)
            last = end == self.received and self._finished
            if last:
                keep_to = w_start // self.stride + w_frames
            if keep_to <= frame:
                break  # not enough audio for another frame yet
            windows.append(Window(audio, w_start // self.stride, frame, keep_to, self.received, last))
            frame = keep_to
            if last:
                break
        self._pending = len(windows)
        return windows

    def stitch(self, window: Window, log_probs: np.ndarray, frames: FrameSummary | None = None) -> FrameBlock:
        """Split one window's model output (and its ``frames`` summary, if any) into final and provisional
        frames, and drop spent audio."""
        self._pending -= 1
        # an output may leave out leading frames the streamer never reads (CTCModel.log_probs_from): it
        # always ends with the window's last frame
        skipped = self.model.num_frames(len(window.audio)) - len(log_probs)
        a, b = window.keep_from - window.first_frame - skipped, window.keep_to - window.first_frame - skipped
        if a < 0:
            raise ValueError(f"the model output of a window lacks {-a} of the frames the stream needs")
        self.next_frame = window.keep_to
        keep_from = max(0, self.next_frame * self.stride - self.left)
        if keep_from > self._buf_start:
            # a view, not a copy (that was quadratic in a stream's backlog); the spent audio is freed
            # when the next window is cut and the buffer joined anew
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
        return FrameBlock(window.keep_from, log_probs[a:b], log_probs[b:], window.received, window.last,
                          None if frames is None else frames[a:])

    def step(self) -> list[FrameBlock]:
        """Run every ready window through the model (one batch) and stitch the results."""
        windows = self.ready_windows()
        if not windows:
            return []
        outputs = self.model.log_probs_from([w.audio for w in windows], [w.needed_from for w in windows])
        return [self.stitch(w, lp) for w, lp in zip(windows, outputs)]
