"""The ``phonestream`` command: a thin layer over the library (click for parsing, rich for output).

Every known failure (bad audio, bad model, bad sizes, no microphone) ends with one line on stderr and
exit code 2, after everything already committed has been printed.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import click
import numpy as np

from .audio import AudioError, load_audio, microphone, paced, pieces, stdin_pcm
from .console import EventPrinter, print_rows, print_summary
from .engine import Recognizer
from .events import Summary
from .models import ModelError, load_model
from .phones import to_ipa
from .streaming import ConfigError, StreamConfig

USER_ERRORS = (AudioError, ModelError, ConfigError, ValueError, OSError)


def _fail(message: str, printer: EventPrinter | None = None) -> None:
    if printer is not None:
        printer.error(message)
    else:
        click.echo(f"phonestream: error: {message}", err=True)
    sys.exit(2)


def model_options(func: Callable) -> Callable:
    """Options shared by every command that loads a model and streams."""
    options = [
        click.option("--model", "-m", default=None, help="Model folder or hub id (default: the shipped model)."),
        click.option("--backbone", default=None, help="Encoder folder/hub id for a backbone-plus-head model."),
        click.option("--vocab", default=None, type=click.Path(), help="Phoneme vocabulary file for --backbone."),
        click.option("--head", default=None, type=click.Path(), help="Head weights (safetensors) for --backbone."),
        click.option("--head-type", default="linear", type=click.Choice(["linear", "conv"]), show_default=True),
        click.option("--device", default="cpu", show_default=True, help="cpu or cuda."),
        click.option("--threads", default=None, type=int, help="Torch CPU threads (default: torch's choice)."),
        click.option("--chunk-ms", default=None, type=int, help="New audio per model step (default: the model's)."),
        click.option("--left-ms", default=None, type=int, help="Left context per step (default: the model's)."),
        click.option("--right-ms", default=None, type=int, help="Lookahead per step (default: the model's)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def output_options(func: Callable) -> Callable:
    options = [
        click.option("--json", "json_lines", is_flag=True, help="JSON Lines events instead of the live view."),
        click.option("--ipa", is_flag=True, help="Show ARPAbet phonemes in IPA."),
        click.option("--min-confidence", default=0.0, type=float, help="Hide phonemes below this confidence."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
                warmup: bool = True) -> Recognizer:
    loaded = load_model(model, backbone=backbone, vocab=vocab, head=head, head_type=head_type, device=device,
                        threads=threads)
    recognizer = Recognizer(loaded, StreamConfig.for_model(loaded, chunk_ms, left_ms, right_ms))
    if warmup:
        loaded.warmup()
    return recognizer


def _run_stream(recognizer: Recognizer, source: Iterable[np.ndarray], printer: EventPrinter,
                keep_audio: bool) -> None:
    """Feed a source through a stream, printing events; on error, finish what was committed first."""
    stream = recognizer.stream(keep_audio=keep_audio)
    try:
        for piece in source:
            for event in stream.accept(piece):
                printer(event)
    except KeyboardInterrupt:
        pass  # the microphone is stopped with Ctrl-C: finish and summarise what was heard
    except USER_ERRORS as err:
        for event in stream.finish(offline=False)[:-1]:
            printer(event)
        _fail(str(err), printer)
    for event in stream.finish():
        printer(event)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="phonestream")
def main() -> None:
    """Live phoneme recognition with wav2vec2-family CTC models."""


def _handles_errors(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as err:
            _fail(str(err))

    return wrapper


@main.command()
@click.argument("file")
@model_options
@output_options
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 60000),
              help="Size of the pieces the audio is delivered in (10 ms to seconds).")
@click.option("--realtime", is_flag=True, help="Deliver the audio no faster than real time.")
@click.option("--rate", default=16000, show_default=True, help="Sample rate of raw PCM on stdin (FILE '-').")
@click.option("--format", "pcm_format", default="s16le", type=click.Choice(["s16le", "f32le"]), show_default=True)
@click.option("--compare-offline/--no-compare-offline", default=None,
              help="Decode the whole audio at the end and compare (default: on for files, off for stdin).")
@_handles_errors
def stream(file, model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
           json_lines, ipa, min_confidence, feed_ms, realtime, rate, pcm_format, compare_offline) -> None:
    """Stream FILE (or raw PCM on stdin with '-') through the model as if live."""
    recognizer = _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms)
    sr = recognizer.model.sample_rate
    if file == "-":
        source: Iterable[np.ndarray] = stdin_pcm(rate, pcm_format, sr, feed_ms)
        keep = bool(compare_offline)
    else:
        source = pieces(load_audio(file, sr), max(1, sr * feed_ms // 1000))
        keep = compare_offline is not False
    if realtime:
        source = paced(source, sr)
    _run_stream(recognizer, source, EventPrinter(json_lines, to_ipa if ipa else str, min_confidence), keep)


@main.command()
@model_options
@output_options
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 1000))
@click.option("--input-device", default=None, help="Microphone name or index (default: the system's).")
@click.option("--compare-offline", is_flag=True, help="Keep the audio and compare with an offline decode at the end.")
@_handles_errors
def mic(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms, json_lines, ipa,
        min_confidence, feed_ms, input_device, compare_offline) -> None:
    """Stream the microphone until Ctrl-C."""
    recognizer = _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms)
    dev = int(input_device) if input_device and input_device.isdigit() else input_device
    source = microphone(recognizer.model.sample_rate, feed_ms, dev)
    _run_stream(recognizer, source, EventPrinter(json_lines, to_ipa if ipa else str, min_confidence), compare_offline)


@main.command()
@click.argument("file")
@model_options
@output_options
@_handles_errors
def transcribe(file, model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
               json_lines, ipa, min_confidence) -> None:
    """Decode a whole FILE at once (the offline reference), same output format."""
    import time

    recognizer = _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
                             warmup=False)
    sr = recognizer.model.sample_rate
    audio = load_audio(file, sr)
    printer = EventPrinter(json_lines, to_ipa if ipa else str, min_confidence)
    t0 = time.perf_counter()
    phonemes = recognizer.transcribe(audio)
    seconds = time.perf_counter() - t0
    for p in phonemes:
        printer(p)
    printer(Summary({"model": recognizer.model.description, "mode": "offline", "audio_s": round(len(audio) / sr, 3),
                     "compute_s": round(seconds, 3), "rtf": round(seconds / (len(audio) / sr), 4),
                     "phonemes": len(phonemes), "phoneme_string": " ".join(p.phoneme for p in phonemes)}))


@main.command(name="eval")
@click.argument("manifest", type=click.Path())
@model_options
@click.option("--phones-column", default="phones", show_default=True)
@click.option("--fold", default="none", type=click.Choice(["none", "timit39"]), show_default=True,
              help="Score in the 39-class Lee & Hon set (TIMIT-61 or ARPAbet symbols).")
@click.option("--limit", default=None, type=int, help="Only the first N usable rows.")
@click.option("--where", "where_", default=None, help="Keep rows whose COLUMN=REGEX, e.g. id='_[0-4]$'.")
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 60000))
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(["pocketsphinx"]),
              help="Also score a baseline recogniser on the same files (repeatable).")
@click.option("--json", "json_out", is_flag=True, help="Print the result as one JSON object.")
@_handles_errors
def eval_(manifest, model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
          phones_column, fold, limit, where_, feed_ms, baselines, json_out) -> None:
    """Phone error rate of streaming and offline decoding on a labelled MANIFEST.tsv."""
    import re

    from rich.progress import track

    from .baselines import BASELINES
    from .evaluate import evaluate, read_manifest

    where = None
    if where_:
        column, _, pattern = where_.partition("=")
        regex = re.compile(pattern)
        where = lambda row: bool(regex.search(row.get(column, "") or ""))  # noqa: E731
    items, skipped = read_manifest(manifest, phones_column, limit, where)
    recognizer = _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms)
    result = evaluate(recognizer, items, fold, feed_ms, baselines={b: BASELINES[b] for b in baselines},
                      progress=None if json_out else lambda it: track(it, total=len(items), description="eval",
                                                                      console=_stderr()))
    result["skipped_no_phones"] = skipped
    cfg = recognizer.config
    result["config"] = {"chunk_ms": cfg.chunk_ms, "left_ms": cfg.left_ms, "right_ms": cfg.right_ms}
    if json_out:
        click.echo(json.dumps(result))
        return
    print_rows(result["systems"], f"{Path(manifest).name}: {result['utterances']} utterances, "
               f"{result['audio_s']} s, fold={fold}, chunk/left/right={cfg.chunk_ms}/{cfg.left_ms}/{cfg.right_ms} ms")
    click.echo(f"stream vs offline: edit distance {result['stream_vs_offline']['edit_distance']}, "
               f"ratio {result['stream_vs_offline']['ratio']}; skipped (no phones): {skipped}")
    for err in result["errors"]:
        click.echo(f"skipped: {err}", err=True)


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


@main.command()
@click.option("--model", "-m", default=None, help="Model folder/hub id; 'default' for the shipped model "
              "(default: a random wav2vec2-base-sized model).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", default=None, type=int)
@click.option("--config", "configs", multiple=True, help="CHUNK/LEFT/RIGHT in ms; repeat to compare settings.")
@click.option("--seconds", default=60.0, show_default=True, help="Audio to stream per setting.")
@click.option("--minutes", default=None, type=float, help="Stream this many minutes (memory check).")
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 60000))
@click.option("--json", "json_out", is_flag=True)
@_handles_errors
def bench(model, device, threads, configs, seconds, minutes, feed_ms, json_out) -> None:
    """Real-time factor, per-chunk latency, emission delay and memory of streaming."""
    from . import bench as bench_mod

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if model is None:
        loaded = bench_mod.random_base_model(device)
    else:
        loaded = load_model(None if model == "default" else model, device=device, threads=threads)
    total = minutes * 60 if minutes is not None else seconds
    rows = []
    for cfg in bench_mod.parse_configs(list(configs), loaded):
        r = bench_mod.run(loaded, cfg, total, feed_ms, offline=minutes is None)
        rows.append({"chunk/left/right ms": f"{cfg.chunk_ms}/{cfg.left_ms}/{cfg.right_ms}", "audio_s": r["audio_s"],
                     "rtf": r["rtf"], "offline_rtf": r.get("offline_rtf"), "chunk_compute_ms": r["chunk_compute_ms"],
                     "emission_delay_s": r["emission_delay_s"], "frame_delay_s": r["frame_delay_s"],
                     "rss_mb_first_minute": r["rss_mb_first_minute"], "rss_mb_end": r["rss_mb_end"],
                     "model": r["model"]})
    if json_out:
        click.echo(json.dumps(rows))
        return
    print_rows([{k: v for k, v in row.items() if k != "model"} for row in rows],
               f"bench: {rows[0]['model']} (latency cells: p50 / p95)")


__all__ = ["main", "print_summary"]
