#!/usr/bin/env python3
"""The beam decoder's commit rule, with and without the lookahead, on the recipe's held-out sets, streamed.

The held-out sets are the ones checkpoints and decoder settings are chosen on (never reported): one
synthetic utterance in 25 of the recipe's rounds (``is_synth_dev``; augmented, seeded, as the training
audio is) and FSDD takes 45-49 of the training speakers. Unlike ``scripts/tune-decoder-heldout.py``,
whose cached states keep only each window's final frames, every recording here goes through the live
pipeline (:class:`~phonestream.Recognizer`, endpointing on) once per latency preset, its stitched blocks
(final and provisional frames) are recorded, and each commit rule decodes the same blocks
(:func:`phonestream.evaluate.replay_file`). Reported per rule: PER (39 classes) by group, emission delay
p50 / p95 over all phonemes (audio time, ``committed_at - end``), and the decoder's time per step.
``--blend`` adds rows for the final-frames rule on frames blended with their earlier provisional estimate
(:func:`blended`: a candidate that failed its held-out rule, MODEL_CARD "The posteriors' part").

Only the held-out utterances need to exist in WORK/synth (the recipe's ``stage_data(..., keep=is_synth_dev)``
makes just those). The shipped LM has seen the held-out synthetic sentences; score with one that has not
(``scripts/tune-decoder-heldout.py --write-heldout-manifest`` and ``build-default-lm.sh``'s ``EXCLUDE``).

Usage::

    scripts/commit-heldout.py --work W --lm tuning.arpa.gz [--latency low,balanced,accurate] [--limit N]
                              [--blend 0.2,0.35,0.5]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

RULES = {"final": False, "lookahead": True}


def blended(record: list, weight: float) -> list:
    """``record`` (a stream's recorded blocks) with each final frame replaced by the log of
    ``(1 - weight) * p_final + weight * p_before``, where ``p_before`` is the same frame's provisional
    estimate from the step before, if it had one (rule-v16's candidate; no model call, no delay)."""
    from phonestream.streaming import FrameBlock

    if not weight:
        return record
    earlier: dict[int, np.ndarray] = {}
    out = []
    for blocks, seconds in record:
        new = []
        for b in blocks:
            final = b.final.copy()
            for i in range(len(final)):
                prev = earlier.get(b.start_frame + i)
                if prev is not None:
                    final[i] = np.logaddexp(np.log1p(-weight) + final[i], np.log(weight) + prev)
            first = b.start_frame + len(b.final)
            earlier = {first + i: row for i, row in enumerate(b.provisional)}
            new.append(FrameBlock(b.start_frame, final, b.provisional, b.received, b.last))
        out.append((new, seconds))
    return out


def main() -> None:
    from phonestream import Recognizer, StreamConfig, load_model
    from phonestream.evaluate import replay_file, stream_file
    from phonestream.metrics import EditCounts, edit_counts
    from phonestream.phones import fold_timit39
    from phonestream.train.evaluate import fsdd_items
    from phonestream.train.pipeline import synth_items, synth_round
    from phonestream.train.states import augmented

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="recipe work folder (WORK/synth/manifest.tsv)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--lm", required=True, help="ARPA LM to decode with (see above)")
    p.add_argument("--latency", default="low,balanced,accurate")
    p.add_argument("--limit", type=int, default=None, help="at most N recordings of each set (a quick look)")
    p.add_argument("--blend", default="", help="W[,W...]: also the final-frames rule on blended frames "
                   "(see blended(); rule-v16)")
    a = p.parse_args()
    rules = {name: (look, 0.0) for name, look in RULES.items()}
    rules.update({f"final, blend {w}": (False, float(w)) for w in a.blend.split(",") if w})

    model = load_model(a.model)
    synth = synth_items(a.work, held_out=True)[: a.limit]
    sets = [("fsdd", augmented(fsdd_items(split="dev")[: a.limit], model.sample_rate, np.random.default_rng(0), False)),
            ("synth", augmented(synth, model.sample_rate, np.random.default_rng(0)))]
    audio = [(f"r{synth_round(it.uid)}" if name == "synth" else "fsdd", it.phones, x)
             for name, items in sets for it, x in items]
    groups = ["synth", *sorted({g for g, _, _ in audio if g != "fsdd"}), "fsdd"]
    print(f"{len(audio)} recordings ({sum(len(x) for _, _, x in audio) / model.sample_rate / 60:.1f} min), "
          f"{model.description}, LM {a.lm}; PER % (39 classes)")
    print("| preset | commit | " + " | ".join(groups) + " | delay p50 / p95 s | decoder ms / step |")
    print("|---|---|" + "---|" * len(groups) + "---|---|")
    for latency in a.latency.split(","):
        rec = Recognizer(model, config=StreamConfig.for_model(model, latency=latency), lm=a.lm)
        base = rec.decoder_config(decoder="beam")
        counts = {rule: {g: EditCounts(0, 0, 0, 0) for g in groups} for rule in rules}
        delays: dict[str, list[float]] = {rule: [] for rule in rules}
        spent = dict.fromkeys(rules, 0.0)
        steps = 0
        for group, phones, x in audio:
            record: list = []
            stream_file(rec, x, 20, record)
            steps += sum(len(blocks) for blocks, _ in record)
            ref = fold_timit39(phones.split())
            for rule, (look, weight) in rules.items():
                t0 = time.perf_counter()
                hyp, _ = replay_file(rec, blended(record, weight), len(x), replace(base, lookahead=look))
                spent[rule] += time.perf_counter() - t0
                e = edit_counts(ref, fold_timit39([q.phoneme for q in hyp]))
                for g in (group, "synth" if group != "fsdd" else None):
                    if g:
                        counts[rule][g] = counts[rule][g] + e
                delays[rule] += [q.committed_at - q.end for q in hyp]
        for rule in rules:
            d = np.array(delays[rule])
            cells = [f"{100 * counts[rule][g].rate:.2f}" for g in groups]
            print(f"| {latency} | {rule} | " + " | ".join(cells) + f" | {np.percentile(d, 50):.2f} / "
                  f"{np.percentile(d, 95):.2f} | {1000 * spent[rule] / max(steps, 1):.2f} |", flush=True)


if __name__ == "__main__":
    main()
