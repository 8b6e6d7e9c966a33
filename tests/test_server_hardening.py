"""The server against hostile peers at the HTTP/transport level: upload bombs, uploads against the
stream limit and backpressure, silent or slow TCP peers, tokens in logs, web origins; and the CLI's
``eval --where`` argument errors.

Each test runs a real uvicorn server on a loopback port (see ``tests/test_server.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import json
import logging
import socket
import threading
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from phonestream import client as net
from phonestream.audio import AudioError, AudioTooLarge, audio_info, decode_audio, load_audio
from phonestream.engine import Recognizer
from phonestream.server import App, Limits, ServerSettings, allowed_origins
from phonestream.streaming import StreamConfig

from .conftest import SAMPLES
from .test_server import decoded, health, local_events, post, running_server, wait_idle

RECORDING = SAMPLES / "LJ001-0002.flac"
LIMITS = Limits(max_message_bytes=64 * 1024, max_streams=3, idle_timeout_s=1.5, max_upload_bytes=4 << 20,
                max_stream_s=60.0)


@pytest.fixture(scope="module")
def recognizer(tiny_model) -> Recognizer:
    return Recognizer(tiny_model, StreamConfig(320, 640, 160))


@pytest.fixture(scope="module")
def server(recognizer):
    app = App(recognizer, ServerSettings(limits=LIMITS))
    with running_server(app) as url:
        yield url, app


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def flac(seconds: float, channels: int, rate: int = 48000) -> bytearray:
    """Silence as FLAC: a few hundred bytes per second whatever the channel count."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC") as f:
        f.write(np.zeros((int(rate * seconds), channels), np.float32))
    return bytearray(buf.getvalue())


def claiming(data: bytearray, frames: int) -> bytes:
    """The FLAC with its STREAMINFO header claiming ``frames`` samples (the 36 low bits at byte 18)."""
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1) | frames
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


# -- decoding with limits (phonestream.audio) ------------------------------------------------------------


def test_decode_checks_the_header_before_the_samples():
    bomb = claiming(flac(1, 8), 8 * 3600 * 48000)  # says 8 hours of 8 channels: 41 GiB as float32
    assert audio_info(bomb).seconds == 8 * 3600
    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLarge, match="28800.0 s long .* over the limit of 60 s"):
            decode_audio(bomb, 16000, max_seconds=60)
        assert tracemalloc.get_traced_memory()[1] < 5 << 20
    finally:
        tracemalloc.stop()
    with pytest.raises(AudioError, match="8 channels; at most 2"):
        decode_audio(flac(0.1, 8), 16000, max_channels=2)
    with pytest.raises(AudioError, match="cannot decode the upload: ") as err:
        decode_audio(b"not audio" * 20, 16000, name="the upload")
    assert "BytesIO" not in str(err.value) and "0x" not in str(err.value)


def test_decode_from_memory_equals_loading_the_file():
    """One decoder for files, bytes and uploads: same samples as load_audio, block by block."""
    data = RECORDING.read_bytes()
    np.testing.assert_array_equal(decode_audio(data, 16000), load_audio(RECORDING, 16000))
    stereo = io.BytesIO()
    left = load_audio(RECORDING, 16000)
    sf.write(stereo, np.stack([left, np.zeros_like(left)], 1), 16000, format="WAV", subtype="FLOAT")
    np.testing.assert_allclose(decode_audio(stereo.getvalue(), 16000), left / 2, atol=1e-7)


# -- uploads -------------------------------------------------------------------------------------------


def test_upload_bomb_is_refused_from_its_header(server):
    url, _ = server
    cases = {
        "8 h x 8 ch in a 1 s file": claiming(flac(1, 8), 8 * 3600 * 48000),
        "120 s x 6 ch": bytes(flac(120, 6)),  # over the server's 60 s
    }
    for name, data in cases.items():
        assert len(data) < 200_000, name
        for mode in ("stream", "offline"):
            t0 = time.perf_counter()
            status, body = post(url, f"/transcribe?mode={mode}", data)
            assert status == 413 and "over the limit of 60 s" in body["message"], (name, mode, body)
            assert time.perf_counter() - t0 < 2, (name, mode)
    status, body = post(url, "/transcribe", _wav(0.5, 12))
    assert status == 400 and "12 channels; at most 8" in body["message"]
    status, body = post(url, "/transcribe", _wav(50, 1, rate=10))  # would be upsampled 1600x
    assert status == 400 and "sample rate 10 Hz is outside 4000-192000 Hz" in body["message"]
    status, body = post(url, "/transcribe", b"\x00garbage" * 50)
    assert status == 400 and "cannot decode the uploaded audio" in body["message"] and "BytesIO" not in body["message"]
    assert wait_idle(url)["streams"] == 0


def _wav(seconds: float, channels: int, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(rate * seconds), channels), np.float32), rate, format="WAV")
    return buf.getvalue()


def test_upload_counts_against_max_streams(server, recognizer):
    url, _ = server
    from websockets.asyncio.client import connect

    async def hold_all_and_post():
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(LIMITS.max_streams):
                ws = await stack.enter_async_context(connect(url))
                await ws.recv()
                await ws.send(json.dumps({"type": "config"}))
                assert json.loads(await ws.recv())["type"] == "ready"
            return await asyncio.to_thread(post, url, "/transcribe", RECORDING.read_bytes())

    status, body = asyncio.run(hold_all_and_post())
    assert status == 503 and "server busy" in body["message"]
    assert wait_idle(url)["streams"] == 0
    # while an upload runs it holds a place, shown by /health like a live stream
    seen = []
    audio = np.tile(load_audio(RECORDING, 16000), 10)
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    worker = threading.Thread(target=lambda: seen.append(post(url, "/transcribe", buf.getvalue())))
    worker.start()
    busiest = 0
    while worker.is_alive():
        busiest = max(busiest, health(url)["streams"])
        time.sleep(0.02)
    assert busiest == 1 and seen[0][0] == 200
    assert wait_idle(url)["streams"] == 0


def test_upload_is_fed_one_window_ahead_of_the_model(server, recognizer, monkeypatch):
    """Backpressure: an upload never queues more than about one window of unprocessed audio, so each
    batch holds at most one window of it; and it gets the local engine's phonemes."""
    url, app = server
    most = []
    real_feed = app.scheduler.feed

    def feed(session, samples):
        real_feed(session, samples)
        most.append(session.unprocessed)

    monkeypatch.setattr(app.scheduler, "feed", feed)
    audio = np.tile(load_audio(RECORDING, 16000), 4)
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="FLOAT")
    status, body = post(url, "/transcribe", buf.getvalue())
    assert status == 200
    cfg = recognizer.config
    window = (2 * cfg.chunk_ms + cfg.right_ms) * 16  # samples at 16 kHz
    assert len(most) > 10 and max(most) <= window, (max(most), window)
    expected = [d for d in decoded(local_events(recognizer, audio, partials=False)) if d[0] != "<endpoint>"]
    assert decoded(body["phonemes"]) == expected


def test_stalled_upload_body_is_timed_out(server):
    url, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=10)
    conn.putrequest("POST", "/transcribe")
    conn.putheader("Content-Length", "100000")
    conn.endheaders()
    conn.send(b"RIFF")  # then nothing
    t0 = time.perf_counter()
    response = conn.getresponse()
    assert response.status == 408 and "stalled" in json.loads(response.read())["message"]
    assert time.perf_counter() - t0 < LIMITS.idle_timeout_s + 2
    conn.close()
    assert wait_idle(url)["streams"] == 0


# -- slow and silent TCP peers -------------------------------------------------------------------------


def closed_by_server(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing ``sock`` (None: still open after ``within`` seconds)."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except socket.timeout:
        return None
    except ConnectionResetError:
        pass
    return data


def test_silent_and_half_handshake_peers_are_closed_and_bounded(recognizer):
    app = App(recognizer, ServerSettings(limits=LIMITS, max_connections=12, request_timeout_s=1.0))
    with running_server(app) as url:
        port = port_of(url)
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # and never the end
        assert health(url)["status"] == "ok"  # the server answers while they hang
        t0 = time.perf_counter()
        for sock in [*silent, half]:
            assert closed_by_server(sock, 4.0) == b""
            sock.close()
        assert time.perf_counter() - t0 < 3.5
        # beyond max_connections the server answers 503 at once instead of holding the socket
        crowd = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        answers = [closed_by_server(sock, 0.5) for sock in crowd[12:]]
        assert all(a is not None and a.startswith(b"HTTP/1.1 503") for a in answers), answers
        for sock in crowd:
            sock.close()
        time.sleep(0.3)
        assert health(url)["status"] == "ok"
        # a normal keep-alive client is not affected
        assert stream_ok(url)


def test_a_peer_that_stops_reading_is_dropped():
    """The send pump gives up on a peer whose socket no longer drains (its sends never complete)."""
    from phonestream.server import _pump

    class Stuck:
        sent = 0

        async def send_text(self, text: str) -> None:
            self.sent += 1
            if self.sent > 2:
                await asyncio.Event().wait()  # the peer's window is full: never drains

    async def run() -> float:
        outbox: asyncio.Queue = asyncio.Queue()
        for i in range(10):
            outbox.put_nowait(f'{{"type":"partial","n":{i}}}')
        t0 = time.perf_counter()
        await asyncio.wait_for(_pump(Stuck(), outbox, 0.3), 5)
        return time.perf_counter() - t0

    assert 0.25 < asyncio.run(run()) < 2


def stream_ok(url: str) -> bool:
    audio = load_audio(RECORDING, 16000)
    result = asyncio.run(net.stream_audio(url, lambda rate: net.pieces(audio, 320)))
    return result.summary is not None


# -- secrets and origins -------------------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_token_never_reaches_the_logs(recognizer):
    from websockets.asyncio.client import connect

    app = App(recognizer, ServerSettings(token="s3cret-value", limits=LIMITS))
    collect = Collect()
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")]
    with running_server(app, log_level="info") as url:
        for logger in loggers:
            logger.addHandler(collect)
        try:
            async def browser_like():  # a browser's WebSocket can only put the token in the query
                async with connect(url + "?token=s3cret-value") as ws:
                    return json.loads(await ws.recv())["type"]

            assert asyncio.run(browser_like()) == "hello"
            status, _ = post(url, "/transcribe?mode=offline&token=s3cret-value", RECORDING.read_bytes())
            assert status == 200
            assert health(url, "s3cret-value")["status"] == "ok"
            audio = load_audio(RECORDING, 16000)  # phonestream client: the token goes in a header
            result = asyncio.run(net.stream_audio(url, lambda rate: net.pieces(audio, 320), token="s3cret-value"))
            assert result.summary is not None
            time.sleep(0.2)
        finally:
            for logger in loggers:
                logger.removeHandler(collect)
    logged = "\n".join(collect.lines)
    assert "/transcribe?mode=offline&token=***" in logged and "/ws?token=***" in logged, logged
    assert "s3cret" not in logged


def test_client_sends_the_token_in_a_header_not_the_url(recognizer, monkeypatch):
    seen = {}
    import websockets.asyncio.client as wsclient

    real = wsclient.connect

    def spy(uri, **kwargs):
        seen["uri"], seen["headers"] = uri, kwargs.get("additional_headers")
        return real(uri, **kwargs)

    monkeypatch.setattr(wsclient, "connect", spy)
    app = App(recognizer, ServerSettings(token="tok", limits=LIMITS))
    with running_server(app) as url:
        assert stream_ok_with_token(url, "tok")
    assert "tok" not in seen["uri"] and seen["headers"] == {"Authorization": "Bearer tok"}


def stream_ok_with_token(url: str, token: str) -> bool:
    audio = load_audio(RECORDING, 16000)[:16000]
    return asyncio.run(net.stream_audio(url, lambda rate: net.pieces(audio, 320), token=token)).summary is not None


def handshake(port: int, host: str, origin: str | None) -> int:
    """HTTP status of a WebSocket handshake to /ws with these Host and Origin headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", "/ws", skip_host=True)
    conn.putheader("Host", host)
    for name, value in {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}.items():
        conn.putheader(name, value)
    if origin is not None:
        conn.putheader("Origin", origin)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def post_from(url: str, origin: str | None, host: str | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=30)
    data = RECORDING.read_bytes()
    conn.putrequest("POST", "/transcribe", skip_host=host is not None)
    if host is not None:
        conn.putheader("Host", host)
    if origin is not None:
        conn.putheader("Origin", origin)
    conn.putheader("Content-Length", str(len(data)))
    conn.endheaders()
    conn.send(data)
    status = conn.getresponse().status
    conn.close()
    return status


def test_origin_allow_list_for_websocket_and_upload(recognizer):
    app = App(recognizer, ServerSettings(limits=LIMITS, allow_origins=("https://app.example",)))
    with running_server(app) as url:
        port = port_of(url)
        own = f"127.0.0.1:{port}"
        assert allowed_origins(app.settings) >= {f"http://127.0.0.1:{port}", f"http://localhost:{port}",
                                                 f"http://[::1]:{port}", "https://app.example"}
        for origin in (None, f"http://127.0.0.1:{port}", f"http://localhost:{port}", "https://app.example"):
            assert handshake(port, own, origin) == 101, origin
            assert post_from(url, origin) == 200, origin
        everywhere = allowed_origins(ServerSettings(host="0.0.0.0", port=port))
        assert f"http://{socket.gethostname().lower()}:{port}" in everywhere and "http://evil.example" not in everywhere
        assert allowed_origins(ServerSettings(host="10.1.2.3", port=port)) == {f"http://10.1.2.3:{port}"}
        rebound = f"evil.example:{port}"  # DNS rebinding: the page's Host equals its Origin
        for host, origin in ((own, "http://evil.example"), (rebound, f"http://{rebound}"), (own, "null"),
                             (own, f"http://127.0.0.1:{port + 1}")):
            assert handshake(port, host, origin) == 403, (host, origin)
            assert post_from(url, origin, host) == 403, (host, origin)


# -- eval --where --------------------------------------------------------------------------------------


@pytest.mark.parametrize("where, message", [
    ("id=[", "--where 'id=[': bad regular expression"),
    ("foo", "--where takes COLUMN=REGEX"),
    ("idd=_1", "has no 'idd' column (columns: id, audio, phones)"),
    ("id=nothing-like-this", "no row of"),
])
def test_eval_where_errors_are_one_line(tmp_path, where, message):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("id\taudio\tphones\nspeaker_1\tx.wav\tAA B\n")
    from click.testing import CliRunner

    from phonestream.cli import main

    result = CliRunner().invoke(main, ["eval", str(manifest), "-m", "/nonexistent", "--where", where])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert lines[0].startswith("phonestream: error:") and isinstance(result.exception, SystemExit)


def test_repeated_warnings_are_rate_limited():
    from phonestream.server import RateLimit

    logger = logging.getLogger("phonestream.test.flood")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    collect = Collect()
    logger.addHandler(collect)
    limit = RateLimit(burst=5, window_s=0.5)
    logger.addFilter(limit)
    for _ in range(1000):
        logger.warning("Invalid HTTP request received.")
    logger.info("informational lines are not limited")
    logger.warning("another message has its own budget")
    assert len(collect.lines) == 5 + 1 + 1
    time.sleep(0.6)
    logger.warning("Invalid HTTP request received.")
    assert collect.lines[-1] == "Invalid HTTP request received. (995 more like this in the last 0.5 s not logged)"


# -- soak ----------------------------------------------------------------------------------------------


def test_short_soak_answers_every_hostile_client_and_spares_the_good_stream(recognizer):
    import dataclasses

    # room for the hostile clients, so the good stream is never turned away as "server busy"
    app = App(recognizer, ServerSettings(limits=dataclasses.replace(LIMITS, max_streams=32), request_timeout_s=1.0))
    with running_server(app) as url:
        r = net.soak(url, minutes=0.2, streams=1, seconds=4.0, bad_per_s=4.0, seed=1)
    assert r["bad_clients"] >= 20 and len(r["outcomes"]) >= 6, r["outcomes"]
    assert r["unanswered"] == [] and r["server_ok"]
    assert r["good_connections"] >= 2 and r["errors"] == 0 and r["dropped_s"] == 0
    assert r["emission_delay_s"]["p95"] is not None and r["rss_end_mb"] > 0
    answers = {kind: set(a) for kind, a in r["outcomes"].items()}
    assert answers.get("upload_bomb", {"http 413"}) == {"http 413"}
    assert answers.get("foreign_origin", {"http 403"}) == {"http 403"}
    assert answers.get("silent_tcp", {"closed"}) == {"closed"}


def test_upload_stops_when_its_client_hangs_up(server):
    url, app = server
    audio = np.tile(load_audio(RECORDING, 16000), 30)[: 59 * 16000]  # 59 s: ~185 windows of 320 ms
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    windows_before = app.scheduler.windows + app.scheduler.skipped
    sock = socket.create_connection(("127.0.0.1", port_of(url)))
    sock.sendall(b"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    deadline = time.time() + 10
    while health(url)["streams"] == 0 and time.time() < deadline:
        time.sleep(0.01)
    sock.close()  # gone before the result
    h = wait_idle(url, 30)
    assert h["streams"] == 0 and h["scheduler_sessions"] == 0
    done = app.scheduler.windows + app.scheduler.skipped - windows_before
    assert done < 120, done  # the whole upload would take ~185
