#!/usr/bin/env python3
"""Where a live step of the shipped model goes: log-mel, encoder, head, and the rest (decoder, events).

It streams a recording (the shipped sample, looped to ``--seconds``) through the default model at a
latency preset, as ``phonestream stream`` runs it (the encoder on the default threads, NumPy's BLAS on
one), and times every call of each part. The log-mel runs two ways, taking turns ``--rounds`` times in
one process so that a busy host slows both alike: through the backbone's frame cache
(``phonestream.models.whisper.MelCache``, what phonestream runs) and computed whole for every window
(``log_mel``, as before the seventeenth session). Both give the same features, so everything else is the
same computation; each cell is the median over rounds of the per-step median.

Usage::

    scripts/step-cost.py [--latency balanced] [--seconds 60] [--rounds 4] [--audio FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class _Timed:
    """Calls ``fn``, adding each call's milliseconds to ``log``."""

    def __init__(self, fn, log: list[float]) -> None:
        self.fn, self.log = fn, log

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.log.append((time.perf_counter() - t) * 1e3)
        return out


class _TimedEncoder:
    """The CTranslate2 model with its ``encode`` timed (a C++ object's method cannot be replaced)."""

    def __init__(self, model, log: list[float]) -> None:
        self._model, self.encode = model, _Timed(model.encode, log)

    def __getattr__(self, name):
        return getattr(self._model, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", default="balanced")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--audio", default=str(REPO / "phonestream/samples/LJ001-0001.flac"))
    a = ap.parse_args()

    import numpy as np

    from phonestream import Recognizer, StreamConfig, load_audio, load_model
    from phonestream.evaluate import stream_file
    from phonestream.models.whisper import MelCache, log_mel
    from phonestream.numerics import pin_blas_threads

    pin_blas_threads()
    model = load_model("phonestream/default_model")
    backbone = model.backbone
    audio = load_audio(a.audio, model.sample_rate)
    n = int(a.seconds * model.sample_rate)
    audio = np.tile(audio, -(-n // len(audio)))[:n]
    rec = Recognizer(model, config=StreamConfig.for_model(model, latency=a.latency))
    logs: dict[str, list[float]] = {"mel": [], "encoder": [], "head": []}
    backbone._model = _TimedEncoder(backbone._model, logs["encoder"])
    model.head.log_probs = _Timed(model.head.log_probs, logs["head"])
    ways = {"frame cache (MelCache)": MelCache, "whole window (log_mel)": None}
    cells: dict[str, dict[str, list[float]]] = {w: {} for w in ways}
    stream_file(rec, audio[: 5 * model.sample_rate])  # warm-up at this window shape
    for _ in range(a.rounds):
        for way, cache in ways.items():
            backbone._mel = _Timed(cache() if cache else (lambda x, real=None: log_mel(x)), logs["mel"])
            for log in logs.values():
                log.clear()
            t = time.perf_counter()
            stream_file(rec, audio)
            wall = (time.perf_counter() - t) * 1e3
            steps = len(logs["encoder"])
            row = {part: statistics.median(log) for part, log in logs.items()}
            row["rest"] = (wall - sum(sum(log) for log in logs.values())) / steps
            row["step"] = wall / steps
            row["rtf"] = wall / 1e3 / (len(audio) / model.sample_rate)
            for k, v in row.items():
                cells[way].setdefault(k, []).append(v)
    print(f"one live stream at {a.latency}, {a.seconds:g} s of {Path(a.audio).name}, {a.rounds} rounds taking turns; "
          f"ms per step, median over rounds of the per-step median ('rest' and 'step': means)")
    print("| log-mel | log-mel ms | encoder ms | head ms | rest ms (decoder, events) | step ms | RTF (runs) |")
    print("|---|---|---|---|---|---|---|")
    for way, c in cells.items():
        med = {k: statistics.median(v) for k, v in c.items()}
        runs = " ".join(f"{x:.3f}" for x in c["rtf"])
        print(f"| {way} | {med['mel']:.2f} | {med['encoder']:.1f} | {med['head']:.2f} | {med['rest']:.2f} "
              f"| {med['step']:.1f} | {med['rtf']:.3f} ({runs}) |")


if __name__ == "__main__":
    main()
