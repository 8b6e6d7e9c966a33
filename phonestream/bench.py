"""Benchmark: real-time factor, per-chunk latency, emission delay and memory of streaming.

Two measurements:

- :func:`run`: one stream as fast as possible (real-time factor, per-chunk compute, emission delay,
  memory);
- :func:`run_streams`: N simulated real-time streams fed into the server's own
  :class:`~phonestream.scheduler.BatchScheduler`, in process (no sockets): the windows per second its
  worker sustains, how busy it is in and outside the model, lag and emission delay, and whether the N
  streams keep up. With the zero-cost :class:`~phonestream.models.null.NullModel` this is the cost of
  everything around the model.

Compute does not depend on the weights, so without a model the benchmark uses a randomly initialised
wav2vec2-base-sized CTC model (94M parameters). The audio is the shipped sample recording, looped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .audio import load_audio
from .decoding import DEFAULT_LOOKAHEAD
from .engine import Recognizer
from .metrics import stats
from .models import random_base_model
from .models.base import LATENCY_PRESETS, CTCModel, StreamingDefaults, warmup_batch_sizes
from .scheduler import BatchScheduler, Close
from .streaming import StreamConfig

SAMPLE = Path(__file__).resolve().parent / "samples" / "LJ001-0001.flac"


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def looped(audio: np.ndarray, total: int, piece: int) -> Iterator[np.ndarray]:
    """``total`` samples of ``audio`` repeated, in pieces, without ever holding more than one copy."""
    sent, pos = 0, 0
    while sent < total:
        n = min(piece, total - sent, len(audio) - pos)
        yield audio[pos : pos + n]
        sent += n
        pos = (pos + n) % len(audio)


def decoder_label(recognizer: Recognizer) -> str:
    """The decoder ``recognizer``'s streams run, as bench's tables name it: ``greedy``, ``beam``, ``beam+lm``,
    with ``+lookahead`` for the beam's lookahead commit (greedy has none)."""
    d = recognizer.decoder_config()
    if d.kind == "greedy":
        return "greedy"
    lm = d.lm_path(recognizer.model_dir) is not None
    return ("beam+lm" if lm else "beam") + ("+lookahead" if d.lookahead else "")


def run(model: CTCModel, config: StreamConfig, seconds: float, feed_ms: int = 20,
        offline: bool = True, audio: np.ndarray | None = None, decoder: str = "auto",
        lookahead: bool = DEFAULT_LOOKAHEAD) -> dict[str, Any]:
    """Stream ``seconds`` of audio as fast as possible with ``decoder`` (``auto``, ``greedy``, ``beam``;
    ``lookahead``: the beam's lookahead commit); returns the stream summary and memory figures.

    Memory (RSS) is read after the first minute of audio and at the end, so a growth shows.
    """
    recognizer = Recognizer(model, config, decoder=decoder, lookahead=lookahead)
    sr = model.sample_rate
    audio = load_audio(SAMPLE, sr) if audio is None else audio
    model.warmup(window=sum(config.samples(model)))  # the stream's own window shape, so no run pays for it
    stream = recognizer.stream(keep_phonemes=False, partials=False)
    total = int(seconds * sr)
    rss_first = None
    cpu0 = time.process_time()
    for piece in looped(audio, total, max(1, sr * feed_ms // 1000)):
        stream.accept(piece)
        if rss_first is None and stream.stats.audio_samples >= 60 * sr:
            rss_first = rss_mb()
    stream.finish(offline=False)
    cpu = time.process_time() - cpu0
    result = stream.summary()
    # CPU seconds of the whole process (all its threads) per audio second: unlike the wall-clock RTF it does
    # not count time the host gave to others, so on a shared CPU it says whether the model or the host moved
    result["cpu_rtf"] = round(cpu / result["audio_s"], 4) if result["audio_s"] else None
    result["decoder"] = decoder_label(recognizer)
    result["rss_mb_first_minute"] = round(rss_first, 1) if rss_first is not None else None
    result["rss_mb_end"] = round(rss_mb(), 1)
    if offline:
        clip = np.resize(audio, min(total, int(30 * sr)))  # one offline pass over up to 30 s
        recognizer.transcribe(clip[: sr])  # warm the offline shape too
        t0 = time.perf_counter()
        recognizer.transcribe(clip)
        result["offline_rtf"] = round((time.perf_counter() - t0) / (len(clip) / sr), 4)
    return result


def run_repeated(model: CTCModel, configs: list[StreamConfig], repeat: int, seconds: float,
                 **options: Any) -> list[tuple[StreamConfig, dict[str, Any]]]:
    """:func:`run` each config ``repeat`` times, the configs taking turns (A B A B ...), so that a host whose
    speed drifts slows them alike. Per config: the run whose RTF is the median (the lower middle one for an
    even count), with ``rtf_runs``, every run's RTF in order."""
    runs: list[list[dict[str, Any]]] = [[] for _ in configs]
    for _ in range(repeat):
        for i, cfg in enumerate(configs):
            runs[i].append(run(model, cfg, seconds, **options))
    out = []
    for cfg, results in zip(configs, runs):
        ranked = sorted(results, key=lambda r: r["rtf"])
        out.append((cfg, {**ranked[(len(ranked) - 1) // 2], "rtf_runs": [r["rtf"] for r in results]}))
    return out


class _Outbox:
    """Stands in for a connection's outbox queue: keeps each item with the time it reached the event loop
    (seconds since the run started), so nothing is parsed while the streams run."""

    def __init__(self, t0: float, done: asyncio.Event, pending: list[int]) -> None:
        self.t0, self.done, self.pending = t0, done, pending
        self.items: list[tuple[float, Any]] = []

    def put_nowait(self, item: Any) -> None:
        self.items.append((time.perf_counter() - self.t0, item))
        if isinstance(item, Close):
            self.pending[0] -= 1
            if not self.pending[0]:
                self.done.set()


def run_streams(model: CTCModel, config: StreamConfig, streams: int, seconds: float = 20.0, decoder: str = "auto",
                feed_ms: int = 20, max_batch: int = 64, max_wait_ms: float = 10.0,
                audio: np.ndarray | None = None, lookahead: bool = DEFAULT_LOOKAHEAD) -> dict[str, Any]:
    """``streams`` real-time streams of ``seconds`` each through one :class:`BatchScheduler`, as the server
    runs them; returns one row of figures.

    Stream ``i`` starts ``i / streams`` of a chunk after the first (as clients connecting at random would
    spread out) and reads the looped recording from its own offset; every ``feed_ms`` each stream is
    handed the audio that real time has made due. Events are timed when they reach the event loop.

    Figures: ``windows_per_s`` (windows the worker finished per second while the audio was flowing, with
    ``offered_windows_per_s`` what N real-time streams ask for), ``windows_per_batch``, the worker's
    busy share of that time split into ``model_share`` and ``outside_share``, ``lag_s`` (event arrival
    minus the audio time it was produced at, as ``phonestream loadtest`` measures), ``emission_delay_s``
    (phoneme arrival minus its end), ``dropped_s`` (audio sent minus audio decoded), ``errors`` and
    ``keeps_up`` (no error, nothing dropped, lag p95 within one chunk).
    """
    return _row([_run_part(model, config, streams, 0, streams, seconds, decoder, feed_ms, max_batch, max_wait_ms,
                           audio, lookahead)], streams, seconds, config)


def run_streams_processes(load: Callable[[], CTCModel], config: StreamConfig, streams: int, processes: int,
                          seconds: float = 20.0, decoder: str = "auto", feed_ms: int = 20, max_batch: int = 64,
                          max_wait_ms: float = 10.0, lookahead: bool = DEFAULT_LOOKAHEAD) -> dict[str, Any]:
    """:func:`run_streams` split over ``processes`` processes, as ``phonestream serve --workers`` splits its
    connections (phonestream/workers.py): each process loads its own model with ``load`` (picklable: a
    module-level function or a ``functools.partial``) and carries an equal share of the streams (a
    contiguous block of their start times) through its own scheduler; the row is over all of them (``worker_share`` and
    ``model_share`` are the processes' average, ``windows_per_s`` their sum)."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if processes == 1:
        return run_streams(load(), config, streams, seconds, decoder, feed_ms, max_batch, max_wait_ms,
                           lookahead=lookahead)
    import concurrent.futures
    import multiprocessing

    shares = [len(range(i, streams, processes)) for i in range(processes)]
    firsts = np.cumsum([0, *shares[:-1]]).tolist()
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_load_and_run_part, [load] * processes, [config] * processes, shares, firsts,
                              [streams] * processes, [seconds] * processes, [decoder] * processes,
                              [feed_ms] * processes, [max_batch] * processes, [max_wait_ms] * processes,
                              [None] * processes, [lookahead] * processes))
    return _row(parts, streams, seconds, config)


def _load_and_run_part(load: Callable[[], CTCModel], *args: Any) -> dict[str, Any]:
    return _run_part(load(), *args)


def _run_part(model: CTCModel, config: StreamConfig, streams: int, first: int, total_streams: int, seconds: float,
              decoder: str, feed_ms: int, max_batch: int, max_wait_ms: float,
              audio: np.ndarray | None = None, lookahead: bool = DEFAULT_LOOKAHEAD) -> dict[str, Any]:
    """Streams ``first .. first + streams - 1`` of ``total_streams`` through one scheduler: the raw
    figures :func:`_row` reduces."""
    if streams < 1:
        raise ValueError(f"streams must be at least 1, got {streams}")
    recognizer = Recognizer(model, config, decoder=decoder, lookahead=lookahead)
    sr = model.sample_rate
    audio = load_audio(SAMPLE, sr) if audio is None else np.asarray(audio, np.float32)
    total = int(seconds * sr)
    piece = max(1, sr * feed_ms // 1000)
    chunk_s = config.chunk_ms / 1000
    index = np.arange(first, first + streams)
    starts = index * chunk_s / total_streams
    offsets = (index * 7919 * piece) % len(audio)  # each stream its own place in the recording
    tape = np.resize(audio, total + len(audio))  # one looped copy, read through views
    chunk, left, right = config.samples(model)
    model.warmup(warmup_batch_sizes(max_batch, model.device), chunk + left + right)  # as the server does
    scheduler = BatchScheduler(model, max_batch, max_wait_ms / 1000)

    async def main() -> tuple[list[_Outbox], float, dict[str, float]]:
        done, pending = asyncio.Event(), [streams]
        t0 = time.perf_counter()
        boxes = [_Outbox(t0, done, pending) for _ in range(streams)]
        sessions = [scheduler.open(recognizer.stream(keep_phonemes=False), box) for box in boxes]  # type: ignore[arg-type]
        sent = np.zeros(streams, np.int64)
        feed = scheduler.feed
        before = _counters(scheduler)
        while True:
            now = time.perf_counter() - t0
            due = np.minimum(total, np.maximum(0, ((now - starts) * sr).astype(np.int64)) // piece * piece)
            ready = np.flatnonzero(due > sent)
            # plain ints from here: numpy scalars per stream and tick cost as much as the feed itself
            froms, tos = (offsets[ready] + sent[ready]).tolist(), (offsets[ready] + due[ready]).tolist()
            for i, a, b in zip(ready.tolist(), froms, tos):
                feed(sessions[i], tape[a:b])
            sent[ready] = due[ready]
            if sent.min() >= total:
                break
            await asyncio.sleep(max(0.0, feed_ms / 1000 - (time.perf_counter() - t0 - now)))
        flowing = time.perf_counter() - t0
        during = {k: v - before[k] for k, v in _counters(scheduler).items()}
        for session in sessions:
            scheduler.end(session)
        try:
            await asyncio.wait_for(done.wait(), 60 + 2 * seconds)
        except asyncio.TimeoutError:
            pass
        return boxes, flowing, during

    try:
        boxes, flowing, during = asyncio.run(main())
    finally:
        scheduler.stop()
    return {**_outcomes(boxes, seconds, starts), "flowing": flowing, "during": during,
            "model": model.description, "decoder": decoder_label(recognizer)}


def _counters(scheduler: BatchScheduler) -> dict[str, float]:
    return {"windows": scheduler.windows + scheduler.skipped, "batches": scheduler.batches,
            "model_s": scheduler.model_s, "worker_s": scheduler.worker_s, "worker_cpu_s": scheduler.worker_cpu_s,
            "process_cpu_s": time.process_time()}


def _outcomes(boxes: list[_Outbox], seconds: float, starts: np.ndarray) -> dict[str, Any]:
    """What reached the outboxes: lags, emission delays, errors and audio not decoded."""
    delays, lags, errors, dropped = [], [], [], 0.0
    for box, start in zip(boxes, starts.tolist()):
        summary, failed = None, False
        for at, item in box.items:
            if isinstance(item, Close):
                continue
            event = json.loads(item)
            kind = event["type"]
            if kind == "phoneme":
                delays.append(at - start - event["end"])
                lags.append(at - start - event["committed_at"])
            elif kind == "partial":
                lags.append(at - start - event["received"])
            elif kind == "summary":
                summary = event
            elif kind == "error":
                errors.append(event["message"])
                failed = True
        if summary is None:
            if not failed:
                errors.append("no summary: the stream had not finished when the run ended")
        else:
            dropped += max(0.0, round(seconds - summary["audio_s"], 3))
    return {"delays": delays, "lags": lags, "errors": errors, "dropped": dropped}


def _row(parts: list[dict[str, Any]], streams: int, seconds: float, config: StreamConfig) -> dict[str, Any]:
    """The figures of :func:`run_streams` over the parts (one per process)."""
    lags = [x for p in parts for x in p["lags"]]
    delays = [x for p in parts for x in p["delays"]]
    errors = [x for p in parts for x in p["errors"]]
    dropped = round(sum(p["dropped"] for p in parts), 3)
    during = {k: sum(p["during"][k] for p in parts) for k in parts[0]["during"]}
    flowing = max(p["flowing"] for p in parts)
    n = len(parts)
    chunk_s = config.chunk_ms / 1000
    lag = stats(lags, 1, 3)
    worker = during["worker_s"] / flowing / n
    model_share = during["model_s"] / flowing / n
    keeps_up = not errors and dropped == 0 and lag["p95"] is not None and lag["p95"] <= chunk_s
    return {
        "streams": streams, "processes": n,
        "chunk/left/right ms": f"{config.chunk_ms}/{config.left_ms}/{config.right_ms}",
        "decoder": parts[0]["decoder"], "model": parts[0]["model"], "audio_s": seconds,
        "offered_windows_per_s": round(streams / chunk_s, 1),
        "windows_per_s": round(during["windows"] / flowing, 1),
        "windows_per_batch": round(during["windows"] / during["batches"], 1) if during["batches"] else None,
        "worker_share": round(worker, 3), "model_share": round(model_share, 3),
        "outside_share": round(worker - model_share, 3),
        # CPU time per window, of the worker thread and of the whole process (worker, event loop, feeding):
        # unlike the shares, not inflated when other programs share the cores
        "worker_cpu_ms_per_window": round(1000 * during["worker_cpu_s"] / during["windows"], 3)
        if during["windows"] else None,
        "process_cpu_ms_per_window": round(1000 * during["process_cpu_s"] / during["windows"], 3)
        if during["windows"] else None,
        "lag_s": lag, "emission_delay_s": stats(delays, 1, 3), "dropped_s": dropped,
        "errors": len(errors), "error_sample": errors[0] if errors else None, "keeps_up": keeps_up,
    }


def parse_configs(specs: list[str], model: CTCModel) -> list[StreamConfig]:
    """``CHUNK/LEFT/RIGHT`` strings (ms) or latency preset names (``low``, ``balanced``, ``accurate``)
    to configs; an empty list means the model's defaults."""
    if not specs:
        return [StreamConfig.for_model(model)]
    out = []
    for spec in specs:
        if spec in LATENCY_PRESETS:
            out.append(StreamConfig.for_model(model, latency=spec))
            continue
        parts = spec.replace(":", "/").split("/")
        if len(parts) != 3 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise ValueError(f"--config {spec!r} must be CHUNK/LEFT/RIGHT in ms, e.g. 640/640/240, "
                             f"or one of {', '.join(LATENCY_PRESETS)}")
        out.append(StreamConfig(*(int(p) for p in parts)))
    return out


__all__ = ["random_base_model", "run", "run_streams", "run_streams_processes", "parse_configs", "rss_mb",
           "StreamingDefaults"]
