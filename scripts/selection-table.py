#!/usr/bin/env python3
"""Candidates side by side on the unreported selection sets: the Asterisk prompts and FSDD takes 45-49.

For each candidate (a model folder, optionally with extra ``phonestream eval`` options) it runs
``phonestream eval`` on the Asterisk set (``scripts/asterisk-set.py``) at each preset, and on the FSDD
training speakers' held-out takes 45-49 at balanced: PER % (39 classes, CMU dictionary phones), streaming
and offline, and the emission delay p95. Neither set is reported or trained on, so a rule can read this
table without touching fraser_arctic or the FSDD test split (MODEL_CARD.md, "A second real voice").

Usage::

    scripts/selection-table.py --asterisk W/asterisk/manifest.tsv v13=default v12=DIR \\
        'v13-no-lookahead=default --no-lookahead' [--presets low,balanced,accurate] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from _cli import phonestream_json

REPO = Path(__file__).resolve().parents[1]


def _eval(manifest: str, model: str, options: list[str]) -> dict:
    r = phonestream_json("eval", manifest, *([] if model == "default" else ["-m", model]),
                         "--phones-column", "phones_cmu", "--fold", "timit39", *options)
    return {row["system"]: row for row in r["systems"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("candidates", nargs="+", help="NAME=FOLDER [eval options], FOLDER 'default' for the shipped model")
    p.add_argument("--asterisk", required=True, help="the manifest scripts/asterisk-set.py wrote")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="holds fsdd/manifest.tsv")
    p.add_argument("--presets", default="low,balanced,accurate")
    args = p.parse_args()
    presets = args.presets.split(",")
    fsdd = str(args.data / "fsdd" / "manifest.tsv")
    print("| candidate | " + " | ".join(f"Asterisk {q} stream / offline" for q in presets)
          + " | delay p95 (balanced) | FSDD takes 45-49 (balanced) |")
    print("|---|" + "---|" * (len(presets) + 2))
    for spec in args.candidates:
        name, _, rest = spec.partition("=")
        model, *options = shlex.split(rest) or ["default"]
        cells, delay = [], "-"
        for preset in presets:
            rows = _eval(args.asterisk, model, [*options, "--latency", preset])
            cells.append(f"{rows['stream']['per']:.2f} / {rows['offline']['per']:.2f}")
            if preset == "balanced":
                delay = f"{rows['stream']['emission_delay_s']['p95']:.2f} s"
        digits = _eval(fsdd, model, [*options, "--latency", "balanced", "--where", "id=_4[5-9]$"])
        print(f"| {name} | " + " | ".join(cells) + f" | {delay} | {digits['stream']['per']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
