#!/usr/bin/env python3
"""Real speech without labels, for ``phonestream train tune --distill`` alone: Debian's Asterisk prompts of
other voices and languages, joined into utterances of several prompts.

The label-free tune target (each streamed window's states should be the states the whole utterance
gives) needs audio, not phonemes, so real recordings in any language can teach it. Synthetic voices and
six FSDD speakers were all it had (MODEL_CARD, "v12"); these are four more real voices, professionally
recorded, each under CC BY-SA 3.0 (Debian's copyright files):

| folder (under /usr/share/asterisk/sounds) | package | voice |
|---|---|---|
| fr_CA_f_June | asterisk-core-sounds-fr-g722 | Canadian French, female (June Wallack) |
| it_IT_m_Carlo | asterisk-core-sounds-it-g722 | Italian, male |
| ru_RU_f_IvrvoiceRU | asterisk-core-sounds-ru-g722 | Russian, female |
| it_IT_f_Menardi | asterisk-prompt-it-menardi-wav | Italian, female (Marco Menardi's prompts; 8 kHz WAV) |

Not used: the English prompts (``en_US_f_Allison``: scripts/asterisk-set.py's selection set, which must
stay out of training) and the Mexican Spanish ones (``es_MX_f_Allison``: the same speaker), nor the
GPL-licensed es-co and fr-armelle prompts. G.722 files are decoded to 16 kHz by ffmpeg (as
scripts/asterisk-set.py does); ``silence/`` and prompts with under 0.25 s of sound are left out. Each
voice's prompts are trimmed of leading and trailing silence, shuffled (seeded) and joined, 2 to 6 at a
time with 0.15-0.5 s of silence between, into utterances of a few seconds to at most 16 (prompts longer
than that are left out): long enough that a
streamed window sees only part of one, which is what the tune target is about.

Usage::

    apt-get install asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722 \\
        asterisk-prompt-it-menardi-wav ffmpeg
    scripts/unlabelled-prompts.py --out W/prompts          # W/prompts/manifest.tsv + audio/
    phonestream train tune --work W --rounds 0 --unlabelled W/prompts/manifest.tsv --distill 1 --ctc-weight 0 ...
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np

SOUNDS = Path("/usr/share/asterisk/sounds")
#: folder -> speaker id; every one CC BY-SA 3.0
VOICES = {"fr_CA_f_June": "june", "it_IT_m_Carlo": "carlo", "ru_RU_f_IvrvoiceRU": "ivrvoice-ru",
          "it_IT_f_Menardi": "menardi"}
RATE = 16000
#: longest joined utterance, in seconds: augmentation's slowest speed (0.85) keeps it inside the encoder's 30 s
MAX_S = 16.0
COLUMNS = ("id", "audio", "duration_s", "speaker", "sources")


def _asterisk_set():
    spec = importlib.util.spec_from_file_location("asterisk_set", Path(__file__).with_name("asterisk-set.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trimmed(audio: np.ndarray, rate: int, floor_db: float = -40.0) -> np.ndarray:
    """``audio`` without its leading and trailing 10 ms frames quieter than ``floor_db`` under its loudest."""
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].astype(np.float64).reshape(-1, hop)
    if not len(frames):
        return audio[:0]
    rms = np.sqrt((frames**2).mean(1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > floor_db)
    return audio[loud[0] * hop : (loud[-1] + 1) * hop] if len(loud) else audio[:0]


def prompts(folder: Path) -> list[str]:
    """The prompt names of a voice folder (``digits/1``, ``agent-pass``), ``silence/`` left out."""
    names = {p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*")
             if p.suffix in (".g722", ".wav") and p.is_file()}
    return sorted(n for n in names if not n.startswith("silence/"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for manifest.tsv and audio/")
    ap.add_argument("--sounds", type=Path, default=SOUNDS)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import soundfile as sf
    import soxr

    ast = _asterisk_set()
    ffmpeg = shutil.which("ffmpeg")
    missing = [v for v in VOICES if not (a.sounds / v).is_dir()]
    if missing:
        raise SystemExit(f"error: no {', '.join(str(a.sounds / v) for v in missing)}: install the packages the "
                         "usage line names")
    (a.out / "audio").mkdir(parents=True, exist_ok=True)
    rows, total_s = [], 0.0
    for v, (voice, speaker) in enumerate(VOICES.items()):
        rng = np.random.default_rng([a.seed, v])
        clips = []
        for name in prompts(a.sounds / voice):
            read = ast.read_prompt(name, a.sounds / voice, ffmpeg)
            if read is None:
                continue
            audio, rate = read[0].astype(np.float32) / 32768, read[1]
            if rate != RATE:
                audio = soxr.resample(audio, rate, RATE).astype(np.float32)
            audio = trimmed(audio, RATE)
            if len(audio) >= RATE // 4:
                clips.append((name, audio))
        order = [i for i in rng.permutation(len(clips)) if len(clips[i][1]) <= MAX_S * RATE]
        k = 0
        while k < len(order):
            take, want, seconds = [], int(rng.integers(2, 7)), 0.0
            while k < len(order) and len(take) < want:
                clip = clips[order[k]]
                if take and seconds + 0.5 + len(clip[1]) / RATE > MAX_S:
                    break
                take.append(clip)
                seconds += 0.5 + len(clip[1]) / RATE
                k += 1
            parts = []
            for j, (_, audio) in enumerate(take):
                if j:
                    parts.append(np.zeros(int(rng.uniform(0.15, 0.5) * RATE), np.float32))
                parts.append(audio)
            utt = np.concatenate(parts)
            uid = f"{speaker}-{len(rows):04d}"
            sf.write(a.out / "audio" / f"{uid}.flac", utt, RATE, subtype="PCM_16")
            rows.append({"id": uid, "audio": f"audio/{uid}.flac", "duration_s": f"{len(utt) / RATE:.3f}",
                         "speaker": speaker, "sources": " ".join(n for n, _ in take)})
            total_s += len(utt) / RATE
        print(f"{voice}: {len(clips)} prompts", file=sys.stderr)
    with (a.out / "manifest.tsv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, COLUMNS, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} utterances, {total_s / 60:.1f} min, {len(VOICES)} voices -> {a.out / 'manifest.tsv'}")


if __name__ == "__main__":
    main()
