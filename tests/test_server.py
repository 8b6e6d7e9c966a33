"""The network server, tested for real: uvicorn on a loopback port, WebSocket and HTTP clients.

The server runs in a background thread of the test process (no subprocess start-up cost); every client
talks to it over TCP exactly as a remote one would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner

from phonestream import client as net
from phonestream.audio import load_audio
from phonestream.engine import Recognizer
from phonestream.scheduler import BatchScheduler, Close
from phonestream.server import App, Limits, ServerError, ServerSettings, check_bind, uvicorn_server
from phonestream.streaming import StreamConfig

from .conftest import SAMPLES

RECORDING = SAMPLES / "LJ001-0002.flac"
LIMITS = Limits(max_message_bytes=64 * 1024, max_streams=5, idle_timeout_s=1.5, max_upload_bytes=2 << 20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app: App, log_level: str = "warning"):
    """Serve ``app`` with uvicorn in a background thread; yields the WebSocket URL."""
    app.settings.port = free_port()
    server = uvicorn_server(app, log_level=log_level)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"ws://127.0.0.1:{app.settings.port}/ws"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def recognizer(tiny_model) -> Recognizer:
    return Recognizer(tiny_model, StreamConfig(320, 640, 160))


@pytest.fixture(scope="module")
def server(recognizer):
    app = App(recognizer, ServerSettings(limits=LIMITS))
    with running_server(app) as url:
        yield url, app


def health(url: str, token: str | None = None) -> dict:
    with urllib.request.urlopen(net.with_token(net.http_url(url, "/health"), token), timeout=10) as resp:
        return json.loads(resp.read())


def wait_idle(url: str, seconds: float = 5.0) -> dict:
    """/health once no stream is open and the scheduler holds no state (or after ``seconds``)."""
    deadline = time.time() + seconds
    while True:
        h = health(url)
        if (h["streams"] == 0 and h["scheduler_sessions"] == 0) or time.time() > deadline:
            return h
        time.sleep(0.05)


def local_events(recognizer: Recognizer, audio: np.ndarray, config: StreamConfig | None = None,
                 **options) -> list[dict]:
    """What the local engine gives for the same audio and settings (20 ms pieces)."""
    if config is not None:
        import dataclasses

        recognizer = dataclasses.replace(recognizer, config=config)
    stream = recognizer.stream(**options)
    events = []
    for start in range(0, len(audio), 320):
        events += stream.accept(audio[start : start + 320])
    events += stream.finish(offline=False)
    return [e.to_dict() for e in events]


def decoded(events: list[dict]) -> list[tuple]:
    """What must match between server and local engine: phonemes with their times, and endpoints.
    (``committed_at`` may differ: the server may take audio in bigger steps than 20 ms.)"""
    out = []
    for e in events:
        if e["type"] == "phoneme":
            out.append((e["phoneme"], e["start"], e["end"], round(e["confidence"], 2)))
        elif e["type"] == "endpoint":
            out.append(("<endpoint>", e.get("start"), e.get("end")))
    return out


async def drain(box: asyncio.Queue) -> list[dict]:
    """Every event a scheduler session puts in its outbox, up to its Close."""
    events = []
    while not isinstance(item := await box.get(), Close):
        events.append(json.loads(item))
    return events


def stream_file(url: str, audio: np.ndarray, **kwargs) -> net.StreamResult:
    return asyncio.run(net.stream_audio(url, lambda rate: net.pieces(audio, 320), **kwargs))


# -- one stream ----------------------------------------------------------------------------------------


def test_one_client_gets_the_local_engines_phonemes(server, recognizer):
    url, _ = server
    audio = load_audio(RECORDING, 16000)
    result = stream_file(url, audio)
    assert result.hello["type"] == "hello" and result.hello["sample_rate"] == 16000
    assert result.ready["type"] == "ready" and result.ready["chunk_ms"] == 320
    kinds = [e["type"] for e in result.events]
    assert kinds[-1] == "summary" and "partial" in kinds
    expected = local_events(recognizer, audio)
    assert decoded(result.events) == decoded(expected) and len(result.phonemes) > 5
    assert set(result.phonemes[0]) == {"type", "phoneme", "start", "end", "confidence", "committed_at", "index"}
    summary = result.summary
    assert summary["audio_s"] == pytest.approx(len(audio) / 16000, abs=1e-3)
    assert summary["phoneme_string"] == " ".join(e["phoneme"] for e in expected if e["type"] == "phoneme")
    assert wait_idle(url)["streams"] == 0


def test_s16le_at_another_rate_is_converted(server):
    """A client may send at its own rate (here 22.05 kHz s16le): the server resamples."""
    from websockets.asyncio.client import connect

    url, _ = server
    audio = load_audio(RECORDING, 22050)

    async def run():
        async with connect(url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "config", "sample_rate": 22050, "format": "s16le"}))
            assert json.loads(await ws.recv())["type"] == "ready"
            for start in range(0, len(audio), 2205):
                await ws.send(net.encode(audio[start : start + 2205], "s16le"))
            await ws.send(json.dumps({"type": "end"}))
            return [json.loads(m) async for m in ws]

    events = asyncio.run(run())
    assert events[-1]["type"] == "summary"
    assert events[-1]["audio_s"] == pytest.approx(len(audio) / 22050, abs=0.01)
    assert events[-1]["phonemes"] > 5


# -- many streams --------------------------------------------------------------------------------------


def test_concurrent_clients_each_get_their_own_results(server, recognizer):
    url, _ = server
    long = load_audio(SAMPLES / "LJ001-0001.flac", 16000)
    jobs = [  # different audio, and one stream with its own window sizes
        (long[: 3 * 16000], {}, None),
        (long[3 * 16000 : 6 * 16000], {}, None),
        (long[6 * 16000 :], {}, None),
        (load_audio(RECORDING, 16000), {"chunk_ms": 480, "left_ms": 320, "right_ms": 240},
         StreamConfig(480, 320, 240)),
    ]

    async def run_all():
        return await asyncio.gather(*(
            net.stream_audio(url, lambda rate, a=audio: net.pieces(a, 320), options=opts, realtime=True)
            for audio, opts, _ in jobs))

    before = health(url)
    results = asyncio.run(run_all())
    for (audio, _, cfg), result in zip(jobs, results):
        assert decoded(result.events) == decoded(local_events(recognizer, audio, cfg))
        assert result.summary["audio_s"] == pytest.approx(len(audio) / 16000, abs=1e-3)
    after = wait_idle(url)
    assert after["streams"] == 0 and after["scheduler_sessions"] == 0
    assert after["windows"] > before["windows"]


class CountingModel:
    """Wraps a model and records the size of each ``log_probs_batch`` call."""

    def __init__(self, model):
        self._model = model
        self.calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self._model, name)

    def log_probs_batch(self, windows):
        return self.log_probs_from(windows, [0] * len(windows))

    def log_probs_from(self, windows, first):
        self.calls.append(len(windows))
        return self._model.log_probs_from(windows, first)


def test_scheduler_batches_windows_of_different_streams(recognizer):
    """Three streams fed at once go through shared forward passes, each still decoding its own audio."""
    model = CountingModel(recognizer.model)
    rec = Recognizer(model, recognizer.config, silence_db=None)  # type: ignore[arg-type]
    long = load_audio(SAMPLES / "LJ001-0001.flac", 16000)
    audios = [long[i * 32000 : (i + 1) * 32000] for i in range(3)]
    scheduler = BatchScheduler(model, max_batch=64, max_wait_s=0.05)  # type: ignore[arg-type]

    async def run():
        outboxes = [asyncio.Queue() for _ in audios]
        sessions = [scheduler.open(rec.stream(), box) for box in outboxes]
        for session, audio in zip(sessions, audios):
            scheduler.feed(session, audio)
            scheduler.end(session)
        return [await drain(box) for box in outboxes]

    try:
        results = asyncio.run(run())
    finally:
        scheduler.stop()
    calls = list(model.calls)
    assert max(calls) > len(audios) and len(calls) < sum(calls) / 2, calls
    for audio, events in zip(audios, results):
        assert decoded(events) == decoded(local_events(rec, audio))
    assert scheduler.sessions == 0


def test_max_batch_bounds_each_forward_pass(recognizer):
    model = CountingModel(recognizer.model)
    rec = Recognizer(model, recognizer.config, silence_db=None)  # type: ignore[arg-type]
    audio = load_audio(SAMPLES / "LJ001-0001.flac", 16000)
    scheduler = BatchScheduler(model, max_batch=3, max_wait_s=0)  # type: ignore[arg-type]

    async def run():
        box: asyncio.Queue = asyncio.Queue()
        session = scheduler.open(rec.stream(), box)
        scheduler.feed(session, audio)
        scheduler.end(session)
        return await drain(box)

    try:
        events = asyncio.run(run())
    finally:
        scheduler.stop()
    calls = list(model.calls)
    assert max(calls) <= 3 and len(calls) > 3, calls
    assert decoded(events) == decoded(local_events(rec, audio))


def test_every_stream_finishes_when_more_are_ready_than_a_batch_holds(recognizer):
    """Streams that end while the batch is full are looked at again (a regression: they waited forever)."""
    rec = Recognizer(recognizer.model, recognizer.config, silence_db=None)
    audio = load_audio(RECORDING, 16000)
    scheduler = BatchScheduler(rec.model, max_batch=2, max_wait_s=0.001)

    async def run():
        boxes = [asyncio.Queue() for _ in range(6)]
        sessions = [scheduler.open(rec.stream(), box) for box in boxes]
        for session in sessions:
            scheduler.feed(session, audio)
        for session in sessions:
            scheduler.end(session)
        return await asyncio.wait_for(asyncio.gather(*(drain(b) for b in boxes)), 30)

    try:
        results = asyncio.run(run())
    finally:
        scheduler.stop()
    expected = decoded(local_events(rec, audio))
    assert all(decoded(events) == expected for events in results)
    assert scheduler.sessions == 0


# -- bad input -----------------------------------------------------------------------------------------

CONFIG = json.dumps({"type": "config", "sample_rate": 16000, "format": "s16le"})
BAD = {
    "bad JSON": (["{nope"], "bad JSON", 1008),
    "not an object": (["[1, 2]"], "JSON object", 1008),
    "wrong type first": ([json.dumps({"type": "end"})], 'expected a "config"', 1008),
    "audio before config": ([b"\x00\x00" * 100], "audio before config", 1008),
    "unknown sample format": ([json.dumps({"type": "config", "format": "mp3"})], "format must be 's16le' or", 1008),
    "unknown config key": ([json.dumps({"type": "config", "bogus": 1})], "unknown config key(s): bogus", 1008),
    "server path as lm": ([json.dumps({"type": "config", "lm": "/etc/passwd"})], "lm must be 'auto' or 'none'", 1008),
    "chunk not a stride multiple": ([json.dumps({"type": "config", "chunk_ms": 330})], "frame stride", 1008),
    "chunk below the minimum": ([json.dumps({"type": "config", "chunk_ms": 20})], "below the server's minimum", 1008),
    "oversized frame": ([CONFIG, b"\x00" * (LIMITS.max_message_bytes + 2)], "exceeds the server's limit", 1009),
    "half a sample": ([CONFIG, b"\x00\x00\x00"], "whole number", 1008),
    "config twice": ([CONFIG, CONFIG], "config already sent", 1008),
    "unexpected type": ([CONFIG, json.dumps({"type": "pause"})], "unexpected message type 'pause'", 1008),
}


async def _bad_exchange(url: str, messages: list) -> tuple[dict, int | None]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, max_size=None) as ws:
        first = json.loads(await ws.recv())
        events = [] if first["type"] == "hello" else [first]  # a busy server answers with the error
        for m in messages:
            await ws.send(m)
        try:
            async for text in ws:
                events.append(json.loads(text))
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        errors = [e for e in events if e["type"] == "error"]
        assert len(errors) == 1, events
        return errors[0], ws.close_code


def test_each_bad_message_gets_its_error_while_another_stream_goes_on(server, recognizer):
    url, _ = server
    audio = load_audio(RECORDING, 16000)

    async def run():
        good = asyncio.create_task(net.stream_audio(url, lambda rate: net.pieces(audio, 320), realtime=True))
        await asyncio.sleep(0.2)
        outcomes = {name: await _bad_exchange(url, msgs) for name, (msgs, _, _) in BAD.items()}
        return outcomes, await good

    outcomes, good = asyncio.run(run())
    for name, (_, text, code) in BAD.items():
        error, close_code = outcomes[name]
        assert text in error["message"], (name, error)
        assert close_code == code, (name, close_code)
    assert decoded(good.events) == decoded(local_events(recognizer, audio))
    h = wait_idle(url)
    assert h["status"] == "ok" and h["streams"] == 0 and h["scheduler_sessions"] == 0


def test_idle_stream_is_closed_with_an_error(server):
    url, _ = server
    error, code = asyncio.run(_bad_exchange(url, [CONFIG]))
    assert "idle for 1.5 s" in error["message"] and code == 1008


def test_streams_beyond_the_limit_are_rejected_clearly(server):
    url, _ = server
    from websockets.asyncio.client import connect

    async def run():
        async with contextlib.AsyncExitStack() as stack:
            held = [await stack.enter_async_context(connect(url)) for _ in range(LIMITS.max_streams)]
            for ws in held:
                await ws.recv()
                await ws.send(CONFIG)
                assert json.loads(await ws.recv())["type"] == "ready"
            assert health(url)["streams"] == LIMITS.max_streams
            return await _bad_exchange(url, [])

    error, code = asyncio.run(run())
    assert "server busy" in error["message"] and code == 1013
    assert wait_idle(url)["streams"] == 0


@pytest.mark.parametrize("how", ["close", "abort"])
def test_disconnect_mid_stream_frees_its_resources(server, how):
    url, app = server
    from websockets.asyncio.client import connect

    audio = load_audio(RECORDING, 16000)

    async def run():
        ws = await connect(url)
        await ws.recv()
        await ws.send(json.dumps({"type": "config", "format": "f32le"}))
        await ws.recv()
        for start in range(0, 16000, 320):
            await ws.send(net.encode(audio[start : start + 320], "f32le"))
        await asyncio.sleep(0.2)
        assert health(url)["streams"] == 1
        if how == "close":
            await ws.close()
        else:
            ws.transport.abort()

    asyncio.run(run())
    h = wait_idle(url)
    assert h["streams"] == 0 and h["scheduler_sessions"] == 0 and app.scheduler.sessions == 0


# -- HTTP ----------------------------------------------------------------------------------------------


def post(url: str, path: str, body: bytes, content_type: str = "application/octet-stream") -> tuple[int, dict]:
    request = urllib.request.Request(net.http_url(url, path), data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_upload_returns_the_phonemes(server, recognizer):
    url, _ = server
    data = RECORDING.read_bytes()
    audio = load_audio(RECORDING, 16000)
    status, body = post(url, "/transcribe", data)
    assert status == 200
    assert decoded(body["phonemes"]) == [d for d in decoded(local_events(recognizer, audio, partials=False))
                                         if d[0] != "<endpoint>"]
    assert body["summary"]["type"] == "summary" and body["summary"]["audio_s"] == pytest.approx(1.9, abs=0.01)
    status, offline = post(url, "/transcribe?mode=offline", data)
    assert status == 200
    assert [(p["phoneme"], p["start"], p["end"]) for p in offline["phonemes"]] == \
        [(p.phoneme, round(p.start, 3), round(p.end, 3)) for p in recognizer.transcribe(audio)]
    boundary = "xyzzy"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.flac\"\r\n"
            f"Content-Type: audio/flac\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, multipart = post(url, "/transcribe", form, f"multipart/form-data; boundary={boundary}")
    assert status == 200 and multipart["phonemes"] == body["phonemes"]


def test_upload_errors(server):
    url, _ = server
    status, body = post(url, "/transcribe", b"not audio at all" * 10)
    assert status == 400 and body["type"] == "error" and "cannot decode" in body["message"]
    status, body = post(url, "/transcribe", b"")
    assert status == 400 and "empty" in body["message"]
    # an upload announced as too big is refused before its body is read
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(url.split(":")[2].split("/")[0]), timeout=10)
    conn.putrequest("POST", "/transcribe")
    conn.putheader("Content-Length", str(LIMITS.max_upload_bytes + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["message"]
    conn.close()
    status, body = post(url, "/transcribe?mode=fast", RECORDING.read_bytes())
    assert status == 400 and "unknown mode" in body["message"]


def test_health_and_page(server):
    url, _ = server
    h = health(url)
    assert h["status"] == "ok" and h["sample_rate"] == 16000 and h["limits"]["max_streams"] == LIMITS.max_streams
    with urllib.request.urlopen(net.http_url(url, "/"), timeout=10) as resp:
        page = resp.read().decode()
    assert 'id="toggle"' in page and "/static/app.js" in page
    for script in ("/static/app.js", "/static/worklet.js"):
        with urllib.request.urlopen(net.http_url(url, script), timeout=10) as resp:
            assert resp.status == 200 and len(resp.read()) > 500


# -- access --------------------------------------------------------------------------------------------


def test_non_loopback_bind_needs_a_token_or_an_explicit_flag():
    check_bind(ServerSettings(host="127.0.0.1"))
    check_bind(ServerSettings(host="::1"))
    with pytest.raises(ServerError, match="--token"):
        check_bind(ServerSettings(host="0.0.0.0"))
    check_bind(ServerSettings(host="0.0.0.0", token="s3cret"))
    check_bind(ServerSettings(host="0.0.0.0", allow_insecure_bind=True))
    from phonestream.cli import main

    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "-m", "/nonexistent"])
    assert result.exit_code == 2 and "--allow-insecure-bind" in result.output


def test_token_is_checked_on_every_connection(recognizer):
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    app = App(recognizer, ServerSettings(token="s3cret", limits=LIMITS))
    with running_server(app) as url:
        async def attempt(target, **kw):
            try:
                async with connect(target, **kw) as ws:
                    return json.loads(await ws.recv())["type"]
            except InvalidStatus as err:
                return err.response.status_code

        assert asyncio.run(attempt(url)) == 403
        assert asyncio.run(attempt(url + "?token=wrong")) == 403
        assert asyncio.run(attempt(url + "?token=s3cret")) == "hello"
        assert asyncio.run(attempt(url, additional_headers={"Authorization": "Bearer s3cret"})) == "hello"
        # a page from another site may not use the server, even with the token in hand
        assert asyncio.run(attempt(url + "?token=s3cret", origin="http://evil.example")) == 403
        status, body = post(url, "/transcribe", RECORDING.read_bytes())
        assert status == 401 and body["type"] == "error"
        audio = load_audio(RECORDING, 16000)
        assert stream_file(url, audio, token="s3cret").summary is not None


# -- the commands --------------------------------------------------------------------------------------


def test_client_command_prints_events_like_the_local_cli(server, recognizer):
    from phonestream.cli import main

    url, _ = server
    result = CliRunner().invoke(main, ["client", str(RECORDING), "--url", url, "--json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert decoded(events) == decoded(local_events(recognizer, load_audio(RECORDING, 16000)))
    assert events[-1]["type"] == "summary"
    bad = CliRunner().invoke(main, ["client", str(RECORDING), "--url", url, "--chunk-ms", "330"])
    assert bad.exit_code == 2 and "frame stride" in bad.output
    gone = CliRunner().invoke(main, ["client", str(RECORDING), "--url", "ws://127.0.0.1:9/ws"])
    assert gone.exit_code == 2 and "cannot connect" in gone.output


def test_client_mic_without_a_device_fails_with_one_line(server, monkeypatch):
    from phonestream import audio
    from phonestream.cli import main

    def no_microphone(*args, **kwargs):
        raise audio.AudioError("no microphone found: no input device")
        yield  # a generator, like the real one

    monkeypatch.setattr(audio, "microphone", no_microphone)
    url, _ = server
    result = CliRunner().invoke(main, ["client", "--mic", "--url", url])
    assert result.exit_code == 2 and "no microphone found" in result.output
    assert wait_idle(url)["streams"] == 0


def test_loadtest_reports_delay_lag_and_no_dropped_audio(server):
    from phonestream.cli import main

    url, _ = server
    result = CliRunner().invoke(main, ["loadtest", "--url", url, "--streams", "1,3", "--seconds", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output.splitlines()[-1])
    assert [r["streams"] for r in rows] == [1, 3]
    for r in rows:
        assert r["errors"] == 0 and r["dropped_s"] == 0 and r["audio_s"] == 2.0
        assert r["emission_delay_s"]["p50"] is not None and r["lag_s"]["p95"] is not None
    table = CliRunner().invoke(main, ["loadtest", "--url", url, "--streams", "2", "--seconds", "1"])
    assert table.exit_code == 0 and "dropped" in table.output and "yes" in table.output, table.output


def test_a_stream_can_ask_for_a_latency_preset(server, recognizer):
    """The config's "latency" picks the model's preset window; explicit sizes still override it."""
    url, _ = server
    audio = load_audio(RECORDING, 16000)[: 16000 * 2]
    low = StreamConfig.for_model(recognizer.model, latency="low")
    ready = stream_file(url, audio, options={"latency": "low"}).ready
    assert (ready["chunk_ms"], ready["left_ms"], ready["right_ms"]) == (low.chunk_ms, low.left_ms, low.right_ms)
    ready = stream_file(url, audio, options={"latency": "low", "right_ms": 0}).ready
    assert (ready["chunk_ms"], ready["right_ms"]) == (low.chunk_ms, 0)
