"""Encoder states computed exactly as the streamer computes them, cached for head training.

For each training utterance a streaming configuration (chunk / left / right context) is drawn, the
project's own :class:`~phonestream.streaming.Streamer` cuts the (augmented) audio into its windows, the
backbone encodes every window, and for every window we keep the states of its final ("kept") frames plus
``margin`` frames either side -- zero outside the window, with a mask -- so that a convolutional head
whose receptive field radius is at most ``margin`` sees in training exactly what it sees in the
streamer. Some utterances are cached as one whole-utterance window (offline), so offline use is
trained too.

Cache layout (one ``.npz`` shard per worker): ``states`` float16 [N, dim] (all segments concatenated),
``seg_utt``/``seg_start``/``seg_len``/``seg_lo``/``seg_hi``/``seg_kept`` per segment (utterance index,
offset into ``states``, length, valid range inside the segment, kept frame count starting at
``margin``), and per utterance ``ids``/``phones`` (space separated) and ``config``. With a teacher
(:func:`cache_shard`'s ``teacher``), also ``teacher`` float16 [frames, vocab]: the teacher head's log
posteriors of the same augmented audio encoded as one whole-utterance window, every utterance's frames
in order (``teacher_len`` per utterance), and ``teacher_name`` saying which head that was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import load_audio
from ..manifest import read_manifest as read_labelled
from ..models.base import Backbone
from ..streaming import StreamConfig, Streamer
from .augment import augment

MARGIN = 8
#: Streaming configurations drawn for training (chunk, left, right) in ms; None = offline.
#: Chunks from 160 ms (the ``low`` latency preset) to 640 ms (``accurate``); the 320 ms default in the middle.
TRAIN_CONFIGS: list[tuple[int, int, int] | None] = [
    (chunk, left, right)
    for chunk in (160, 320, 480, 640) for left in (640, 960, 1280, 1920) for right in (80, 160, 240, 320)
]
OFFLINE_FRACTION = 0.15


def stream_windows(backbone: Backbone, audio: np.ndarray, config: tuple[int, int, int] | None):
    """The streamer's windows for a whole utterance: list of (audio, first_frame, keep_from, keep_to)."""
    if config is None:
        n = backbone.num_frames(len(audio))
        return [(audio, 0, 0, n)]
    s = Streamer(backbone, StreamConfig(*config))
    s.push(audio)
    s.finish()
    return [(w.audio, w.first_frame, w.keep_from, w.keep_to) for w in s.ready_windows()]


def segments_for(backbone, audio: np.ndarray, config, margin: int = MARGIN):
    """Kept-frame segments (with margins) of one utterance, as the streamer would compute them."""
    wins = stream_windows(backbone, audio, config)
    states = backbone.encode_batch([w[0] for w in wins])
    out = []
    for (_, first, k0, k1), st in zip(wins, states):
        a, b = k0 - first, k1 - first
        seg = np.zeros((b - a + 2 * margin, st.shape[1]), np.float32)
        lo_src, hi_src = max(0, a - margin), min(len(st), b + margin)
        seg[lo_src - (a - margin) : hi_src - (a - margin)] = st[lo_src:hi_src]
        out.append((seg, lo_src - (a - margin), hi_src - (a - margin), b - a))
    return out


@dataclass
class Item:
    uid: str
    path: str
    phones: str
    source: str


def read_manifest(path: Path, phones_col: str = "phones", source: str | None = None) -> list[Item]:
    """The recipe's items of a labelled manifest (read by :func:`phonestream.manifest.read_manifest`):
    ``source`` defaults to the row's ``source`` column, else the manifest's folder name."""
    rows, _skipped = read_labelled(path, phones_col)
    return [Item(row.fields.get("id") or f"row{k}-{row.audio.stem}", str(row.audio), " ".join(row.phones),
                 source or row.fields.get("source", path.parent.name)) for k, row in enumerate(rows)]


def augmented(items: list[Item], sample_rate: int, rng: np.random.Generator, augment_audio: bool = True):
    """Yield ``(item, audio)`` for each item, the audio augmented (:func:`.augment.augment`) with babble
    drawn from up to 64 of the earlier items' clean audio. ``rng`` is drawn from in item order only as each
    item is yielded, so a caller may draw from it between items (as :func:`cache_shard` does)."""
    babble: list[np.ndarray] = []
    for it in items:
        x = load_audio(it.path, sample_rate)
        if augment_audio:
            y = augment(x, rng, babble or None)
            if len(babble) < 64:
                babble.append(x)
            elif rng.random() < 0.05:
                babble[rng.integers(len(babble))] = x
            x = y
        yield it, x


@dataclass
class Teacher:
    """A head whose offline posteriors a streamed head learns to match (``fit --distill``): ``log_probs``
    maps whole-utterance states [T, dim] to log posteriors [T, vocab]; ``name`` identifies it in shards."""

    name: str
    log_probs: Callable[[np.ndarray], np.ndarray]


def cache_shard(backbone: Backbone, items: list[Item], out: Path, seed: int, augment_audio: bool = True,
                configs=None, offline_fraction: float = OFFLINE_FRACTION, margin: int = MARGIN,
                log_every: int = 200, teacher: Teacher | None = None) -> None:
    """Encode ``items`` (augmented, streamed) and write one shard; skipped if the shard exists.

    With ``teacher``, each utterance is also encoded whole and the teacher's log posteriors stored; the
    random draws (augmentation, windows) are the same as without it."""
    if out.exists():
        return
    configs = configs or TRAIN_CONFIGS
    rng = np.random.default_rng(seed)
    segs, meta = [], {k: [] for k in ("seg_utt", "seg_lo", "seg_hi", "seg_kept", "seg_len")}
    ids, phones, cfgs = [], [], []
    taught: list[np.ndarray] = []
    t0 = time.time()
    audio_s = 0.0
    for i, (it, x) in enumerate(augmented(items, backbone.sample_rate, rng, augment_audio)):
        if len(x) < 1600:
            continue
        cfg = None if rng.random() < offline_fraction else configs[rng.integers(len(configs))]
        u = len(ids)
        segments = segments_for(backbone, x, cfg, margin)
        if teacher is not None:
            whole = segments[0][0][margin:-margin] if cfg is None else backbone.encode_batch([x])[0]
            lp = teacher.log_probs(np.asarray(whole, np.float32))
            streamed = sum(kept for *_, kept in segments)
            if len(lp) != streamed:  # the streamer stitches exactly the offline frames
                raise ValueError(f"{it.uid}: {len(lp)} offline frames, {streamed} streamed")
            taught.append(lp.astype(np.float16))
        for seg, lo, hi, kept in segments:
            segs.append(seg.astype(np.float16))
            meta["seg_utt"].append(u)
            meta["seg_lo"].append(lo)
            meta["seg_hi"].append(hi)
            meta["seg_kept"].append(kept)
            meta["seg_len"].append(len(seg))
        ids.append(it.uid)
        phones.append(it.phones)
        cfgs.append("offline" if cfg is None else "%d/%d/%d" % cfg)
        audio_s += len(x) / backbone.sample_rate
        if log_every and (i + 1) % log_every == 0:
            print(f"{out.name}: {i + 1}/{len(items)} utterances, {audio_s / 3600:.2f} h, "
                  f"RTF {(time.time() - t0) / audio_s:.3f}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    lens = np.array(meta["seg_len"], np.int64)
    tmp = out.with_suffix(".tmp.npz")
    extra = {} if teacher is None else {"teacher": np.concatenate(taught),
                                        "teacher_len": np.array([len(t) for t in taught], np.int64),
                                        "teacher_name": np.array(teacher.name)}
    np.savez(tmp, states=np.concatenate(segs), seg_start=np.concatenate([[0], np.cumsum(lens)[:-1]]),
             **{k: np.array(v, np.int32) for k, v in meta.items()}, ids=np.array(ids), phones=np.array(phones),
             config=np.array(cfgs), margin=np.array(margin), **extra)
    tmp.rename(out)
