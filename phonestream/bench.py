"""Benchmark: real-time factor, per-chunk latency, emission delay and memory of streaming.

Compute does not depend on the weights, so without a model the benchmark uses a randomly initialised
wav2vec2-base-sized CTC model (94M parameters). The audio is the shipped sample recording, looped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .audio import load_audio
from .decoding import GreedyDecoder
from .engine import Recognizer
from .models.base import LATENCY_PRESETS, CTCModel, StreamingDefaults, Vocabulary
from .phones import ARPABET
from .streaming import StreamConfig

SAMPLE = Path(__file__).resolve().parent / "samples" / "LJ001-0001.flac"


def random_base_model(device: str = "cpu", threads: int | None = None) -> CTCModel:
    """A randomly initialised wav2vec2-base-sized CTC model over the 39 ARPAbet phonemes (needs the [hf] extra)."""
    from .models.base import require_hf

    require_hf("the random wav2vec2-base benchmark model")
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    from .models.hf import HFCTCModel

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    vocab = Vocabulary(("<pad>", *ARPABET), 0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=len(vocab), pad_token_id=0))
    m = HFCTCModel(model, vocab, 16000, do_normalize=False, device=device)
    m.description = "random wav2vec2-base " + m.description
    return m


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def looped(audio: np.ndarray, total: int, piece: int) -> Iterator[np.ndarray]:
    """``total`` samples of ``audio`` repeated, in pieces, without ever holding more than one copy."""
    sent, pos = 0, 0
    while sent < total:
        n = min(piece, total - sent, len(audio) - pos)
        yield audio[pos : pos + n]
        sent += n
        pos = (pos + n) % len(audio)


def run(model: CTCModel, config: StreamConfig, seconds: float, feed_ms: int = 20,
        offline: bool = True, audio: np.ndarray | None = None, decoder: str = "auto") -> dict[str, Any]:
    """Stream ``seconds`` of audio as fast as possible with ``decoder`` (``auto``, ``greedy``, ``beam``);
    returns the stream summary and memory figures.

    Memory (RSS) is read after the first minute of audio and at the end, so a growth shows.
    """
    recognizer = Recognizer(model, config, decoder=decoder)
    sr = model.sample_rate
    audio = load_audio(SAMPLE, sr) if audio is None else audio
    model.warmup()
    stream = recognizer.stream(keep_phonemes=False, partials=False)
    total = int(seconds * sr)
    rss_first = None
    for piece in looped(audio, total, max(1, sr * feed_ms // 1000)):
        stream.accept(piece)
        if rss_first is None and stream.stats.audio_samples >= 60 * sr:
            rss_first = rss_mb()
    stream.finish(offline=False)
    result = stream.summary()
    dec = stream.decoder
    result["decoder"] = ("greedy" if isinstance(dec, GreedyDecoder) else
                         "beam+lm" if dec.has_lm else "beam")
    result["rss_mb_first_minute"] = round(rss_first, 1) if rss_first is not None else None
    result["rss_mb_end"] = round(rss_mb(), 1)
    if offline:
        clip = np.resize(audio, min(total, int(30 * sr)))  # one offline pass over up to 30 s
        recognizer.transcribe(clip[: sr])  # warm the offline shape too
        t0 = time.perf_counter()
        recognizer.transcribe(clip)
        result["offline_rtf"] = round((time.perf_counter() - t0) / (len(clip) / sr), 4)
    return result


def parse_configs(specs: list[str], model: CTCModel) -> list[StreamConfig]:
    """``CHUNK/LEFT/RIGHT`` strings (ms) or latency preset names (``low``, ``balanced``, ``accurate``)
    to configs; an empty list means the model's defaults."""
    if not specs:
        return [StreamConfig.for_model(model)]
    out = []
    for spec in specs:
        if spec in LATENCY_PRESETS:
            out.append(StreamConfig.for_model(model, latency=spec))
            continue
        parts = spec.replace(":", "/").split("/")
        if len(parts) != 3 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise ValueError(f"--config {spec!r} must be CHUNK/LEFT/RIGHT in ms, e.g. 640/640/240, "
                             f"or one of {', '.join(LATENCY_PRESETS)}")
        out.append(StreamConfig(*(int(p) for p in parts)))
    return out


__all__ = ["random_base_model", "run", "parse_configs", "rss_mb", "StreamingDefaults"]
