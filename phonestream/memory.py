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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

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
