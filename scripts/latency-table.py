#!/usr/bin/env python3
"""One table of the latency presets: accuracy on both real-speech sets, delay, refresh and speed.

For each preset (``--latency low|balanced|accurate``) it runs, with the model's default decoder:

- ``phonestream eval`` on fraser_arctic (``phones_cmu``) and on the FSDD test split (takes 0-4), 39-class
  folding: streaming and offline PER, emission delay (audio time);
- ``phonestream bench --seconds 60``: RTF and the wall-clock emission delay (compute time included).

Usage::

    scripts/latency-table.py [--data ../shared/data] [--model default] [--presets low,balanced,accurate]
                             [--limit N]   # N utterances per set, for a quick look

The data folder defaults to ``../shared/data`` beside the repository (the project's evaluation sets).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> dict | list:
    cmd = [sys.executable, "-m", "phonestream", *args, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--model", default="default")
    p.add_argument("--presets", default="low,balanced,accurate")
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args()
    model = [] if args.model == "default" else ["-m", args.model]
    limit = ["--limit", str(args.limit)] if args.limit else []
    sets = {"fraser": [str(args.data / "fraser_arctic" / "manifest.tsv")],
            "fsdd": [str(args.data / "fsdd" / "manifest.tsv"), "--where", "id=_[0-4]$"]}
    print("| preset | chunk / left / right ms | refresh | fraser PER stream / offline | FSDD test PER stream / offline "
          "| emission delay p50 / p95 (audio) | wall delay p95 | RTF |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        per, delays, cfg = {}, None, None
        for name, where in sets.items():
            r = _run("eval", *where, *model, *limit, "--phones-column", "phones_cmu", "--fold", "timit39",
                     "--latency", preset)
            rows = {row["system"]: row for row in r["systems"]}
            per[name] = f"{rows['stream']['per']:.2f} / {rows['offline']['per']:.2f}"
            cfg = r["config"]
            if name == "fraser":
                delays = rows["stream"]["emission_delay_s"]
        b = _run("bench", "-m", args.model, "--config", preset, "--seconds", "60")[0]
        print(f"| {preset} | {cfg['chunk_ms']} / {cfg['left_ms']} / {cfg['right_ms']} | {cfg['chunk_ms']} ms "
              f"| {per['fraser']} | {per['fsdd']} | {delays['p50']:.2f} / {delays['p95']:.2f} s "
              f"| {b['emission_delay_wall_s']['p95']:.2f} s | {b['rtf']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
