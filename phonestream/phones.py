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
