"""Incremental CTC prefix beam search with an optional phoneme n-gram LM, and its commit rule.

Why our own: pyctcdecode (the maintained Python CTC beam decoder) decodes whole utterances and scores
its LM at word boundaries (KenLM over words, a space token between them); it has no way to carry beams
from one chunk to the next, to force a committed prefix onto every beam, or to score an LM per phoneme.
A phoneme beam is small (about 40 symbols, a handful of candidates per frame once the posteriors are
pruned), so a pure-Python loop over the surviving candidates costs well under a millisecond per frame.

The search (Hannun et al. 2014, "first-pass LVCSR with bidirectional RNNs"): every hypothesis is a
phoneme prefix with two scores, ending in blank (``pb``) and ending in its last phoneme (``pnb``). Per
frame a prefix stays by blank or by repeating its last phoneme, or grows by a candidate phoneme; the LM
(weighted) and an insertion bonus are added when it grows. Only the ``beam`` best prefixes survive.

The commit rule: after each block of final frames, the phonemes that every surviving hypothesis shares
(their common prefix) are committed once each one is closed (its hypothesis has moved past it, by a
blank or by a later phoneme). To bound the latency when beams keep disagreeing, a phoneme of the best
hypothesis that closed more than ``commit_wait_s`` ago is committed as well; with ``lookahead`` the best
hypothesis is the one that is best after the block's provisional frames too. Either way the committed
prefix is then forced on every hypothesis (those that disagree are dropped) and removed from them, so
nothing committed can ever change. Timestamps are tracked per hypothesis along its best path (the
frame a phoneme was entered, and the frame after its last emission); confidence is the phoneme's
posterior mass around those frames times its share of the non-blank mass (:meth:`BeamDecoder._confidence`).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .events import Phoneme
from .lm import BOS, EOS, NgramLM
from .models.base import Vocabulary
from .streaming import FrameBlock

NEG_INF = float("-inf")


def _lae(a: float, b: float) -> float:
    """log(exp(a) + exp(b))."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


_first = operator.itemgetter(0)


@dataclass(slots=True)
class _Hyp:
    """One prefix beyond the committed phonemes: scores, LM state and its best path's timing."""

    pb: float
    pnb: float
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    lm_state: tuple[int, ...]
    best: float = NEG_INF  # largest single contribution this frame (picks the timing kept on merges)

    @property
    def score(self) -> float:
        return _lae(self.pb, self.pnb)


# The LM rows (weighted scores of every phoneme after one history) are cached and shared by every
# stream that decodes with the same LM, vocabulary, weight and bonus (a server's streams): at most
# LM_TABLES such tables, least recently used dropped first, each of at most LM_ROWS histories (a row is
# ~1.3 KB for a 40-symbol vocabulary: about 5 MB per table, 20 MB in all). Bounded, so that clients
# choosing a new lm_weight per stream cannot grow the server's memory.
LM_TABLES = 4
LM_ROWS = 4096


@functools.lru_cache(maxsize=LM_TABLES)
def lm_rows(lm: NgramLM, names: tuple[str, ...], weight: float, bonus: float
            ) -> Callable[[tuple[int, ...]], list[float]]:
    """The shared row function for an LM, the LM's names of the vocabulary's symbols, weight and bonus:
    LM state (vocabulary ids, oldest first, -1 for ``<s>``) -> ``weight * ln P(symbol | state) + bonus``
    per vocabulary id."""

    @functools.lru_cache(maxsize=LM_ROWS)
    def row(state: tuple[int, ...]) -> list[float]:
        history = [BOS if i < 0 else names[i] for i in state]
        return (weight * lm.row_log_prob(history, names) + bonus).tolist()

    return row


class _LMScorer:
    """Weighted LM log-probabilities over the model's vocabulary, cached per history (see lm_rows)."""

    def __init__(self, lm: NgramLM | None, vocab: Vocabulary, weight: float, bonus: float) -> None:
        self.lm, self.weight, self.bonus = lm, weight, bonus
        self.context = max(0, (lm.order - 1) if lm else 0)
        self._symbols = list(vocab.symbols)
        self._no_lm_row = [bonus] * len(self._symbols)
        if lm is not None:
            known = set(lm.symbols)
            phon = [i for i in range(len(vocab)) if i != vocab.blank_id and i not in vocab.skip_ids]
            covered = sum(self._symbols[i] in known or self._symbols[i].upper() in known for i in phon)
            if covered < len(phon) / 2:
                from .lm import LMError

                raise LMError(f"the LM knows only {covered} of the model's {len(phon)} phonemes; "
                              "build one for this model's inventory (phonestream lm build)")
            self._lm_names = [s if s in known else s.upper() for s in self._symbols]
            self._rows = lm_rows(lm, tuple(self._lm_names), weight, bonus)

    def _history(self, state: tuple[int, ...]) -> list[str]:
        return [BOS if i < 0 else self._lm_names[i] for i in state]

    def extend(self, state: tuple[int, ...]) -> list[float]:
        """Score added when a prefix with LM ``state`` grows by each vocabulary id (do not modify it:
        rows are shared)."""
        if self.lm is None:
            return self._no_lm_row
        return self._rows(state)

    def end(self, state: tuple[int, ...]) -> float:
        if self.lm is None:
            return 0.0
        return self.weight * self.lm.log_prob(self._history(state), EOS)

    def next_state(self, state: tuple[int, ...], token: int) -> tuple[int, ...]:
        if not self.context:
            return ()
        return (*state, token)[-self.context :]


class BeamDecoder:
    """Incremental CTC prefix beam search over :class:`FrameBlock` s; same interface as GreedyDecoder.

    Args:
        vocab: the model's symbols; blank and skip ids are treated as blank.
        frame_seconds: seconds per frame.
        sample_rate: the model's sample rate (for ``committed_at``).
        beam: hypotheses kept per frame.
        lm: a phoneme n-gram model, or None.
        lm_weight: weight of the LM's natural-log probability.
        insertion_bonus: added per phoneme (counters the LM's preference for short outputs).
        prune_logp: a phoneme is a candidate in a frame only if its log posterior is above this.
        top_k: at most this many candidate phonemes per frame.
        commit_wait_s: commit the best hypothesis' phonemes closed longer ago than this even if other
            hypotheses disagree (None: wait for agreement however long it takes).
        beam_prune_logp: drop hypotheses this far (natural log) below the best one.
        lookahead: choose the best hypothesis after also searching the block's provisional frames (on
            a copy of the beams; see :meth:`_lookahead`), so that the right context the window already
            computed can overturn a choice the final frames alone would commit. Off: the best
            hypothesis of the final frames alone.
    """

    def __init__(self, vocab: Vocabulary, frame_seconds: float, sample_rate: int, beam: int = 4,
                 lm: NgramLM | None = None, lm_weight: float = 0.5, insertion_bonus: float = 0.0,
                 prune_logp: float = -5.0, top_k: int = 6, commit_wait_s: float | None = 0.0,
                 beam_prune_logp: float = -10.0, lookahead: bool = False) -> None:
        if beam < 1:
            raise ValueError(f"beam must be at least 1, got {beam}")
        self.vocab = vocab
        self.frame_seconds = frame_seconds
        self.sample_rate = sample_rate
        self.beam = beam
        self.prune_logp = prune_logp
        self.beam_prune_logp = beam_prune_logp
        self.top_k = top_k
        self.lookahead = lookahead
        self.commit_wait = None if commit_wait_s is None else max(0, round(commit_wait_s / frame_seconds))
        self._silent_ids = sorted({vocab.blank_id, *vocab.skip_ids})
        self._phone_ids = np.array([i for i in range(len(vocab)) if i not in self._silent_ids])
        self._lm = _LMScorer(lm, vocab, lm_weight, insertion_bonus)
        self.bonus = insertion_bonus
        self.count = 0  # phonemes committed so far (reset() keeps counting)
        self._frame = 0  # next final frame index
        self._end = 0  # end frame of the last committed phoneme
        self.reset()

    def reset(self) -> None:
        """Forget all hypotheses (a new utterance); the phoneme index keeps counting."""
        start = (-1,) if self._lm.context else ()  # -1 stands for <s>
        self._beams: dict[tuple[int, ...], _Hyp] = {(): _Hyp(0.0, NEG_INF, (), (), start)}
        self._last = -1  # last committed phoneme id (-1: none)
        self._buf = np.zeros((0, len(self.vocab)), np.float32)  # final log posteriors from _buf_start on
        self._buf_start = 0
        self._tail: tuple[int, ...] | None = None  # the lookahead's best hypothesis beyond the commits

    # -- search -------------------------------------------------------------------------------------

    def _candidates(self, log_probs: np.ndarray) -> tuple[np.ndarray, list[list[tuple[int, float]]]]:
        """Per frame: the blank log posterior (skips folded in) and the candidate phonemes."""
        blank = np.logaddexp.reduce(log_probs[:, self._silent_ids], axis=1)
        phones = log_probs[:, self._phone_ids]
        k = min(self.top_k, phones.shape[1])
        top = np.argpartition(-phones, k - 1, axis=1)[:, :k] if k < phones.shape[1] else \
            np.tile(np.arange(phones.shape[1]), (len(phones), 1))
        # one numpy pass over the block, then plain lists (numpy calls per frame cost more than the search)
        vals = np.take_along_axis(phones, top, axis=1)
        keep = (vals > self.prune_logp).tolist()
        cands = [[(i, v) for i, v, k in zip(ids, row, kept) if k]
                 for ids, row, kept in zip(self._phone_ids[top].tolist(), vals.tolist(), keep)]
        return blank, cands

    def _search(self, beams: dict[tuple[int, ...], _Hyp], log_probs: np.ndarray, first_frame: int,
                last_committed: int) -> dict[tuple[int, ...], _Hyp]:
        blank_lp, cands = self._candidates(log_probs)
        blank_lps = blank_lp.tolist()
        lm = self._lm
        for t, row in enumerate(log_probs.tolist()):
            frame = first_frame + t
            b_lp = blank_lps[t]
            if not cands[t]:
                # no phoneme is a candidate (most frames of a peaky CTC model): every prefix only
                # stays, so the set of prefixes and their order barely change; update in place
                for tokens, h in beams.items():
                    last = tokens[-1] if tokens else last_committed
                    stay_b = _lae(h.pb, h.pnb) + b_lp
                    stay_nb = h.pnb + row[last] if last >= 0 and h.pnb > NEG_INF else NEG_INF
                    if stay_nb > stay_b and h.ends:
                        h.ends = (*h.ends[:-1], frame + 1)
                    h.pb, h.pnb = stay_b, stay_nb
                continue
            new: dict[tuple[int, ...], _Hyp] = {}
            for tokens, h in beams.items():
                total = _lae(h.pb, h.pnb)
                last = tokens[-1] if tokens else last_committed
                # stay: blank, or a repeat of the last phoneme (collapsed)
                stay_b = total + b_lp
                stay_nb = h.pnb + row[last] if last >= 0 and h.pnb > NEG_INF else NEG_INF
                ends = h.ends
                if stay_nb > stay_b and ends:
                    ends = (*ends[:-1], frame + 1)
                self._add(new, tokens, stay_b, stay_nb, h.starts, ends, h.lm_state)
                # grow by a candidate phoneme
                ext = lm.extend(h.lm_state)
                for c, lpc in cands[t]:
                    base = h.pb if c == last else total
                    if base == NEG_INF:
                        continue
                    score = base + lpc + ext[c]
                    self._add(new, (*tokens, c), NEG_INF, score, (*h.starts, frame), (*h.ends, frame + 1),
                              lm.next_state(h.lm_state, c))
            beams = self._prune(new)
        return beams

    @staticmethod
    def _add(new: dict, tokens: tuple[int, ...], pb: float, pnb: float, starts, ends, lm_state) -> None:
        best = max(pb, pnb)
        h = new.get(tokens)
        if h is None:
            new[tokens] = _Hyp(pb, pnb, starts, ends, lm_state, best)
            return
        h.pb = _lae(h.pb, pb)
        h.pnb = _lae(h.pnb, pnb)
        if best > h.best:
            h.best, h.starts, h.ends = best, starts, ends

    def _prune(self, new: dict[tuple[int, ...], _Hyp]) -> dict[tuple[int, ...], _Hyp]:
        """The ``beam`` best hypotheses, less those ``beam_prune_logp`` or more below the best (they
        could never win, and would hold back agreement and so the commits)."""
        ranked = sorted([(_lae(h.pb, h.pnb), tokens, h) for tokens, h in new.items()], key=_first,
                        reverse=True)[: self.beam]
        floor = ranked[0][0] + self.beam_prune_logp
        kept = {}
        for score, tokens, h in ranked:
            if score < floor:
                break
            h.best = NEG_INF
            kept[tokens] = h
        return kept

    # -- the GreedyDecoder interface ----------------------------------------------------------------

    def advance(self, block: FrameBlock) -> list[Phoneme]:
        """Consume one block's final frames; return the phonemes this commits, in order."""
        committed_at = block.received / self.sample_rate
        self._tail = None
        if len(block.final):
            if not len(self._buf):
                self._buf_start = block.start_frame
            self._buf = np.concatenate([self._buf, np.asarray(block.final, np.float32)])
            self._beams = self._search(self._beams, block.final, block.start_frame, self._last)
            self._frame = block.start_frame + len(block.final)
        if block.last:
            best = max(self._beams.items(), key=lambda kv: kv[1].score + self._lm.end(kv[1].lm_state))
            out = self._commit(best[0], best[1], len(best[0]), committed_at)
            self.reset()
            return out
        ahead = self._lookahead(block.provisional) if self.lookahead and len(block.provisional) else None
        out = self._commit_agreed(committed_at, ahead)
        if ahead is not None:
            self._tail = ahead[0][len(out):]
        return out

    def _lookahead(self, provisional: np.ndarray) -> tuple[tuple[int, ...], _Hyp] | None:
        """The best hypothesis after searching the provisional frames too, from a copy of the beams
        (the search updates hypotheses in place; the beams themselves advance over final frames only).

        Its phonemes that end within the final frames are what the commit may take: every such prefix
        is the prefix of one of the beams (each lookahead hypothesis grew from one), so forcing it
        keeps at least that one. None if, against that, no beam holds the prefix it would commit."""
        beams = {t: _Hyp(h.pb, h.pnb, h.starts, h.ends, h.lm_state) for t, h in self._beams.items()}
        tokens, hyp = max(self._search(beams, provisional, self._frame, self._last).items(),
                          key=lambda kv: kv[1].score)
        k = 0
        while k < len(tokens) and hyp.ends[k] <= self._frame:
            k += 1
        if k and not any(t[:k] == tokens[:k] for t in self._beams):
            return None
        return tokens, hyp

    def _commit_agreed(self, committed_at: float,
                       ahead: tuple[tuple[int, ...], _Hyp] | None = None) -> list[Phoneme]:
        hyps = list(self._beams.items())
        # the common prefix of every hypothesis
        n = min(len(t) for t, _ in hyps)
        first = hyps[0][0]
        k = 0
        while k < n and all(t[k] == first[k] for t, _ in hyps):
            k += 1
        # ...whose phonemes are all closed (each hypothesis has moved past them)
        while k > 0 and any(len(t) == k and h.ends[k - 1] >= self._frame for t, h in hyps):
            k -= 1
        best_tokens, best = ahead if ahead is not None else max(hyps, key=lambda kv: kv[1].score)
        # (the lookahead's path decides how many phonemes to commit; their times come from the best
        # beam holding them, whose alignment the search goes on from)
        if self.commit_wait is not None:
            # bounded wait: the best hypothesis' phonemes closed long enough ago go out anyway
            limit = self._frame - self.commit_wait
            j = k
            while j < len(best_tokens) and best.ends[j] <= limit:
                if ahead is None and j + 1 == len(best_tokens) and best.ends[j] >= self._frame:
                    break  # its last phoneme, maybe still being emitted (the lookahead's path knows)
                j += 1
            k = max(k, j)
        if k == 0:
            return []
        if ahead is not None:
            best = max((h for t, h in hyps if t[:k] == best_tokens[:k]), key=lambda h: h.score)
        return self._commit(best_tokens, best, k, committed_at)

    def _confidence(self, token: int, a: int, b: int) -> float:
        """How sure the acoustics are of a committed phoneme (buffer rows ``a:b`` are its frames).

        presence x identity, over its frames widened by 2 on each side (CTC spreads a phoneme's mass
        over neighbouring frames): presence is the phoneme's posterior mass there, capped at 1 (a
        phoneme the LM or the insertion bonus pulled in over blank has little); identity is the
        largest share the phoneme has of the non-blank mass of one frame (low when another phoneme
        competes). On held-out FSDD takes this separated correct from wrong phonemes better (AUROC
        0.87 vs 0.81 with the LM) and was better calibrated (ECE 0.18 vs 0.36) than the mean posterior.
        """
        lo, hi = max(0, a - 2), min(len(self._buf), max(b, a + 1) + 2)
        if hi <= lo:
            return 0.0
        frames = self._buf[lo:hi].astype(np.float64)
        p = np.exp(frames[:, token])
        blank = np.exp(np.logaddexp.reduce(frames[:, self._silent_ids], axis=1))
        identity = float((p / np.maximum(1e-9, 1 - blank)).max())
        return min(1.0, identity) * min(1.0, float(p.sum()))

    def _commit(self, tokens: tuple[int, ...], hyp: _Hyp, k: int, committed_at: float) -> list[Phoneme]:
        out = []
        for i in range(k):
            # a hypothesis kept at an earlier commit may have aligned its next phoneme a frame into the
            # committed one (beams holding the same phonemes differ in timing): start no earlier
            start = max(hyp.starts[i], self._end)
            end = max(hyp.ends[i], start + 1)
            self._end = end
            a, b = start - self._buf_start, end - self._buf_start
            conf = self._confidence(tokens[i], a, b)
            out.append(Phoneme(self.vocab.symbols[tokens[i]], start * self.frame_seconds,
                               end * self.frame_seconds, conf, committed_at, self.count))
            self.count += 1
        if not k:
            return out
        prefix = tokens[:k]
        kept: dict[tuple[int, ...], _Hyp] = {}
        for t, h in self._beams.items():
            if t[:k] == prefix:  # force the committed prefix: drop hypotheses that disagree
                kept[t[k:]] = _Hyp(h.pb, h.pnb, h.starts[k:], h.ends[k:], h.lm_state)
        self._beams = kept or {(): _Hyp(0.0, NEG_INF, (), (), hyp.lm_state)}
        self._last = tokens[k - 1]
        # keep posteriors only from the earliest phoneme still open in any hypothesis
        keep_from = min([h.starts[0] for h in self._beams.values() if h.starts] + [self._frame]) - 2
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
        return out

    @property
    def has_lm(self) -> bool:
        """Whether hypotheses are scored with a phoneme LM."""
        return self._lm.lm is not None

    def partial(self, block: FrameBlock) -> list[str]:
        """The provisional tail: the best hypothesis beyond the committed phonemes, then the greedy
        reading of the lookahead frames (with ``lookahead``: the beam's reading of both)."""
        if self._tail is not None:  # the lookahead's beam reading of the same frames
            return [self.vocab.symbols[t] for t in self._tail]
        tokens, best = max(self._beams.items(), key=lambda kv: kv[1].score)
        tail = [self.vocab.symbols[t] for t in tokens]
        if len(block.provisional):
            last = tokens[-1] if tokens else self._last
            open_ = bool(tokens) and best.ends[-1] >= self._frame
            prev = last if open_ else self.vocab.blank_id
            silent = set(self._silent_ids)
            best = block.provisional.argmax(axis=1) if block.frames is None else block.frames.best[len(block.final):]
            for token in best.tolist():
                token = self.vocab.blank_id if token in silent else token
                if token != prev and token != self.vocab.blank_id:
                    tail.append(self.vocab.symbols[token])
                prev = token
        return tail
