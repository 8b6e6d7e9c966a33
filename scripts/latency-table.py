#!/usr/bin/env python3
"""One table of the latency presets: accuracy on both real-speech sets, delay, refresh and speed.

For each preset (``--latency low|balanced|accurate``) it runs, with the model's default decoder:

- ``phonestream eval`` on fraser_arctic (``phones_cmu``) and on the FSDD test split (takes 0-4), 39-class
  folding: streaming and offline PER, emission delay (audio time);
- then one ``phonestream bench --seconds S --repeat R`` (S 60 by default) over all the presets, taking turns:
  RTF (the median run, with the range of the R runs) and the wall-clock emission delay (compute time included).

Usage::

    scripts/latency-table.py [--data ../shared/data] [--model default] [--presets low,balanced,accurate]
                             [--repeat 3] [--seconds 60]
                             [--limit N]   # N utterances per set, for a quick look

The data folder defaults to ``../shared/data`` beside the repository (the project's evaluation sets).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _cli import phonestream_json

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--model", default="default")
    p.add_argument("--presets", default="low,balanced,accurate")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3, help="bench runs per preset, the presets taking turns")
    p.add_argument("--seconds", type=float, default=60.0, help="audio per bench run")
    args = p.parse_args()
    model = [] if args.model == "default" else ["-m", args.model]
    limit = ["--limit", str(args.limit)] if args.limit else []
    sets = {"fraser": [str(args.data / "fraser_arctic" / "manifest.tsv")],
            "fsdd": [str(args.data / "fsdd" / "manifest.tsv"), "--where", "id=_[0-4]$"]}
    presets = args.presets.split(",")
    cells = {}
    for preset in presets:
        per, delays, cfg = {}, None, None
        for name, where in sets.items():
            r = phonestream_json("eval", *where, *model, *limit, "--phones-column", "phones_cmu", "--fold", "timit39",
                                 "--latency", preset)
            rows = {row["system"]: row for row in r["systems"]}
            per[name] = f"{rows['stream']['per']:.2f} / {rows['offline']['per']:.2f}"
            cfg = r["config"]
            if name == "fraser":
                delays = rows["stream"]["emission_delay_s"]
        cells[preset] = (f"| {preset} | {cfg['chunk_ms']} / {cfg['left_ms']} / {cfg['right_ms']} "
                         f"| {cfg['chunk_ms']} ms | {per['fraser']} | {per['fsdd']} "
                         f"| {delays['p50']:.2f} / {delays['p95']:.2f} s")
        print(f"{cells[preset]} | (bench follows)", flush=True)
    configs = [arg for preset in presets for arg in ("--config", preset)]
    bench = phonestream_json("bench", "-m", args.model, *configs, "--seconds", str(args.seconds),
                             "--repeat", str(args.repeat))
    print()
    print("| preset | chunk / left / right ms | refresh | fraser PER stream / offline | FSDD test PER stream / offline "
          "| emission delay p50 / p95 (audio) | wall delay p95 | RTF (median; range) |")
    print("|---|---|---|---|---|---|---|---|")
    for preset, b in zip(presets, bench):
        runs = b.get("rtf_runs", [b["rtf"]])
        print(f"{cells[preset]} | {b['emission_delay_wall_s']['p95']:.2f} s "
              f"| {b['rtf']:.3f} ({min(runs):.3f}-{max(runs):.3f}) |", flush=True)


if __name__ == "__main__":
    main()
