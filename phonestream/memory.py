"""Flat memory for long-running servers: keep glibc's heap from holding on to freed memory.

A server that runs for hours sees transient large buffers (a 1 MB WebSocket frame, an upload decoded
in blocks, a batch of windows) between many small long-lived objects. glibc's allocator raises its
mmap threshold each time such a buffer is freed, so the next ones come from the heap, and one small
object left above them pins the whole region: resident memory steps up and never comes back, though
Python's own heap stays flat (measured with tracemalloc under the hostile soak in docs/server.md:
the Python heap did not grow while RSS stepped up by 13 MB). The remedies, applied here:

- at most two allocation arenas per process (``M_ARENA_MAX``) instead of eight per core, since the
  server's threads (event loop, worker, model threads) otherwise each fragment their own;
- :func:`trim` (``malloc_trim``) hands free pages inside the heap back to the system; the server calls
  it every 30 s (it takes milliseconds).

A fixed mmap threshold (``M_MMAP_THRESHOLD``, so every large buffer gets its own mapping) would cure the
steps too, but the encoder's large per-window buffers then pay page faults on every allocation: the
default model's single-stream RTF went from 0.074 to 0.120 on this 2-core CPU, so it is not set.

Elsewhere than glibc (macOS, musl, Windows) these are no-ops.

They are not enough on their own: the encoder's buffers change size with every batch (number of
windows, window length), and glibc fragments under that pattern whatever the tuning. 800 encoder calls
with random batch shapes (``scripts/allocator-shapes.py``): RSS 104 -> 379 MB on glibc; 182 MB with a
``malloc_trim`` after every call, but each call ~30 % slower; 208 MB on jemalloc and 224 MB on mimalloc,
at about glibc's speed. So ``phonestream serve`` runs under jemalloc when the system has it
(Debian/Ubuntu ``libjemalloc2``, Fedora ``jemalloc``, Homebrew ``jemalloc``): :func:`reexec_with` starts
the same command again with the library in ``LD_PRELOAD`` before anything is loaded (``--allocator``),
and with :data:`JEMALLOC_CONF` in ``MALLOC_CONF`` unless the user set their own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

_M_ARENA_MAX = -8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def tune_allocator(arena_max: int = 2) -> bool:
    """Limit glibc to ``arena_max`` allocation arenas for this process (see the module doc). Returns
    whether the allocator accepted it (False where the C library is not glibc)."""
    libc = _libc()
    return bool(libc.mallopt(_M_ARENA_MAX, arena_max)) if libc is not None else False


def trim() -> bool:
    """Return the heap's free pages to the system (``malloc_trim(0)``); True if any were returned."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


#: Allocators ``serve --allocator`` can preload, by the name ``ctypes.util.find_library`` knows them by.
ALLOCATORS = ("jemalloc", "mimalloc")
#: Set in the environment of a process started by :func:`reexec_with` (so it never re-executes twice).
REEXEC_ENV = "PHONESTREAM_ALLOCATOR"
#: jemalloc's settings for the server (``MALLOC_CONF``, unless the user sets their own). By default
#: jemalloc keeps freed pages for about 10 s before returning them, so RSS carries whatever the last
#: seconds' bursts (an upload decoded in blocks, a 1 MB frame, a large batch) left behind: in a hostile
#: soak its resident memory swung 92-101 MB around 82 MB allocated. A background thread returning them
#: within about a second, straight to the system (no lazy MADV_FREE stage that still counts in RSS),
#: keeps RSS close to what is in use; the default model's 8-stream scheduler benchmark was as fast.
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"


def active_allocator() -> str:
    """The allocator this process runs on: ``jemalloc``, ``mimalloc`` or ``system``."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            loaded = maps.read()
    except OSError:
        return "system"
    return next((name for name in ALLOCATORS if f"lib{name}" in loaded), "system")


def find_allocator(name: str) -> str | None:
    """The shared library of allocator ``name`` (e.g. ``libjemalloc.so.2``), or None if it is not installed."""
    if name not in ALLOCATORS:
        raise ValueError(f"unknown allocator {name!r}; choose one of {', '.join(ALLOCATORS)} or system")
    return ctypes.util.find_library(name)


def preload_env(name: str, library: str) -> dict[str, str]:
    """This process's environment with allocator ``name`` (its shared ``library``) preloaded ahead of any
    ``LD_PRELOAD`` already set, marked with :data:`REEXEC_ENV`, and for jemalloc :data:`JEMALLOC_CONF`
    unless ``MALLOC_CONF`` is set."""
    env = dict(os.environ, **{REEXEC_ENV: name})
    env["LD_PRELOAD"] = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD")]))
    if name == "jemalloc":
        env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    return env


def reexec_with(choice: str, argv: list[str]) -> str:
    """Make sure the process runs on allocator ``choice`` (``auto``: jemalloc, then mimalloc, if installed;
    ``system``: leave it), re-executing ``python -m phonestream *argv`` with it preloaded if needed.

    Returns the allocator in use when no re-execution was needed; raises ``ValueError`` if an allocator
    named explicitly is not installed. Only on Linux: elsewhere it returns ``system``."""
    current = active_allocator()
    if choice == "system" or not sys.platform.startswith("linux"):
        return current
    wanted = ALLOCATORS if choice == "auto" else (choice,)
    if current in wanted or os.environ.get(REEXEC_ENV):
        return current  # already preloaded (by us or by the user), or the preload did not take: go on
    for name in wanted:
        library = find_allocator(name)
        if library:
            sys.stdout.flush()
            sys.stderr.flush()
            os.execve(sys.executable, [sys.executable, "-m", "phonestream", *argv], preload_env(name, library))
    if choice != "auto":
        raise ValueError(f"--allocator {choice}: lib{choice} is not installed (Debian: apt install lib{choice}2"
                         f"{'.0' if choice == 'mimalloc' else ''}); use --allocator system to run without it")
    return current
