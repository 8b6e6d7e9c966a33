#!/usr/bin/env python3
"""Test-time levers on the unreported selection sets: changes to the model's outputs that need no training.

Each probe decodes every utterance whole (offline; a lever that does not help offline will not help the
stream) and scores PER % (39 classes, CMU dictionary phones) on the Asterisk prompts
(``scripts/asterisk-set.py``) and, for the speed probe, FSDD takes 45-49:

- **state statistics**: each utterance's encoder states shifted (``mean``) or standardised (``std``) per
  channel to the statistics of training audio (synthetic utterances of WORK/synth, augmented as the recipe
  does, and FSDD training takes), as speaker or channel normalisation would; greedy decoding;
- **head ensemble** (``--other MODEL_DIR``): the log of the mean posteriors of the model's head and another
  head on the same encoder states; greedy decoding;
- **phone priors**: the log posteriors of the phones minus ALPHA x the log of their mean posterior on the
  same training audio (hybrid-style prior division; ``all`` divides the blank's too), renormalised; the
  model's default decoder (beam search with its LM);
- **speed**: the audio played F times faster (pitch, formants and tempo x F, soxr), as a global
  vocal-tract warp; the default decoder.

Usage::

    scripts/test-time-probes.py --asterisk W/asterisk/manifest.tsv --work W [--model DIR] [--other DIR]
                                [--data ../shared/data] [--stats 300] [--limit N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soxr

from phonestream import load_audio, load_model
from phonestream.decoding import DecoderConfig, decode_offline, greedy_phonemes, make_decoder
from phonestream.metrics import EditCounts, edit_counts
from phonestream.phones import fold_timit39
from phonestream.train.augment import augment
from phonestream.train.evaluate import fsdd_items
from phonestream.train.pipeline import synth_items
from phonestream.train.states import Item, read_manifest

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def per(counts: EditCounts, split: bool = True) -> str:
    rate = f"{100 * counts.rate:.2f}"
    return f"{rate} ({counts.substitutions} / {counts.deletions} / {counts.insertions})" if split else rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asterisk", type=Path, required=True, help="the manifest scripts/asterisk-set.py wrote")
    p.add_argument("--work", type=Path, required=True, help="a recipe work folder with synth/ (train data)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--other", default=None, help="a model folder whose head is averaged with --model's")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="holds fsdd/")
    p.add_argument("--stats", type=int, default=300, help="synthetic utterances for the training statistics")
    p.add_argument("--limit", type=int, default=None, help="only the first N utterances of each set, for a quick look")
    args = p.parse_args()

    model = load_model(args.model, threads=2)
    other = load_model(args.other, threads=2).head if args.other else None
    encode = model.backbone.encode_batch

    # training statistics: encoder states and mean posteriors of augmented synthetic speech and FSDD takes
    # (the first --stats of WORK/synth's training utterances in the recipe's order: another set while it grows)
    rng = np.random.default_rng(0)
    train = synth_items(args.work, held_out=False)[: args.stats] + fsdd_items(args.data / "fsdd", "train")[::29]
    states = [encode([augment(load_audio(it.path, SR), rng) if it.source != "fsdd" else load_audio(it.path, SR)])[0]
              for it in train]
    frames = np.concatenate(states)
    mu, sd = frames.mean(0), frames.std(0)
    prior = np.exp(np.concatenate([model.head.log_probs(s) for s in states])).mean(0)
    spread = np.mean([np.linalg.norm(x.mean(0) - mu) for x in states])
    print(f"training statistics: {len(train)} utterances, {len(frames)} frames; blank prior {prior[0]:.3f}; "
          f"an utterance's mean state lies {spread:.2f} from the training mean on average")

    def decode(log_probs: np.ndarray, n_samples: int) -> list[str]:
        decoder = make_decoder(DecoderConfig(), model.vocab, model.frame_stride / SR, SR, model.source_dir)
        return [ph.phoneme for ph in decode_offline(log_probs.astype(np.float32), decoder, n_samples, SR)]

    def greedy(log_probs: np.ndarray) -> list[str]:
        return greedy_phonemes(log_probs.astype(np.float32), model.vocab)

    def renorm(x: np.ndarray) -> np.ndarray:
        return x - np.logaddexp.reduce(x, axis=1, keepdims=True)

    asterisk = read_manifest(args.asterisk, phones_col="phones_cmu")[: args.limit]
    digits = fsdd_items(args.data / "fsdd", "dev")[: args.limit]
    rows: dict[tuple[str, str], dict[str, EditCounts]] = {}

    def score(probe: str, variant: str, where: str, item: Item, hyp: list[str]) -> None:
        cell = rows.setdefault((probe, variant), {})
        counts = edit_counts(fold_timit39(item.phones.split()), fold_timit39(hyp))
        cell[where] = cell[where] + counts if where in cell else counts

    distances = []
    for item in asterisk:
        audio = load_audio(item.path, SR)
        s = encode([audio])[0]
        distances.append(np.linalg.norm(s.mean(0) - mu))
        lp = model.head.log_probs(s)
        score("state statistics", "none (greedy)", "asterisk", item, greedy(lp))
        score("state statistics", "mean", "asterisk", item, greedy(model.head.log_probs(s - s.mean(0) + mu)))
        score("state statistics", "std", "asterisk", item,
              greedy(model.head.log_probs((s - s.mean(0)) / (s.std(0) + 1e-3) * sd + mu)))
        if other is not None:
            score("head ensemble", "other head alone (greedy)", "asterisk", item, greedy(other.log_probs(s)))
            score("head ensemble", "mean posteriors", "asterisk", item,
                  greedy(np.logaddexp(lp, other.log_probs(s)) - np.log(2)))
        score("phone priors", "none (default decoder)", "asterisk", item, decode(lp, len(audio)))
        for alpha in (0.2, 0.4, 0.6):
            correction = alpha * np.log(prior)
            score("phone priors", f"phones, alpha {alpha}", "asterisk", item,
                  decode(renorm(lp - np.concatenate([[0.0], correction[1:]])), len(audio)))
        score("phone priors", "all, alpha 0.4", "asterisk", item, decode(renorm(lp - 0.4 * np.log(prior)), len(audio)))
    for where, items in (("asterisk", asterisk), ("fsdd", digits)):
        for item in items:
            audio = load_audio(item.path, SR)
            for f in (0.9, 0.95, 1.0, 1.05, 1.1):
                faster = audio if f == 1.0 else soxr.resample(audio, int(SR * f), SR).astype(np.float32)
                score("speed (default decoder)", f"x {f:g}", where, item,
                      decode(model.log_probs(faster), len(faster)))

    print(f"an Asterisk utterance's mean state lies {np.mean(distances):.2f} from the training mean on average")
    print("| probe | variant | Asterisk PER (sub / del / ins) | FSDD takes 45-49 PER |")
    print("|---|---|---|---|")
    for (probe, variant), cell in rows.items():
        digits = per(cell["fsdd"], split=False) if "fsdd" in cell else "-"
        print(f"| {probe} | {variant} | {per(cell['asterisk'])} | {digits} |")


if __name__ == "__main__":
    main()
