"""Sentences to synthesise: a varied offline English text source, with evaluation sentences held out.

Sources (Debian packages, installed by ``scripts/install-train-deps.sh``):
- ``fortunes`` / ``fortunes-min``: quotations, proverbs, jokes and aphorisms (conversational English);
- ``wordnet-base``: the example sentences inside WordNet's glosses (``"..."``), covering a very wide
  vocabulary.
Every sentence whose normalised text (:func:`phonestream.lm.normalise`) appears in an evaluation
manifest (fraser_arctic: the CMU ARCTIC prompts) is removed, and so is every sentence sharing an 8-word
run with one.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from ..lm import excluded_sentences, normalise

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
_OK = re.compile(r"^[A-Za-z][A-Za-z ,.;:?!'\-]*$")


def _clean(s: str) -> str | None:
    s = re.sub(r"\s+", " ", s.replace("--", ", ").replace("`", "'")).strip().strip('"').strip()
    if not _OK.match(s):
        return None
    n = len(s.split())
    if n < 3 or n > 24:
        return None
    if sum(ch.isupper() for ch in s) > len(s) / 4:
        return None
    return s


def fortune_sentences() -> list[str]:
    out: list[str] = []
    if not FORTUNE_DIR.exists():
        return out
    for f in sorted(FORTUNE_DIR.iterdir()):
        if f.suffix or f.is_dir():
            continue
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for cookie in text.split("\n%\n"):
            lines = [ln for ln in cookie.splitlines() if not ln.strip().startswith(("--", "-- "))]
            body = " ".join(ln.strip() for ln in lines)
            for sent in re.split(r"(?<=[.?!])\s+", body):
                c = _clean(sent)
                if c:
                    out.append(c)
    return out


def wordnet_sentences() -> list[str]:
    out: list[str] = []
    for name in ("data.noun", "data.verb", "data.adj", "data.adv"):
        f = WORDNET_DIR / name
        if not f.exists():
            continue
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            if "|" not in line or line.startswith("  "):
                continue
            gloss = line.split("|", 1)[1]
            for ex in re.findall(r'"([^"]+)"', gloss):
                c = _clean(ex)
                if c:
                    out.append(c[0].upper() + c[1:])
    return out


def _ngrams(words: list[str], n: int = 8) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def load_sentences(exclude_manifests: list[Path], seed: int = 0) -> list[str]:
    """All usable sentences, deduplicated, evaluation text removed, shuffled reproducibly."""
    banned = excluded_sentences([m for m in exclude_manifests if m.exists()])
    banned_grams: set[tuple[str, ...]] = set()
    for t in banned:
        banned_grams |= _ngrams(t.split())
    seen: set[str] = set()
    out: list[str] = []
    for s in fortune_sentences() + wordnet_sentences():
        key = normalise(s)
        if not key or key in seen or key in banned:
            continue
        if banned_grams and _ngrams(key.split()) & banned_grams:
            continue
        seen.add(key)
        out.append(s)
    random.Random(seed).shuffle(out)
    return out
