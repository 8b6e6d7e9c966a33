"""Several server processes on one port, so that Python's per-window work runs on every core.

One server process runs the model for all its streams in one scheduler thread, and everything around
the model -- stitching, the beam search with its phoneme LM, endpointing, events -- is Python that
holds the GIL: threads cannot share it (``scripts/beam-threads.py`` measured 1.07x with two), and one
process carries about 250 beam-search streams on this CPU however fast the model is. ``phonestream
serve --workers N`` therefore starts N server processes that share one listening socket, the way
gunicorn and uvicorn's own ``--workers`` do: the kernel hands each new connection to one of them, and a
stream stays in the process that accepted it. Each worker has its own model, scheduler, batches and
limits (``--max-streams`` and ``--max-connections`` are per worker); ``/health`` answers for the worker
that took the request and says which (``worker``, ``workers``).

The parent only binds the socket, starts the workers (``spawn``: nothing of the parent's threads or
model is inherited), restarts one that dies, and stops them all on SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("phonestream.workers")

#: The exit code of a worker that could not start (a bad model or option): no use starting it again.
STARTUP_FAILED = 2
#: A worker that dies more often than this within ``_RESTART_WINDOW_S`` is not restarted again.
_MAX_RESTARTS = 5
_RESTART_WINDOW_S = 60.0


def cores() -> int:
    """Cores this process may run on (its affinity, which may be fewer than the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on this platform
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """CPU threads for each of ``workers`` processes sharing this process's cores (at least 1), so that
    they share the cores instead of each taking them all."""
    return max(1, cores() // workers)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port), to be shared by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker_main(factory: Callable[[int], Any], run: Callable[[Any, socket.socket], None], index: int,
                 sock: socket.socket) -> None:
    """In a worker process: build the app (the model loads here) and serve the shared socket."""
    run(factory(index), sock)


def serve_workers(factory: Callable[[int], Any], run: Callable[[Any, socket.socket], None], sock: socket.socket,
                  workers: int, on_ready: Callable[[], None] | None = None) -> int:
    """Run ``workers`` processes, each ``run(factory(index), sock)``, until SIGINT/SIGTERM; returns an exit code.

    ``factory`` and ``run`` must be picklable (module-level functions or ``functools.partial`` of them):
    they are sent to freshly spawned interpreters. A worker that exits is started again, unless it keeps
    dying (more than 5 times a minute: then the others go on and the exit code is 1). A worker that exits
    with code 2 could not start (a bad model or option, its one-line error already printed): every worker
    is stopped and the exit code is 2."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def start(index: int):
        proc = ctx.Process(target=_worker_main, args=(factory, run, index, sock), name=f"phonestream-worker-{index}",
                           daemon=False)
        proc.start()
        return proc

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs = [start(i) for i in range(workers)]
    deaths: list[list[float]] = [[] for _ in range(workers)]
    given_up: set[int] = set()
    if on_ready is not None:
        on_ready()
    try:
        while not stop.wait(0.5):
            for i, proc in enumerate(procs):
                if i in given_up or proc.is_alive():
                    continue
                if proc.exitcode == STARTUP_FAILED:
                    return STARTUP_FAILED
                now = time.monotonic()
                deaths[i] = [t for t in deaths[i] if now - t < _RESTART_WINDOW_S] + [now]
                if len(deaths[i]) > _MAX_RESTARTS:
                    _log.error("worker %d exited with code %s %d times within a minute; not restarting it",
                               i, proc.exitcode, len(deaths[i]))
                    given_up.add(i)
                    if len(given_up) == workers:
                        return 1
                    continue
                _log.warning("worker %d exited with code %s; starting it again", i, proc.exitcode)
                procs[i] = start(i)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn's graceful shutdown in the worker
        deadline = time.monotonic() + 10
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1)
        sock.close()
    return 1 if given_up else 0


__all__ = ["STARTUP_FAILED", "bind_socket", "cores", "serve_workers", "threads_per_worker"]
