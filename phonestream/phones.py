"""Phoneme inventories: ARPAbet <-> IPA, and the TIMIT 61 -> 39 folding used for scoring.

The folding is Lee & Hon (1989), as used by every TIMIT phone-recognition result: closures, pauses and
silence are removed; allophones merge into their phoneme; CMU ARPAbet folds the same way (AO->AA,
ZH->SH), so 39-phone CMU references and hypotheses can be scored against TIMIT-style ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ARPABET = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z "
           "ZH").split()

ARPABET_TO_IPA = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "aʊ", "AY": "aɪ", "B": "b", "CH": "tʃ", "D": "d",
    "DH": "ð", "EH": "ɛ", "ER": "ɝ", "EY": "eɪ", "F": "f", "G": "ɡ", "HH": "h", "IH": "ɪ", "IY": "i",
    "JH": "dʒ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "ŋ", "OW": "oʊ", "OY": "ɔɪ", "P": "p",
    "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ", "UH": "ʊ", "UW": "u", "V": "v", "W": "w", "Y": "j",
    "Z": "z", "ZH": "ʒ",
}

#: An example word per ARPAbet symbol, with its CMU pronunciation (the key of ``phonestream phonemes``).
ARPABET_EXAMPLES = {
    "AA": ("odd", "AA D"), "AE": ("at", "AE T"), "AH": ("hut", "HH AH T"), "AO": ("ought", "AO T"),
    "AW": ("cow", "K AW"), "AY": ("hide", "HH AY D"), "B": ("be", "B IY"), "CH": ("cheese", "CH IY Z"),
    "D": ("dee", "D IY"), "DH": ("thee", "DH IY"), "EH": ("Ed", "EH D"), "ER": ("hurt", "HH ER T"),
    "EY": ("ate", "EY T"), "F": ("fee", "F IY"), "G": ("green", "G R IY N"), "HH": ("he", "HH IY"),
    "IH": ("it", "IH T"), "IY": ("eat", "IY T"), "JH": ("gee", "JH IY"), "K": ("key", "K IY"),
    "L": ("lee", "L IY"), "M": ("me", "M IY"), "N": ("knee", "N IY"), "NG": ("ping", "P IH NG"),
    "OW": ("oat", "OW T"), "OY": ("toy", "T OY"), "P": ("pee", "P IY"), "R": ("read", "R IY D"),
    "S": ("sea", "S IY"), "SH": ("she", "SH IY"), "T": ("tea", "T IY"), "TH": ("theta", "TH EY T AH"),
    "UH": ("hood", "HH UH D"), "UW": ("two", "T UW"), "V": ("vee", "V IY"), "W": ("we", "W IY"),
    "Y": ("yield", "Y IY L D"), "Z": ("zee", "Z IY"), "ZH": ("seizure", "S IY ZH ER"),
}
VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())

_STRESS = re.compile(r"[012]$")

# TIMIT 61 -> 39 (Lee & Hon); None means "removed before scoring".
_TIMIT39 = {
    **{c: None for c in ("bcl", "dcl", "gcl", "pcl", "tcl", "kcl", "epi", "pau", "h#", "q", "sil", "sp", "spn")},
    "ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "el": "l", "em": "m", "en": "n", "eng": "ng", "nx": "n",
    "hv": "hh", "ix": "ih", "ux": "uw", "zh": "sh",
}


def to_ipa(symbol: str) -> str:
    """IPA for an ARPAbet symbol (stress digits ignored); other symbols are returned unchanged."""
    return ARPABET_TO_IPA.get(_STRESS.sub("", symbol.upper()), symbol)


def phoneme_key() -> list[dict[str, str]]:
    """The ARPAbet key: per symbol its IPA, whether it is a vowel, an example word and that word's
    pronunciation in ARPAbet and IPA."""
    return [{"arpabet": a, "ipa": ARPABET_TO_IPA[a], "kind": "vowel" if a in VOWELS else "consonant",
             "example": word, "example_arpabet": pron, "example_ipa": " ".join(to_ipa(p) for p in pron.split())}
            for a, (word, pron) in ARPABET_EXAMPLES.items()]


def fold_timit39(phones: Iterable[str]) -> list[str]:
    """Fold TIMIT-61 or ARPAbet symbols (any case, stress digits allowed) to the 39-class set, upper case."""
    out = []
    for p in phones:
        key = _STRESS.sub("", p.lower())
        if key in _TIMIT39:
            folded = _TIMIT39[key]
            if folded is None:
                continue
            key = folded
        out.append(key.upper())
    return out


FOLDINGS = {"none": lambda phones: list(phones), "timit39": fold_timit39}
