#!/usr/bin/env python3
"""A model folder whose tuned encoder is a weighted sum of two folders' encoders, weight by weight.

``--weight w`` writes ``w * A + (1 - w) * B`` for every variable either folder tuned (the top layers both
tuned, with the final LayerNorm; a folder that did not tune a layer contributes the pinned encoder's),
into a copy of B's folder (its head, vocabulary, LM and settings). Weights between 0 and 1 average the
two (WiSE-FT, as ``train tune --init-weight`` does at export); outside, they extrapolate along the line
through them: with A the folder a tune run started from and B its averaged export at ``--init-weight
0.5``, ``--weight -1`` gives back the run's own encoder (to float16 rounding). Both folders must read
their states with the same head: the script refuses two different ``head.safetensors``.

Usage::

    scripts/blend-encoders.py A B --weight W --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _top(folder: Path) -> int:
    tuned = json.loads((folder / "phonestream.json").read_text()).get("training", {}).get("encoder_tuned", {})
    return int(tuned.get("top", 0))


def blend(a: Path, b: Path, weight: float, out: Path, encoder_name: str = "tiny.en") -> dict:
    """Write the blended folder ``out``; the training record it adds to ``phonestream.json``."""
    from phonestream.models.whisper import ENCODER_WEIGHTS_FILE, weights_digest
    from phonestream.train.tune import _start_variables, weighted_sum, write_tuned_folder

    if (a / "head.safetensors").read_bytes() != (b / "head.safetensors").read_bytes():
        raise SystemExit(f"error: {a} and {b} have different heads; a blend of their encoders fits neither")
    top = max(_top(a), _top(b))
    if top == 0:
        raise SystemExit("error: neither folder has a tuned encoder")
    variables = weighted_sum(_start_variables(a, encoder_name, top), _start_variables(b, encoder_name, top), weight)

    def digest(folder: Path) -> str | None:
        return weights_digest(folder / ENCODER_WEIGHTS_FILE) if (folder / ENCODER_WEIGHTS_FILE).exists() else None

    meta_a, meta = (json.loads((f / "phonestream.json").read_text()) for f in (a, b))
    record = {"top": top, "weight": weight,
              "a": {"encoder_sha256": digest(a), "encoder_tuned": meta_a.get("training", {}).get("encoder_tuned")},
              "b": {"encoder_sha256": digest(b)}}
    meta.setdefault("training", {})["encoder_blend"] = record
    write_tuned_folder(b, meta, variables, out)
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--weight", type=float, required=True, help="A's weight; B's is 1 - weight")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--encoder", default="tiny.en", help="the pinned Whisper encoder both folders tuned")
    args = ap.parse_args(argv)
    for folder in (args.a, args.b):
        if not (folder / "phonestream.json").is_file():
            raise SystemExit(f"error: {folder} is not a model folder (no phonestream.json)")
    blend(args.a, args.b, args.weight, args.out, args.encoder)
    print(f"{args.out}: {args.weight:g} x {args.a} + {1 - args.weight:g} x {args.b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
