"""Decoding: CTC frame posteriors -> phonemes, incrementally, with a commit rule that never retracts.

Greedy CTC takes the best symbol per frame, merges repeats and drops blanks. Done incrementally, the
decoder carries the last frame's symbol across chunk boundaries, so a phoneme spanning a boundary is one
phoneme and a repeat separated by a blank stays two.

The commit rule (the stabiliser): a phoneme is committed when the frame that *ends* it is final, that is
when it was computed with the full right context (see :mod:`phonestream.streaming`). Final frames never
change, so a committed phoneme never changes either. Everything after that is the provisional tail: the
still-open phoneme plus the greedy reading of the lookahead frames, which the next step may revise.

:class:`DecoderConfig` selects greedy (the default and fastest) or the prefix beam search of
:mod:`phonestream.beam`, with its phoneme LM; :func:`make_decoder` builds either behind one interface
(``advance``, ``partial``, ``reset``, ``count``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .events import Phoneme
from .models.base import Vocabulary
from .streaming import FrameBlock


@dataclass(frozen=True)
class FrameSummary:
    """What greedy decoding and endpointing read from each frame of a model output, computed once."""

    best: np.ndarray  # the greedy symbol (non-phoneme outputs folded into the blank)
    prob: np.ndarray  # its posterior
    silent: np.ndarray  # the summed posterior of the blank and the non-phoneme outputs

    def __getitem__(self, index: slice) -> "FrameSummary":
        return FrameSummary(self.best[index], self.prob[index], self.silent[index])


def silent_ids(vocab: Vocabulary) -> list[int]:
    """The outputs that are never phonemes: the blank and the skip ids."""
    return sorted({vocab.blank_id, *vocab.skip_ids})


def summarize_frames(outputs: list[np.ndarray], vocab: Vocabulary) -> list[FrameSummary]:
    """A :class:`FrameSummary` per model output ``[T, V]``, with one argmax and one exp per group of
    equally shaped outputs (the windows of live streams with the same settings are one group) instead
    of several numpy calls per window. The values are exactly those the decoders compute per window."""
    ids = silent_ids(vocab)
    silent = np.zeros(len(vocab), dtype=bool)
    silent[ids] = True
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, out in enumerate(outputs):
        groups.setdefault(out.shape, []).append(i)
    result: list[FrameSummary | None] = [None] * len(outputs)
    for members in groups.values():
        stacked = np.stack([outputs[i] for i in members])
        best = stacked.argmax(axis=2)
        best = np.where(silent[best], vocab.blank_id, best)
        prob = np.exp(np.take_along_axis(stacked, best[..., None], axis=2)[..., 0])
        mass = np.exp(stacked[..., ids]).sum(axis=2)
        for row, i in enumerate(members):
            result[i] = FrameSummary(best[row], prob[row], mass[row])
    return result  # type: ignore[return-value]


@dataclass
class _Run:
    """An open phoneme: a run of frames whose best symbol is ``token``."""

    token: int
    start_frame: int
    prob_sum: float
    frames: int


class GreedyDecoder:
    """Incremental greedy CTC decoding of :class:`FrameBlock` s into committed :class:`Phoneme` s."""

    def __init__(self, vocab: Vocabulary, frame_seconds: float, sample_rate: int) -> None:
        self.vocab = vocab
        self.frame_seconds = frame_seconds
        self.sample_rate = sample_rate
        self._silent = np.zeros(len(vocab), dtype=bool)
        self._silent[silent_ids(vocab)] = True
        self._prev = vocab.blank_id  # best symbol of the last final frame
        self._run: _Run | None = None
        self._frame = 0  # next final frame index
        self.count = 0  # phonemes committed so far

    def reset(self) -> None:
        """Start a new utterance (after an endpoint); the phoneme index keeps counting."""
        self._prev = self.vocab.blank_id
        self._run = None

    def _best(self, log_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        best = log_probs.argmax(axis=1)
        best = np.where(self._silent[best], self.vocab.blank_id, best)
        return best, np.exp(log_probs[np.arange(len(best)), best])

    def advance(self, block: FrameBlock) -> list[Phoneme]:
        """Consume one block's final frames; return the phonemes this commits, in order."""
        committed_at = block.received / self.sample_rate
        out: list[Phoneme] = []
        if len(block.final):
            if block.frames is not None:
                n = len(block.final)
                best, probs = block.frames.best[:n], block.frames.prob[:n]
            else:
                best, probs = self._best(block.final)
            for offset, (token, prob) in enumerate(zip(best.tolist(), probs.tolist())):
                frame = block.start_frame + offset
                if token == self._prev and token != self.vocab.blank_id:
                    self._run.prob_sum += prob  # type: ignore[union-attr]
                    self._run.frames += 1  # type: ignore[union-attr]
                    continue
                if self._run is not None:
                    out.append(self._close(frame, committed_at))
                if token != self.vocab.blank_id:
                    self._run = _Run(token, frame, prob, 1)
                self._prev = token
            self._frame = block.start_frame + len(block.final)
        if block.last and self._run is not None:
            out.append(self._close(self._frame, committed_at))
        return out

    def _close(self, end_frame: int, committed_at: float) -> Phoneme:
        run = self._run
        assert run is not None
        self._run = None
        p = Phoneme(
            phoneme=self.vocab.symbols[run.token],
            start=run.start_frame * self.frame_seconds,
            end=end_frame * self.frame_seconds,
            confidence=run.prob_sum / run.frames,
            committed_at=committed_at,
            index=self.count,
        )
        self.count += 1
        return p

    def partial(self, block: FrameBlock) -> list[str]:
        """The provisional tail after this block: the open phoneme and the lookahead's greedy reading."""
        tail = [] if self._run is None else [self.vocab.symbols[self._run.token]]
        if len(block.provisional):
            prev = self._prev
            best = self._best(block.provisional)[0] if block.frames is None else block.frames.best[len(block.final):]
            for token in best.tolist():
                if token != prev and token != self.vocab.blank_id:
                    tail.append(self.vocab.symbols[token])
                prev = token
        return tail


def greedy_decode(log_probs: np.ndarray, vocab: Vocabulary, frame_seconds: float, n_samples: int,
                  sample_rate: int) -> list[Phoneme]:
    """Greedy CTC over a whole utterance's posteriors (the offline reference); committed at its end."""
    decoder = GreedyDecoder(vocab, frame_seconds, sample_rate)
    return decoder.advance(FrameBlock(0, log_probs, log_probs[:0], n_samples, True))


def greedy_phonemes(log_probs: np.ndarray, vocab: Vocabulary) -> list[str]:
    """The phoneme symbols greedy CTC reads from a whole utterance's posteriors (``[T, V]``), no times."""
    return [p.phoneme for p in greedy_decode(log_probs, vocab, 1.0, len(log_probs), 1)]


# Beam defaults, chosen for the shipped model on held-out data only (held-out synthetic utterances and FSDD
# takes 45-49, scripts/tune-decoder-heldout.py; docs/decoding.md): 0.3 / 1.0 for v9 at the balanced window,
# kept for v11 (its held-out grid is flat around them); 0.5 / 1.5 until then, chosen with the first head.
# The insertion bonus defaults to LM_INSERTION_BONUS with an LM (it balances the LM's cost per phoneme)
# and to 0 without one.
DEFAULT_BEAM = 4
DEFAULT_LM_WEIGHT = 0.3
LM_INSERTION_BONUS = 1.0
DEFAULT_INSERTION_BONUS: float | None = None
# The beam's commit rule reads the window's provisional frames too (BeamDecoder's ``lookahead``): on by
# default since it read real speech better at every preset, on a voice no choice before had used
# (MODEL_CARD.md, "A second real voice"), for about 2 ms of decoding per step.
DEFAULT_LOOKAHEAD = True


@dataclass(frozen=True)
class DecoderConfig:
    """Which decoder a stream uses.

    ``lm`` is a path to an ARPA file (``.arpa`` / ``.arpa.gz``), ``"auto"`` for the ``lm.arpa*`` next to
    the model (none if absent), or None / ``"none"`` for no LM. ``insertion_bonus`` None means
    ``LM_INSERTION_BONUS`` with an LM, 0 without. ``lookahead``: the beam chooses what to commit after also
    searching the window's provisional frames (see :class:`~phonestream.beam.BeamDecoder`). Greedy ignores
    everything but ``kind``.

    ``kind`` ``"auto"`` (the default) is the beam search when it has an LM (``lm`` names a file, or
    ``"auto"`` finds one next to the model, as with the shipped model) and greedy otherwise: an LM is what
    makes the beam worth its cost (see docs/decoding.md); :meth:`resolve` picks one.
    """

    kind: str = "auto"
    beam: int = DEFAULT_BEAM
    lm: str | None = "auto"
    lm_weight: float = DEFAULT_LM_WEIGHT
    insertion_bonus: float | None = DEFAULT_INSERTION_BONUS
    prune_logp: float = -5.0
    top_k: int = 6
    commit_wait_s: float | None = 0.0
    lookahead: bool = DEFAULT_LOOKAHEAD

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "greedy", "beam"):
            raise ValueError(f"unknown decoder {self.kind!r}; use auto, greedy or beam")
        if self.beam < 1:
            raise ValueError(f"beam must be at least 1, got {self.beam}")

    def with_options(self, **options: Any) -> "DecoderConfig":
        """A copy with the options that are not None replaced (``decoder=`` sets ``kind``)."""
        if "decoder" in options:
            options["kind"] = options.pop("decoder")
        return replace(self, **{k: v for k, v in options.items() if v is not None})

    def lm_path(self, model_dir: str | Path | None) -> Path | None:
        """The LM file this config asks for, given the model's folder (for ``"auto"``)."""
        from .lm import find_lm_next_to

        if self.kind == "greedy" or self.lm is None or str(self.lm).lower() == "none":
            return None
        if self.lm == "auto":
            return find_lm_next_to(model_dir)
        return Path(self.lm)

    def resolve(self, model_dir: str | Path | None) -> "DecoderConfig":
        """This config with ``kind`` ``"auto"`` made concrete: beam if it has an LM, else greedy."""
        if self.kind != "auto":
            return self
        return replace(self, kind="beam" if self.lm_path(model_dir) is not None else "greedy")


def make_decoder(config: DecoderConfig, vocab: Vocabulary, frame_seconds: float, sample_rate: int,
                 model_dir: str | Path | None = None):
    """A :class:`GreedyDecoder` or a :class:`~phonestream.beam.BeamDecoder` as ``config`` says."""
    config = config.resolve(model_dir)
    if config.kind == "greedy":
        return GreedyDecoder(vocab, frame_seconds, sample_rate)
    from .beam import BeamDecoder
    from .lm import load_lm

    path = config.lm_path(model_dir)
    lm = load_lm(path) if path is not None else None
    bonus = config.insertion_bonus
    if bonus is None:
        bonus = LM_INSERTION_BONUS if lm is not None else 0.0
    return BeamDecoder(vocab, frame_seconds, sample_rate, beam=config.beam, lm=lm, lm_weight=config.lm_weight,
                       insertion_bonus=bonus, prune_logp=config.prune_logp, top_k=config.top_k,
                       commit_wait_s=config.commit_wait_s, lookahead=config.lookahead)


def decode_offline(log_probs: np.ndarray, decoder, n_samples: int, sample_rate: int) -> list[Phoneme]:
    """Run a fresh decoder over a whole utterance's posteriors (committed at its end)."""
    return decoder.advance(FrameBlock(0, log_probs, log_probs[:0], n_samples, True))
