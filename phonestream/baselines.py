"""Baselines to compare against, run on the same files by ``phonestream eval --baseline``.

PocketSphinx's phone-loop ("allphone") mode: CMU Sphinx's English acoustic model decoding with a phone
n-gram instead of words, the classic offline phoneme recogniser. Settings follow PocketSphinx's own
phoneme-recognition documentation (wide beams, language weight 2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from .audio import load_audio

_NON_PHONES = {"SIL", "<s>", "</s>", "<sil>"}


@lru_cache(maxsize=1)
def _pocketsphinx_decoder():
    try:
        from pocketsphinx import Decoder, get_model_path
    except ImportError:
        raise ValueError("the pocketsphinx baseline needs the pocketsphinx package: pip install pocketsphinx") from None
    model = get_model_path()
    return Decoder(hmm=os.path.join(model, "en-us", "en-us"),
                   allphone=os.path.join(model, "en-us", "en-us-phone.lm.bin"), lm=None, beam=1e-20, pbeam=1e-20,
                   lw=2.0, logfn=os.devnull)


def pocketsphinx_phones(path: str | Path) -> list[str]:
    """ARPAbet phones PocketSphinx's phone loop hears in a file (silence and noise fillers dropped)."""
    decoder = _pocketsphinx_decoder()
    audio = load_audio(path, 16000)
    decoder.start_utt()
    decoder.process_raw((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
    decoder.end_utt()
    return [s.word for s in decoder.seg() if s.word not in _NON_PHONES and not s.word.startswith("+")]


BASELINES: dict[str, Callable[[Path], list[str]]] = {"pocketsphinx": pocketsphinx_phones}
