"""scripts/asterisk-set.py: Debian's Asterisk prompts as a labelled manifest that `phonestream eval` reads."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from phonestream.manifest import read_manifest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "asterisk-set.py"


@pytest.fixture(scope="module")
def aset():
    spec = importlib.util.spec_from_file_location("asterisk_set", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numbers_read_as_spoken(aset):
    assert aset.number_words(0) == "zero"
    assert aset.number_words(40) == "forty"
    assert aset.number_words(162) == "one hundred sixty two"
    assert aset.number_words(1234) == "one thousand two hundred thirty four"
    assert aset.number_words(8500) == "eight thousand five hundred"
    with pytest.raises(ValueError):
        aset.number_words(10000)


def test_prompt_text_becomes_the_words_said(aset):
    assert aset.spoken_text("Press 1, then #.") == "Press one , then pound ."
    assert aset.spoken_text("press * to toggle") == "press star to toggle"
    assert aset.spoken_text("at [@]") == "at"
    assert aset.spoken_text("[this is a simple beep tone]") is None
    assert aset.spoken_text("(10 seconds of silence)") is None
    assert aset.spoken_text("<beep decending>") is None


def test_build_writes_an_eval_manifest(aset, tmp_path: Path):
    sounds = tmp_path / "sounds"
    (sounds / "letters").mkdir(parents=True)
    (sounds / "silence").mkdir()
    tone = (0.1 * np.sin(np.arange(8000) / 8000 * 2 * np.pi * 300) * 32767).astype(np.int16)
    for name in ("auth-thankyou", "letters/a", "silence/1", "beep", "spy-dahdi"):
        sf.write(sounds / f"{name}.wav", tone, 8000)
    transcripts = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(transcripts, "wt") as f:
        f.write("; Core Asterisk Sounds in English\n\nauth-thankyou: Thank you.\nletters/a: a\n"
                "silence/1: (1 second of silence)\nbeep: [this is a simple beep tone]\nspy-dahdi: DAHDI\n"
                "no-audio: Goodbye.\n")
    counts = aset.build(tmp_path / "out", sounds, transcripts, wav_only=True)
    assert counts["rows"] == 3 and counts["labelled"] == 2 and counts["not_speech"] == 2
    assert counts["no_audio"] == 1 and counts["rate"] == 8000
    items, skipped = read_manifest(tmp_path / "out" / "manifest.tsv", "phones_cmu")
    by_id = {item.id: item for item in items}
    assert skipped == 1  # DAHDI is not in the dictionary: no phones, skipped as eval skips it
    assert by_id["auth-thankyou"].phones == ["TH", "AE", "NG", "K", "Y", "UW"]
    assert by_id["letters_a"].phones == ["EY"]  # the letter's name, not the article
    audio, rate = sf.read(by_id["letters_a"].audio)
    assert rate == 8000 and len(audio) == 8000


def test_missing_package_is_one_clear_error(aset, tmp_path: Path):
    with pytest.raises(SystemExit, match="asterisk-core-sounds-en"):
        aset.build(tmp_path / "out", tmp_path / "nowhere", tmp_path / "none.txt.gz")


def test_a_recording_that_does_not_decode_is_one_clear_error(aset, tmp_path: Path):
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    (sounds / "auth-thankyou.wav").write_bytes(b"RIFF not really a wave file")
    transcripts = tmp_path / "core-sounds-en.txt"
    transcripts.write_text("auth-thankyou: Thank you.\n")
    with pytest.raises(SystemExit, match=r"error: .*auth-thankyou\.wav: "):
        aset.build(tmp_path / "out", sounds, transcripts, wav_only=True)
