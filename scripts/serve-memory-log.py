#!/usr/bin/env python3
"""Where a server's memory goes: `phonestream serve` on jemalloc, logging its memory every 10 s.

Usage: python scripts/serve-memory-log.py LOG.jsonl [serve options...]
       (then drive it, e.g. `phonestream loadtest --soak 16 --url ws://127.0.0.1:PORT/ws`)

Each line of LOG.jsonl: seconds since start, RSS (MB), threads, open files, Python's allocated blocks
(``sys.getallocatedblocks``), and jemalloc's own counters (``mallctl`` ``stats.*``, MB): ``allocated``
(what the program holds), ``active`` (its pages), ``resident`` (jemalloc's pages in RAM, including freed
ones not yet returned), ``mapped``, ``retained`` (address space kept, not in RAM) and ``metadata``.
RSS minus ``resident`` is everything jemalloc does not manage: code, the model's weights, Python's own
arenas. The server runs on jemalloc with ``MALLOC_CONF`` as ``phonestream serve`` sets it unless the
environment has one (``MALLOC_CONF= `` for jemalloc's own defaults).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time

from phonestream import memory


def _mallctl_size(lib: ctypes.CDLL, name: str) -> float | None:
    value, size = ctypes.c_size_t(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
    if lib.mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
        return None
    return round(value.value / 1e6, 1)


def _log(path: str) -> None:
    lib = ctypes.CDLL(None)
    t0 = time.time()
    with open(path, "a", buffering=1, encoding="utf-8") as out:
        while True:
            epoch, size = ctypes.c_uint64(1), ctypes.c_size_t(8)
            lib.mallctl(b"epoch", None, None, ctypes.byref(epoch), size)  # refresh the stats
            with open("/proc/self/statm", encoding="ascii") as statm:
                rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
            record = {"t": round(time.time() - t0), "rss": round(rss, 1), "threads": len(os.listdir("/proc/self/task")),
                      "fds": len(os.listdir("/proc/self/fd")), "py_blocks": sys.getallocatedblocks()}
            for key in ("allocated", "active", "resident", "mapped", "retained", "metadata"):
                record[key] = _mallctl_size(lib, f"stats.{key}")
            out.write(json.dumps(record) + "\n")
            time.sleep(10)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    if memory.active_allocator() != "jemalloc":
        library = memory.find_allocator("jemalloc")
        if library is None or os.environ.get(memory.REEXEC_ENV):
            sys.exit("this needs jemalloc (Debian: apt install libjemalloc2)")
        os.execve(sys.executable, [sys.executable, *sys.argv], memory.preload_env("jemalloc", library))
    threading.Thread(target=_log, args=(sys.argv[1],), daemon=True).start()
    from phonestream.cli import main as cli

    sys.argv = ["phonestream", "serve", *sys.argv[2:]]
    cli()


if __name__ == "__main__":
    main()
