"""Endpointing: where an utterance ends, by trailing-silence rules in the style of sherpa-onnx.

Silence is judged frame by frame from the CTC posteriors: a frame is speech when the blank (and the
model's other non-phoneme outputs) hold less than ``blank_threshold`` of its probability, which is what
"a non-blank token was decoded" means for a CTC model. The rules, checked after every final frame:

1. nothing decoded in the utterance and ``rule1_s`` (2.4 s) of it elapsed: the stretch is dropped
   silently (no event: there is nothing to end), and the next utterance starts after it;
2. something decoded and ``rule2_s`` (1.2 s) of silence since the last speech frame: endpoint;
3. the utterance is ``max_utterance_s`` (20 s) long: endpoint, even inside speech.

At an endpoint the engine commits the decoder's best hypothesis, resets it (a new LM sentence) and
emits ``{"type": "endpoint", "utterance", "start", "end", ...}``; ``start``/``end`` tile the stream
(an utterance starts where the previous one ended), ``speech_start``/``speech_end`` bound its speech.

Why no VAD model by default: silero-vad's package installs here (it needs torch, not torchaudio), but
it costs a forward pass per 32 ms of audio, and a CTC phoneme model already says frame by frame whether
anything was spoken. Compute in silence is saved earlier instead: :meth:`phonestream.engine.Stream`
skips the model on windows whose new audio is far quieter than speech.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .events import Endpoint


@dataclass(frozen=True)
class EndpointConfig:
    """Trailing-silence rules (seconds) and the blank posterior above which a frame is silence."""

    rule1_s: float = 2.4
    rule2_s: float = 1.2
    max_utterance_s: float = 20.0
    blank_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("rule1_s", "rule2_s", "max_utterance_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"endpoint {name} must be positive, got {getattr(self, name)}")
        if not 0 < self.blank_threshold <= 1:
            raise ValueError(f"endpoint blank threshold must be in (0, 1], got {self.blank_threshold}")


class Endpointer:
    """Applies :class:`EndpointConfig` to a stream's final frames.

    :meth:`scan` returns where, inside a block of frames, utterances end; the caller splits the block
    there, flushes and resets its decoder, and emits the events.
    """

    def __init__(self, config: EndpointConfig, frame_seconds: float, silent_ids: list[int]) -> None:
        self.config = config
        self.frame_seconds = frame_seconds
        self.silent_ids = silent_ids
        self.rule1 = max(1, round(config.rule1_s / frame_seconds))
        self.rule2 = max(1, round(config.rule2_s / frame_seconds))
        self.max_frames = max(1, round(config.max_utterance_s / frame_seconds))
        self.utterance = 0  # id of the current utterance (ids count utterances with speech)
        self._start = 0  # first frame of the current utterance
        self._speech_start: int | None = None
        self._speech_end = 0  # frame after the last speech frame
        self._frame = 0

    def speech_frames(self, log_probs: np.ndarray) -> np.ndarray:
        """Boolean per frame: the non-phoneme outputs hold less than the threshold."""
        if not len(log_probs):
            return np.zeros(0, bool)
        silent = np.exp(log_probs[:, self.silent_ids]).sum(axis=1)
        return silent < self.config.blank_threshold

    def scan(self, start_frame: int, log_probs: np.ndarray, silent: np.ndarray | None = None
             ) -> list[tuple[int, Endpoint | None]]:
        """Feed final frames; returns ``(offset, event)`` for each utterance that ends inside them,
        ``offset`` being the number of frames of this block that belong before the cut. The event is
        None for a dropped stretch with no speech (rule 1). ``silent``, the frames' summed non-phoneme
        posteriors when already computed (:class:`~phonestream.decoding.FrameSummary`), saves computing it."""
        cuts: list[tuple[int, Endpoint | None]] = []
        speech = self.speech_frames(log_probs) if silent is None else silent < self.config.blank_threshold
        for i, is_speech in enumerate(speech.tolist()):
            frame = start_frame + i
            if is_speech:
                if self._speech_start is None:
                    self._speech_start = frame
                self._speech_end = frame + 1
            now = frame + 1
            if self._speech_start is None:
                if now - self._start >= self.rule1:
                    cuts.append((i + 1, None))
                    self._begin(now)
            elif now - self._speech_end >= self.rule2:
                cuts.append((i + 1, self._event(now, "silence")))
            elif now - self._start >= self.max_frames:
                cuts.append((i + 1, self._event(now, "max_length")))
        self._frame = start_frame + len(speech)
        return cuts

    def finish(self) -> Endpoint | None:
        """End of the stream: the open utterance's event, if it had speech."""
        if self._speech_start is None:
            return None
        return self._event(self._frame, "end_of_stream")

    def _event(self, now: int, rule: str) -> Endpoint:
        fs = self.frame_seconds
        event = Endpoint(self.utterance, self._start * fs, now * fs, (self._speech_start or 0) * fs,
                         self._speech_end * fs, rule)
        self.utterance += 1
        self._begin(now)
        return event

    def _begin(self, frame: int) -> None:
        self._start = frame
        self._speech_start = None
        self._speech_end = frame
