#!/usr/bin/env python3
"""Why `phonestream serve` runs on jemalloc: the default encoder's memory under changing batch shapes.

Runs the default model's encoder CALLS times (one thread) in a fresh process per allocator setting, on
batches of random shape (1-10 windows of 0.1-1.76 s, as a server's scheduler forms them) and, for
comparison, on one fixed shape (8 windows of 1.76 s, glibc), and prints RSS before and after and the
time per call. Settings: glibc as is; glibc with phonestream.memory's tuning and a ``malloc_trim``
after every call; jemalloc (with its own defaults, and with the ``MALLOC_CONF`` that ``phonestream serve``
gives it) and mimalloc through ``LD_PRELOAD`` (skipped when not installed).

Usage: python scripts/allocator-shapes.py [CALLS]   (default 800)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from phonestream import memory
from phonestream.console import print_rows


def child(shape: str, calls: int, trim: bool) -> None:
    import numpy as np

    from phonestream.models.whisper import WhisperBackbone

    def rss() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    if trim:
        memory.tune_allocator()
    encoder = WhisperBackbone(threads=1)
    rng = np.random.default_rng(0)
    start = rss()
    t0 = time.perf_counter()
    for _ in range(calls):
        n, b = (28160, 8) if shape == "fixed" else (int(rng.integers(1600, 28160)), int(rng.integers(1, 11)))
        encoder.encode_batch([rng.standard_normal(n).astype(np.float32) * 0.1 for _ in range(b)])
        if trim:
            memory.trim()
    print(json.dumps({"start": start, "end": rss(), "ms_per_call": 1000 * (time.perf_counter() - t0) / calls,
                      "allocator": memory.active_allocator()}))


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 800
    runs = [("random", "glibc", None, False, None), ("random", "glibc + trim after every call", None, True, None),
            ("random", "jemalloc", "jemalloc", False, ""),
            ("random", "jemalloc + serve's MALLOC_CONF", "jemalloc", False, memory.JEMALLOC_CONF),
            ("random", "mimalloc", "mimalloc", False, None), ("fixed", "glibc", None, False, None)]
    rows = []
    for shape, label, preload, trim, conf in runs:
        env = dict(os.environ)
        if conf is not None:
            env["MALLOC_CONF"] = conf
        if preload:
            library = memory.find_allocator(preload)
            if library is None:
                print(f"{preload} is not installed: skipped", file=sys.stderr)
                continue
            env["LD_PRELOAD"] = library
        out = subprocess.run([sys.executable, __file__, "--child", shape, str(calls), str(int(trim))], env=env,
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.splitlines()[-1])
        rows.append({"batch shapes": shape, "allocator": label, "running on": r["allocator"],
                     "RSS before MB": round(r["start"], 1), f"RSS after {calls} calls MB": round(r["end"], 1),
                     "ms per call": round(r["ms_per_call"], 1)})
    print_rows(rows, f"default encoder, {calls} calls, one thread")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")
    else:
        main()
