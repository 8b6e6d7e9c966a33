#!/usr/bin/env python3
"""Greedy PER of model heads on the recipe's held-out synthetic speech, by synthesis round.

The held-out set (one synthetic utterance in 25, ``is_synth_dev``) is cached by ``phonestream train fit``
under WORK/eval-cache as encoder states, which do not depend on the head. Round-2 utterances (ids
``r2-...``) were trained on by no head made from round 1, so they compare such heads fairly; round-1
held-out utterances were in the training data of heads made before the hold-out existed.

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
from phonestream.phones import fold_timit39
from phonestream.train.evaluate import decode
from phonestream.train.phones import SYMBOLS
from phonestream.train.trainer import load_states


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--configs", default="320-1280-160,offline")
    p.add_argument("heads", nargs="+", help="NAME=MODEL_DIR (a folder with phonestream.json and head.safetensors)")
    args = p.parse_args()
    heads = {}
    for item in args.heads:
        name, _, folder = item.partition("=")
        spec = {k: v for k, v in json.loads((Path(folder) / "phonestream.json").read_text())["head"].items()
                if k != "weights"}
        head = build_head(spec, 384, len(SYMBOLS))
        head.load_state_dict(load_file(str(Path(folder) / "head.safetensors")))
        heads[name] = head.eval()
    print("| head | window | round-1 held-out PER | round-2 held-out PER |")
    print("|---|---|---|---|")
    for cfg in args.configs.split(","):
        data = load_states([args.work / "eval-cache" / f"synthdev-{cfg}.npz"])
        for name, head in heads.items():
            totals = {"r1": EditCounts(0, 0, 0, 0), "r2": EditCounts(0, 0, 0, 0)}
            for uid, ref, hyp in zip(data.ids, data.phones, decode(data, head, list(SYMBOLS))):
                key = "r2" if uid.startswith("r2-") else "r1"
                totals[key] = totals[key] + edit_counts(fold_timit39(ref.split()), fold_timit39(hyp))
            print(f"| {name} | {cfg} | {100 * totals['r1'].rate:.2f} | {100 * totals['r2'].rate:.2f} |")


if __name__ == "__main__":
    main()
