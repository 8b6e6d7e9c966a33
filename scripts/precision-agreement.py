#!/usr/bin/env python3
"""Streamed-vs-offline agreement per precision (``--dtype``), against the float32 run of the same model.

For each model and dtype it streams real recordings as if live (the model's default window, 20 ms pieces),
decodes each whole file at once too, and prints one row:

- ``stream vs offline PER``: the streamed phonemes against the same precision's offline decode (what
  every ``phonestream stream`` summary reports as ``stream_vs_offline``), over all the files;
- ``vs float32: offline PER`` / ``streamed PER``: that precision's phonemes against the float32 run's
  (0 = the same phonemes); ``frames same argmax``: share of offline frames whose most likely symbol is
  the float32 one; ``max |dp|``: the largest difference of any posterior probability.

Usage::

    scripts/precision-agreement.py [--model default|tiny-random|FOLDER ...] [--dtype auto,float32,...]
                                   [--device cpu|cuda] [--decoder auto|greedy|beam] [--file F ...] [--json]

``tiny-random`` builds a randomly initialised tiny wav2vec2 CTC model (``scripts/random_models.py``: the
test suite's shape, seed 0, its head sharpened so that it emits varied phonemes): enough to see what
reduced precision does to a torch model's posteriors, nothing about accuracy. The default recordings are
the two shipped samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from random_models import wav2vec2  # noqa: E402

from phonestream.audio import load_audio, pieces  # noqa: E402
from phonestream.console import print_rows  # noqa: E402
from phonestream.engine import Recognizer  # noqa: E402
from phonestream.metrics import edit_counts  # noqa: E402
from phonestream.models import load_model  # noqa: E402
from phonestream.numerics import pin_blas_threads  # noqa: E402
from phonestream.streaming import StreamConfig  # noqa: E402

SAMPLES = sorted((REPO / "phonestream" / "samples").glob("*.flac"))


def run(model, audios: list[np.ndarray], decoder: str) -> dict:
    """Stream and decode offline every recording; keep phonemes and offline posteriors."""
    rec = Recognizer(model, StreamConfig.for_model(model), decoder=decoder)
    out: dict = {"streamed": [], "offline": [], "posteriors": [], "compute_s": 0.0, "audio_s": 0.0}
    for audio in audios:
        stream = rec.stream(keep_audio=True, partials=False)
        for piece in pieces(audio, model.sample_rate // 50):
            stream.accept(piece)
        summary = stream.finish(offline=True)[-1].metrics
        out["streamed"].append(summary["phoneme_string"].split())
        out["offline"].append(summary["offline_string"].split())
        out["posteriors"].append(rec.offline_log_probs(audio))
        out["compute_s"] += summary["rtf"] * summary["audio_s"]
        out["audio_s"] += summary["audio_s"]
    return out


def per(refs: list[list[str]], hyps: list[list[str]]) -> float:
    total = sum((edit_counts(r, h) for r, h in zip(refs, hyps)), start=edit_counts([], []))
    return round(100 * total.rate, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="default, tiny-random or a model folder (repeatable)")
    p.add_argument("--dtype", default="auto,float32,bfloat16,float16",
                   help="precisions to compare with float32 (comma-separated; those the device cannot do are "
                        "reported, not run)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--decoder", default="auto", choices=["auto", "greedy", "beam"])
    p.add_argument("--file", action="append", type=Path, help="recording (repeatable; default: the shipped samples)")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    args = p.parse_args()
    pin_blas_threads()
    audios = [load_audio(f, 16000) for f in (args.file or SAMPLES)]
    rows, unsupported = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model or ["default", "tiny-random"]:
            path = {"default": None, "tiny-random": "tiny"}.get(name, name)
            if path == "tiny":
                path = str(wav2vec2("tiny", Path(tmp) / "tiny"))
            label = Path(name).name if path == name else name
            try:
                ref = run(load_model(path, device=args.device, dtype="float32"), audios, args.decoder)
            except Exception as err:  # noqa: BLE001 - e.g. a backend without this device: the next model
                unsupported.append(f"{label} on {args.device}: {(str(err).splitlines() or [repr(err)])[0]}")
                continue
            for dtype in args.dtype.split(","):
                try:
                    model = load_model(path, device=args.device, dtype=dtype)
                    r = ref if model.precision == "float32" else run(model, audios, args.decoder)
                except Exception as err:  # noqa: BLE001 - a dtype the device cannot do is a row, not a crash
                    rows.append({"model": label, "dtype": dtype, "device": args.device, "runs as": "unsupported"})
                    reason = (str(err).splitlines() or [repr(err)])[0]
                    unsupported.append(f"{label} --dtype {dtype}: {reason}")
                    continue
                pairs = list(zip(r["posteriors"], ref["posteriors"]))
                frames = np.concatenate([a.argmax(1) == b.argmax(1) for a, b in pairs])
                diff = max(float(np.abs(np.exp(a) - np.exp(b)).max()) for a, b in pairs)
                rows.append({
                    "model": label, "dtype": dtype, "device": args.device, "runs as": model.precision,
                    "audio s": round(r["audio_s"], 1), "phonemes": sum(map(len, r["streamed"])),
                    "stream vs offline PER %": per(r["offline"], r["streamed"]),
                    "vs float32: offline PER %": per(ref["offline"], r["offline"]),
                    "streamed PER %": per(ref["streamed"], r["streamed"]),
                    "frames same argmax %": round(100 * float(frames.mean()), 2), "max |dp|": round(diff, 4),
                    "stream rtf": round(r["compute_s"] / r["audio_s"], 4),
                })
    if args.json:
        print(json.dumps({"rows": rows, "unsupported": unsupported}))
        return
    if rows:
        print_rows(rows, f"precision agreement on {len(audios)} recording(s), {args.device}, decoder {args.decoder}: "
                   "each dtype against float32 of the same model")
    for line in unsupported:
        print(line, file=sys.stderr)


if __name__ == "__main__":
    main()
