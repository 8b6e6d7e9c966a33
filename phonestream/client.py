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
import time
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


# -- load test ----------------------------------------------------------------------------------------


def looped(path: str | Path, rate: int, seconds: float) -> np.ndarray:
    """The recording repeated to ``seconds`` of audio."""
    audio = load_audio(path, rate)
    n = int(seconds * rate)
    return np.resize(audio, n).astype(np.float32) if n > len(audio) else audio[:n]


def _health(url: str, token: str | None) -> dict[str, Any]:
    request = urllib.request.Request(http_url(url, "/health"), headers=auth_headers(token))
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


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
