"""Batch transcription: a folder or a manifest of recordings into one JSON line per file, on local worker
processes or on a Ray cluster.

::

    items = list_inputs("recordings/")                     # or a manifest.tsv, as phonestream eval reads it
    report = transcribe_many(items, "results.jsonl", RecognizerSpec(), workers=2)

Each line of the output holds the file's ``id`` and ``path`` and either its ``summary`` (the summary
event of ``phonestream stream FILE --json``, or of ``phonestream transcribe`` with ``offline``) and,
with ``events``, every event before it, or an ``error`` (one line) when the file could not be used.
Lines are written as files finish, in the order they finish. A run that stops (Ctrl-C, a killed
machine) is resumed by running it again: files already in the output are skipped, and a last line cut
off in the middle is dropped first.

Every worker loads the model once and keeps it: a process of a ``concurrent.futures`` pool (spawned,
so nothing the parent loaded is shared by accident) or a Ray actor. Ray was chosen for the cluster
because it is the common engine for Python model inference across machines (actors keep a loaded
model, the object store carries the audio, so the nodes need no shared file system); it is optional
(``pip install 'phonestream[ray]'``) and imported only by ``ray_address``. A worker that dies (a crash
in a native decoder) costs its file a retry, alone, and then an error row, never the run.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from .audio import AudioError, decode_audio, load_audio, pieces
from .endpoint import EndpointConfig
from .engine import Recognizer
from .manifest import Where, read_rows
from .models import load_model
from .numerics import pin_blas_threads
from .streaming import StreamConfig
from .workers import cores, threads_per_worker

# What a folder is searched for: every format libsndfile reads here, by file name extension.
AUDIO_EXTENSIONS = frozenset({f".{k.lower()}" for k in sf.available_formats()} | {".aif", ".oga", ".opus"})


class BatchError(ValueError):
    """A batch that cannot run at all (bad input, output or model): a one-line message for the user."""


@dataclass(frozen=True)
class BatchItem:
    """One recording to transcribe: ``id`` names it in the output, ``path`` is where it is read."""

    id: str
    path: Path


@dataclass
class RecognizerSpec:
    """How each worker builds its :class:`~phonestream.engine.Recognizer`: picklable, so it travels to
    worker processes and Ray actors instead of the loaded model.

    Args:
        model: model folder or hub id, None for the shipped default model (:func:`~phonestream.models.load_model`).
        load_options: other keyword arguments of ``load_model`` (``backbone``, ``vocab``, ``device``...).
        chunk_ms, left_ms, right_ms: window sizes overriding the ``latency`` preset's (None: the preset's).
        latency: the model's window preset (``low``, ``balanced``, ``accurate``).
        recognizer_options: keyword arguments of ``Recognizer`` (``decoder``, ``beam``, ``lm``, ``endpoint``...).
    """

    model: str | None = None
    load_options: dict[str, Any] = field(default_factory=dict)
    chunk_ms: int | None = None
    left_ms: int | None = None
    right_ms: int | None = None
    latency: str = "balanced"
    recognizer_options: dict[str, Any] = field(default_factory=dict)

    @property
    def on_gpu(self) -> bool:
        return str(self.load_options.get("device") or "cpu").startswith("cuda")

    def build(self, warmup: bool = True) -> Recognizer:
        """Load the model and make the recognizer (in the worker that will use it).

        Raises:
            ModelError, ConfigError, ValueError: the model or the options cannot be used.
        """
        pin_blas_threads()  # results then do not depend on the core count (numerics.py)
        loaded = load_model(self.model, **self.load_options)
        config = StreamConfig.for_model(loaded, self.chunk_ms, self.left_ms, self.right_ms, latency=self.latency)
        recognizer = Recognizer(loaded, config, **self.recognizer_options)
        if warmup:
            loaded.warmup()
        return recognizer


def decoder_options(decoding: dict[str, Any]) -> dict[str, Any]:
    """``Recognizer`` keyword arguments from the CLI's decoder options (the ``decoding`` dict of
    :func:`phonestream.cli.decoder_options`): unset ones are left to the recognizer's defaults."""
    out = {k: decoding[k] for k in ("decoder", "beam", "lm", "lm_weight", "insertion_bonus", "lookahead")
           if decoding.get(k) is not None}
    out["endpoint"] = EndpointConfig(decoding["endpoint_rule1"], decoding["endpoint_rule2"],
                                     decoding["max_utterance"]) if decoding["endpoint"] else False
    if decoding.get("silence_db") is not None:
        out["silence_db"] = decoding["silence_db"]
    return out


@dataclass(frozen=True)
class JobOptions:
    """What to do with each file.

    Args:
        offline: decode each whole file at once (``phonestream transcribe``) instead of streaming it.
        events: keep every event in the file's line, not only its summary.
        compare_offline: streaming only: also decode the whole file and compare (``stream_vs_offline``
            in the summary; a second transcription of every file).
        feed_ms: size of the pieces a file is streamed in.
    """

    offline: bool = False
    events: bool = False
    compare_offline: bool = False
    feed_ms: int = 20


# -- the input ----------------------------------------------------------------------------------------


def list_inputs(source: str | Path, where: Iterable[Where] = (), limit: int | None = None) -> list[BatchItem]:
    """The recordings of a folder (searched recursively for :data:`AUDIO_EXTENSIONS`, in path order,
    each named by its path below the folder) or of a manifest (a TSV with an ``audio`` or ``wav``
    column, :mod:`phonestream.manifest`; named by its ``id`` column, else the row number). ``where``
    selects manifest rows, ``limit`` keeps the first files.

    Raises:
        BatchError: nothing there, or a manifest that cannot be read.
    """
    source = Path(source)
    if source.is_dir():
        if where:
            raise BatchError("--where selects manifest rows; INPUT is a folder")
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        if not paths:
            raise BatchError(f"no audio files in {source} (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})")
        items = [BatchItem(p.relative_to(source).as_posix(), p) for p in paths]
        return items[:limit] if limit is not None else items
    if not source.exists():
        raise BatchError(f"input not found: {source}")
    try:
        items = [BatchItem(r.id, r.audio) for r in read_rows(source, where=where)]  # type: ignore[arg-type]
    except UnicodeDecodeError:
        raise BatchError(f"{source} is not a manifest (a TSV with an 'audio' column) or a folder") from None
    except ValueError as err:  # ManifestError
        raise BatchError(str(err)) from None
    if not items:
        raise BatchError(f"no rows in {source}" + (f" match --where {', '.join(map(str, where))}" if where else ""))
    return items[:limit] if limit is not None else items


# -- the output ---------------------------------------------------------------------------------------


def done_paths(out: str | Path) -> set[str]:
    """The ``path`` of every line already in ``out`` (none if it does not exist). A last line without
    its newline, cut off by a killed run, is removed from the file first.

    Raises:
        BatchError: a complete line that is not one of ours (not a JSON object with a ``path``).
    """
    out = Path(out)
    if not out.parent.is_dir():
        raise BatchError(f"--out {out}: no folder {out.parent}")
    if not out.exists():
        return set()
    if out.is_dir():
        raise BatchError(f"--out {out} is a folder; give a file name")
    data = out.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with out.open("r+b") as f:
            f.truncate(end)
    done = set()
    for number, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise BatchError(f"line {number} of {out} is not a batch result (a JSON object with a 'path'); "
                             "give another --out")
        done.add(row["path"])
    return done


# -- one file -----------------------------------------------------------------------------------------


def transcribe_file(recognizer: Recognizer, item: BatchItem, options: JobOptions = JobOptions(),
                    data: bytes | None = None) -> dict[str, Any]:
    """One output line for ``item``: read from its path, or from ``data`` (its bytes) when given. Any
    failure with this file becomes the line's ``error``, so a bad file never stops a batch."""
    row: dict[str, Any] = {"id": item.id, "path": str(item.path)}
    sr = recognizer.model.sample_rate
    try:
        if data is None:
            audio = load_audio(item.path, sr)
        elif not data:  # as load_audio says it
            raise AudioError(f"audio file is empty: {item.path}")
        else:
            audio = decode_audio(data, sr, name=f"audio file {item.path}")
        if options.offline:
            phonemes, summary = recognizer.transcribe_timed(audio)  # what `phonestream transcribe` prints
            events = [*phonemes, summary]
        else:
            stream = recognizer.stream(keep_audio=options.compare_offline, partials=options.events)
            events = []
            for piece in pieces(audio, max(1, sr * options.feed_ms // 1000)):
                events += stream.accept(piece)
            events += stream.finish(offline=options.compare_offline)
    except Exception as err:  # noqa: BLE001  (any failure is this file's, reported in its row)
        message = str(err).splitlines()[0] if str(err) else ""
        row["error"] = message if isinstance(err, AudioError) else f"{type(err).__name__}: {message}".rstrip(": ")
        return row
    row["summary"] = events[-1].to_dict()
    if options.events:
        row["events"] = [e.to_dict() for e in events[:-1]]
    return row


# -- workers ------------------------------------------------------------------------------------------


class Worker:
    """A worker's model, loaded once (a pool process holds one; on Ray, each actor is one). A model that
    fails to load is remembered as ``load_error`` so the driver can stop with its message."""

    def __init__(self, spec: RecognizerSpec, threads: int | None = None) -> None:
        if threads is not None:  # the cores shared out: the default model's encoder (models/whisper.py) and torch
            os.environ.setdefault("PHONESTREAM_THREADS", str(threads))
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # read by torch when (if) it is imported
        self.recognizer: Recognizer | None = None
        self.load_error: str | None = None
        try:
            self.recognizer = spec.build()
        except Exception as err:  # noqa: BLE001  (reported once by the driver, as one line)
            self.load_error = str(err).splitlines()[0] if str(err) else type(err).__name__

    def ready(self) -> str | None:
        """None when the model loaded, else why not."""
        return self.load_error

    def run(self, item: BatchItem, options: JobOptions, data: bytes | None = None) -> dict[str, Any]:
        if self.recognizer is None:
            raise BatchError(f"the model did not load: {self.load_error}")
        return transcribe_file(self.recognizer, item, options, data)


_worker: Worker | None = None  # the pool process's worker (set by its initializer)


def _init_process(spec: RecognizerSpec, threads: int | None, loaded) -> None:
    global _worker
    _worker = Worker(spec, threads)
    try:  # every process has loaded its model before the first file is timed
        loaded.wait(timeout=900)
    except threading.BrokenBarrierError:
        pass


def _process_ready() -> str | None:
    return _worker.ready()  # type: ignore[union-attr]


def _process_run(item: BatchItem, options: JobOptions) -> dict[str, Any]:
    return _worker.run(item, options)  # type: ignore[union-attr]


class _LocalPool:
    """``workers`` spawned processes; after one dies the pool is made again (and its other files with it)."""

    died = (BrokenProcessPool,)
    breaks_all = True

    def __init__(self, spec: RecognizerSpec, workers: int) -> None:
        self.spec, self.workers = spec, workers
        self.threads = threads_per_worker(workers)
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pool = cf.ProcessPoolExecutor(self.workers, ctx, _init_process,
                                           (self.spec, self.threads, ctx.Barrier(self.workers)))

    def ready(self) -> str | None:
        # one call per worker: the pool starts a process for each call that finds none idle
        answers = [self.pool.submit(_process_ready) for _ in range(self.workers)]
        return next((e for e in (a.result() for a in answers) if e), None)

    def submit(self, item: BatchItem, options: JobOptions) -> cf.Future:
        return self.pool.submit(_process_run, item, options)

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._start()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _RayPool:
    """``workers`` Ray actors (one CPU each), each with its model; the audio goes through the object
    store, so a remote cluster needs phonestream installed on its nodes but not the files."""

    def __init__(self, spec: RecognizerSpec, workers: int | None, address: str) -> None:
        self.started = connect_ray(address, log_to_driver=False)
        import ray

        self.ray = ray
        self.died = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
        self.breaks_all = False  # a dead actor fails its own call only
        self.spec = spec
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # on a GPU each actor asks for one (Ray hides the GPUs from actors that do not)
        self.actor_class = ray.remote(num_cpus=1, num_gpus=1 if spec.on_gpu else 0, max_restarts=0)(Worker)
        self.actors = [self._actor() for _ in range(self.workers)]
        self.busy: dict[cf.Future, Any] = {}

    def _actor(self):
        return self.actor_class.remote(self.spec, 1)

    def ready(self) -> str | None:
        errors = [e for e in self.ray.get([a.ready.remote() for a in self.actors]) if e]
        return errors[0] if errors else None

    def submit(self, item: BatchItem, options: JobOptions) -> cf.Future:
        try:
            data = item.path.read_bytes()
        except OSError as err:  # read here, so the error is the same as a local worker's
            future: cf.Future = cf.Future()
            future.set_result({"id": item.id, "path": str(item.path), "error": _os_error(item.path, err)})
            return future
        self.busy = {f: a for f, a in self.busy.items() if not f.done() or self._dead(f)}  # dead: until restart
        busy = {a for f, a in self.busy.items() if not f.done()}
        actor = next(a for a in self.actors if a not in busy)
        future = actor.run.remote(item, options, data).future()
        self.busy[future] = actor
        return future

    def _dead(self, future: cf.Future) -> bool:
        return future.done() and isinstance(future.exception(), self.died)

    def restart(self) -> None:
        """Replace the actors whose calls failed with one of ``died``."""
        dead = {a for f, a in self.busy.items() if self._dead(f)}
        self.actors = [self._actor() if a in dead else a for a in self.actors]
        self.busy = {f: a for f, a in self.busy.items() if not f.done()}

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started:
            self.ray.shutdown()


def connect_ray(address: str, **init_options: Any) -> bool:
    """Make this process a Ray driver, unless it is one already (then False): ``"local"`` attaches to a
    Ray instance on this machine (``ray start``) or starts one, anything else is a cluster's address.

    Raises:
        BatchError: Ray is not installed or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise BatchError("this needs Ray: pip install 'phonestream[ray]'") from None
    if ray.is_initialized():
        return False
    try:
        if address == "local":
            # the raylet gives its agents about 15 s to start, which a busy 2-core machine can overrun
            os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
            os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
            ray.init(include_dashboard=False, **init_options)
        else:
            ray.init(address=address, **init_options)
    except Exception as err:  # noqa: BLE001  (ray.init raises bare Exception when a node does not start)
        raise BatchError(f"cannot start or reach Ray at {address}: {str(err).splitlines()[0]}") from None
    return True


def _os_error(path: Path, err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return f"audio file not found: {path}"
    if isinstance(err, IsADirectoryError):
        return f"audio path is a folder, not a file: {path}"
    return f"cannot read audio file {path}: {err.strerror or err}"


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What a run did: files written (``done``, of which ``errors`` are error rows), files ``skipped``
    because ``out`` had them, the ``audio_s`` transcribed, ``startup_s`` (workers loading their models)
    and ``wall_s`` (from the first file sent to the last line written)."""

    total: int
    done: int = 0
    errors: int = 0
    skipped: int = 0
    audio_s: float = 0.0
    startup_s: float = 0.0
    wall_s: float = 0.0
    workers: int = 0

    @property
    def files_per_minute(self) -> float | None:
        return round(60 * (self.done - self.errors) / self.wall_s, 1) if self.wall_s else None


def transcribe_many(items: Iterable[BatchItem], out: str | Path, spec: RecognizerSpec | None = None,
                    options: JobOptions = JobOptions(), workers: int | None = None, ray_address: str | None = None,
                    on_row: Callable[[dict[str, Any]], None] | None = None) -> BatchReport:
    """Transcribe ``items`` into ``out`` (JSON Lines, appended; see the module doc), skipping those it has.

    Args:
        items: the recordings (:func:`list_inputs`).
        out: the output file; an existing one is resumed.
        spec: how each worker builds its recognizer (default: the shipped model, its default settings).
        options: streaming or offline, events or summaries only.
        workers: local processes (default: the machine's cores) or, with ``ray_address``, Ray actors
            (default: the cluster's CPUs).
        ray_address: None for local processes; ``"local"`` to attach to (or start) a Ray instance on this
            machine, or a cluster's address (``ray://host:10001``, ``auto``). An instance already
            initialised in this process (``ray.init``) is used as it is.
        on_row: called with each line written (progress).

    Raises:
        BatchError: ``out`` is not a batch output, or the model cannot be loaded (before any file).
    """
    items = list(items)
    spec = spec or RecognizerSpec()
    out = Path(out)
    done = done_paths(out)
    todo = [i for i in items if str(i.path) not in done]
    report = BatchReport(total=len(items), skipped=len(items) - len(todo))
    if not todo:
        return report
    t0 = time.perf_counter()
    if ray_address is None:
        pool: Any = _LocalPool(spec, workers or cores())
    else:
        pool = _RayPool(spec, workers, ray_address)
    report.workers = pool.workers
    try:
        error = pool.ready()
        if error is not None:
            raise BatchError(f"the model did not load: {error}")
        report.startup_s = round(time.perf_counter() - t0, 2)
        t1 = time.perf_counter()
        with out.open("a", encoding="utf-8") as f:
            for row in _rows(pool, todo, options):
                f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
                f.flush()
                report.done += 1
                if "error" in row:
                    report.errors += 1
                else:
                    report.audio_s += row["summary"].get("audio_s") or 0.0
                if on_row is not None:
                    on_row(row)
        report.wall_s = round(time.perf_counter() - t1, 2)
    finally:
        pool.close()
    report.audio_s = round(report.audio_s, 2)
    return report


def _rows(pool, todo: list[BatchItem], options: JobOptions):
    """Each file's row as it finishes, ``pool.workers`` at a time. When a worker dies, the files it may
    have been working on are run again one at a time, so a second death names the file that causes it."""
    pending, suspects = deque(todo), deque()
    running: dict[cf.Future, BatchItem] = {}
    tries: dict[BatchItem, int] = {}
    while pending or suspects or running:
        if suspects:
            if not running:
                item = suspects.popleft()
                running[pool.submit(item, options)] = item
        else:
            while pending and len(running) < pool.workers:
                item = pending.popleft()
                running[pool.submit(item, options)] = item
        finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        crashed = False
        for future in finished:
            item = running.pop(future)
            try:
                yield future.result()
            except pool.died:
                crashed = True
                tries[item] = tries.get(item, 0) + 1
                if tries[item] >= 2:
                    yield {"id": item.id, "path": str(item.path), "error": "the worker process died on this file"}
                else:
                    suspects.append(item)
        if crashed:
            if pool.breaks_all:  # the rest fail too: run them again
                for future, item in running.items():
                    future.cancel()
                    suspects.append(item)
                running.clear()
            pool.restart()


__all__ = ["AUDIO_EXTENSIONS", "BatchError", "BatchItem", "BatchReport", "JobOptions", "RecognizerSpec", "Worker",
           "connect_ray", "decoder_options", "done_paths", "list_inputs", "transcribe_file", "transcribe_many"]
