"""Can threads share the beam search of a batch? Decodes the same blocks for N beam-search streams
serially and sharded over a thread pool, and prints a table of wall time per window and speed-up.

The beam search is a pure-Python loop: the GIL lets one thread run it at a time, so more threads give
no speed-up however many cores are free (the scheduler decodes on its one worker thread for that reason).

Usage: python scripts/beam-threads.py [STREAMS] [THREADS...]   (defaults: 200 streams, 1 2 4 threads)
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from phonestream.console import print_rows
from phonestream.decoding import DecoderConfig, make_decoder
from phonestream.models.null import NullModel
from phonestream.streaming import FrameBlock


def main() -> None:
    streams = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    pools = [int(a) for a in sys.argv[2:]] or [1, 2, 4]
    model = NullModel()
    frames = 32  # a 640 ms chunk at 50 frames per second
    steps = 20
    outputs = model.log_probs_batch([np.zeros(320 * (frames * steps + 8), np.float32)] * streams)
    blocks = [[FrameBlock(k * frames, out[k * frames : (k + 1) * frames], out[(k + 1) * frames :][:8],
                          (k + 1) * frames * 320, False) for k in range(steps)] for out in outputs]
    config = DecoderConfig("beam", lm=None)
    rows = []
    for threads in pools:
        decoders = [make_decoder(config, model.vocab, 0.02, 16000) for _ in range(streams)]

        def decode(shard: range, k: int) -> None:
            for s in shard:
                decoders[s].advance(blocks[s][k])
                decoders[s].partial(blocks[s][k])

        shards = [range(i, streams, threads) for i in range(threads)]
        wall, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(threads) as pool:
            for k in range(steps):
                list(pool.map(decode, shards, [k] * threads))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        windows = streams * steps
        rows.append({"threads": threads, "windows": windows, "wall ms/window": round(1000 * wall / windows, 3),
                     "cpu ms/window": round(1000 * cpu / windows, 3)})
    for row in rows:
        row["speed-up"] = round(rows[0]["wall ms/window"] / row["wall ms/window"], 2)
    print_rows(rows, f"beam search (beam 4, no LM) of {streams} null-model streams, {frames}-frame blocks, on "
               f"{len(os.sched_getaffinity(0))} cores")


if __name__ == "__main__":
    main()
