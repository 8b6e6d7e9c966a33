"""One stream cannot hurt another inside the scheduler, and the scheduler ends streams as the engine does.

* a failure while decoding one stream (its silence check, its decoder, the model on its audio) fails that
  stream only: the other streams of the same batch get exactly the events they get alone;
* the scheduler finishes a stream through ``Stream.end_input`` / ``Stream.conclude``, so with no
  lookahead and audio ending on a chunk boundary (every frame already final when the end arrives) it
  still emits the last phoneme and the end-of-stream endpoint, like the local engine.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from phonestream.audio import load_audio
from phonestream.engine import Recognizer
from phonestream.models.base import CTCModel, StreamingDefaults, Vocabulary
from phonestream.scheduler import BatchScheduler, Close
from phonestream.streaming import StreamConfig

from .conftest import SAMPLES

RECORDING = SAMPLES / "LJ001-0002.flac"


class FrameModel(CTCModel):
    """A frame-local model: frame ``t`` depends only on samples ``[320 t, 320 (t + 1))`` and a window of
    ``n`` samples has exactly ``n // 320`` frames (like the shipped Whisper-encoder model, unlike
    wav2vec2's convolutions), so every frame is final once a chunk is in when there is no lookahead."""

    sample_rate = 16000
    frame_stride = 320
    vocab = Vocabulary(("<blank>", "AA", "B", "K", "S"), 0)
    streaming_defaults = StreamingDefaults(320, 320, 0)
    description = "frame-local test model"

    def num_frames(self, n_samples: int) -> int:
        return n_samples // self.frame_stride

    def log_probs_batch(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for w in windows:
            frames = np.asarray(w[: self.num_frames(len(w)) * 320], np.float64).reshape(-1, 320)
            power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
            bands = np.log10(np.stack([power[:, a:b].sum(1) for a, b in ((1, 8), (8, 20), (20, 50), (50, 161))],
                                      axis=1) + 1e-8)
            logits = np.empty((len(frames), len(self.vocab)))
            logits[:, 1:] = 3 * (bands - bands.mean(axis=1, keepdims=True))  # the dominant band is the phoneme
            logits[:, 0] = 2 - bands.max(axis=1)  # blank when quiet
            out.append((logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32))
        return out


class CountingModel:
    """Wraps a model; records each forward call's size and can fail on marked audio."""

    def __init__(self, model: CTCModel, poison: float | None = None) -> None:
        self._model = model
        self.calls: list[int] = []
        self.poison = poison

    def __getattr__(self, name):
        return getattr(self._model, name)

    def log_probs_batch(self, windows):
        return self.log_probs_from(windows, [0] * len(windows))

    def log_probs_from(self, windows, first):
        self.calls.append(len(windows))
        if self.poison is not None and any(np.any(w == self.poison) for w in windows):
            raise RuntimeError("the model cannot take this audio")
        return self._model.log_probs_from(windows, first)


def events_alone(rec: Recognizer, audio: np.ndarray, piece: int = 320) -> list[dict]:
    """The local engine's events for ``audio`` fed in ``piece``-sample pieces."""
    stream = rec.stream()
    events = []
    for start in range(0, len(audio), piece):
        events += stream.accept(audio[start : start + piece])
    events += stream.finish(offline=False)
    return [e.to_dict() for e in events]


def decoded(events: list[dict]) -> list[tuple]:
    return [(e["phoneme"], e["start"], e["end"], round(e["confidence"], 2)) if e["type"] == "phoneme"
            else ("<endpoint>", e["start"], e["end"], e["rule"])
            for e in events if e["type"] in ("phoneme", "endpoint")]


async def drain(box: asyncio.Queue) -> tuple[list[dict], Close]:
    events = []
    while not isinstance(item := await box.get(), Close):
        events.append(json.loads(item))
    return events, item


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLES / "LJ001-0001.flac", 16000)


# -- a poisoned batch ------------------------------------------------------------------------------------


def _run_together(model, streams_and_audio, max_batch: int = 64) -> list[tuple[list[dict], Close]]:
    scheduler = BatchScheduler(model, max_batch=max_batch, max_wait_s=0.05)

    async def run():
        boxes = [asyncio.Queue() for _ in streams_and_audio]
        sessions = [scheduler.open(stream, box) for (stream, _), box in zip(streams_and_audio, boxes)]
        for session, (_, audio) in zip(sessions, streams_and_audio):
            scheduler.feed(session, audio)
        for session in sessions:
            scheduler.end(session)
        return await asyncio.wait_for(asyncio.gather(*(drain(b) for b in boxes)), 60)

    try:
        results = asyncio.run(run())
    finally:
        scheduler.stop()
    assert scheduler.sessions == 0
    return results


@pytest.mark.parametrize("poison", ["silence check", "decoder", "model"])
def test_a_failing_stream_fails_alone_and_its_batch_partners_get_their_results(tiny_model, speech, poison, caplog):
    model = CountingModel(tiny_model, poison=7.0 if poison == "model" else None)
    good_rec = Recognizer(model, StreamConfig(320, 640, 160), silence_db=-200.0)  # type: ignore[arg-type]
    audios = [speech[i * 32000 : (i + 1) * 32000] for i in range(4)]
    streams = [good_rec.stream() for _ in audios]
    bad_audio = speech[4 * 32000 : 6 * 32000].copy()
    if poison == "silence check":
        # an option no client can send any more (the config schema refuses it), built here on purpose
        bad = Recognizer(model, good_rec.config, silence_db="x").stream()  # type: ignore[arg-type]
    elif poison == "decoder":
        bad = good_rec.stream()

        def broken(block):
            raise ZeroDivisionError("decoder bug")

        bad.decoder.advance = broken  # type: ignore[method-assign]
    else:
        bad = good_rec.stream()
        bad_audio[len(bad_audio) // 2] = 7.0  # a sample value the wrapped model refuses
    results = _run_together(model, [(streams[0], audios[0]), (streams[1], audios[1]), (bad, bad_audio),
                                    (streams[2], audios[2]), (streams[3], audios[3])])
    assert max(model.calls) > 1, "the streams did not share a batch"
    bad_events, bad_close = results[2]
    assert bad_close.code == 1011 and bad_events[-1]["type"] == "error"
    assert "Error" not in bad_events[-1]["message"] and "decoder bug" not in bad_events[-1]["message"]
    for audio, (events, close) in zip(audios, results[:2] + results[3:]):
        assert close.code == 1000 and events[-1]["type"] == "summary"
        assert decoded(events) == decoded(events_alone(good_rec, audio)) and len(decoded(events)) > 5
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)  # the server keeps the traceback


# -- the scheduler ends streams through the engine --------------------------------------------------------


@pytest.mark.parametrize("right_ms", [0, 160])
def test_server_equals_local_engine_when_the_audio_ends_on_a_chunk_boundary(speech, right_ms):
    model = FrameModel()
    rec = Recognizer(model, StreamConfig(320, 320, right_ms), silence_db=None)
    audio = speech[: 3 * 16000 // 5120 * 5120]  # a whole number of 320 ms chunks
    expected = events_alone(rec, audio)
    assert [e["rule"] for e in expected if e["type"] == "endpoint"][-1:] == ["end_of_stream"]
    scheduler = BatchScheduler(model, max_batch=8, max_wait_s=0.0)

    async def run():
        box: asyncio.Queue = asyncio.Queue()
        session = scheduler.open(rec.stream(), box)
        for start in range(0, len(audio), 320):  # 20 ms pieces, as live audio comes
            scheduler.feed(session, audio[start : start + 320])
        while session.processed < len(audio) and right_ms == 0:  # every frame final before the end arrives
            await asyncio.sleep(0.01)
        scheduler.end(session)
        return await asyncio.wait_for(drain(box), 30)

    try:
        events, close = asyncio.run(run())
    finally:
        scheduler.stop()
    assert close.code == 1000
    assert decoded(events) == decoded(expected) and len(decoded(expected)) > 5
    assert [e for e in events if e["type"] != "summary"][-2:] == [e for e in expected if e["type"] != "summary"][-2:]


def test_non_finite_samples_are_taken_as_silence_and_clipping(tiny_model, speech):
    """A client's f32le may carry NaN or Infinity: the stream decodes as if they were 0 and +-1 (no NaN
    posteriors, no numpy warnings), and nothing fails."""
    import warnings

    rec = Recognizer(tiny_model, StreamConfig(320, 640, 160), silence_db=None)
    audio = speech[:32000].copy()
    bad, clean = audio.copy(), audio.copy()
    bad[[100, 9000, 20000]] = [np.nan, np.inf, -np.inf]
    clean[[100, 9000, 20000]] = [0.0, 1.0, -1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = events_alone(rec, bad)
    assert decoded(got) == decoded(events_alone(rec, clean)) and len(decoded(got)) > 5
