#!/usr/bin/env python3
"""Greedy PER of model heads on the recipe's held-out sets: synthetic speech by synthesis round (a column
per round), and real FSDD takes 45-49.

The held-out sets (one synthetic utterance in 25, ``is_synth_dev``; FSDD takes 45-49 of the training
speakers) are cached by ``phonestream train fit`` under WORK/eval-cache (WORK/eval-cache-base for heads
on Whisper base, -tailMS for a silent tail, -tunedSHA for an encoder tuned by ``train tune``; see
``pipeline.cache_folder``) as encoder states, which do not depend on the head. Round-2 utterances (ids ``r2-...``)
were trained on by no head made from round 1, so they compare such heads fairly; round-1 held-out
utterances were in the training data of heads made before the hold-out existed, and FSDD takes 45-49
in that of v1, the head shipped before v6 (so its FSDD column is not held out).

Usage::

    scripts/compare-heads-heldout.py --work W [--draws N | --clean] NAME=MODEL_DIR [NAME=MODEL_DIR ...]

``NAME=DIR1+DIR2`` scores two heads on one encoder as one: per frame, the log of their mean posteriors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from phonestream.metrics import EditCounts, edit_counts
from phonestream.phones import fold_timit39
from phonestream.train.__main__ import DEFAULT_STREAMING, _dev_sets
from phonestream.train.evaluate import config_name, decode, encoder_weights, load_exported_head
from phonestream.train.phones import SYMBOLS
from phonestream.train.pipeline import synth_round

#: The rounds whose mean PER the held-out rules compare (round 5, where made, is printed but not averaged).
MEAN_ROUNDS = ("r1", "r2", "r3", "r4")
MEAN = "mean, rounds 1-4"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--configs", default=f"{config_name(DEFAULT_STREAMING)},{config_name(None)}",
                   help="windows CHUNK-LEFT-RIGHT (ms) or offline, comma separated (default: the balanced "
                        "window and offline)")
    p.add_argument("--draws", type=int, default=1,
                   help="score the synthetic set under this many augmentation draws (seeds 0..N-1), pooled: "
                        "one draw's columns move by points with the draw")
    p.add_argument("--clean", action="store_true",
                   help="score the synthetic set unaugmented instead (studio-clean, as fraser_arctic is)")
    p.add_argument("heads", nargs="+", help="NAME=MODEL_DIR (a folder with phonestream.json and head.safetensors), "
                   "or NAME=DIR1+DIR2 for their mean posteriors")
    args = p.parse_args()
    heads = {}
    for item in args.heads:
        name, _, folders = item.partition("=")
        members = [(*load_exported_head(Path(folder)), encoder_weights(Path(folder))) for folder in folders.split("+")]
        if len({tuple(m[1:]) for m in members}) > 1:
            p.error(f"{name}: heads on different encoders (or tails, or tuned weights) cannot be averaged")
        # (encoder, tail_ms, weights): the states they read
        heads[name] = ([head for head, *_ in members], members[0][1:])
    configs = args.configs.split(",")
    # the held-out sets through each window (windows the fit did not score are encoded now and cached)
    windows = [None if c == "offline" else tuple(int(x) for x in c.split("-")) for c in configs]
    sets = {source: _dev_sets(args.work, windows, source[0], args.draws, source[1], args.clean, source[2])
            for source in {s for _, s in heads.values()}}

    rows = []
    for cfg, window in zip(configs, windows):
        for name, (members, source) in heads.items():
            totals: dict[str, EditCounts] = {}
            names = [n for n, c in sets[source] if c == window]  # synthdev[@D]... or synthclean, fsdddev
            for set_name in names:
                data = sets[source][(set_name, window)]
                for uid, ref, hyp in zip(data.ids, data.phones, decode(data, members, list(SYMBOLS))):
                    key = "fsdd" if set_name == "fsdddev" else f"r{synth_round(uid)}"
                    totals[key] = totals.get(key, EditCounts(0, 0, 0, 0)) + edit_counts(
                        fold_timit39(ref.split()), fold_timit39(hyp))
            rows.append((name, cfg, totals))
    rounds = sorted({k for *_, t in rows for k in t if k != "fsdd"}, key=lambda r: int(r[1:]))
    print("| head | window | " + " | ".join(f"held-out synthetic, round {r[1:]}" for r in rounds)
          + f" | {MEAN} | FSDD takes 45-49 |")
    print("|---|---|" + "---|" * (len(rounds) + 2))
    for name, cfg, totals in rows:
        cells = [f"{100 * totals[k].rate:.2f}" if k in totals else "-" for k in rounds]
        # the figure held-out rules decide on: rounds weigh equally, whatever their utterance counts
        mean = [100 * totals[k].rate for k in MEAN_ROUNDS if k in totals]
        cells.append(f"{sum(mean) / len(mean):.2f}" if len(mean) == len(MEAN_ROUNDS) else "-")
        cells.append(f"{100 * totals['fsdd'].rate:.2f}" if "fsdd" in totals else "-")
        print(f"| {name} | {cfg} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
