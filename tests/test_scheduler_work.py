"""The worker's work outside the model: batched frame summaries, events posted once per round, the
zero-cost stand-in model and ``bench --streams`` that measures it all.

* greedy symbols, their posteriors and the silence mass computed for a whole batch at once
  (``summarize_frames``) are exactly what the decoders and the endpointer compute per window, and the
  events decoded from them are exactly the per-stream ones (greedy and beam, endpoints cutting blocks);
* the scheduler's events for a stream are exactly the local engine's, in order, while it hands a round's
  events of every stream to the event loop in one call;
* the null model gives log posteriors of the right shape and frame rate, speech-like and computed by nobody;
* ``bench --streams`` runs N streams through the real scheduler and prints its table, with the null model
  and with a real one.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from click.testing import CliRunner

from phonestream.audio import load_audio
from phonestream.bench import run_streams
from phonestream.cli import main
from phonestream.decoding import GreedyDecoder, greedy_phonemes, summarize_frames
from phonestream.endpoint import EndpointConfig, Endpointer
from phonestream.engine import Recognizer
from phonestream.models.base import CTCModel, Vocabulary
from phonestream.models.null import NullModel
from phonestream.scheduler import BatchScheduler, Close
from phonestream.streaming import StreamConfig

from .conftest import SAMPLES
from .test_isolation import FrameModel


class SkippingNullModel(NullModel):
    """The null model with a non-phoneme output (id 5) that decoders must fold into the blank."""

    vocab = Vocabulary(NullModel.vocab.symbols, 0, frozenset({5}))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLES / "LJ001-0001.flac", 16000)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return (x - np.logaddexp.reduce(x, axis=-1, keepdims=True)).astype(np.float32)


# -- batched frame summaries ------------------------------------------------------------------------------


def test_batch_summaries_are_exactly_the_per_window_values():
    vocab = SkippingNullModel.vocab
    rng = np.random.default_rng(3)
    outputs = [_log_softmax(4 * rng.standard_normal((t, len(vocab)))) for t in [8, 24, 24, 24, 1, 40, 24, 8] * 3]
    decoder = GreedyDecoder(vocab, 0.02, 16000)
    endpointer = Endpointer(EndpointConfig(), 0.02, [0, 5])
    for out, summary in zip(outputs, summarize_frames(outputs, vocab)):
        best, prob = decoder._best(out)
        assert np.array_equal(summary.best, best) and np.array_equal(summary.prob, prob)
        assert np.array_equal(summary.silent, np.exp(out[:, [0, 5]]).sum(axis=1))
        assert np.array_equal(summary.silent < 0.5, endpointer.speech_frames(out))
    assert 5 in np.concatenate([o.argmax(axis=1) for o in outputs])  # the skip id was there to be folded


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_events_decoded_from_batch_summaries_equal_per_stream_decoding(speech, decoder):
    """Six streams step by step: each window's output goes to one copy of the stream as is and to another
    with the summaries computed over all six streams' windows at once; every event is the same, with
    endpoints (a short trailing-silence rule) cutting blocks apart."""
    model = SkippingNullModel(seed=1)
    rec = Recognizer(model, StreamConfig(320, 640, 160), decoder=decoder, lm=None, silence_db=None,
                     endpoint=EndpointConfig(rule1_s=0.5, rule2_s=0.08))
    alone = [rec.stream() for _ in range(6)]
    batched = [rec.stream() for _ in range(6)]
    events_alone: list[list] = [[] for _ in alone]
    events_batched: list[list] = [[] for _ in alone]
    piece = 16000 * 7 // 25  # 280 ms: windows become ready at different steps for different streams
    for step in range(30):
        windows, outputs = [], []
        for i, (a, b) in enumerate(zip(alone, batched)):
            audio = speech[(step * piece + i * 1600) % 200000:][:piece]
            a.push(audio)
            b.push(audio)
            ws = a.ready_windows()
            assert [w.first_frame for w in b.ready_windows()] == [w.first_frame for w in ws]
            windows.append(ws)
            outputs.append(model.log_probs_batch([w.audio for w in ws]))
        summaries = iter(summarize_frames([o for outs in outputs for o in outs], model.vocab))
        for i, (ws, outs) in enumerate(zip(windows, outputs)):
            events_alone[i] += alone[i].apply(ws, outs, 0.0)
            events_batched[i] += batched[i].apply(ws, outs, 0.0, [next(summaries) for _ in outs])
    for i in range(6):
        alone[i].end_input()
        batched[i].end_input()
        while ws := alone[i].ready_windows():
            batched[i].ready_windows()
            outs = model.log_probs_batch([w.audio for w in ws])
            events_alone[i] += alone[i].apply(ws, outs, 0.0)
            events_batched[i] += batched[i].apply(ws, outs, 0.0, summarize_frames(outs, model.vocab))
        assert [e.to_dict() for e in events_batched[i]] == [e.to_dict() for e in events_alone[i]]
    kinds = {e.to_dict()["type"] for box in events_alone for e in box}
    assert {"phoneme", "endpoint", "partial"} <= kinds


# -- the scheduler: same events, one post per round ----------------------------------------------------------


class _CountingLoop:
    """An event loop stand-in that counts the worker's ``call_soon_threadsafe`` calls."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.calls = loop, 0

    def call_soon_threadsafe(self, *args):
        self.calls += 1
        return self.loop.call_soon_threadsafe(*args)


def test_scheduler_events_equal_the_local_engine_in_order_with_one_post_per_round(speech):
    model = FrameModel()
    rec = Recognizer(model, StreamConfig(320, 640, 160), decoder="greedy", silence_db=None)
    audios = [np.roll(speech, -i * 16000)[:64000] for i in range(8)]
    expected = []
    for audio in audios:
        stream = rec.stream()
        events = []
        for start in range(0, len(audio), 320):
            events += stream.accept(audio[start : start + 320])
        events += stream.finish()
        expected.append([e.to_dict() for e in events if e.to_dict()["type"] in ("phoneme", "endpoint")])
    scheduler = BatchScheduler(model, max_batch=5, max_wait_s=0.005)

    async def run():
        boxes = [asyncio.Queue() for _ in audios]
        sessions = [scheduler.open(rec.stream(), box) for box in boxes]
        counting = _CountingLoop(asyncio.get_running_loop())
        for session in sessions:
            session.loop = counting  # type: ignore[assignment]
        for start in range(0, 64000, 1600):  # 100 ms pieces to every stream, as live audio comes
            for session, audio in zip(sessions, audios):
                scheduler.feed(session, audio[start : start + 1600])
            await asyncio.sleep(0.002)
        for session in sessions:
            scheduler.end(session)
        results = []
        for box in boxes:
            items = []
            while not isinstance(item := await asyncio.wait_for(box.get(), 30), Close):
                items.append(json.loads(item))  # JSON text, as the server sends it
            results.append((items, item))
        return results, counting.calls

    try:
        results, calls = asyncio.run(run())
    finally:
        scheduler.stop()
    delivered = 0
    for (items, close), want in zip(results, expected):
        assert close.code == 1000 and items[-1]["type"] == "summary"
        # committed_at is the audio received when the window was cut, later when the worker is late
        got = [e for e in items if e["type"] in ("phoneme", "endpoint")]
        assert [_without_time(e) for e in got] == [_without_time(e) for e in want] and want
        delivered += len(items) + 1
    assert sum(map(len, expected)) > 50
    assert calls * 3 < delivered, (calls, delivered)  # one call per round, not one per event


def _without_time(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "committed_at"}


# -- the null model ----------------------------------------------------------------------------------------


def test_null_model_gives_speech_like_posteriors_of_the_right_shape_and_rate():
    model = NullModel()
    assert isinstance(model, CTCModel) and model.sample_rate == 16000 and model.frame_stride == 320
    windows = [np.zeros(n, np.float32) for n in (320, 17920, 17920, 5000, 16000 * 60)]
    outputs = model.log_probs_batch(windows)
    assert [o.shape for o in outputs] == [(n // 320, len(model.vocab)) for n in (320, 17920, 17920, 5000, 960000)]
    for out in outputs:
        assert out.dtype == np.float32 and not out.flags.writeable
        assert np.allclose(np.logaddexp.reduce(out, axis=1), 0.0, atol=1e-5)
    assert not np.array_equal(outputs[1], outputs[2])  # two windows, two stretches of the table
    minute = outputs[-1]
    assert 0.5 < (minute.argmax(axis=1) == model.vocab.blank_id).mean() < 0.9  # mostly blank, like CTC on speech
    assert 6 * 60 < len(greedy_phonemes(minute, model.vocab)) < 14 * 60  # speech: about 9 phonemes a second
    with pytest.raises(ValueError, match="longer than its table"):
        model.log_probs_batch([np.zeros(16000 * 3600, np.float32)])


# -- bench --streams ---------------------------------------------------------------------------------------


def test_bench_streams_prints_the_table_with_the_null_model():
    args = ["--decoder", "greedy", "--seconds", "1.5", "--chunk-ms", "320", "--left-ms", "320", "--right-ms", "160"]
    result = CliRunner().invoke(main, ["bench", "--streams", "2,3", "--model", "null", *args])
    assert result.exit_code == 0, result.output
    for header in ("windows/s", "per batch", "busy: model", "outside", "cpu ms", "lag s", "delay s", "real time"):
        assert header in result.output
    rows = [line.split("│") for line in result.output.splitlines() if "320/320/160" in line and "│" in line]
    assert [(row[1].strip(), row[2].strip(), row[4].strip()) for row in rows] == [("2", "1", "greedy"),
                                                                                  ("3", "1", "greedy")]


def test_bench_streams_json_figures_and_bad_arguments():
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "--streams", "4", "--model", "null", "--seconds", "2", "--json",
                                  "--chunk-ms", "320"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output.splitlines()[-1])
    assert row["streams"] == 4 and row["errors"] == 0 and row["dropped_s"] == 0
    assert row["windows_per_s"] > 0 and row["offered_windows_per_s"] == 12.5  # 4 streams / 0.32 s
    assert 0 <= row["model_share"] <= row["worker_share"] and row["lag_s"]["p95"] is not None
    for args, message in ((["--streams", "0"], "positive"), (["--streams", "2", "--minutes", "1"], "--minutes"),
                          (["--streams", "2", "--chunk-ms", "30"], "frame stride")):
        bad = runner.invoke(main, ["bench", "--model", "null", *args])
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output


def test_bench_streams_runs_a_real_model(tiny_model):
    row = run_streams(tiny_model, StreamConfig(320, 320, 160), 2, seconds=1.5, decoder="greedy")
    assert row["errors"] == 0 and row["dropped_s"] == 0 and 0 < row["model_share"] <= row["worker_share"]
    assert row["emission_delay_s"]["p50"] is not None
