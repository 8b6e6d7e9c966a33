#!/usr/bin/env python3
"""Beam-search settings (LM weight, insertion bonus, beam) of a model, scored on the recipe's held-out sets.

The held-out sets are those of ``scripts/compare-heads-heldout.py`` (one synthetic utterance in 25, FSDD
takes 45-49; never reported), through one streaming window. The model's posteriors are computed once
from the cached encoder states; each setting then replays them through the project's
:class:`~phonestream.beam.BeamDecoder` in the streamer's blocks, whose sizes the cache keeps
(``train.evaluate.replay_in_blocks``, tested against a live stream; endpointing is left out: the held-out
utterances are single sentences or digits). The cache keeps no lookahead frames, so this scores the
final-frames commit rule, not the default lookahead commit (``scripts/commit-heldout.py`` streams both).

The LM to score with is given (``--lm``). The default model's LM was built from the sentences the
synthetic speech reads, held-out ones included, so it has seen the held-out synthetic text: for
choosing weights, build an LM from the same text without the held-out sentences
(``--write-heldout-manifest`` writes them as a manifest for ``scripts/build-default-lm.sh``'s ``EXCLUDE``).

Usage::

    scripts/tune-decoder-heldout.py --work W --write-heldout-manifest heldout.tsv
    OUT=tuning.arpa.gz EXCLUDE=heldout.tsv scripts/build-default-lm.sh
    scripts/tune-decoder-heldout.py --work W --lm tuning.arpa.gz --weights 0.3,0.5,0.7 --bonuses 1,1.5,2
"""

from __future__ import annotations

import argparse
import csv
import itertools
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from phonestream.beam import BeamDecoder
from phonestream.decoding import DEFAULT_BEAM, DEFAULT_LM_WEIGHT, LM_INSERTION_BONUS, GreedyDecoder
from phonestream.lm import load_lm
from phonestream.metrics import EditCounts, edit_counts
from phonestream.models.base import Vocabulary
from phonestream.phones import fold_timit39
from phonestream.train.__main__ import DEFAULT_STREAMING, _dev_sets
from phonestream.train.evaluate import config_name, is_synth_dev, load_exported_head, log_posteriors, replay_in_blocks
from phonestream.train.phones import SYMBOLS
from phonestream.train.pipeline import synth_round

FRAME_S = 0.02
SAMPLE_RATE = 16000
_JOBS: dict = {}


def _score(setting: tuple[str, float, float, int]) -> tuple[tuple, dict[str, EditCounts]]:
    """PER counts per held-out group for one (decoder, weight, bonus, beam)."""
    kind, weight, bonus, beam = setting
    rows, blocks, refs, groups, lm_path = (_JOBS[k] for k in ("rows", "blocks", "refs", "groups", "lm"))
    vocab = Vocabulary(tuple(SYMBOLS), 0)
    totals: dict[str, EditCounts] = {}
    for row, sizes, ref, group in zip(rows, blocks, refs, groups):
        if kind == "greedy":
            dec = GreedyDecoder(vocab, FRAME_S, SAMPLE_RATE)
        else:
            dec = BeamDecoder(vocab, FRAME_S, SAMPLE_RATE, beam=beam, lm=load_lm(lm_path) if lm_path else None,
                              lm_weight=weight, insertion_bonus=bonus)
        counts = edit_counts(fold_timit39(ref.split()), fold_timit39(replay_in_blocks(dec, row, sizes)))
        for key in (group, "synth" if group.startswith("r") else None):
            if key:
                totals[key] = totals.get(key, EditCounts(0, 0, 0, 0)) + counts
    return setting, totals


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / "phonestream" / "default_model")
    p.add_argument("--config", default=config_name(DEFAULT_STREAMING), help="window CHUNK-LEFT-RIGHT ms")
    p.add_argument("--lm", type=Path, help="ARPA LM to score with (see above)")
    p.add_argument("--weights", default=str(DEFAULT_LM_WEIGHT))
    p.add_argument("--bonuses", default=str(LM_INSERTION_BONUS))
    p.add_argument("--beams", default=str(DEFAULT_BEAM))
    p.add_argument("--greedy", action="store_true", help="add a greedy row")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--write-heldout-manifest", type=Path,
                   help="write the held-out synthetic utterances as a manifest (id, audio, text, phones_cmu) "
                        "for build-default-lm.sh's EXCLUDE, and stop")
    args = p.parse_args()
    if args.write_heldout_manifest:
        with open(args.work / "synth" / "manifest.tsv", newline="") as f:
            held = [it for it in csv.DictReader(f, delimiter="\t") if is_synth_dev(it["id"])]
        with open(args.write_heldout_manifest, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["id", "audio", "text", "phones_cmu"])
            w.writerows([[it["id"], it["audio"], it["text"], it["phones"]] for it in held])
        print(f"{len(held)} held-out sentences -> {args.write_heldout_manifest}")
        return
    window = tuple(int(x) for x in args.config.split("-"))
    head, encoder, tail = load_exported_head(args.model)
    sets = _dev_sets(args.work, [window], encoder, tail_ms=tail)
    rows, blocks, refs, groups = [], [], [], []
    for set_name in ("synthdev", "fsdddev"):
        data = sets[(set_name, window)]
        rows += log_posteriors(data, head, list(SYMBOLS))
        blocks += [data.seg_kept[segs] for segs in data.utt_segs]  # each step's final frames
        refs += list(data.phones)
        groups += ["fsdd" if set_name == "fsdddev" else f"r{synth_round(u)}" for u in data.ids]
    _JOBS.update(rows=rows, blocks=blocks, refs=refs, groups=groups, lm=str(args.lm) if args.lm else None)
    settings = [("greedy", 0.0, 0.0, 1)] if args.greedy else []
    settings += [("beam", float(w), float(b), int(k)) for k, w, b in itertools.product(
        args.beams.split(","), args.weights.split(","), args.bonuses.split(","))]
    with ProcessPoolExecutor(args.jobs) as pool:  # forked workers read _JOBS
        results = list(pool.map(_score, settings))
    rounds = sorted({g for g in groups if g != "fsdd"}, key=lambda r: int(r[1:]))
    print(f"model {args.model}, window {args.config}, LM {args.lm}; PER % (39 classes), streamed block by block")
    print("| decoder | beam | LM weight | bonus | held-out synthetic, all | "
          + " | ".join(f"round {r[1:]}" for r in rounds) + " | FSDD takes 45-49 |")
    print("|---|---|---|---|---|" + "---|" * (len(rounds) + 1))
    for (kind, w, b, k), totals in results:
        cells = [f"{100 * totals[g].rate:.2f}" if g in totals else "-" for g in ("synth", *rounds, "fsdd")]
        label = ("greedy", "-", "-", "-") if kind == "greedy" else ("beam", k, f"{w:g}", f"{b:g}")
        print("| " + " | ".join(str(x) for x in label) + " | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
