#!/usr/bin/env python3
"""A real-speech development set from Debian's Asterisk prompts: one US English speaker, never reported.

Debian's ``asterisk-core-sounds-en`` packages hold the Asterisk PBX's core prompts, read by one
professional speaker (Allison Smith, CC BY-SA 3.0) and shipped with their transcripts: 568 recordings,
about 25 minutes with the silences (510 speech prompts, 17.5 min, have every word in the dictionary),
from one-word prompts ("zero", "alpha") to IVR menus. They are real recordings that
neither training nor the reported sets (fraser_arctic, the FSDD test split) contain, so choices can be
checked on a real voice without touching the reported figures. This writes them as a manifest that
``phonestream eval`` reads (the columns of ``../shared/data``'s manifests) with 16 kHz FLAC audio:
decoded from the packages' G.722 files (wideband, 50-7000 Hz) by ffmpeg where both are installed, else
the 8 kHz WAV files as they are.

Labels are the CMU dictionary's first pronunciation of each word of the transcript (the letter names of
``letters/`` as spoken: ``a`` is ``EY``); numbers written in digits are spelled out, ``#`` and ``*`` are
read as the prompts read them ("pound", "star"); a row with a word outside the dictionary keeps an empty
``phones_cmu`` and ``phonestream eval`` skips it, as it does in ``../shared/data``'s sets. Sound effects
and silences (``[beep]``, ``silence/``) are left out.

Usage::

    apt-get install asterisk-core-sounds-en-g722 asterisk-core-sounds-en-wav ffmpeg
    scripts/asterisk-set.py --out W/asterisk            # W/asterisk/manifest.tsv + audio/
    phonestream eval W/asterisk/manifest.tsv --phones-column phones_cmu --latency balanced
"""

from __future__ import annotations

import argparse
import csv
import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SPEAKER = "allison"
COLUMNS = ("id", "audio", "duration_s", "speaker", "text", "phones_cmu", "phones_orig")

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_LETTER_A = ["EY"]  # the dictionary's first "a" is the article (AH); letters/a.* says the letter name


def number_words(n: int) -> str:
    """``n`` (0 <= n < 10000) in words, as read aloud: 162 -> "one hundred sixty two"."""
    if not 0 <= n < 10000:
        raise ValueError(f"{n} is out of range")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        head = _ONES[n // 100] + " hundred"
    else:
        head = number_words(n // 1000) + " thousand"
        n %= 1000
        if n >= 100:
            head += " " + _ONES[n // 100] + " hundred"
    rest = n % 100
    return head if rest == 0 else head + " " + number_words(rest)


def spoken_text(text: str) -> str | None:
    """The words a transcript's prompt says, or None for a sound effect or silence: bracketed and
    parenthesised or <angled> notes dropped, ``#`` -> "pound", ``*`` -> "star", numbers in digits
    spelled out."""
    text = re.sub(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>", " ", text)
    text = text.replace("#", " pound ").replace("*", " star ")
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text if re.search(r"[A-Za-z]", text) else None


def read_transcripts(path: Path) -> dict[str, str]:
    """``name: text`` lines of the packages' transcript file (``;`` comments), by prompt name."""
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            out[name.strip()] = text.strip()
    return out


def phones_for(name: str, text: str, dictionary: dict[str, list[str]]) -> list[str] | None:
    from phonestream.lm import sentence_phones, words

    if name.startswith("letters/") and [w.lower() for w in words(text)] == ["a"]:
        return list(_LETTER_A)
    return sentence_phones(text, dictionary)


def read_prompt(name: str, sounds: Path, ffmpeg: str | None):
    """Prompt ``name``'s samples (int16) and rate: 16 kHz from G.722 with ffmpeg, else the 8 kHz WAV; None
    when neither file is there. A file that does not decode is a one-line error."""
    import numpy as np
    import soundfile as sf

    g722, wav = sounds / f"{name}.g722", sounds / f"{name}.wav"
    if ffmpeg and g722.is_file():
        proc = subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "g722", "-i",
                               str(g722), "-ar", "16000", "-ac", "1", "-f", "s16le", "-"], capture_output=True)
        if proc.returncode:
            raise SystemExit(f"error: {g722}: {proc.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
        return np.frombuffer(proc.stdout, np.int16), 16000
    if wav.is_file():
        try:
            return sf.read(wav, dtype="int16")
        except sf.LibsndfileError as err:
            raise SystemExit(f"error: {wav}: {err}") from None
    return None


def decode(name: str, sounds: Path, out: Path, ffmpeg: str | None) -> tuple[Path, float] | None:
    """Write prompt ``name`` (:func:`read_prompt`) as 16-bit FLAC under ``out``; its path and duration, or
    None when neither file is there."""
    import soundfile as sf

    read = read_prompt(name, sounds, ffmpeg)
    if read is None:
        return None
    audio, rate = read
    target = out / "audio" / f"{name}.flac"
    target.parent.mkdir(parents=True, exist_ok=True)
    sf.write(target, audio, rate, subtype="PCM_16")
    return target, len(audio) / rate


def build(out: Path, sounds: Path = SOUNDS, transcripts: Path = TRANSCRIPTS, wav_only: bool = False) -> dict:
    """Write ``out/manifest.tsv`` and ``out/audio/``; counts of what was written and left out."""
    from phonestream.lm import load_dictionary

    if not sounds.is_dir():
        raise SystemExit(f"error: {sounds} is not there (apt-get install asterisk-core-sounds-en-g722 "
                         "asterisk-core-sounds-en-wav)")
    if not transcripts.is_file():
        raise SystemExit(f"error: {transcripts} is not there (apt-get install asterisk-core-sounds-en)")
    ffmpeg = None if wav_only else shutil.which("ffmpeg")
    dictionary = load_dictionary()
    counts = {"rows": 0, "labelled": 0, "no_audio": 0, "not_speech": 0, "seconds": 0.0,
              "rate": 16000 if ffmpeg else 8000}
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, text in sorted(read_transcripts(transcripts).items()):
        spoken = spoken_text(text)
        if spoken is None or name.startswith("silence/"):
            counts["not_speech"] += 1
            continue
        written = decode(name, sounds, out, ffmpeg)
        if written is None:
            counts["no_audio"] += 1
            continue
        path, seconds = written
        phones = phones_for(name, spoken, dictionary)
        rows.append({"id": name.replace("/", "_"), "audio": str(path.relative_to(out)),
                     "duration_s": f"{seconds:.3f}", "speaker": SPEAKER, "text": spoken,
                     "phones_cmu": " ".join(phones or []), "phones_orig": ""})
        counts["rows"] += 1
        counts["labelled"] += bool(phones)
        counts["seconds"] += seconds if phones else 0.0
    with open(out / "manifest.tsv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, COLUMNS, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\",
                           lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for manifest.tsv and audio/")
    ap.add_argument("--sounds", type=Path, default=SOUNDS, help=f"the prompts' folder (default {SOUNDS})")
    ap.add_argument("--transcripts", type=Path, default=TRANSCRIPTS, help="core-sounds-en.txt(.gz)")
    ap.add_argument("--wav-only", action="store_true", help="the 8 kHz WAV files even where G.722 decodes")
    args = ap.parse_args(argv)
    c = build(args.out, args.sounds, args.transcripts, args.wav_only)
    print(f"{args.out / 'manifest.tsv'}: {c['rows']} recordings at {c['rate']} Hz, {c['labelled']} with "
          f"dictionary phones ({c['seconds'] / 60:.1f} min); left out: {c['not_speech']} sound effects "
          f"or silences, {c['no_audio']} without audio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
