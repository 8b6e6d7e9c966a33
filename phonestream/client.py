"""Talking to a phonestream server: stream a file or the microphone, and load-test with many streams.

Uses the ``websockets`` library (asyncio API). One stream's life, in :func:`stream_audio`:

    connect -> hello (the server's sample rate) -> config -> ready
    -> audio frames (paced in real time or as fast as possible) while events arrive -> end -> summary

:func:`loadtest` runs N such real-time streams at once and measures, from the client's side, how late
phonemes arrive (emission delay), how far behind real time the server runs (lag), and that no audio
was lost.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .audio import load_audio, pieces
from .metrics import stats

SAMPLE = Path(__file__).resolve().parent / "samples" / "LJ001-0001.flac"


class ClientError(RuntimeError):
    """The server refused or ended the stream with an error (one-line message for the user)."""


def encode(samples: np.ndarray, fmt: str) -> bytes:
    """Mono float32 samples as little-endian PCM (``s16le`` or ``f32le``)."""
    if fmt == "f32le":
        return np.asarray(samples, "<f4").tobytes()
    if fmt == "s16le":
        return (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
    raise ValueError(f"unknown sample format {fmt!r}; use s16le or f32le")


def with_token(url: str, token: str | None) -> str:
    """``url`` with ``?token=`` (what a browser must do; other clients send :func:`auth_headers`)."""
    if not token:
        return url
    return url + ("&" if "?" in url else "?") + "token=" + token


def auth_headers(token: str | None) -> dict[str, str]:
    """The token as an ``Authorization: Bearer`` header: unlike a query string, never in access logs."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def http_url(ws_url: str, path: str) -> str:
    """``ws://host:port/ws`` -> ``http://host:port{path}``."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, path, "", ""))


@dataclass
class StreamResult:
    """What one stream got back: every event with its arrival time (seconds after the first audio)."""

    hello: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    sent_samples: int = 0
    sample_rate: int = 0
    end_sent_at: float | None = None
    summary_at: float | None = None
    error: str | None = None
    slip_max: float = 0.0  # how late the client itself sent a piece (real-time pacing)

    @property
    def summary(self) -> dict[str, Any] | None:
        return next((e for e in reversed(self.events) if e["type"] == "summary"), None)

    @property
    def phonemes(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "phoneme"]


async def stream_audio(url: str, make_source: Callable[[int], Iterable[np.ndarray] | AsyncIterator[np.ndarray]],
                       *, fmt: str = "f32le", options: dict[str, Any] | None = None, realtime: bool = False,
                       token: str | None = None, on_event: Callable[[dict[str, Any]], None] | None = None,
                       stop: asyncio.Event | None = None, open_timeout: float = 30) -> StreamResult:
    """Stream audio to a server and collect its events.

    Args:
        url: the server's WebSocket address, e.g. ``ws://127.0.0.1:8765/ws``.
        make_source: called with the server's sample rate; returns the pieces to send (mono float32 at
            that rate), as an iterable or an async iterator.
        fmt: wire format of the samples.
        options: extra config keys (chunk_ms, left_ms, right_ms, partials, engine options).
        realtime: send no faster than real time.
        on_event: called with each event as it arrives.
        stop: when set, stop sending and ask for the summary (e.g. Ctrl-C on the microphone).

    Raises:
        ClientError: the server sent an error event or closed without a summary.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    result = StreamResult()
    try:
        ws = await connect(url, max_size=None, open_timeout=open_timeout, compression=None,
                           additional_headers=auth_headers(token))
    except InvalidStatus as err:
        raise ClientError(f"server refused the connection (HTTP {err.response.status_code}): wrong or missing "
                          "token, or a page from another origin") from None
    except (OSError, asyncio.TimeoutError) as err:
        raise ClientError(f"cannot connect to {url}: {err}") from None
    async with ws:
        try:
            result.hello = json.loads(await ws.recv())
            if result.hello.get("type") == "error":
                raise ClientError(result.hello["message"])
            rate = int(result.hello["sample_rate"])
            result.sample_rate = rate
            await ws.send(json.dumps({"type": "config", "sample_rate": rate, "format": fmt, **(options or {})}))
            result.ready = json.loads(await ws.recv())
            if result.ready.get("type") == "error":
                raise ClientError(result.ready["message"])
        except ConnectionClosed as err:
            raise ClientError(f"server closed the connection ({err})") from None

        t0 = time.perf_counter()

        async def receive() -> None:
            async for text in ws:
                event = json.loads(text)
                now = time.perf_counter() - t0
                result.events.append(event)
                result.arrivals.append(now)
                if on_event is not None:
                    on_event(event)
                if event["type"] == "summary":
                    result.summary_at = now
                elif event["type"] == "error":
                    result.error = event["message"]

        receiver = asyncio.create_task(receive())
        try:
            async for piece in _aiter(make_source(rate)):
                if stop is not None and stop.is_set() or receiver.done():
                    break
                if realtime:  # a live source has a piece only once its last sample was spoken
                    due = t0 + (result.sent_samples + len(piece)) / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        result.slip_max = max(result.slip_max, -delay)
                await ws.send(encode(piece, fmt))
                result.sent_samples += len(piece)
            if not receiver.done():
                await ws.send(json.dumps({"type": "end"}))
                result.end_sent_at = time.perf_counter() - t0
        except ConnectionClosed:
            pass
        except BaseException:  # the source failed (no microphone...): stop listening, then report it
            receiver.cancel()
            raise
        try:
            await receiver
        except ConnectionClosed:
            pass
    if result.error is not None:
        raise ClientError(result.error)
    if result.summary is None:
        raise ClientError("server closed the stream without a summary")
    return result


async def _aiter(source: Iterable[np.ndarray] | AsyncIterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
    if hasattr(source, "__aiter__"):
        async for piece in source:  # type: ignore[union-attr]
            yield piece
    else:
        for piece in source:  # type: ignore[union-attr]
            yield piece


async def threaded(source: Iterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
    """A blocking source (the microphone) read in a worker thread, so the event loop keeps going."""
    done = object()
    while True:
        piece = await asyncio.to_thread(next, source, done)
        if piece is done:
            return
        yield piece  # type: ignore[misc]


def file_source(path: str | Path, feed_ms: int = 20) -> Callable[[int], Iterator[np.ndarray]]:
    """A file, converted to the server's rate, in pieces of ``feed_ms``."""
    def make(rate: int) -> Iterator[np.ndarray]:
        return pieces(load_audio(path, rate), max(1, rate * feed_ms // 1000))

    return make


def to_event(event: dict[str, Any]):
    """A received event as the engine's event object (for the CLI's printer); None for other types
    (errors, and event types this client does not know, such as ones a newer server adds)."""
    from .events import Partial, Phoneme, Summary

    kind = event.get("type")
    fields = {k: v for k, v in event.items() if k != "type"}
    if kind == "phoneme":  # fields a newer server adds are left out, not an error
        return Phoneme(**{k: fields[k] for k in Phoneme.__dataclass_fields__ if k in fields})
    if kind == "partial":
        return Partial(fields["phonemes"], fields.get("received", 0.0))
    if kind == "summary":
        return Summary(fields)
    return None


def stream_options(chunk_ms: int | None = None, left_ms: int | None = None, right_ms: int | None = None,
                   items: Iterable[str] = ()) -> dict[str, Any]:
    """The config keys to ask the server for: the window sizes given, and ``KEY=VALUE`` items whose value
    is read as JSON (a bare word is a string): ``["partials=false", "decoder=greedy"]``.

    Raises:
        ValueError: an item without ``=`` or without a key.
    """
    out: dict[str, Any] = {k: v for k, v in (("chunk_ms", chunk_ms), ("left_ms", left_ms), ("right_ms", right_ms))
                           if v is not None}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def stream_to_server(url: str, file: str | Path | None = None, *, mic: bool = False,
                     input_device: str | int | None = None, feed_ms: int = 20, fmt: str = "f32le",
                     realtime: bool = False, token: str | None = None, options: dict[str, Any] | None = None,
                     on_event: Callable[[dict[str, Any]], None] | None = None) -> StreamResult:
    """Stream ``file``, or the microphone with ``mic=True``, to a server and wait for its summary
    (blocking: runs its own event loop). The microphone runs until Ctrl-C: SIGINT stops the sending, and
    the server's last events and summary still arrive. Arguments as for :func:`stream_audio`.

    Raises:
        ValueError: neither or both of ``file`` and ``mic``.
        ClientError: as :func:`stream_audio`.
        phonestream.audio.AudioError: an unreadable file, or no microphone.
    """
    if (file is None) == (not mic):
        raise ValueError("give either FILE or --mic")

    async def run() -> StreamResult:
        stop = asyncio.Event()
        if mic:
            from .audio import microphone

            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
            make: Callable = lambda rate: threaded(microphone(rate, feed_ms, input_device))  # noqa: E731
        else:
            make = file_source(file, feed_ms)  # type: ignore[arg-type]
        return await stream_audio(url, make, fmt=fmt, realtime=realtime and not mic, token=token, on_event=on_event,
                                  stop=stop, options=options)

    return asyncio.run(run())


# -- load test ----------------------------------------------------------------------------------------


def looped(path: str | Path, rate: int, seconds: float) -> np.ndarray:
    """The recording repeated to ``seconds`` of audio."""
    audio = load_audio(path, rate)
    n = int(seconds * rate)
    return np.resize(audio, n).astype(np.float32) if n > len(audio) else audio[:n]


def _health(url: str, token: str | None) -> dict[str, Any]:
    request = urllib.request.Request(http_url(url, "/health"), headers=auth_headers(token))
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise ClientError(f"the server at {http_url(url, '/health')} answered HTTP {err.code} ({err.reason})") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ClientError(f"no phonestream server answers at {http_url(url, '/health')} ({reason}); start one "
                          "with 'phonestream serve' or give its address with --url") from None


async def _one_round(url: str, n: int, audio: np.ndarray, rate: int, feed_ms: int, fmt: str,
                     options: dict[str, Any], token: str | None, stagger_s: float) -> list[StreamResult | str]:
    step = max(1, rate * feed_ms // 1000)

    async def client(i: int) -> StreamResult | str:
        await asyncio.sleep(random.Random(i).uniform(0, stagger_s))
        try:
            return await asyncio.wait_for(
                stream_audio(url, lambda _rate: pieces(audio, step), fmt=fmt, options=options, realtime=True,
                             token=token), timeout=2 * len(audio) / rate + 60)
        except ClientError as err:
            return str(err)
        except asyncio.TimeoutError:
            return "no summary within twice the audio's duration plus a minute"

    return await asyncio.gather(*(client(i) for i in range(n)))


def measure(results: list[StreamResult | str], n: int, chunk_s: float) -> dict[str, Any]:
    """Client-side figures of one load-test round.

    - emission delay: when a phoneme arrived minus when its end was spoken (audio sent in real time,
      so the audio at time t left the client at t): model wait + compute + network + lookahead.
    - lag: when an event arrived minus the audio the server had received when it produced it; it
      stays below one chunk while the server keeps up and grows without bound when it does not.
    - dropped: audio sent minus audio the server's summary says it decoded (must be 0).
    """
    ok = [r for r in results if isinstance(r, StreamResult)]
    errors = [r for r in results if isinstance(r, str)]
    delays, lags, finals, dropped, slips = [], [], [], 0.0, []
    audio_s = 0.0
    for r in ok:
        for event, at in zip(r.events, r.arrivals):
            if event["type"] == "phoneme":
                delays.append(at - event["end"])
                lags.append(at - event["committed_at"])
            elif event["type"] == "partial":
                lags.append(at - event["received"])
        sent = r.sent_samples / r.sample_rate
        audio_s = max(audio_s, sent)
        dropped += max(0.0, round(sent - r.summary["audio_s"], 3))  # type: ignore[index]
        if r.end_sent_at is not None and r.summary_at is not None:
            finals.append(r.summary_at - r.end_sent_at)
        slips.append(r.slip_max)
    d, lag, fin = stats(delays, 1, 3), stats(lags, 1, 3), stats(finals, 1, 3)
    keeps_up = not errors and dropped == 0 and lag["p95"] is not None and lag["p95"] <= chunk_s
    return {"streams": n, "audio_s": round(audio_s, 1), "emission_delay_s": d, "lag_s": lag,
            "final_s": fin, "dropped_s": round(dropped, 3), "errors": len(errors),
            "client_slip_max_s": round(max(slips, default=0.0), 3), "keeps_up": keeps_up,
            "error_sample": errors[0] if errors else None}


def loadtest(url: str, streams: list[int], seconds: float = 20.0, file: str | Path = SAMPLE, feed_ms: int = 20,
             fmt: str = "s16le", options: dict[str, Any] | None = None, token: str | None = None,
             stagger_s: float | None = None, on_row: Callable[[dict[str, Any]], None] | None = None
             ) -> list[dict[str, Any]]:
    """Run N real-time streams at once for each N in ``streams``; one row of :func:`measure` per N,
    plus the server's batching figures over that round (from ``/health``)."""
    hello = _health(url, token)
    rate = int(hello["sample_rate"])
    chunk_ms = (options or {}).get("chunk_ms") or hello["chunk_ms"]
    audio = looped(file, rate, seconds)
    rows = []
    for n in streams:
        before = _health(url, token)
        t0 = time.perf_counter()
        results = asyncio.run(_one_round(url, n, audio, rate, feed_ms, fmt, options or {}, token,
                                         chunk_ms / 1000 if stagger_s is None else stagger_s))
        wall = time.perf_counter() - t0
        after = _health(url, token)
        row = measure(results, n, chunk_ms / 1000)
        batches = after["batches"] - before["batches"]
        row["avg_batch"] = round((after["windows"] - before["windows"]) / batches, 1) if batches else None
        row["model_busy"] = round((after["model_busy_s"] - before["model_busy_s"]) / wall, 2)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def parse_streams(text: str) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--streams takes numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--streams takes positive numbers, got {text!r}")
    return values


# -- soak: real-time streams with hostile clients alongside -----------------------------------------------


# Config messages a broken or hostile client might send (each must get an error event and a close).
BAD_CONFIGS = [
    '{"type":"config","silence_db":"x"}', '{"type":"config","endpoint":5}', '{"type":"config","format":["s16le"]}',
    '{"type":"config","endpoint":{"rule1_s":-1}}', '{"type":"config","lm_weight":"heavy"}',
    '{"type":"config","max_utterance_s":Infinity}', '{"type":"config","chunk_ms":7}', '{"type":"config","beam":10000}',
    '{"type":"config","lm":"/etc/passwd"}', '{"type":"config","no_such_key":1}', '[]', '{}', 'not json',
    '{"type":"config","sample_rate":1}', '{"type":"config","channels":0}', '{"type":"config","lm_weight":1e308}',
    "[" * 5000 + "]" * 5000,
]
BAD_KINDS = ("config", "binary_first", "odd_bytes", "oversized", "disconnect", "silent_tcp", "half_handshake",
             "foreign_origin", "garbage_upload", "upload_bomb")


def _bomb_flac() -> bytes:
    """A 1 s FLAC whose header claims 8 hours of 8 channels (41 GiB as float32)."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", 48000, 8, format="FLAC") as f:
        f.write(np.zeros((48000, 8), np.float32))
    data = bytearray(buf.getvalue())
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1) | 8 * 3600 * 48000
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


async def bad_client(url: str, kind: str, rng: random.Random, token: str | None = None, hold_s: float = 30.0) -> str:
    """Play one hostile client of ``kind`` (see :data:`BAD_KINDS`); returns how the server answered
    (``"error 1008"``, ``"http 413"``, ``"closed"``...), or ``"UNANSWERED ..."`` when it did not."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if kind in ("silent_tcp", "half_handshake"):  # held until the server closes it
        reader, writer = await asyncio.open_connection(host, port)
        if kind == "half_handshake":
            writer.write(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n".encode())
        try:
            data = await asyncio.wait_for(reader.read(), hold_s)
            return "closed" if not data else f"answered {data[:12]!r}"
        except asyncio.TimeoutError:
            return f"UNANSWERED: still open after {hold_s:g} s"
        finally:
            writer.close()
    if kind in ("garbage_upload", "upload_bomb"):
        body = _bomb_flac() if kind == "upload_bomb" else rng.randbytes(rng.randint(1, 4096))
        request = urllib.request.Request(http_url(url, "/transcribe"), data=body, headers=auth_headers(token))
        try:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=hold_s)
            return "UNANSWERED: accepted"
        except urllib.error.HTTPError as err:
            return f"http {err.code}"
    headers = auth_headers(token)
    if kind == "foreign_origin":
        try:
            async with connect(url, origin="http://evil.example", additional_headers=headers, open_timeout=hold_s):
                return "UNANSWERED: accepted"
        except InvalidStatus as err:
            return f"http {err.response.status_code}"
    async with connect(url, max_size=None, additional_headers=headers, open_timeout=hold_s) as ws:
        hello = json.loads(await ws.recv())
        if hello.get("type") != "hello":
            return f"error {hello.get('message', '')[:20]}"
        if kind == "config":
            await ws.send(rng.choice(BAD_CONFIGS))
        elif kind == "binary_first":
            await ws.send(rng.randbytes(rng.randint(1, 2000)))
        else:
            await ws.send(json.dumps({"type": "config", "format": "s16le"}))
            json.loads(await ws.recv())  # ready
            if kind == "odd_bytes":
                await ws.send(rng.randbytes(2 * rng.randint(1, 500) + 1))
            elif kind == "oversized":
                await ws.send(bytes(int(hello["limits"]["max_message_bytes"]) + 2))
            elif kind == "disconnect":
                noise = (np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, 0.1, 320) * 32767).astype("<i2")
                for _ in range(rng.randint(1, 100)):
                    await ws.send(noise.tobytes())
                ws.transport.abort()
                return "closed"
        try:
            async for text in ws:
                event = json.loads(text)
                if event.get("type") == "error":
                    await ws.wait_closed()
                    return f"error {ws.close_code}"
        except ConnectionClosed:
            pass
        return f"closed {ws.close_code}"


async def _soak(url: str, minutes: float, n: int, audio: np.ndarray, rate: int, fmt: str, token: str | None,
                bad_per_s: float, seed: int, on_progress: Callable[[str], None] | None) -> dict[str, Any]:
    deadline = time.perf_counter() + minutes * 60
    step = max(1, rate * 20 // 1000)
    results: list[StreamResult | str] = []
    outcomes: dict[str, dict[str, int]] = {}
    unanswered: list[str] = []
    rss: list[tuple[float, float]] = []
    loaded: list[tuple[float, float]] = []  # the samples taken while all n good streams were live
    t0 = time.perf_counter()

    async def good(i: int) -> None:
        await asyncio.sleep(random.Random(i).uniform(0, 1))
        while time.perf_counter() + len(audio) / rate <= deadline:
            try:
                results.append(await asyncio.wait_for(
                    stream_audio(url, lambda _rate: pieces(audio, step), fmt=fmt, realtime=True, token=token),
                    timeout=2 * len(audio) / rate + 60))
            except (ClientError, asyncio.TimeoutError) as err:
                results.append(str(err) or "no summary in time")

    async def bad(rng: random.Random) -> None:
        kind = rng.choice(BAD_KINDS)
        try:
            outcome = await asyncio.wait_for(bad_client(url, kind, rng, token), 60)
        except Exception as err:  # noqa: BLE001 - every failure of a hostile client is a result to count
            outcome = f"client side {type(err).__name__}"
        counts = outcomes.setdefault(kind, {})
        label = outcome if not outcome.startswith("UNANSWERED") else "UNANSWERED"
        counts[label] = counts.get(label, 0) + 1
        if outcome.startswith("UNANSWERED"):
            unanswered.append(f"{kind}: {outcome}")

    async def monitor() -> None:
        while True:
            h = await asyncio.to_thread(_health, url, token)
            rss.append((time.perf_counter() - t0, h["rss_mb"]))
            if h["streams"] >= n:  # every good stream live: the samples the growth is judged on
                loaded.append(rss[-1])
            if on_progress is not None:
                on_progress(f"{rss[-1][0] / 60:.1f} min: server RSS {h['rss_mb']} MB, {h['streams']} streams, "
                            f"{len(results)} good streams done, {sum(sum(c.values()) for c in outcomes.values())} "
                            "bad clients")
            await asyncio.sleep(10)

    async def bad_stream() -> None:
        if bad_per_s <= 0:
            return
        rng = random.Random(seed)
        tasks = set()
        while time.perf_counter() < deadline:
            task = asyncio.create_task(bad(random.Random(rng.getrandbits(32))))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(rng.expovariate(bad_per_s))
        await asyncio.gather(*tasks)

    watcher = asyncio.create_task(monitor())
    await asyncio.gather(bad_stream(), *(good(i) for i in range(n)))
    watcher.cancel()
    end = await asyncio.to_thread(_health, url, token)
    rss.append((time.perf_counter() - t0, end["rss_mb"]))
    judged = loaded or rss
    first_minute, last_minute = rss_window(judged, 30, 90), rss_window(judged, judged[-1][0] - 60, judged[-1][0])
    return {"results": results, "outcomes": outcomes, "unanswered": unanswered, "rss_start_mb": rss[0][1],
            "rss_first_minute_mb": first_minute, "rss_last_minute_mb": last_minute,
            "rss_growth_pct": round(100 * (last_minute / first_minute - 1), 1),
            "rss_end_mb": rss[-1][1], "rss_max_mb": max(mb for _, mb in rss),
            "server_ok": end["status"] == "ok", "wall_s": round(time.perf_counter() - t0, 1)}


def rss_window(samples: list[tuple[float, float]], start_s: float, end_s: float) -> float:
    """Median RSS (MB) of the ``(seconds, MB)`` samples taken between ``start_s`` and ``end_s``, or the
    sample nearest that window: one sample swings by the transient buffers of a batch in flight, a
    median over a minute does not."""
    inside = [mb for t, mb in samples if start_s <= t <= end_s]
    if not inside:
        return min(samples, key=lambda s: min(abs(s[0] - start_s), abs(s[0] - end_s)))[1]
    return round(float(statistics.median(inside)), 1)


def soak(url: str, minutes: float, streams: int = 8, seconds: float = 60.0, file: str | Path = SAMPLE,
         fmt: str = "s16le", token: str | None = None, bad_per_s: float = 2.0, seed: int = 0,
         on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``streams`` real-time clients for ``minutes`` (each sends ``seconds`` of the looped recording, then
    reconnects), with hostile clients (:data:`BAD_KINDS`, about ``bad_per_s`` a second, seeded) alongside.

    Returns :func:`measure`'s figures over every good stream plus the server's RSS at the start, after the
    first minute and at the end (from ``/health``), how each kind of bad client was answered, and the
    bad clients the server left unanswered (must be none).
    """
    hello = _health(url, token)
    rate = int(hello["sample_rate"])
    audio = looped(file, rate, seconds)
    out = asyncio.run(_soak(url, minutes, streams, audio, rate, fmt, token, bad_per_s, seed, on_progress))
    results = out.pop("results")
    row = measure(results, streams, hello["chunk_ms"] / 1000)
    return {**row, "minutes": minutes, "bad_per_s": bad_per_s, "good_connections": len(results),
            "bad_clients": sum(sum(c.values()) for c in out["outcomes"].values()), **out}
