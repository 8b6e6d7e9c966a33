"""The network server: live phonemes over WebSocket, whole-file uploads over HTTP, and the web page.

Starlette (a small, well-kept ASGI toolkit) gives the routes and the WebSocket handling, and uvicorn
serves it; the model runs in the :class:`~phonestream.scheduler.BatchScheduler` worker thread, batched
across streams, never on the event loop. The life of one WebSocket stream, all in :meth:`App.live`:

    accept -> {"type": "hello"} -> client config -> {"type": "ready"}
    -> binary audio frames (decoded, resampled, fed to the scheduler; events flow back as they happen)
    -> {"type": "end"} -> tail + {"type": "summary"} -> close 1000

Every protocol error ends that one connection with ``{"type": "error", "message": ...}`` and a close
code; the other streams go on. See ``docs/server.md`` for the protocol with a complete example.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hmac
import ipaddress
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import memory
from .audio import (
    PCM_FORMATS,
    AudioError,
    AudioTooLarge,
    StreamResampler,
    audio_blocks,
    audio_info,
    decode_audio,
    decode_pcm,
)
from .bench import rss_mb
from .engine import Recognizer, Stream
from .models.base import CTCModel, warmup_batch_sizes
from .protocol import ConfigInvalid, parse_config
from .scheduler import BatchScheduler, Close, Session, error_json
from .streaming import ConfigError, StreamConfig

WEB_DIR = Path(__file__).resolve().parent / "web"
log = logging.getLogger(__name__)

OFFLINE_UPLOAD_MAX_S = 120.0
MAX_CHANNELS = 8  # in a config message and in an uploaded file
MIN_RATE, MAX_RATE = 4000, 192000  # sample rates of an uploaded file
UPLOAD = "the uploaded audio"  # how errors name an upload

# WebSocket close codes (RFC 6455 section 7.4.1)
POLICY = 1008  # a malformed or unexpected message, a bad token
TOO_BIG = 1009
TRY_LATER = 1013  # the server is at its stream limit


class ServerError(ValueError):
    """A server setting that cannot work (one-line message for the user)."""


@dataclass
class Limits:
    """What one client may use. Each has a ``phonestream serve`` flag of the same name."""

    max_message_bytes: int = 1 << 20  # one binary frame (1 MiB = 32 s of 16 kHz f32le)
    max_stream_s: float = 3600.0  # audio per stream
    max_streams: int = 64  # live streams at once; more get an error and close 1013
    idle_timeout_s: float = 30.0  # silence on the socket before it is closed
    max_upload_bytes: int = 50 << 20  # one HTTP upload
    min_chunk_ms: int = 80  # smallest chunk a client may ask for (tiny chunks cost many passes)
    max_window_ms: int = 10000  # largest left + chunk + right a client may ask for
    max_backlog_s: float = 10.0  # unprocessed audio per stream before the server stops reading it
    max_beam: int = 32  # largest beam a client may ask for (the beam search runs on the shared worker)


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    allow_insecure_bind: bool = False
    allow_origins: tuple[str, ...] = ()
    max_batch: int = 64
    max_wait_ms: float = 10.0
    limits: Limits = field(default_factory=Limits)
    max_connections: int = 1000  # open TCP connections at once (any kind); more are answered 503 and closed
    request_timeout_s: float = 10.0  # a connection must send a complete request head within this
    worker: int = 0  # this process's index among ``serve --workers`` (phonestream/workers.py)
    workers: int = 1


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: ServerSettings) -> None:
    """Refuse to expose the server beyond this machine without a token, unless told so explicitly.

    Raises:
        ServerError: a non-loopback host with neither ``--token`` nor ``--allow-insecure-bind``.
    """
    if not is_loopback(settings.host) and not settings.token and not settings.allow_insecure_bind:
        raise ServerError(f"--host {settings.host} would let anyone on the network use this server: pass "
                          "--token SECRET (clients then send 'Authorization: Bearer SECRET', browsers "
                          "?token=SECRET), or --allow-insecure-bind to do it without one")


class ProtocolError(Exception):
    """A client broke the protocol: report ``message`` and close with ``code``."""

    def __init__(self, message: str, code: int = POLICY) -> None:
        super().__init__(message)
        self.code = code


class UploadError(Exception):
    """An HTTP upload that cannot be used: report ``message`` with HTTP ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class StreamSpec:
    """A client's validated config message."""

    sample_rate: int
    dtype: np.dtype
    channels: int
    recognizer: Recognizer
    stream_options: dict[str, Any]
    expected: str | None = None  # the pronunciation check's text (Recognizer.check)
    threshold: float | None = None

    def new_stream(self) -> Stream:
        """The client's stream: checked against ``expected`` when the config gave one."""
        if self.expected is not None:
            return self.recognizer.check(self.expected, self.threshold, **self.stream_options)
        return self.recognizer.stream(**self.stream_options)


class App:
    """The ASGI application and the state it shares across connections."""

    def __init__(self, recognizer: Recognizer, settings: ServerSettings | None = None) -> None:
        self.recognizer = recognizer  # the server's defaults; each stream may override some options
        self.model: CTCModel = recognizer.model
        self.settings = settings or ServerSettings()
        self.limits = self.settings.limits
        self.default: StreamConfig = recognizer.config  # type: ignore[assignment]
        self.scheduler = BatchScheduler(self.model, self.settings.max_batch, self.settings.max_wait_ms / 1000)
        self.active = 0  # open live streams (connections past the stream-limit check)
        self.started = time.time()
        self.rejected_busy = 0
        self.allocator = memory.active_allocator()  # jemalloc when `phonestream serve` found it (memory.py)
        with contextlib.suppress(Exception):  # load a beam-search LM now, not on the event loop later
            recognizer.decoder_config(decoder="beam")
        routes = [
            Route("/", self.index),
            Route("/favicon.ico", lambda request: Response(status_code=204)),
            Route("/health", self.health),
            Route("/transcribe", self.transcribe, methods=["POST"]),
            WebSocketRoute("/ws", self.live),
            Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
        ]
        self.asgi = Starlette(routes=routes, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app):
        # Flat RSS over hours of streams (phonestream/memory.py): jemalloc/mimalloc need nothing, glibc
        # needs fewer arenas and a periodic trim.
        glibc = self.allocator == "system" and memory.tune_allocator()
        await asyncio.to_thread(self.warm_up)  # before the first client, so no stream pays for it
        self.scheduler.start()
        trimmer = asyncio.create_task(self._trim_memory()) if glibc else None
        try:
            yield
        finally:
            if trimmer is not None:
                trimmer.cancel()
            self.scheduler.stop()

    async def _trim_memory(self, every_s: float = 30.0) -> None:
        """Hand the heap's free pages back to the system every ``every_s`` seconds (off the event loop)."""
        while True:
            await asyncio.sleep(every_s)
            await asyncio.to_thread(memory.trim)

    async def __call__(self, scope, receive, send) -> None:
        await self.asgi(scope, receive, send)

    def warm_up(self) -> None:
        """Run the model once per batch size the scheduler will form (on a GPU, powers of two up to
        ``max_batch``: :func:`~phonestream.models.base.warmup_batch_sizes`) on the default window."""
        t0 = time.perf_counter()
        chunk, left, right = self.default.samples(self.model)
        sizes = warmup_batch_sizes(self.settings.max_batch, self.model.device)
        self.model.warmup(sizes, left + chunk + right)
        log.info("warmed up the model (%s, %s) for batches of %s windows in %.1f s", self.model.device,
                 self.model.precision, ",".join(map(str, sizes)), time.perf_counter() - t0)

    # -- access --------------------------------------------------------------------------------------

    def _authorized(self, conn: Request | WebSocket) -> bool:
        """The token from ``Authorization: Bearer`` (what ``phonestream client`` sends), else from
        ``?token=`` (all a browser's WebSocket can send; the access log redacts it)."""
        token = self.settings.token
        if not token:
            return True
        auth = conn.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else conn.query_params.get("token") or ""
        return hmac.compare_digest(given.encode(), token.encode())

    def _origin_ok(self, conn: Request | WebSocket) -> bool:
        """Browsers send Origin on WebSocket connections (not stopped by CORS) and on cross-site POSTs
        (a "simple" request reaches the server before CORS applies): accept only the allow-list. Never
        the Host header: a page on a DNS-rebound name sends a Host equal to its own Origin. Requests
        without an Origin are not from a web page (curl, ``phonestream client``)."""
        origin = conn.headers.get("origin")
        return origin is None or origin.rstrip("/").lower() in allowed_origins(self.settings)

    # -- HTTP ----------------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(WEB_DIR / "index.html")

    async def health(self, request: Request) -> Response:
        cfg = self.default
        return JSONResponse({
            "status": "ok" if self.scheduler.alive else "worker stopped",
            "model": self.model.description, "sample_rate": self.model.sample_rate,
            "chunk_ms": cfg.chunk_ms, "left_ms": cfg.left_ms, "right_ms": cfg.right_ms,
            "streams": self.active, "scheduler_sessions": self.scheduler.sessions,
            "batches": self.scheduler.batches, "windows": self.scheduler.windows,
            "largest_batch": self.scheduler.largest_batch, "model_busy_s": round(self.scheduler.busy_s, 3),
            "rejected_busy": self.rejected_busy, "uptime_s": round(time.time() - self.started, 1),
            "limits": asdict(self.limits), "token_required": bool(self.settings.token),
            "rss_mb": round(rss_mb(), 1), "allocator": self.allocator,
            "worker": self.settings.worker, "workers": self.settings.workers,
        }, status_code=200 if self.scheduler.alive else 503)

    async def transcribe(self, request: Request) -> Response:
        """``POST /transcribe``: an audio file (raw body, or multipart field ``file``) -> phonemes JSON.

        ``?mode=stream`` (default) runs it through the live engine, batched fairly with the live streams;
        ``?mode=offline`` decodes the whole file at once (the offline reference, one long model call).
        An upload holds one of the ``max_streams`` places while it runs, and its length and channels are
        checked from the file's header before any sample is decoded.
        """
        if not self._origin_ok(request):
            return _bad("a page from another origin may not use this server (see --allow-origin)", 403)
        if not self._authorized(request):
            return JSONResponse({"type": "error", "message": "missing or wrong token"}, status_code=401)
        mode = request.query_params.get("mode", "stream")
        if mode not in ("stream", "offline"):
            return _bad(f"unknown mode {mode!r}; use stream or offline")
        if self.active >= self.limits.max_streams:
            self.rejected_busy += 1
            return _bad(f"server busy: it already serves {self.limits.max_streams} streams and uploads "
                        "(its --max-streams); try again later", 503)
        self.active += 1
        try:
            data = await self._read_upload(request)
            info = audio_info(data, UPLOAD, self.limits.max_stream_s, MAX_CHANNELS)
            if not MIN_RATE <= info.sample_rate <= MAX_RATE:  # the rates a config message may give
                return _bad(f"the uploaded audio's sample rate {info.sample_rate} Hz is outside "
                            f"{MIN_RATE}-{MAX_RATE} Hz")
            if mode == "offline":
                if info.seconds is not None and info.seconds > OFFLINE_UPLOAD_MAX_S:
                    # one offline pass holds the shared model worker: keep it short, or the live streams stall
                    return _bad(f"mode=offline takes at most {OFFLINE_UPLOAD_MAX_S:g} s of audio; use mode=stream",
                                413)
                return await self._transcribe_offline(data)
            return await self._transcribe_stream(data, request)
        except UploadError as err:
            return _bad(str(err), err.status)
        except AudioTooLarge as err:
            return _bad(f"{err} (the server's --max-stream-s)", 413)
        except AudioError as err:
            return _bad(str(err))
        finally:
            self.active -= 1

    async def _transcribe_offline(self, data: bytes) -> Response:
        rate = self.model.sample_rate
        audio = await asyncio.to_thread(decode_audio, data, rate, name=UPLOAD, max_seconds=OFFLINE_UPLOAD_MAX_S,
                                        max_channels=MAX_CHANNELS)
        t0 = time.perf_counter()
        phonemes = await self.scheduler.run_job(lambda: self.recognizer.transcribe(audio))
        compute = time.perf_counter() - t0
        summary = {"mode": "offline", "model": self.model.description, "audio_s": round(len(audio) / rate, 3),
                   "compute_s": round(compute, 3), "phonemes": len(phonemes),
                   "phoneme_string": " ".join(p.phoneme for p in phonemes)}
        return JSONResponse({"phonemes": [p.to_dict() for p in phonemes], "summary": summary})

    async def _transcribe_stream(self, data: bytes, request: Request) -> Response:
        """An upload through the live engine, as one more stream of the scheduler. It is decoded a chunk at
        a time and kept only one window ahead of the model, so each batch holds at most one window of it
        and a long upload cannot delay the live streams by more than that. It stops as soon as the client
        hangs up (nobody would get the result)."""
        outbox: asyncio.Queue = asyncio.Queue()
        session = self.scheduler.open(self.recognizer.stream(partials=False), outbox)
        streamer = session.stream.streamer
        rate = self.model.sample_rate
        blocks = audio_blocks(data, rate, streamer.chunk / rate, name=UPLOAD, max_seconds=self.limits.max_stream_s,
                              max_channels=MAX_CHANNELS)
        collector = asyncio.create_task(_collect(outbox))
        try:
            while not session._closed:
                block = await asyncio.to_thread(next, blocks, None)
                if block is None:
                    self.scheduler.end(session)
                    break
                self.scheduler.feed(session, block)
                while session.unprocessed >= streamer.chunk + streamer.right and not session._closed:
                    await self.scheduler.wait_progress(session, 1.0)
                if await request.is_disconnected():
                    return Response(status_code=400)  # never delivered: the client is gone
            phonemes, summary, error = await collector
        finally:
            collector.cancel()
            with contextlib.suppress(ValueError):  # still running in its thread if this request was cancelled
                blocks.close()
            self.scheduler.close(session)
        if error is not None:
            return JSONResponse(error, status_code=500)
        return JSONResponse({"phonemes": phonemes, "summary": summary})

    async def _read_upload(self, request: Request) -> bytes:
        """The uploaded file's bytes.

        Raises:
            UploadError: too big (413, before reading when Content-Length says so), stalled (408: nothing
                for ``idle_timeout_s``, so a slow peer cannot hold a place), or a bad multipart form (400).
        """
        limit = self.limits.max_upload_bytes
        too_big = UploadError(f"upload exceeds the server's limit of {limit} bytes (--max-upload-mb)", 413)
        length = request.headers.get("content-length") or "0"
        if not length.isdigit():
            raise UploadError(f"bad Content-Length {length[:40]!r}")
        if int(length) > limit:
            raise too_big
        body = bytearray()
        pieces = request.stream().__aiter__()
        while True:
            try:
                piece = await asyncio.wait_for(pieces.__anext__(), self.limits.idle_timeout_s)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise UploadError(f"upload stalled: nothing received for {self.limits.idle_timeout_s:g} s "
                                  "(the server's --idle-timeout-s)", 408) from None
            body += piece
            if len(body) > limit:
                raise too_big
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async def replay():
                return {"type": "http.request", "body": bytes(body), "more_body": False}

            form = await Request(request.scope, replay).form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise UploadError("multipart upload needs a file field named 'file'")
            return await upload.read()
        return bytes(body)

    # -- WebSocket -----------------------------------------------------------------------------------

    async def live(self, ws: WebSocket) -> None:
        """One live stream, from handshake to close."""
        if not self._authorized(ws) or not self._origin_ok(ws):
            await ws.close(POLICY)  # before accept: the client sees HTTP 403
            return
        await ws.accept()
        if self.active >= self.limits.max_streams:
            self.rejected_busy += 1
            await _send_error_and_close(ws, f"server busy: it already serves {self.limits.max_streams} streams "
                                            "(its --max-streams); try again later", TRY_LATER)
            return
        self.active += 1
        session: Session | None = None
        outbox: asyncio.Queue = asyncio.Queue()
        try:
            await ws.send_text(_dumps(self._hello()))
            spec, stream = self._parse_config(await self._receive(ws, expect_config=True))
            session = self.scheduler.open(stream, outbox)
            cfg = spec.recognizer.config
            await ws.send_text(_dumps({"type": "ready", "stream_id": session.id, "sample_rate": spec.sample_rate,
                                           "model_sample_rate": self.model.sample_rate, "chunk_ms": cfg.chunk_ms,
                                           "left_ms": cfg.left_ms, "right_ms": cfg.right_ms}))
            sender = asyncio.create_task(_pump(ws, outbox, self.limits.idle_timeout_s))
            receiver = asyncio.create_task(self._receive_audio(ws, spec, session, outbox))
            await sender  # ends after the summary, an error, or a disconnect
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        except ProtocolError as err:
            await _send_error_and_close(ws, str(err), err.code)
        except (WebSocketDisconnect, ConnectionError):
            pass
        finally:
            self.scheduler.close(session)
            self.active -= 1

    def _hello(self) -> dict[str, Any]:
        cfg = self.default
        return {"type": "hello", "sample_rate": self.model.sample_rate, "formats": list(PCM_FORMATS),
                "chunk_ms": cfg.chunk_ms, "left_ms": cfg.left_ms, "right_ms": cfg.right_ms,
                "model": self.model.description, "limits": asdict(self.limits)}

    async def _receive(self, ws: WebSocket, expect_config: bool = False) -> dict[str, Any] | bytes:
        """The next message: parsed JSON object or bytes. Raises ProtocolError / WebSocketDisconnect."""
        try:
            message = await asyncio.wait_for(ws.receive(), self.limits.idle_timeout_s)
        except asyncio.TimeoutError:
            raise ProtocolError(f"idle for {self.limits.idle_timeout_s:g} s (the server's --idle-timeout-s)") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            data = message["bytes"]
            if expect_config:
                raise ProtocolError("audio before config: send the JSON config message first")
            if len(data) > self.limits.max_message_bytes:
                raise ProtocolError(f"binary frame of {len(data)} bytes exceeds the server's limit of "
                                    f"{self.limits.max_message_bytes} (--max-message-bytes)", TOO_BIG)
            return data
        text = message.get("text") or ""
        if len(text.encode()) > self.limits.max_message_bytes:
            raise ProtocolError(f"text message exceeds the server's limit of {self.limits.max_message_bytes} bytes",
                                TOO_BIG)
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise ProtocolError(f"bad JSON in text message: {text[:80]!r}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise ProtocolError('a text message must be a JSON object with a "type"')
        if expect_config and obj["type"] != "config":
            raise ProtocolError(f'expected a "config" message first, got {obj["type"]!r}')
        return obj

    def _parse_config(self, msg: dict[str, Any]) -> tuple[StreamSpec, Stream]:
        """Validate a config message against its declared schema (:mod:`phonestream.protocol`) and the
        server's limits, then build the client's stream, which lets the engine check the rest."""
        try:
            cfg = parse_config(msg)
            default = self.default if cfg.latency is None else StreamConfig.for_model(self.model, latency=cfg.latency)
            windows = cfg.check_limits(default, min_chunk_ms=self.limits.min_chunk_ms,
                                       max_window_ms=self.limits.max_window_ms, max_beam=self.limits.max_beam)
        except ConfigInvalid as err:
            raise ProtocolError(str(err)) from None
        stream_options = cfg.stream_options()
        try:
            recognizer = dataclasses.replace(self.recognizer, config=windows, **cfg.recognizer_options())
            stream = recognizer.stream(**stream_options)  # the engine's own checks (frame stride, model limits, LM)
        except (ConfigError, ValueError) as err:
            raise ProtocolError(f"bad config: {str(err).replace('--', '').replace('-ms', '_ms')}") from None
        rate = self.model.sample_rate if cfg.sample_rate is None else cfg.sample_rate
        spec = StreamSpec(rate, PCM_FORMATS[cfg.format], cfg.channels, recognizer, stream_options, cfg.expected,
                          cfg.threshold)
        if cfg.expected is not None:
            try:
                stream = spec.new_stream()  # the text's own checks: words, dictionary, the model's phonemes
            except ValueError as err:
                raise ProtocolError(f"bad config: expected: {err}") from None
        return spec, stream

    async def _receive_audio(self, ws: WebSocket, spec: StreamSpec, session: Session, outbox: asyncio.Queue) -> None:
        """Read audio frames into the scheduler until the end message; errors go to the outbox."""
        convert = StreamResampler(spec.sample_rate, self.model.sample_rate)
        frame_bytes = spec.dtype.itemsize * spec.channels
        max_samples = int(self.limits.max_stream_s * spec.sample_rate)
        streamer = session.stream.streamer
        max_backlog = max(int(self.limits.max_backlog_s * self.model.sample_rate),
                          2 * (streamer.chunk + streamer.left + streamer.right))
        received = 0
        try:
            while True:
                message = await self._receive(ws)
                if isinstance(message, dict):
                    if message["type"] == "end":
                        self.scheduler.feed(session, convert(np.zeros(0, np.float32), last=True))
                        self.scheduler.end(session)
                        return
                    if message["type"] == "config":
                        raise ProtocolError("config already sent: one config message per stream")
                    raise ProtocolError(f"unexpected message type {message['type']!r}; expected audio or end")
                if len(message) % frame_bytes:
                    raise ProtocolError(f"binary frame of {len(message)} bytes is not a whole number of "
                                        f"{spec.channels}-channel {spec.dtype.itemsize * 8}-bit samples")
                received += len(message) // frame_bytes
                if received > max_samples:
                    raise ProtocolError(f"stream exceeds the server's limit of {self.limits.max_stream_s:g} s of "
                                        "audio (--max-stream-s)", TOO_BIG)
                self.scheduler.feed(session, convert(decode_pcm(message, spec.dtype, spec.channels)))
                while session.unprocessed > max_backlog and not session._closed:
                    # backpressure: stop reading this socket until the model catches up
                    await self.scheduler.wait_progress(session, 1.0)
        except ProtocolError as err:
            self.scheduler.close(session)
            outbox.put_nowait(error_json(str(err)))
            outbox.put_nowait(Close(err.code))
        except (WebSocketDisconnect, ConnectionError, RuntimeError):
            self.scheduler.close(session)  # the client went away: free its state now
            outbox.put_nowait(Close(None))


async def _pump(ws: WebSocket, outbox: asyncio.Queue, send_timeout_s: float) -> None:
    """Send the outbox's JSON events until a Close (the only task that sends after the handshake). A
    peer that stops reading is dropped once one send has waited ``send_timeout_s``."""
    while True:
        item = await outbox.get()
        try:
            if isinstance(item, Close):
                if item.code is not None:
                    await asyncio.wait_for(ws.close(item.code, item.reason), send_timeout_s)
                return
            await asyncio.wait_for(ws.send_text(item), send_timeout_s)
        except (WebSocketDisconnect, ConnectionError, RuntimeError, asyncio.TimeoutError):
            return


async def _send_error_and_close(ws: WebSocket, message: str, code: int) -> None:
    try:
        await ws.send_text(error_json(message))
        await ws.close(code)
    except (WebSocketDisconnect, ConnectionError, RuntimeError):
        pass


def allowed_origins(settings: ServerSettings) -> set[str]:
    """Web origins whose pages may use the server: its own page at the address it listens on (all the
    loopback names when it listens on loopback; those plus this machine's name and addresses when it
    listens on every address) plus ``--allow-origin``."""
    host = settings.host.strip("[]").lower()
    everywhere = host in ("0.0.0.0", "::", "")
    hosts = _machine_names() if everywhere else {host}
    if everywhere or is_loopback(host):
        hosts |= {"127.0.0.1", "localhost", "::1"}
    origins = {o.rstrip("/").lower() for o in settings.allow_origins}
    for h in hosts:
        netloc = f"[{h}]" if ":" in h else h
        origins.add(f"http://{netloc}:{settings.port}")
        if settings.port == 80:
            origins.add(f"http://{netloc}")
    return origins


@functools.lru_cache(maxsize=1)
def _machine_names() -> frozenset[str]:
    """This machine's host name, full name and the addresses they resolve to (looked up once)."""
    import socket

    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    for name in list(names):
        with contextlib.suppress(OSError):
            names |= {info[4][0] for info in socket.getaddrinfo(name, None)}
    return frozenset(n for n in names if n)


def _dumps(obj: dict[str, Any]) -> str:
    """Compact JSON, as the events are (phonestream.events.to_json)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"type": "error", "message": message}, status_code=status)


async def _collect(outbox: asyncio.Queue) -> tuple[list[dict], dict | None, dict | None]:
    """An upload's phoneme events, its summary and its error event (if any), up to the Close."""
    phonemes, summary, error = [], None, None
    while not isinstance(item := await outbox.get(), Close):
        event = json.loads(item)
        if event["type"] == "phoneme":
            phonemes.append(event)
        elif event["type"] == "summary":
            summary = event
        elif event["type"] == "error":
            error = event
    return phonemes, summary, error


def uvicorn_server(app: App, log_level: str = "info"):
    """A ``uvicorn.Server`` for the app with its settings (``.run()`` serves until stopped): connections
    bounded and timed out (:func:`guarded_http_protocol`), tokens redacted from the logs and repeated
    warnings rate-limited.

    Raises:
        ServerError: the bind is not allowed (see :func:`check_bind`).
    """
    import uvicorn

    settings = app.settings
    check_bind(settings)
    max_connections = _reserve_file_descriptors(settings.max_connections)
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level, lifespan="on",
        http=guarded_http_protocol(max_connections, settings.request_timeout_s),
        # no keepalive pings: while a stream is held back (backpressure) its socket is not read, so pongs
        # would go unread and a stream that is merely behind would be closed; dead peers are caught by the
        # idle timeout (receiving) and the send timeout in _pump (a peer that stops reading)
        ws_max_size=uvicorn_ws_max_size(settings.limits), ws_ping_interval=None, ws_ping_timeout=None,
        timeout_keep_alive=5, timeout_graceful_shutdown=5))
    install_log_filters()  # after uvicorn.Config, which configures its loggers
    return server


class RedactTokens(logging.Filter):
    """Replaces the value of ``token=`` in logged request lines with ``***``: a browser's WebSocket can
    only send the token in the query string, and uvicorn logs the path with its query."""

    PATTERN = re.compile(r"((?:^|[?&])token=)[^&\s\"]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "token=" in record.msg.lower():
            record.msg = self.PATTERN.sub(r"\1***", record.msg)
        return True


class RateLimit(logging.Filter):
    """Lets a warning or error with the same message through at most ``burst`` times per ``window_s``
    seconds, then notes how many were left out, so hostile clients (bad requests, a flood of
    connections) cannot fill the disk with the same line."""

    def __init__(self, burst: int = 5, window_s: float = 60.0) -> None:
        super().__init__()
        self.burst, self.window_s = burst, window_s
        self._seen: dict[tuple[str, str], list] = {}  # (logger, message) -> [window start, count, left out]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = time.monotonic()
        if len(self._seen) > 1000:  # bounded: forget old windows
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
        entry = self._seen.setdefault((record.name, str(record.msg)), [now, 0, 0])
        if now - entry[0] >= self.window_s:
            if entry[2]:
                record.msg = f"{record.msg} ({entry[2]} more like this in the last {self.window_s:g} s not logged)"
            entry[:] = [now, 0, 0]
        entry[1] += 1
        if entry[1] > self.burst:
            entry[2] += 1
            return False
        return True


def install_log_filters() -> None:
    """Add :class:`RedactTokens` and :class:`RateLimit` to uvicorn's and asyncio's loggers (once)."""
    for name in ("uvicorn.access", "uvicorn.error", "asyncio", "phonestream.server"):
        logger = logging.getLogger(name)
        for kind in (RedactTokens, RateLimit):
            if not any(isinstance(f, kind) for f in logger.filters):
                logger.addFilter(kind())


def _reserve_file_descriptors(max_connections: int) -> int:
    """Raise the soft open-file limit so ``max_connections`` fit below it with room to spare (the server
    stays able to accept and answer /health); if the hard limit is too low, fewer connections."""
    try:
        import resource
    except ImportError:  # not on this platform: trust the setting
        return max_connections
    spare = 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + spare
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < want:
        fewer = max(1, soft - spare)
        log.warning("the open-file limit (%d) allows %d connections, not --max-connections %d",
                    soft, fewer, max_connections)
        return fewer
    return max_connections


def guarded_http_protocol(max_connections: int, request_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (h11) with two guards against peers that hold connections open:

    - at most ``max_connections`` open at once (HTTP and WebSocket): the next one is answered
      ``503`` and closed before it costs anything, so file descriptors never run out;
    - a connection must send a complete request head within ``request_timeout_s`` of opening (or of
      its previous response): silent peers and half-sent handshakes are closed. Once a WebSocket is
      open, the app's idle timeout and the pings take over.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = error_json(f"server busy: {max_connections} connections open; try again later").encode()
    busy = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    class GuardedH11Protocol(H11Protocol):
        _guard: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refused a connection: %d open (--max-connections)", max_connections)
                transport.write(busy)
                transport.close()
                return
            self._seen_scope = None
            self._guard = self.loop.call_later(request_timeout_s, self._check_request)

        def _check_request(self) -> None:
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # closed, or upgraded to a WebSocket
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and self.scope is self._seen_scope:  # no new request head for a whole period
                log.debug("closed a connection that sent no request for %g s", request_timeout_s)
                self.transport.close()
                return
            self._seen_scope = self.scope
            self._guard = self.loop.call_later(request_timeout_s, self._check_request)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._guard is not None:
                self._guard.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_ws_max_size(limits: Limits) -> int:
    """Frames up to 4x the message limit reach the app, which answers them with an error event; larger
    ones are cut off by the WebSocket layer itself (close 1009) before they are buffered."""
    return 4 * limits.max_message_bytes + 4096


__all__ = ["App", "Limits", "ServerError", "ServerSettings", "check_bind", "uvicorn_server"]
