"""The engine: one object that carries audio through streaming, decoding and metrics.

The life of a stream, in order::

    stream = Recognizer(model).stream()
    for piece in source:                    # phonestream.audio
        for event in stream.accept(piece):  # Streamer -> model -> GreedyDecoder -> events
            ...
    for event in stream.finish():           # the tail, then a Summary
        ...

A server that batches many streams uses the two halves of ``accept`` instead: ``push`` +
``ready_windows`` on each stream, one ``model.log_probs_batch`` over all windows, then ``apply``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .decoding import GreedyDecoder, greedy_decode
from .events import Event, Partial, Phoneme, Summary
from .metrics import StreamStats, compare
from .models.base import CTCModel
from .streaming import StreamConfig, Streamer, Window

# Offline decoding runs whole files in one pass up to this length; longer files go through strided
# chunks (20 s new audio with 5 s context each side, as transformers' pipeline does) to bound memory.
OFFLINE_MAX_S = 30.0
OFFLINE_CONTEXT_MS = 5000


@dataclass
class Recognizer:
    """A loaded model plus streaming settings; makes streams and offline transcriptions."""

    model: CTCModel
    config: StreamConfig | None = None

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = StreamConfig.for_model(self.model)
        self.config.samples(self.model)  # validate now, with a clear message

    @property
    def frame_seconds(self) -> float:
        return self.model.frame_stride / self.model.sample_rate

    def stream(self, keep_audio: bool = False, keep_phonemes: bool = True, partials: bool = True) -> "Stream":
        """A new live stream. ``keep_audio`` lets its summary include the offline comparison."""
        return Stream(self, keep_audio=keep_audio, keep_phonemes=keep_phonemes, partials=partials)

    def transcribe(self, audio: np.ndarray) -> list[Phoneme]:
        """Decode a whole signal at once (mono float32 at the model's rate): the offline reference."""
        sr = self.model.sample_rate
        log_probs = self.offline_log_probs(audio)
        return greedy_decode(log_probs, self.model.vocab, self.frame_seconds, len(audio), sr)

    def offline_log_probs(self, audio: np.ndarray) -> np.ndarray:
        """Posteriors of a whole signal: one pass, or long strided chunks beyond ``OFFLINE_MAX_S``."""
        sr = self.model.sample_rate
        limit = min(self.model.max_window_s or OFFLINE_MAX_S, OFFLINE_MAX_S)
        if len(audio) <= limit * sr:
            log_probs = self.model.log_probs(np.asarray(audio, np.float32))
        else:
            stride_ms = 1000 * self.model.frame_stride // sr
            ctx = OFFLINE_CONTEXT_MS // stride_ms * stride_ms
            chunk = int((limit * 1000 - 2 * ctx) // stride_ms * stride_ms)
            streamer = Streamer(self.model, StreamConfig(chunk, ctx, ctx))
            streamer.push(audio)
            streamer.finish()
            log_probs = np.concatenate([b.final for b in streamer.step()])
        return log_probs


class Stream:
    """One live stream: push audio pieces, get committed phonemes and partials as events."""

    def __init__(self, recognizer: Recognizer, keep_audio: bool = False, keep_phonemes: bool = True,
                 partials: bool = True) -> None:
        self.recognizer = recognizer
        model = recognizer.model
        self.streamer = Streamer(model, recognizer.config)  # type: ignore[arg-type]
        self.decoder = GreedyDecoder(model.vocab, recognizer.frame_seconds, model.sample_rate)
        self.stats = StreamStats(model.sample_rate, keep_phonemes=keep_phonemes)
        self.partials = partials
        self._audio: list[np.ndarray] | None = [] if keep_audio else None
        self._last_partial: list[str] | None = None
        self.finished = False

    # -- the two halves, for callers that batch model calls across streams --------------------------

    def push(self, samples: np.ndarray) -> None:
        """Add audio (mono float32 at the model's rate) without running the model."""
        samples = np.asarray(samples, np.float32)
        self.streamer.push(samples)
        self.stats.audio_samples += len(samples)
        if self._audio is not None and len(samples):
            self._audio.append(samples)

    def ready_windows(self) -> list[Window]:
        return self.streamer.ready_windows()

    def apply(self, windows: list[Window], outputs: list[np.ndarray], seconds: float) -> list[Event]:
        """Stitch and decode the model outputs of ``windows``; ``seconds`` is the compute time spent."""
        events: list[Event] = []
        per_window = seconds / max(1, len(windows))
        sr, frame_s = self.recognizer.model.sample_rate, self.recognizer.frame_seconds
        block = None
        for window, out in zip(windows, outputs):
            t0 = time.perf_counter()
            block = self.streamer.stitch(window, out)
            committed = self.decoder.advance(block)
            step = per_window + time.perf_counter() - t0
            self.stats.add_step(step)
            self.stats.add_frames(block.received / sr, (block.start_frame + 1) * frame_s, len(block.final), frame_s)
            for p in committed:
                self.stats.add_phoneme(p, step)
            events.extend(committed)
        if block is not None and self.partials:
            tail = self.decoder.partial(block)
            if tail != self._last_partial:
                self._last_partial = tail
                events.append(Partial(tail, block.received / sr))
        return events

    # -- the simple path ----------------------------------------------------------------------------

    def accept(self, samples: np.ndarray) -> list[Event]:
        """Push audio and run every step it makes possible; returns the new events."""
        self.push(samples)
        return self._run()

    def _run(self) -> list[Event]:
        windows = self.ready_windows()
        if not windows:
            return []
        t0 = time.perf_counter()
        outputs = self.recognizer.model.log_probs_batch([w.audio for w in windows])
        return self.apply(windows, outputs, time.perf_counter() - t0)

    def finish(self, offline: bool | None = None) -> list[Event]:
        """End of audio: decode the rest, then a :class:`Summary` (with the offline comparison if the
        audio was kept, or ``offline`` is True)."""
        if self.finished:
            return []
        self.finished = True
        self.streamer.finish()
        events = self._run()
        events.append(Summary(self.summary(offline=self._audio is not None if offline is None else offline)))
        return events

    def summary(self, offline: bool = False) -> dict[str, Any]:
        model, cfg = self.recognizer.model, self.recognizer.config
        out: dict[str, Any] = {
            "model": model.description,
            "chunk_ms": cfg.chunk_ms, "left_ms": cfg.left_ms, "right_ms": cfg.right_ms,  # type: ignore[union-attr]
        }
        metrics = self.stats.summary()
        metrics["chunk_compute_ms"] = metrics.pop("chunk_ms")
        out.update(metrics)
        if offline and self._audio is not None:
            audio = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
            t0 = time.perf_counter()
            ref = [p.phoneme for p in self.recognizer.transcribe(audio)]
            seconds = time.perf_counter() - t0
            out["offline_rtf"] = round(seconds / (len(audio) / model.sample_rate), 4) if len(audio) else None
            out["offline_string"] = " ".join(ref)
            out["stream_vs_offline"] = compare(self.stats.phonemes, ref)
        return out
