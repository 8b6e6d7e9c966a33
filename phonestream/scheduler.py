"""Cross-stream batching: one worker thread runs the model for every live stream of a server.

Each live stream (a :class:`Session`) is fed audio by the event loop; the worker thread owns every
:class:`~phonestream.engine.Stream` and is the only thread that touches one. Its loop, in order:

1. take the sessions that received enough audio for a window (or an end request) since the last
   round, push the audio into their streams and collect the windows that became ready (a session is
   not looked at for every piece of audio it gets, only when its next window can be cut: pushing
   20 ms pieces one by one cost the worker more than decoding);
2. once any window is ready, wait at most ``max_wait_s`` for other streams' windows so they share the
   forward pass, and stop collecting at ``max_batch`` windows (the rest wait for the next round, so one
   stream sent as fast as possible cannot starve the live ones);
3. run **one** ``model.log_probs_from`` (the frames the streams read) over all collected windows (it
   groups equal-length windows, which live streams with the same settings produce, into single forward
   passes);
4. hand each stream its own outputs (``Stream.apply``) and post the events back to the event loop:
   the round's events of every stream go in **one** ``call_soon_threadsafe`` per event loop, as event
   objects; the loop encodes them to JSON and fills the outboxes (a wake-up of the loop per event, and
   the encoding, cost the worker as much as the rest of a window's work together).

Inference therefore never runs on the event loop, and a slow batch only delays events, never drops
audio: sessions report how much audio is still unprocessed so the server can stop reading a socket
that runs too far ahead (backpressure) instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .decoding import FrameSummary, summarize_frames
from .engine import Stream
from .events import to_json
from .models.base import CTCModel
from .streaming import Window

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Close:
    """Outbox item: the stream is over; close the connection with ``code`` (None: already gone)."""

    code: int | None = 1000
    reason: str = ""


@dataclass
class Session:
    """One stream as the scheduler sees it. Events reach ``outbox`` on ``loop`` as JSON text, in order,
    ending with a :class:`Close`."""

    stream: Stream
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue
    id: int = 0
    received: int = 0  # samples handed to the scheduler (event-loop side)
    processed: int = 0  # samples whose frames are final (worker side)
    # -- worker-side state -------------------------------------------------------------------------
    _audio: collections.deque = field(default_factory=collections.deque)
    _queued: int = 0  # samples in _audio
    _need: int = 0  # samples _audio must hold before the next window can be cut (0: look at every piece)
    _backlog: list[Window] = field(default_factory=list)
    _in_batch: bool = False
    _end: bool = False
    _closed: bool = False
    _progress: asyncio.Event | None = None
    _out: list = field(default_factory=list)  # worker side: items for the outbox, sent at the end of the round
    _moved: bool = False  # worker side: ``processed`` advanced this round

    @property
    def unprocessed(self) -> int:
        """Samples received but not yet through the model."""
        return self.received - self.processed

    def _deliver(self, items: list) -> None:
        """On the event loop: the worker's items into the outbox, events encoded to JSON."""
        put = self.outbox.put_nowait
        for item in items:
            put(item if isinstance(item, (str, Close)) else to_json(item))


class BatchScheduler:
    """Runs the model for many streams in one worker thread, batching windows across streams.

    Args:
        model: the loaded model every session's stream uses.
        max_batch: most windows in one ``log_probs_batch`` call.
        max_wait_s: how long the first ready window may wait for others to join its batch.
    """

    def __init__(self, model: CTCModel, max_batch: int = 64, max_wait_s: float = 0.01) -> None:
        if max_batch < 1:
            raise ValueError(f"max batch must be at least 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max wait must be zero or more, got {max_wait_s}")
        self.model = model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._dirty: collections.OrderedDict[int, Session] = collections.OrderedDict()  # round robin across sessions
        self._jobs: collections.deque = collections.deque()
        self._sessions: dict[int, Session] = {}
        self._next_id = 1
        self._outgoing: dict[int, Session] = {}  # worker side: sessions with items or progress to send
        self._wake_at = 1  # ready sessions that wake the worker (more while it gathers a batch until its deadline)
        self._stop = False
        self._thread: threading.Thread | None = None
        # counters for /health and the load test
        self.batches = 0
        self.windows = 0
        self.largest_batch = 0
        self.skipped = 0  # silent windows decoded without the model
        self.busy_s = 0.0  # in batches: silence checks and the forward passes
        # (seconds so far, start of the span in progress or None), replaced whole so that another thread
        # reads a consistent pair: the worker doing anything (not waiting for audio), and in forward passes
        self._worker_busy: tuple[float, float | None] = (0.0, None)
        self._model_busy: tuple[float, float | None] = (0.0, None)
        self.worker_cpu_s = 0.0  # CPU time of the worker thread

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (once; later calls do nothing)."""
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="phonestream-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def worker_s(self) -> float:
        """Seconds the worker has spent doing anything (not waiting for audio), the current round included."""
        return _so_far(self._worker_busy)

    @property
    def model_s(self) -> float:
        """Seconds the worker has spent in forward passes, the current one included."""
        return _so_far(self._model_busy)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def sessions(self) -> int:
        """Streams the worker still holds state for."""
        with self._cond:
            return len(self._sessions)

    # -- called from the event loop ----------------------------------------------------------------

    def open(self, stream: Stream, outbox: asyncio.Queue) -> Session:
        self.start()
        with self._cond:
            session = Session(stream, asyncio.get_running_loop(), outbox, id=self._next_id)
            session._progress = asyncio.Event()
            self._next_id += 1
            self._sessions[session.id] = session
        return session

    def feed(self, session: Session, samples: np.ndarray) -> None:
        """Queue audio (mono float32 at the model's rate) for a session."""
        if not len(samples):
            return
        with self._cond:
            session._audio.append(samples)
            session.received += len(samples)
            session._queued += len(samples)
            if session._queued >= session._need:
                self._mark(session)

    def end(self, session: Session) -> None:
        """No more audio: decode the tail, then post the summary and ``Close(1000)``."""
        with self._cond:
            session._end = True
            self._mark(session)

    def close(self, session: Session | None) -> None:
        """Forget a session now (disconnect, error): its queued audio and pending windows are dropped."""
        if session is None:
            return
        with self._cond:
            session._closed = True
            session._audio.clear()
            session._backlog = []
            self._sessions.pop(session.id, None)
            self._dirty.pop(session.id, None)

    async def wait_progress(self, session: Session, timeout: float) -> None:
        """Wait until the worker has processed more of this session's audio (or ``timeout``)."""
        assert session._progress is not None
        session._progress.clear()
        try:
            await asyncio.wait_for(session._progress.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def run_job(self, func: Callable[[], Any]) -> Any:
        """Run ``func`` on the worker thread between batches (e.g. an offline transcription)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._cond:
            self._jobs.append((func, loop, future))
            self._cond.notify()
        return await future

    def _mark(self, session: Session) -> None:
        if not session._closed and session.id not in self._dirty:
            self._dirty[session.id] = session
            if len(self._dirty) >= self._wake_at:
                self._cond.notify()

    # -- the worker thread -------------------------------------------------------------------------

    def _loop(self) -> None:
        batch: list[tuple[Session, list[Window]]] = []
        size = 0
        deadline: float | None = None
        while True:
            with self._cond:
                # idle: wake for the first ready session; gathering a batch: only at its deadline or
                # once enough sessions are ready to fill it (a round per arriving session cost more
                # than the batch's decoding)
                self._wake_at = 1 if deadline is None else self.max_batch - size
                while not self._stop and not self._jobs and len(self._dirty) < self._wake_at:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._stop:
                    self._flush()
                    return
                started, started_cpu = time.perf_counter(), time.thread_time()
                self._worker_busy = (self._worker_busy[0], started)
                jobs, self._jobs = list(self._jobs), collections.deque()
                # no more sessions than the batch has room for: the others stay first in line for the next
                # round (looking at every ready session and deferring most was quadratic once streams
                # outnumbered the batch)
                dirty = [self._dirty.popitem(last=False)[1]
                         for _ in range(min(len(self._dirty), max(1, self.max_batch - size)))]
                # take each session's audio while holding the lock; push it outside
                taken = [(s, list(s._audio)) for s in dirty]
                for s in dirty:
                    s._audio.clear()
                    s._queued = 0
            for func, loop, future in jobs:
                self._run_job(func, loop, future)
            deferred = []
            waiting = []  # sessions that need more audio for their next window
            for session, audio in taken:
                if session._closed:
                    continue
                try:
                    if audio:
                        session.stream.push(np.concatenate(audio) if len(audio) > 1 else audio[0])
                    if session._in_batch:
                        continue  # looked at again once its windows are done
                    if size >= self.max_batch:
                        deferred.append(session)  # the batch is full: next round
                        continue
                    taken_windows = self._collect(session, self.max_batch - size)
                except Exception:  # noqa: BLE001 - a broken stream must not stop the worker
                    self._fail(session, "stream failed while taking its audio", log=True)
                    continue
                if taken_windows:
                    batch.append((session, taken_windows))
                    size += len(taken_windows)
                elif not session._end and not session._closed:
                    waiting.append(session)
            if size and deadline is None:
                deadline = time.monotonic() + self.max_wait_s
            if size and (size >= self.max_batch or time.monotonic() >= deadline):  # type: ignore[operator]
                self._execute(batch, size)
                deferred.extend(s for s, _ in batch)
                batch, size, deadline = [], 0, None
            if deferred or waiting:
                with self._cond:
                    for s in deferred:
                        self._mark(s)
                    for s in waiting:
                        s._need = s.stream.streamer.missing
                        if s._queued >= s._need:  # it came while the worker was busy
                            self._mark(s)
            self._flush()
            self._worker_busy = (self._worker_busy[0] + time.perf_counter() - started, None)
            self.worker_cpu_s += time.thread_time() - started_cpu

    def _collect(self, session: Session, capacity: int) -> list[Window]:
        """Up to ``capacity`` (> 0) of the session's ready windows; finishes the session when it is done."""
        stream = session.stream
        if not session._backlog:
            if session._end and not stream.finished:
                with self._cond:
                    more_audio = bool(session._audio)
                if more_audio:  # audio arrived together with the end request: push it first
                    return []
                stream.end_input()
            session._backlog = stream.ready_windows()
        if not session._backlog:
            if stream.finished:
                self._finish(session)
            return []
        windows, session._backlog = session._backlog[:capacity], session._backlog[capacity:]
        session._in_batch = True
        return windows

    def _execute(self, batch: list[tuple[Session, list[Window]]], size: int) -> None:
        """Run one batch. Whatever goes wrong with one stream (its options, its audio, its decoder) fails
        that stream only: the batch's other streams get their results."""
        t0 = time.perf_counter()
        jobs: list[tuple[Session, list[Window], list[np.ndarray | None]]] = []
        for session, windows in batch:
            session._in_batch = False
            try:
                # windows the engine decodes without the model (silence) stay out of the forward pass
                jobs.append((session, windows, [session.stream.silent_output(w) for w in windows]))
            except Exception:  # noqa: BLE001 - this stream's problem, not the batch's
                self._fail(session, "stream failed while checking its audio for silence", log=True)
        silent = {session.id: sum(out is not None for out in outs) for session, _, outs in jobs}
        todo = [(outs, k) for _, _, outs in jobs for k, out in enumerate(outs) if out is None]
        run = [windows[k] for _, windows, outs in jobs for k, out in enumerate(outs) if out is None]
        failed: set[int] = set()
        if todo:
            try:
                results = self._forward(run)
            except Exception:  # noqa: BLE001 - find the stream that broke the pass: run each alone
                _log.warning("a batch of %d windows failed; running its streams one by one", len(todo),
                             exc_info=True)
                results = []
                for session, windows, outs in jobs:
                    mine = [w for w, out in zip(windows, outs) if out is None]
                    try:
                        results += self._forward(mine) if mine else []
                    except Exception:  # noqa: BLE001
                        failed.add(session.id)
                        results += [None] * len(mine)  # type: ignore[list-item]
                        self._fail(session, "model failed on this stream's audio", log=True)
            for (outs, k), out in zip(todo, results):
                outs[k] = out
        seconds = time.perf_counter() - t0
        if todo:
            self.batches += 1
            self.windows += len(todo)
            self.largest_batch = max(self.largest_batch, len(todo))
        self.skipped += size - len(todo)
        self.busy_s += seconds
        frames = self._summaries(jobs, failed)
        for session, windows, outs in jobs:
            if session._closed or session.id in failed:
                continue
            session.stream.skipped_windows += silent[session.id]
            try:
                # each stream is charged its share of the batch's compute, so its summary's rtf is
                # what the stream cost the server
                events = session.stream.apply(windows, outs, seconds * len(windows) / size,  # type: ignore[arg-type]
                                              frames.get(session.id))
            except Exception:  # noqa: BLE001
                self._fail(session, "stream failed while decoding", log=True)
                continue
            streamer = session.stream.streamer
            session.processed = min(session.received, streamer.next_frame * streamer.stride)
            session._out += events
            session._moved = True
            self._outgoing[session.id] = session

    def _summaries(self, jobs: list[tuple[Session, list[Window], list[np.ndarray | None]]],
                   failed: set[int]) -> dict[int, list[FrameSummary]]:
        """The greedy symbol, its posterior and the silence of every frame of the batch, in one pass per
        window shape (:func:`~phonestream.decoding.summarize_frames`), per session id. An output the pass
        cannot take (a model that broke its contract) leaves every stream to compute its own."""
        outputs = [out for session, _, outs in jobs if session.id not in failed for out in outs]
        try:
            summaries = iter(summarize_frames(outputs, self.model.vocab))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - each stream then meets its own output's problem alone
            return {}
        return {session.id: [next(summaries) for _ in outs] for session, _, outs in jobs if session.id not in failed}

    def _forward(self, windows: list[Window]) -> list[np.ndarray]:
        """One ``log_probs_from`` (the frames the streams read), checked to give one output per window."""
        t0 = time.perf_counter()
        self._model_busy = (self._model_busy[0], t0)
        try:
            outputs = list(self.model.log_probs_from([w.audio for w in windows], [w.needed_from for w in windows]))
        finally:
            self._model_busy = (self._model_busy[0] + time.perf_counter() - t0, None)
        if len(outputs) != len(windows):
            raise RuntimeError(f"the model gave {len(outputs)} outputs for {len(windows)} windows")
        return outputs

    def _post(self, session: Session, *items: Any) -> None:
        """Queue items for the session's outbox; they leave with the round's other events (:meth:`_flush`)."""
        session._out += items
        self._outgoing[session.id] = session

    def _flush(self) -> None:
        """Send the round's items: one ``call_soon_threadsafe`` per event loop, in the order the sessions
        got them (each session's own items keep their order)."""
        if not self._outgoing:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Session, list, bool]]] = {}
        for session in self._outgoing.values():
            by_loop.setdefault(session.loop, []).append((session, session._out, session._moved))
            session._out, session._moved = [], False
        self._outgoing = {}
        for loop, parcels in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver_all, parcels)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

    def _finish(self, session: Session) -> None:
        """Every window is applied: the engine's own last events (``Stream.conclude``: the open phoneme,
        the end-of-stream endpoint, the summary), then ``Close(1000)``."""
        session.processed = session.received
        self._post(session, *session.stream.conclude(offline=False), Close(1000))
        self.close(session)

    def _fail(self, session: Session, message: str, log: bool = False) -> None:
        """End one session with an error event and close 1011; ``log`` records the exception being
        handled (the client gets only ``message``, never Python internals)."""
        if log:
            _log.error("stream %d: %s", session.id, message, exc_info=True)
        self._post(session, error_json(message), Close(1011, "internal error"))
        self.close(session)

    @staticmethod
    def _run_job(func: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> None:
        def settle(ok: bool, value: Any) -> None:
            if not future.done():
                future.set_result(value) if ok else future.set_exception(value)

        try:
            result, ok = func(), True
        except Exception as err:  # noqa: BLE001 - handed to the awaiting coroutine
            result, ok = err, False
        try:
            loop.call_soon_threadsafe(settle, ok, result)
        except RuntimeError:
            pass


def _so_far(busy: tuple[float, float | None]) -> float:
    total, since = busy
    return total if since is None else total + time.perf_counter() - since


def _deliver_all(parcels: list[tuple[Session, list, bool]]) -> None:
    """On the event loop: one round's items for each session, and a wake-up for those that progressed."""
    for session, items, moved in parcels:
        if items:
            session._deliver(items)
        if moved and session._progress is not None:
            session._progress.set()


def error_json(message: str) -> str:
    """The error event: ``{"type": "error", "message": ...}``."""
    return json.dumps({"type": "error", "message": message}, ensure_ascii=False, separators=(",", ":"))
