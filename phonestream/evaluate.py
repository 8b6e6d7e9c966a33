"""Evaluation on a labelled manifest: phone error rate streaming and offline, agreement and latency.

The manifest (:mod:`phonestream.manifest`) has an audio column and a phones column (space-separated
symbols, ``phones`` unless told otherwise). Rows with an empty phones cell are skipped (a dictionary may
lack a word) and counted.

Several decoders (greedy, beam, beam with LM) are compared on the same model output: the model runs once
per file, its stitched blocks are recorded, and each other decoder replays them. A decoder's streaming
RTF is that model time plus its own decoding time. Each decoder's committed phonemes are marked correct
or wrong against the reference (:mod:`phonestream.confidence`) to score its confidence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioError, load_audio, pieces
from .confidence import mark_correct, summarise
from .decoding import DecoderConfig, decode_offline
from .engine import Recognizer, Stream
from .manifest import Item, ManifestError, Where, read_manifest
from .metrics import EditCounts, edit_counts, stats
from .numerics import numeric_setup
from .phones import FOLDINGS


@dataclass
class SystemScore:
    """Accumulated scores of one system (streaming, offline or a baseline) over a manifest."""

    name: str
    counts: EditCounts = field(default_factory=lambda: EditCounts(0, 0, 0, 0))
    compute_s: float = 0.0
    delays: list[float] = field(default_factory=list)

    def add(self, ref: list[str], hyp: list[str]) -> None:
        self.counts = self.counts + edit_counts(ref, hyp)

    def row(self, audio_s: float) -> dict[str, Any]:
        c = self.counts
        return {
            "system": self.name, "per": round(100 * c.rate, 2), "sub": c.substitutions, "del": c.deletions,
            "ins": c.insertions, "ref_phones": c.ref_len,
            "rtf": round(self.compute_s / audio_s, 4) if audio_s and self.compute_s else None,
            "emission_delay_s": stats(self.delays, 1, 3) if self.delays else None,
        }


def _stream(recognizer: Recognizer, decoder: DecoderConfig | None):
    if decoder is None:
        return recognizer.stream(partials=False)
    return Stream(recognizer, partials=False, decoder_config=decoder, endpoint=recognizer.endpoint_config())


def stream_file(recognizer: Recognizer, audio: np.ndarray, feed_ms: int = 20, record: list | None = None,
                decoder: DecoderConfig | None = None):
    """Stream one signal in ``feed_ms`` pieces; returns (committed phonemes, summary metrics).

    ``record``, a list, receives the stitched model output for :func:`replay_file`."""
    stream = _stream(recognizer, decoder)
    stream.recorder = record
    feed = max(1, recognizer.model.sample_rate * feed_ms // 1000)
    phonemes = []
    for piece in pieces(audio, feed):
        phonemes += [e for e in stream.accept(piece) if e.to_dict()["type"] == "phoneme"]
    events = stream.finish(offline=False)
    phonemes += [e for e in events if e.to_dict()["type"] == "phoneme"]
    return phonemes, events[-1].metrics


def replay_file(recognizer: Recognizer, record: list, n_samples: int, decoder: DecoderConfig):
    """Decode recorded model output with another decoder, as if streamed; same return as stream_file."""
    stream = _stream(recognizer, decoder)
    stream.stats.audio_samples = n_samples
    phonemes = []
    for blocks, seconds in record:
        phonemes += [e for e in stream.decode(blocks, seconds) if e.to_dict()["type"] == "phoneme"]
    events = stream.finish(offline=False)
    phonemes += [e for e in events if e.to_dict()["type"] == "phoneme"]
    return phonemes, events[-1].metrics


def parse_decoders(spec: str, recognizer: Recognizer) -> dict[str, DecoderConfig]:
    """``greedy,beam,beam+lm`` -> configs: ``beam`` has no LM, ``beam+lm`` the recognizer's LM (its
    ``lm`` option, else the model's ``lm.arpa``); beam size and weights come from the recognizer.

    Raises:
        ValueError: an unknown name, or ``beam+lm`` with no LM to use.
    """
    out: dict[str, DecoderConfig] = {}
    for name in [n.strip() for n in spec.split(",") if n.strip()]:
        if name == "greedy":
            out[name] = recognizer.decoder_config(decoder="greedy")
        elif name == "beam":
            out[name] = recognizer.decoder_config(decoder="beam", lm="none")
        elif name == "beam+lm":
            lm = recognizer.lm if recognizer.lm not in (None, "none") else "auto"
            cfg = recognizer.decoder_config(decoder="beam", lm=lm)
            path = cfg.lm_path(recognizer.model_dir)
            if path is None:
                raise ValueError("beam+lm needs an LM: pass --lm FILE.arpa (none found next to the model)")
            out[name] = cfg.with_options(lm=str(path))
        else:
            raise ValueError(f"unknown decoder {name!r} in --decoders; use greedy, beam, beam+lm")
    if not out:
        raise ValueError("--decoders names no decoder")
    return out


def evaluate(recognizer: Recognizer, items: list[Item], fold: str = "none", feed_ms: int = 20,
             baselines: dict[str, Callable[[Path], list[str]]] | None = None,
             progress: Callable[[Iterator[Item]], Iterator[Item]] | None = None,
             decoders: dict[str, DecoderConfig] | None = None, split_gap: bool = False) -> dict[str, Any]:
    """Score streaming and offline decoding (and any baselines) of ``items`` against their phones.

    With ``decoders`` (name -> config), each is scored on the same model output; systems are then
    named ``stream NAME`` / ``offline NAME``. Without, the recognizer's own decoder gives the systems
    ``stream`` and ``offline``. ``split_gap`` adds ``stream at once [NAME]``: the final frames the stream
    stitched, decoded as one utterance (nothing committed before the end, no endpoints), so that stream
    minus it is what committing as it goes costs and it minus offline what the windows cost the
    posteriors. ``confidence`` holds, per decoder, how well the streamed phonemes'
    confidence separates correct from wrong ones; ``numerics`` what can change the figures between
    machines (:mod:`phonestream.numerics`) and ``config`` the window.
    """
    fold_fn = FOLDINGS[fold]
    window = recognizer.config
    sr = recognizer.model.sample_rate
    configs = decoders or {"": recognizer.decoder_config()}
    names = {d: (f"stream {d}".strip(), f"offline {d}".strip(), f"stream at once {d}".strip()) for d in configs}
    systems: dict[str, SystemScore] = {}
    for column in (0, 2, 1) if split_gap else (0, 1):
        for d in configs:
            systems[names[d][column]] = SystemScore(names[d][column])
    for name in baselines or {}:
        systems[name] = SystemScore(name)
    conf: dict[str, tuple[list[float], list[bool]]] = {d: ([], []) for d in configs}
    agreement = EditCounts(0, 0, 0, 0)
    audio_s = 0.0
    errors: list[str] = []
    for item in (progress(iter(items)) if progress else items):
        try:
            audio = load_audio(item.audio, sr)
        except AudioError as err:
            errors.append(str(err))
            continue
        audio_s += len(audio) / sr
        ref = fold_fn(item.phones)
        record: list = []
        t0 = time.perf_counter()
        log_probs = recognizer.offline_log_probs(audio)
        offline_model_s = time.perf_counter() - t0
        for i, (d, cfg) in enumerate(configs.items()):
            s_name, o_name, a_name = names[d]
            if i == 0:
                streamed, summary = stream_file(recognizer, audio, feed_ms, record, cfg)
            else:
                streamed, summary = replay_file(recognizer, record, len(audio), cfg)
            if split_gap:
                t0 = time.perf_counter()
                stitched = np.concatenate([log_probs[:0]] + [b.final for blocks, _ in record for b in blocks])
                at_once = decode_offline(stitched, recognizer.make_decoder(cfg), len(audio), sr)
                systems[a_name].compute_s += summary["compute_s"] + time.perf_counter() - t0
                systems[a_name].add(ref, fold_fn([p.phoneme for p in at_once]))
            systems[s_name].compute_s += summary["compute_s"]
            systems[s_name].delays += [p.committed_at - p.end for p in streamed]
            t0 = time.perf_counter()
            offline = decode_offline(log_probs, recognizer.make_decoder(cfg), len(audio), sr)
            systems[o_name].compute_s += offline_model_s + time.perf_counter() - t0
            s_hyp: list[str] = []
            for p in streamed:  # fold one phoneme at a time to keep each one's confidence
                folded = fold_fn([p.phoneme])
                if folded:
                    s_hyp.append(folded[0])
                    conf[d][0].append(p.confidence)
            o_hyp = fold_fn([p.phoneme for p in offline])
            conf[d][1].extend(mark_correct(ref, s_hyp))
            systems[s_name].add(ref, s_hyp)
            systems[o_name].add(ref, o_hyp)
            if i == 0:
                agreement = agreement + edit_counts(o_hyp, s_hyp)
        for name, run in (baselines or {}).items():
            t0 = time.perf_counter()
            hyp = fold_fn(run(item.audio))
            systems[name].compute_s += time.perf_counter() - t0
            systems[name].add(ref, hyp)
    return {
        "utterances": len(items) - len(errors), "audio_s": round(audio_s, 2), "fold": fold,
        "systems": [s.row(audio_s) for s in systems.values()],
        "stream_vs_offline": {"edit_distance": agreement.errors, "ratio": round(agreement.rate, 4)},
        "confidence": {d or "stream": summarise(*conf[d]) for d in configs},
        "errors": errors,
        "numerics": numeric_setup(recognizer.model),
        "config": {"chunk_ms": window.chunk_ms, "left_ms": window.left_ms,  # type: ignore[union-attr]
                   "right_ms": window.right_ms},  # type: ignore[union-attr]
    }


__all__ = ["Item", "ManifestError", "Where", "read_manifest", "evaluate", "stream_file", "replay_file",
           "parse_decoders"]
