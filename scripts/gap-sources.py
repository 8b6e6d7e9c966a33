#!/usr/bin/env python3
"""Where a model's stream-to-offline gap comes from: the streamed posteriors, or committing them as they come.

For each recording of a manifest it scores three decodings against the reference phones (PER %, 39-class
folding by default), all with the model's default decoder:

1. **stream**: streamed and committed incrementally, as ``phonestream eval`` streams it;
2. **stream posteriors, decoded at once**: the final frames that stream stitched, decoded as one
   utterance (no phoneme committed before the last frame);
3. **offline**: the whole recording's posteriors (one encoder pass), decoded at once.

(1) - (2) is what the commit rule costs; (2) - (3) is what the streaming windows cost the posteriors.

Usage::

    scripts/gap-sources.py MANIFEST.tsv [--model DIR] [--phones-column phones_cmu] [--latency balanced]
                           [--fold timit39|none] [--limit N]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from phonestream import Recognizer, StreamConfig, load_audio, load_model
    from phonestream.engine import decode_offline
    from phonestream.evaluate import FOLDINGS, stream_file
    from phonestream.manifest import read_manifest
    from phonestream.metrics import edit_counts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--phones-column", default="phones")
    ap.add_argument("--latency", default="balanced")
    ap.add_argument("--fold", default="timit39", choices=sorted(FOLDINGS))
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args()
    model = load_model(a.model)
    rec = Recognizer(model, config=StreamConfig.for_model(model, latency=a.latency))
    fold = FOLDINGS[a.fold]
    items, _ = read_manifest(a.manifest, phones_column=a.phones_column, limit=a.limit)
    names = ("stream", "stream posteriors, decoded at once", "offline")
    errors, ref_len = dict.fromkeys(names, 0), 0
    for it in items:
        audio = load_audio(it.audio, model.sample_rate)
        ref = fold(it.phones)
        record: list = []
        streamed, _ = stream_file(rec, audio, 20, record)
        stitched = np.concatenate([b.final for blocks, _ in record for b in blocks])
        at_once = decode_offline(stitched, rec.make_decoder(), len(audio), model.sample_rate)
        for name, hyp in zip(names, (streamed, at_once, rec.transcribe(audio))):
            e = edit_counts(ref, fold([p.phoneme for p in hyp]))
            errors[name] += e.substitutions + e.deletions + e.insertions
        ref_len += len(ref)
    print(f"{a.manifest}: {len(items)} recordings, {model.description}, {a.latency}, folding {a.fold}")
    print("| decoding | PER % |\n|---|---|")
    for name in names:
        print(f"| {name} | {100 * errors[name] / max(ref_len, 1):.2f} |")


if __name__ == "__main__":
    main()
