"""The 39-phoneme CMU ARPAbet inventory and the maps from each labeller's symbols onto it.

Labels come from the synthesiser's own phoneme output (espeak-ng and Piper print IPA, flite and festival
print CMU/radio phones). Text is looked up in the CMU pronouncing dictionary by :mod:`phonestream.lm`
(:func:`~phonestream.lm.load_dictionary`, :func:`~phonestream.lm.sentence_phones`), not here.
"""

from __future__ import annotations

import re

from ..phones import ARPABET

BLANK = "<blank>"
#: Output symbols of the default model: blank first, then the 39 phonemes.
SYMBOLS = (BLANK, *ARPABET)

# IPA (as espeak-ng prints it, any English accent) -> ARPAbet. Longest match first.
_IPA = {
    # diphthongs and r-coloured vowels
    "eɪ": "EY", "aɪ": "AY", "ɑɪ": "AY", "ɔɪ": "OY", "oɪ": "OY", "oʊ": "OW", "əʊ": "OW", "əʉ": "OW",
    "ɔʊ": "OW", "aʊ": "AW", "ʌʊ": "AW", "ʌʉ": "AW", "æʊ": "AW", "ɐʊ": "AW", "ɪə": "IH R", "iə": "IY AH",
    "eə": "EH R", "ɛə": "EH R", "ʊə": "UH R", "ɛɹ": "EH R", "ɑɹ": "AA R", "ɔɹ": "AO R", "ɪɹ": "IH R",
    "ʊɹ": "UH R", "ɜɹ": "ER", "əɹ": "ER", "aɪə": "AY ER", "aʊə": "AW ER", "ɚ": "ER", "ɝ": "ER", "ɜ": "ER",
    "a:": "AA", "aː": "AA", "tʃ": "CH", "dʒ": "JH", "ts": "T S", "dz": "D Z",
    # monophthongs
    "ə": "AH", "ɐ": "AH", "ʌ": "AH", "ɘ": "AH", "ɞ": "AH", "æ": "AE", "a": "AE", "ɑ": "AA", "ɒ": "AA",
    "ɔ": "AO", "ɛ": "EH", "e": "EY", "ɪ": "IH", "ᵻ": "IH", "ɨ": "IH", "i": "IY", "ʊ": "UH", "ɵ": "UH",
    "u": "UW", "ʉ": "UW", "y": "UW", "ø": "ER", "œ": "ER", "o": "OW", "ɯ": "UW",
    # consonants
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "ɡ": "G", "g": "G", "f": "F", "v": "V", "θ": "TH",
    "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "h": "HH", "ɦ": "HH", "m": "M", "n": "N",
    "ŋ": "NG", "l": "L", "ɫ": "L", "ɬ": "L", "w": "W", "ʍ": "W", "j": "Y", "ɹ": "R", "r": "R", "ɾ": "T",
    "ʁ": "R", "ɻ": "R", "x": "HH", "χ": "HH", "ç": "HH", "ʔ": "T", "ʋ": "V", "ɲ": "N Y", "c": "K",
    "ɟ": "G", "q": "K", "β": "V",
}
_IPA_IGNORE = set("ˈˌːˑ.‖|-_ ,;:!?'\"()̃ʰʲʷ̪̃ˤ̚͡‿") | {"\u0361", "\u032f", "\u0303", "\u02de"}
_SYLLABIC = "\u0329"  # combining vertical line below: syllabic consonant -> AH + consonant
_IPA_KEYS = sorted(_IPA, key=len, reverse=True)

# flite's / festival's US (radio) phone set -> ARPAbet
_RADIO = {p.lower(): p for p in ARPABET} | {
    "ax": "AH", "axr": "ER", "el": "AH L", "em": "AH M", "en": "AH N", "nx": "N", "dx": "T", "ix": "IH",
    "ux": "UW", "hv": "HH", "pau": "", "h#": "", "sil": "", "ssil": "", "#": "",
}


class UnmappedSymbol(ValueError):
    pass


def ipa_to_arpabet(ipa: str) -> list[str]:
    """Map an espeak-ng IPA string (stress marks, lengths, word spaces allowed) to ARPAbet phonemes."""
    out: list[str] = []
    i = 0
    s = ipa.strip()
    while i < len(s):
        ch = s[i]
        if ch in _IPA_IGNORE or ch.isspace():
            i += 1
            continue
        if ch == _SYLLABIC:
            if out:
                out.insert(len(out) - 1, "AH")
            i += 1
            continue
        for key in _IPA_KEYS:
            if s.startswith(key, i):
                out.extend(_IPA[key].split())
                i += len(key)
                break
        else:
            raise UnmappedSymbol(f"unmapped IPA symbol {ch!r} (U+{ord(ch):04X}) in {ipa!r}")
    return out


def radio_to_arpabet(phones: list[str]) -> list[str]:
    out: list[str] = []
    for p in phones:
        key = re.sub(r"\d", "", p.lower())
        if key not in _RADIO:
            raise UnmappedSymbol(f"unmapped phone {p!r}")
        out.extend(_RADIO[key].split())
    return out


def collapse_er_r(phones: list[str]) -> list[str]:
    """``ER R`` -> ``ER`` and ``R R`` -> ``R``: festival and espeak-ng write an r-coloured vowel before a
    linking r, CMU does not."""
    out: list[str] = []
    for p in phones:
        if p == "R" and out and out[-1] in ("ER", "R"):
            continue
        out.append(p)
    return out
