#!/usr/bin/env python3
"""The recipe's training data as MODEL_CARD's table counts it: per synthesis engine, the rounds it is in,
utterances, hours and voices used, held-out utterances (one in 25, ``is_synth_dev``) left out; the jobs
each round asked for and how many were skipped (Kokoro skips sentences with a word outside the CMU
dictionary); and the FSDD training takes.

Usage::

    scripts/training-data-table.py --work W [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from phonestream.train.evaluate import FSDD_SPLITS, is_synth_dev
from phonestream.train.pipeline import FSDD_ROOT, ROUNDS, synth_round


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=len(ROUNDS))
    args = p.parse_args()
    with (args.work / "synth" / "manifest.tsv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
                if synth_round(r["id"]) <= args.rounds]
    made: dict[tuple[int, str], int] = defaultdict(int)
    trained_s: dict[tuple[int, str], float] = defaultdict(float)  # seconds of audio in training
    held_out = 0
    per_source: dict[str, dict] = defaultdict(lambda: {"rounds": set(), "n": 0, "s": 0.0, "voices": set()})
    for r in rows:
        rnd = synth_round(r["id"])
        made[(rnd, r["source"])] += 1
        if is_synth_dev(r["id"]):
            held_out += 1
            continue
        trained_s[(rnd, r["source"])] += float(r["duration_s"])
        src = per_source[r["source"]]
        src["rounds"].add(rnd)
        src["n"] += 1
        src["s"] += float(r["duration_s"])
        src["voices"].add(r["voice"])
    print("| round | source | jobs | made | skipped | hours in training |")
    print("|---|---|---|---|---|---|")
    for k, counts in enumerate(ROUNDS[: args.rounds], start=1):
        for source, jobs in counts.items():
            print(f"| {k} | {source} | {jobs:,} | {made[(k, source)]:,} | {jobs - made[(k, source)]:,} "
                  f"| {trained_s[(k, source)] / 3600:.2f} |")
    print(f"\nsynthetic utterances made: {len(rows):,}, of them held out: {held_out:,}\n")
    print("| source | rounds | utterances | hours | voice labels |")
    print("|---|---|---|---|---|")
    total_n, total_s = 0, 0.0
    for name, src in per_source.items():
        print(f"| {name} | {', '.join(map(str, sorted(src['rounds'])))} | {src['n']:,} | {src['s'] / 3600:.2f} "
              f"| {len(src['voices'])} |")
        total_n, total_s = total_n + src["n"], total_s + src["s"]
    with (FSDD_ROOT / "manifest.tsv").open(encoding="utf-8") as fh:
        takes = FSDD_SPLITS["train"]
        fsdd = [r for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
                if int(r["id"].rsplit("_", 1)[1]) in takes]
    fsdd_s = sum(float(r["duration_s"]) for r in fsdd)
    print(f"| FSDD train (takes {min(takes)}-{max(takes)}) | | {len(fsdd):,} | {fsdd_s / 3600:.2f} | "
          f"{len({r['speaker'] for r in fsdd})} speakers |")
    print(f"| total | | {total_n + len(fsdd):,} | {(total_s + fsdd_s) / 3600:.2f} | |")


if __name__ == "__main__":
    main()
