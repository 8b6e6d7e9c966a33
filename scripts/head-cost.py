#!/usr/bin/env python3
"""What a backbone + head model's CTC head costs per streaming step, beside the step as a whole.

It streams a recording (the shipped sample by default) through each model at a latency preset and
times every call of the head (``head.log_probs``, on the frames the streamer reads) and every model call
(encoder + head), on one thread each for NumPy and the encoder. RTF readings of ``phonestream bench``
spread between runs by more than a small head changes them; this isolates the head.

With ``--bench N`` it also runs ``phonestream bench --config PRESET --seconds 60`` N times per model,
interleaved (first model first in each round), and prints every RTF reading and the median.

Usage::

    scripts/head-cost.py phonestream/default_model OTHER_MODEL_DIR [--latency balanced] [--bench 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _cli import phonestream_json

REPO = Path(__file__).resolve().parents[1]


def step_costs(folder: str, latency: str, audio_path: str) -> dict:
    from threadpoolctl import threadpool_limits

    from phonestream import Recognizer, StreamConfig, load_audio, load_model
    from phonestream.evaluate import stream_file

    model = load_model(folder, threads=1)
    head_ms: list[float] = []
    frames: list[int] = []
    inner = model.head.log_probs

    def timed_head(states):
        t = time.perf_counter()
        out = inner(states)
        head_ms.append((time.perf_counter() - t) * 1e3)
        frames.append(len(states))
        return out

    model.head.log_probs = timed_head
    step_ms: list[float] = []
    inner_model = model.log_probs_from

    def timed_model(windows, first):
        t = time.perf_counter()
        out = inner_model(windows, first)
        step_ms.append((time.perf_counter() - t) * 1e3)
        return out

    model.log_probs_from = timed_model
    rec = Recognizer(model, config=StreamConfig.for_model(model, latency=latency))
    audio = load_audio(audio_path, model.sample_rate)
    with threadpool_limits(1):
        stream_file(rec, audio)  # warm-up
        head_ms.clear(), frames.clear(), step_ms.clear()
        stream_file(rec, audio)
    seconds = len(audio) / model.sample_rate
    return {"head": model.head.kind + f" {model.head.num_parameters / 1e6:.2f}M",
            "steps": len(step_ms), "frames": statistics.mean(frames),
            "head_ms": statistics.median(head_ms), "step_ms": statistics.median(step_ms),
            "head_rtf": sum(head_ms) / 1e3 / seconds, "model_rtf": sum(step_ms) / 1e3 / seconds}


def bench_rtf(folder: str, latency: str) -> float:
    return float(phonestream_json("bench", "-m", folder, "--config", latency, "--seconds", "60", cwd=REPO)[0]["rtf"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="model folders (backbone + head)")
    ap.add_argument("--latency", default="balanced")
    ap.add_argument("--audio", default=str(REPO / "phonestream/samples/LJ001-0001.flac"))
    ap.add_argument("--bench", type=int, default=0, metavar="N", help="also N interleaved bench runs per model")
    a = ap.parse_args()
    print(f"head cost at {a.latency}, {Path(a.audio).name}, one thread; medians per step")
    print("| model | head | steps | frames per head call | head ms | model step ms (encoder + head) "
          "| head RTF | model RTF |")
    print("|---|---|---|---|---|---|---|---|")
    for m in a.models:
        c = step_costs(m, a.latency, a.audio)
        print(f"| {m} | {c['head']} | {c['steps']} | {c['frames']:.1f} | {c['head_ms']:.2f} | {c['step_ms']:.1f} "
              f"| {c['head_rtf']:.4f} | {c['model_rtf']:.4f} |", flush=True)
    if a.bench:
        readings: dict[str, list[float]] = {m: [] for m in a.models}
        for _ in range(a.bench):
            for m in a.models:
                readings[m].append(bench_rtf(m, a.latency))
        print(f"\n`phonestream bench --config {a.latency} --seconds 60`, {a.bench} interleaved runs")
        print("| model | RTF readings | median |")
        print("|---|---|---|")
        for m, r in readings.items():
            print(f"| {m} | {' '.join(f'{x:.4f}' for x in r)} | {statistics.median(r):.4f} |")


if __name__ == "__main__":
    main()
