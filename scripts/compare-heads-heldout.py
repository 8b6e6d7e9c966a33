#!/usr/bin/env python3
"""Greedy PER of model heads on the recipe's held-out sets: synthetic speech by synthesis round, and
real FSDD takes 45-49.

The held-out sets (one synthetic utterance in 25, ``is_synth_dev``; FSDD takes 45-49 of the training
speakers) are cached by ``phonestream train fit`` under WORK/eval-cache (WORK/eval-cache-base for heads
on Whisper base) as encoder states, which do not depend on the head. Round-2 utterances (ids ``r2-...``)
were trained on by no head made from round 1, so they compare such heads fairly; round-1 held-out
utterances were in the training data of heads made before the hold-out existed, and FSDD takes 45-49
in that of the shipped v1 head (so its FSDD column is not held out).

Usage::

    scripts/compare-heads-heldout.py --work W NAME=MODEL_DIR [NAME=MODEL_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file

from phonestream.metrics import EditCounts, edit_counts
from phonestream.models.torch_heads import build_head
from phonestream.models.whisper import BY_CONFIG_KEY
from phonestream.phones import fold_timit39
from phonestream.train.__main__ import _dev_sets
from phonestream.train.evaluate import decode
from phonestream.train.phones import SYMBOLS
from phonestream.train.pipeline import cache_folder
from phonestream.train.trainer import load_states


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--configs", default="320-1280-160,offline",
                   help="windows CHUNK-LEFT-RIGHT (ms) or offline, comma separated")
    p.add_argument("heads", nargs="+", help="NAME=MODEL_DIR (a folder with phonestream.json and head.safetensors)")
    args = p.parse_args()
    heads = {}
    for item in args.heads:
        name, _, folder = item.partition("=")
        meta = json.loads((Path(folder) / "phonestream.json").read_text())
        encoder = BY_CONFIG_KEY[meta["backbone"]["type"]]
        spec = {k: v for k, v in meta["head"].items() if k != "weights"}
        head = build_head(spec, encoder.dim, len(SYMBOLS))
        head.load_state_dict(load_file(str(Path(folder) / "head.safetensors")))
        cache = cache_folder(args.work, encoder.name, "eval-cache")
        heads[name] = (head.eval(), cache, encoder.name)
    configs = args.configs.split(",")
    # windows the fit did not score are encoded now (cached beside the fit's, reused next time)
    windows = [None if c == "offline" else tuple(int(x) for x in c.split("-")) for c in configs]
    for encoder in {encoder for _, _, encoder in heads.values()}:
        _dev_sets(args.work, windows, encoder)
    print("| head | window | held-out synthetic, round 1 | round 2 | FSDD takes 45-49 |")
    print("|---|---|---|---|---|")
    for cfg in configs:
        for name, (head, cache, _) in heads.items():
            totals = {"r1": EditCounts(0, 0, 0, 0), "r2": EditCounts(0, 0, 0, 0), "fsdd": EditCounts(0, 0, 0, 0)}
            for set_name in ("synthdev", "fsdddev"):
                data = load_states([cache / f"{set_name}-{cfg}.npz"])
                for uid, ref, hyp in zip(data.ids, data.phones, decode(data, head, list(SYMBOLS))):
                    key = "fsdd" if set_name == "fsdddev" else "r2" if uid.startswith("r2-") else "r1"
                    totals[key] = totals[key] + edit_counts(fold_timit39(ref.split()), fold_timit39(hyp))
            print(f"| {name} | {cfg} | {100 * totals['r1'].rate:.2f} | {100 * totals['r2'].rate:.2f} "
                  f"| {100 * totals['fsdd'].rate:.2f} |")


if __name__ == "__main__":
    main()
