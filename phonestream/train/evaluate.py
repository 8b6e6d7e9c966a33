"""Quick real-speech PER of a head while training: cached states of evaluation sets, greedy CTC decoding.

States are cached per (set, streaming configuration) once, exactly as the streamer computes them (see
:mod:`.states`), so scoring a head takes seconds. PER uses 39-class folding (AO->AA, ZH->SH) and the
project's own edit distance. The final model-card figures come from ``phonestream eval`` instead.
"""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import numpy as np
import torch

from ..decoding import greedy_phonemes
from ..metrics import EditCounts, edit_counts
from ..models.base import Vocabulary
from ..phones import fold_timit39
from .states import Item, cache_shard
from .trainer import States, batch_logits, head_radius, load_states, make_batch

#: The project's shared real-speech sets: ``../shared/data`` beside the repository, or $PHONESTREAM_SHARED_DATA.
SHARED = Path(os.environ.get("PHONESTREAM_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")


def _items(manifest: Path, source: str) -> list[Item]:
    """The rows of a shared set's manifest with CMU phones, as the recipe's items."""
    from ..manifest import read_manifest

    rows, _skipped = read_manifest(manifest, "phones_cmu")
    return [Item(row.id, str(row.audio), " ".join(row.phones), source) for row in rows]


def fraser_items(root: Path = SHARED / "fraser_arctic", limit: int | None = 150, seed: int = 0) -> list[Item]:
    items = _items(root / "manifest.tsv", "fraser")
    if limit and limit < len(items):
        items = sorted(random.Random(seed).sample(items, limit), key=lambda i: i.uid)
    return items


#: FSDD takes per split: the official test split (0-4, reported), a development split held out of
#: training for choosing checkpoints and settings (45-49, never reported), and training (5-44).
FSDD_SPLITS = {"test": range(0, 5), "dev": range(45, 50), "train": range(5, 45)}


def fsdd_items(root: Path = SHARED / "fsdd", split: str = "test") -> list[Item]:
    takes = FSDD_SPLITS[split]
    return [it for it in _items(root / "manifest.tsv", "fsdd") if int(it.uid.rsplit("_", 1)[1]) in takes]


def is_synth_dev(uid: str) -> bool:
    """One synthetic utterance in 25, by a stable hash of its id: held out of training, used for selection."""
    return zlib.crc32(uid.encode()) % 25 == 0


def config_name(cfg) -> str:
    return "offline" if cfg is None else "%d-%d-%d" % cfg


def load_exported_head(folder: Path) -> tuple[torch.nn.Module, str, int]:
    """(PyTorch head in eval mode, encoder name, the encoder's silent tail in ms) of a model folder written
    by ``train export`` (or the shipped default model): the head and the states it reads. A folder that is
    not one, or whose head is on another encoder, is a :class:`~.cli.TrainError`; a tail that is not a
    whole number of ms, a :class:`~phonestream.models.ModelError`."""
    import json

    from safetensors.torch import load_file

    from ..models.torch_heads import build_head
    from ..models.whisper import BY_CONFIG_KEY, check_tail_ms
    from .cli import TrainError
    from .phones import SYMBOLS

    meta_file = Path(folder) / "phonestream.json"
    if not meta_file.is_file():
        raise TrainError(f"{folder}: not a model folder (no phonestream.json)")
    meta = json.loads(meta_file.read_text())
    kind = meta.get("backbone", {}).get("type")
    if kind not in BY_CONFIG_KEY:
        raise TrainError(f"{folder}: its head reads {kind} states, not a Whisper encoder's this recipe trains on "
                         f"({', '.join(BY_CONFIG_KEY)})")
    encoder = BY_CONFIG_KEY[kind]
    spec = {k: v for k, v in meta["head"].items() if k != "weights"}
    head = build_head(spec, encoder.dim, len(SYMBOLS))
    head.load_state_dict(load_file(str(Path(folder) / "head.safetensors")))
    return head.eval(), encoder.name, check_tail_ms(meta["backbone"].get("tail_ms", 0), str(meta_file))


def encoder_weights(folder: Path) -> Path | None:
    """A model folder's fine-tuned encoder variables (``train tune``'s ``encoder.safetensors``), or None
    for a frozen encoder: the third thing, with the encoder and its tail, that decides the states a head
    reads."""
    import json

    name = json.loads((Path(folder) / "phonestream.json").read_text()).get("backbone", {}).get("weights")
    return None if name is None else Path(folder) / name


def eval_states(backbone, name: str, items: list[Item], cfg, cache_dir: Path, augment_audio: bool = False,
                draw: int = 0) -> States:
    """States of ``items`` through window ``cfg`` (None: offline), encoded once and cached in ``cache_dir``.
    The file is named by its items (ids, audio paths, labels), so a set that changed since it was cached
    (a new synthesis round, an edited dev manifest) is encoded afresh instead of read stale. ``draw``
    seeds the augmentation: other draws are the same audio differently degraded."""
    key = zlib.crc32("\n".join(f"{it.uid}\t{it.path}\t{it.phones}" for it in items).encode())
    out = cache_dir / f"{name}-{config_name(cfg)}-{key:08x}{f'-draw{draw}' if draw else ''}.npz"
    cache_shard(backbone, items, out, seed=draw, augment_audio=augment_audio, configs=[cfg] if cfg else None,
                offline_fraction=1.0 if cfg is None else 0.0, log_every=0)
    return load_states([out])


def log_posteriors(data: States, head: torch.nn.Module, symbols: list[str], batch: int = 32) -> list[np.ndarray]:
    """``head``'s log posteriors ``[frames, len(symbols)]`` for every utterance of ``data``, each window
    segment seeing zeros beyond its edges as in streaming."""
    vocab_index = {s: i for i, s in enumerate(symbols)}
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for b in range(0, len(data.ids), batch):
            utts = list(range(b, min(b + batch, len(data.ids))))
            x, mask, gather, lengths, _, _ = make_batch(data, utts, vocab_index, head_radius(head))
            log_probs = torch.log_softmax(batch_logits(head, x, mask, gather).float(), -1).numpy()
            out += [row[:n] for row, n in zip(log_probs, lengths.tolist())]
    return out


def mean_posteriors(per_head: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Several heads as one: per frame, the log of the mean of their posteriors (one head: its own)."""
    if len(per_head) == 1:  # the fit scores one head every few hundred steps: no stacking for it
        return per_head[0]
    return [np.logaddexp.reduce(np.stack(rows), axis=0) - np.log(len(rows)) for rows in zip(*per_head)]


def decode(data: States, head: torch.nn.Module | list[torch.nn.Module], symbols: list[str],
           batch: int = 32) -> list[list[str]]:
    """Greedy CTC output (:func:`phonestream.decoding.greedy_phonemes`) of ``head`` (or of several heads'
    mean posteriors, :func:`mean_posteriors`) for every utterance of ``data``; ``symbols[0]`` is the blank."""
    heads = head if isinstance(head, list) else [head]
    rows = mean_posteriors([log_posteriors(data, h, symbols, batch) for h in heads])
    vocab = Vocabulary(tuple(symbols), 0)
    return [greedy_phonemes(row, vocab) for row in rows]


def replay_in_blocks(decoder, log_probs: np.ndarray, block_frames) -> list[str]:
    """The phonemes ``decoder`` (a :class:`~phonestream.decoding.GreedyDecoder` or
    :class:`~phonestream.beam.BeamDecoder`) commits from one utterance's streamed posteriors fed in the
    streamer's blocks: ``block_frames`` is each step's count of final frames, as the cache keeps them
    (``States.seg_kept`` of the utterance's segments, from :func:`.states.stream_windows`). No endpointing
    (the held-out settings tuner, ``scripts/tune-decoder-heldout.py``), and no lookahead frames: a live
    stream with the lookahead commit off commits the same (``scripts/commit-heldout.py`` scores it on)."""
    from ..streaming import FrameBlock

    out: list[str] = []
    edges = np.concatenate([[0], np.cumsum(block_frames)]).astype(int).tolist()
    for a, b in zip(edges, edges[1:]):
        last = b == edges[-1]
        block = FrameBlock(a, log_probs[a:b], log_probs[b:b], b * 320, last)  # 20 ms frames at 16 kHz
        out += [p.phoneme for p in decoder.advance(block)]
    return out


def per(data: States, head, symbols: list[str]) -> float:
    total = EditCounts(0, 0, 0, 0)
    for ref, hyp in zip(data.phones, decode(data, head, symbols)):
        total = total + edit_counts(fold_timit39(ref.split()), fold_timit39(hyp))
    return 100.0 * total.rate


def streaming_rtf(model, audio: np.ndarray, chunk_ms: int, left_ms: int, right_ms: int, repeats: int = 3) -> float:
    """Single-stream real-time factor of ``model`` through the project's streamer at these sizes."""
    import time

    from ..streaming import StreamConfig, Streamer

    model.warmup()
    best = float("inf")
    for _ in range(repeats):
        s = Streamer(model, StreamConfig(chunk_ms, left_ms, right_ms))
        step = chunk_ms * model.sample_rate // 1000
        t0 = time.perf_counter()
        for a in range(0, len(audio), step):
            s.push(audio[a : a + step])
            s.step()
        s.finish()
        s.step()
        best = min(best, (time.perf_counter() - t0) / (len(audio) / model.sample_rate))
    return best
