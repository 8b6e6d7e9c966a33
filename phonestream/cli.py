"""The ``phonestream`` command: a thin layer over the library (click for parsing, rich for output).

Every known failure (bad audio, bad model, bad sizes, no microphone) ends with one line on stderr and
exit code 2, after everything already committed has been printed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import click
import numpy as np

from .audio import AudioError, check_microphone, load_audio, microphone, paced, pieces, stdin_pcm
from .console import EventPrinter, print_rows, print_summary
from .decoding import DEFAULT_BEAM, DEFAULT_LM_WEIGHT, DEFAULT_LOOKAHEAD, LM_INSERTION_BONUS
from .engine import Recognizer, Stream
from .models import ModelError, load_model
from .models.base import DTYPES, LATENCY_PRESETS
from .numerics import pin_blas_threads
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
    """Options shared by every command that loads a model and streams.

    ``--latency`` is kept on the click context (:func:`_window` reads it) rather than passed on, so
    commands take only the explicit window sizes that override the preset; so is ``--dtype``
    (:func:`_recognizer` reads it).
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        meta = click.get_current_context().meta
        meta["phonestream.latency"], meta["phonestream.dtype"] = kwargs.pop("latency"), kwargs.pop("dtype")
        return func(*args, **kwargs)

    options = [
        click.option("--model", "-m", default=None, help="Model folder or hub id (default: the shipped model)."),
        click.option("--backbone", default=None, help="Encoder folder/hub id for a backbone-plus-head model."),
        click.option("--vocab", default=None, type=click.Path(), help="Phoneme vocabulary file for --backbone."),
        click.option("--head", default=None, type=click.Path(), help="Head weights (safetensors) for --backbone."),
        click.option("--head-type", default="linear", type=click.Choice(["linear", "conv"]), show_default=True),
        click.option("--device", default="cpu", show_default=True, help="cpu or cuda."),
        click.option("--threads", default=None, type=int,
                     help="CPU threads of the default model's encoder (default: PHONESTREAM_THREADS, else the "
                     "cores, at most 2), or torch's for a torch model (default: torch's)."),
        click.option("--dtype", default="auto", show_default=True, type=click.Choice(DTYPES),
                     help="Precision of the model: auto is half precision on cuda (bfloat16 where the GPU has it, "
                     "else float16; the default model int8 with float16), float32 on cpu (the default model int8)."),
        click.option("--chunk-ms", default=None, type=int, help="New audio per model step (default: the model's)."),
        click.option("--left-ms", default=None, type=int, help="Left context per step (default: the model's)."),
        click.option("--right-ms", default=None, type=int, help="Lookahead per step (default: the model's)."),
        click.option("--latency", default="balanced", show_default=True, type=click.Choice(LATENCY_PRESETS),
                     help="Window preset: low (shortest delay), balanced, accurate (longest lookahead); "
                     "--chunk-ms/--left-ms/--right-ms override its sizes."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _window(model, chunk_ms: int | None, left_ms: int | None, right_ms: int | None) -> StreamConfig:
    """The model's window for the command's ``--latency`` preset, with any explicit size overriding it."""
    ctx = click.get_current_context(silent=True)
    latency = ctx.meta.get("phonestream.latency", "balanced") if ctx is not None else "balanced"
    return StreamConfig.for_model(model, chunk_ms, left_ms, right_ms, latency=latency)


def output_options(func: Callable) -> Callable:
    options = [
        click.option("--json", "json_lines", is_flag=True, help="JSON Lines events instead of the live view."),
        click.option("--ipa", is_flag=True, help="Show ARPAbet phonemes in IPA."),
        click.option("--min-confidence", default=0.0, type=float, help="Hide phonemes below this confidence."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


DECODER_KEYS = ("decoder", "beam", "lm", "lm_weight", "insertion_bonus", "lookahead", "endpoint", "endpoint_rule1",
                "endpoint_rule2", "max_utterance", "silence_db")


def decoder_options(func: Callable) -> Callable:
    """Decoder, LM and endpoint options; the command receives them as one ``decoding`` dict."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        kwargs["decoding"] = {k: kwargs.pop(k) for k in DECODER_KEYS}
        return func(*args, **kwargs)

    options = [
        click.option("--decoder", default="auto", type=click.Choice(["auto", "greedy", "beam"]), show_default=True,
                     help="Greedy CTC (fastest) or prefix beam search; auto: beam when the model has an LM "
                     "(the shipped one does) or --lm is given, else greedy."),
        click.option("--beam", default=None, type=click.IntRange(1), help=f"Beam size (default: {DEFAULT_BEAM})."),
        click.option("--lm", default=None, help="Phoneme ARPA LM for the beam search, or 'none' "
                     "(default: lm.arpa* next to the model, if any)."),
        click.option("--lm-weight", default=None, type=float, help=f"LM weight (default: {DEFAULT_LM_WEIGHT})."),
        click.option("--insertion-bonus", default=None, type=float,
                     help=f"Score added per phoneme (default: {LM_INSERTION_BONUS} with an LM, 0 without)."),
        click.option("--lookahead/--no-lookahead", default=None,
                     help="Beam: choose what to commit after also searching the window's right-context frames "
                     f"(default: {'on' if DEFAULT_LOOKAHEAD else 'off'})."),
        click.option("--endpoint/--no-endpoint", default=True, show_default=True,
                     help="Emit endpoint events by trailing-silence rules."),
        click.option("--endpoint-rule1", default=2.4, show_default=True, type=click.FloatRange(0.02),
                     help="Seconds of silence that end an utterance with nothing decoded (dropped, no event)."),
        click.option("--endpoint-rule2", default=1.2, show_default=True, type=click.FloatRange(0.02),
                     help="Seconds of trailing silence that end an utterance after speech."),
        click.option("--max-utterance", default=20.0, show_default=True, type=click.FloatRange(0.1),
                     help="Longest utterance in seconds."),
        click.option("--silence-db", default=None, type=float,
                     help="Skip the model on windows quieter than this RMS dBFS (default: -60; -300: never skip)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
                warmup: bool = True, decoding: dict | None = None, dtype: str | None = None) -> Recognizer:
    pin_blas_threads()  # the head's results then do not depend on the machine's core count (numerics.py)
    if dtype is None:
        ctx = click.get_current_context(silent=True)
        dtype = ctx.meta.get("phonestream.dtype", "auto") if ctx else "auto"
    loaded = load_model(model, backbone=backbone, vocab=vocab, head=head, head_type=head_type, device=device,
                        threads=threads, dtype=dtype)
    from .batch import decoder_options

    recognizer = Recognizer(loaded, _window(loaded, chunk_ms, left_ms, right_ms),
                            **(decoder_options(decoding) if decoding else {}))
    if warmup:
        loaded.warmup()
    return recognizer


def _run_stream(recognizer: Recognizer, source: Iterable[np.ndarray], printer: EventPrinter,
                compare_offline: bool, stream: Stream | None = None) -> None:
    """Feed a source through a stream (a new one unless given), printing events, and end with the summary,
    with the offline comparison if asked (the stream must keep its audio); on error, finish what was
    committed first."""
    stream = stream or recognizer.stream(keep_audio=compare_offline)
    try:
        for piece in source:
            for event in stream.accept(piece):
                printer(event)
    except KeyboardInterrupt:
        pass  # the microphone is stopped with Ctrl-C: finish and summarise what was heard
    except BrokenPipeError:
        _pipe_closed()
    except USER_ERRORS as err:
        for event in stream.finish(offline=False)[:-1]:
            printer(event)
        _fail(str(err), printer)
    for event in stream.finish(offline=compare_offline):
        printer(event)


def _input_device(value: str | None) -> str | int | None:
    """``--input-device``: a number is the device's index, anything else its name."""
    return int(value) if value and value.isdigit() else value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="phonestream")
def main() -> None:
    """Live phoneme recognition with wav2vec2-family CTC models.

    Phonemes are printed as ARPAbet symbols (P R IH N T IH NG is "printing"); `phonestream phonemes`
    lists each with its IPA and an example word, and --ipa prints IPA instead."""


def _pipe_closed() -> None:
    """The reader of stdout went away (``phonestream stream ... | head``): stop quietly, exit 0."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
    except OSError:
        pass
    sys.exit(0)


def _handles_errors(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            _pipe_closed()
        except USER_ERRORS as err:
            _fail(str(err))

    return wrapper


@main.command()
@click.argument("file")
@model_options
@output_options
@decoder_options
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 60000),
              help="Size of the pieces the audio is delivered in (10 ms to seconds).")
@click.option("--realtime", is_flag=True, help="Deliver the audio no faster than real time.")
@click.option("--rate", default=16000, show_default=True, help="Sample rate of raw PCM on stdin (FILE '-').")
@click.option("--format", "pcm_format", default="s16le", type=click.Choice(["s16le", "f32le"]), show_default=True)
@click.option("--compare-offline/--no-compare-offline", default=None,
              help="Decode the whole audio at the end and compare (default: on for files, off for stdin).")
@_handles_errors
def stream(file, model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
           json_lines, ipa, min_confidence, feed_ms, realtime, rate, pcm_format, compare_offline, decoding) -> None:
    """Stream FILE (or raw PCM on stdin with '-') through the model as if live."""
    recognizer = _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
                             decoding=decoding)
    sr = recognizer.model.sample_rate
    if file == "-":
        source: Iterable[np.ndarray] = stdin_pcm(rate, pcm_format, sr, feed_ms)
        compare = bool(compare_offline)
    else:
        source = pieces(load_audio(file, sr), max(1, sr * feed_ms // 1000))
        compare = compare_offline is not False
    if realtime:
        source = paced(source, sr)
    _run_stream(recognizer, source, EventPrinter(json_lines, to_ipa if ipa else str, min_confidence), compare)


@main.command()
@model_options
@output_options
@decoder_options
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 1000))
@click.option("--input-device", default=None, help="Microphone name or index (default: the system's).")
@click.option("--compare-offline", is_flag=True, help="Keep the audio and compare with an offline decode at the end.")
@click.option("--text", default=None, help="Expected text: check each word's pronunciation as it is read.")
@click.option("--text-file", default=None, type=click.Path(), help="Read the expected text from a file.")
@click.option("--threshold", default=None, type=click.FloatRange(0, 1), help="Word score below which a word is "
              "mispronounced (with --text; default: the model's phonestream.json check threshold, else "
              "phonestream.check.DEFAULT_THRESHOLD).")
@_handles_errors
def mic(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms, json_lines, ipa,
        min_confidence, feed_ms, input_device, compare_offline, text, text_file, threshold, decoding) -> None:
    """Stream the microphone until Ctrl-C (with --text: check the pronunciation, as `phonestream check`)."""
    expected = None
    if text is not None or text_file is not None:
        from .check import expected_words
        from .cli_check import checked_stream, read_expected

        expected = read_expected(text, text_file)
        expected_words(expected)  # a bad text fails before the model loads
    dev = _input_device(input_device)
    check_microphone(dev)  # no sound device: say so before the (slow) model load
    recognizer = _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
                             decoding=decoding)
    source = microphone(recognizer.model.sample_rate, feed_ms, dev)
    if expected is not None:
        stream, view = checked_stream(recognizer, expected, threshold, json_lines, ipa, compare_offline)
        _run_stream(recognizer, source, view, compare_offline, stream)  # type: ignore[arg-type]
        return
    _run_stream(recognizer, source, EventPrinter(json_lines, to_ipa if ipa else str, min_confidence), compare_offline)


@main.command()
@click.argument("file")
@model_options
@output_options
@decoder_options
@_handles_errors
def transcribe(file, model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
               json_lines, ipa, min_confidence, decoding) -> None:
    """Decode a whole FILE at once (the offline reference), same output format."""
    recognizer = _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
                             warmup=False, decoding=decoding)
    phonemes, summary = recognizer.transcribe_timed(load_audio(file, recognizer.model.sample_rate))
    printer = EventPrinter(json_lines, to_ipa if ipa else str, min_confidence)
    for p in phonemes:
        printer(p)
    printer(summary)


# The whole file is decoded at once: window sizes and endpointing do not apply, so --help leaves them out
# (they are still accepted, so a command line shared with `stream` keeps working).
_STREAMING_ONLY = {"latency", "chunk_ms", "left_ms", "right_ms", "endpoint", "endpoint_rule1", "endpoint_rule2",
                   "max_utterance", "silence_db", "lookahead"}
for _param in transcribe.params:
    if isinstance(_param, click.Option) and _param.name in _STREAMING_ONLY:
        _param.hidden = True


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
@click.option("--decoders", default=None,
              help="Compare decoders side by side on the same model output: e.g. greedy,beam,beam+lm.")
@click.option("--split-gap", is_flag=True,
              help="Also decode the final frames the stream stitched all at once ('stream at once'): stream "
              "minus it is what committing as it goes costs, it minus offline what the windows cost.")
@click.option("--json", "json_out", is_flag=True, help="Print the result as one JSON object.")
@decoder_options
@_handles_errors
def eval_(manifest, model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
          phones_column, fold, limit, where_, feed_ms, baselines, decoders, split_gap, json_out, decoding) -> None:
    """Phone error rate of streaming and offline decoding on a labelled MANIFEST.tsv."""
    from rich.progress import track

    from .baselines import BASELINES
    from .evaluate import evaluate, parse_decoders
    from .manifest import Where, read_manifest

    items, skipped = read_manifest(manifest, phones_column, limit, Where.parse(where_) if where_ else None)
    recognizer = _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
                             decoding=decoding)
    configs = parse_decoders(decoders, recognizer) if decoders else None
    result = evaluate(recognizer, items, fold, feed_ms, baselines={b: BASELINES[b] for b in baselines},
                      decoders=configs, split_gap=split_gap,
                      progress=None if json_out else lambda it: track(it, total=len(items), description="eval",
                                                                      console=_stderr()))
    result["skipped_no_phones"] = skipped
    if json_out:
        click.echo(json.dumps(result))
        return
    window = "/".join(str(result["config"][k]) for k in ("chunk_ms", "left_ms", "right_ms"))
    print_rows(result["systems"], f"{Path(manifest).name}: {result['utterances']} utterances, "
               f"{result['audio_s']} s, fold={fold}, chunk/left/right={window} ms")
    click.echo(f"stream vs offline: edit distance {result['stream_vs_offline']['edit_distance']}, "
               f"ratio {result['stream_vs_offline']['ratio']}; skipped (no phones): {skipped}")
    _print_confidence(result["confidence"])
    click.echo("numerics (what can change these figures between machines, see phonestream/numerics.py): "
               + "; ".join(f"{k} {v}" for k, v in result["numerics"].items()))
    for err in result["errors"]:
        click.echo(f"skipped: {err}", err=True)


@main.group()
def lm() -> None:
    """Phoneme n-gram language models for --decoder beam."""


@lm.command(name="build")
@click.argument("output", type=click.Path())
@click.option("--text", "texts", multiple=True, type=click.Path(),
              help="Text file, one sentence per line, turned into phonemes by the dictionary (repeatable).")
@click.option("--dictionary-words/--no-dictionary-words", default=None,
              help="Also count every dictionary pronunciation as a sentence (default: on without --text).")
@click.option("--dict", "dictionary", default=None, type=click.Path(),
              help="CMU-format pronunciation dictionary (default: the one pocketsphinx ships).")
@click.option("--order", default=4, show_default=True, type=click.IntRange(1, 8))
@click.option("--fold", default="none", type=click.Choice(["none", "timit39"]), show_default=True,
              help="Fold symbols to the 39-class set before counting (AO->AA, ZH->SH).")
@click.option("--exclude-manifest", "excludes", multiple=True, type=click.Path(),
              help="Leave out sentences found in this manifest's text column (evaluation prompts; repeatable).")
@click.option("--prune", default=0, show_default=True, type=click.IntRange(0),
              help="Drop n-grams of order 3 and above seen at most this often (back-off weights renormalised); "
                   "0 keeps all.")
@_handles_errors
def lm_build(output, texts, dictionary_words, dictionary, order, fold, excludes, prune) -> None:
    """Build an ARPA phoneme LM (interpolated Kneser-Ney) into OUTPUT (.arpa or .arpa.gz)."""
    from .lm import build_from_sources, excluded_sentences, read_sentences

    exclude = excluded_sentences(excludes)
    if dictionary_words is None:
        dictionary_words = not texts
    model, stats = build_from_sources(read_sentences(texts), dictionary_words, order, dictionary, exclude, fold,
                                      prune)
    model.write_arpa(output)
    counts = model.ngram_counts()
    click.echo(f"phonestream: wrote {output}: order {order}, {len(model.symbols)} symbols, n-grams "
               f"{', '.join(f'{k}:{v}' for k, v in counts.items())}; sentences {stats['sentences']}, "
               f"dictionary words {stats['dictionary_words']}, skipped (word not in dictionary) "
               f"{stats['missing_word']}, excluded {stats['excluded']}", err=True)


def _print_confidence(confidence: dict) -> None:
    """AUROC / ECE per decoder, then the reliability table with one column pair per decoder."""
    print_rows([{"decoder": d, "phonemes": c["phonemes"], "correct": c["correct"], "auroc": c["auroc"],
                 "ece": c["ece"]} for d, c in confidence.items()],
               "confidence of committed phonemes: AUROC (correct vs wrong) and calibration error")
    rows = []
    for i, b in enumerate(next(iter(confidence.values()))["reliability"]):
        row = {"confidence bin": b["bin"]}
        for d, c in confidence.items():
            r = c["reliability"][i]
            row[f"{d}: n"] = r["n"]
            row[f"{d}: accuracy"] = r["accuracy"]
        rows.append(row)
    print_rows(rows, "reliability: fraction of committed phonemes that are correct, per confidence bin")


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


@main.command()
@click.option("--model", "-m", default=None, help="Model folder/hub id; 'default' for the shipped model, 'null' for "
              "the zero-cost stand-in (default: a random wav2vec2-base-sized model).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", default=None, type=int,
              help="As for stream (default: PHONESTREAM_THREADS, else the cores, at most 2).")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(DTYPES),
              help="Precision of the model, as for stream (auto: half precision on cuda).")
@click.option("--config", "configs", multiple=True,
              help="CHUNK/LEFT/RIGHT in ms or a latency preset (low, balanced, accurate); repeat to compare.")
@click.option("--chunk-ms", default=None, type=int, help="New audio per model step (overrides --config's).")
@click.option("--left-ms", default=None, type=int, help="Left context per step (overrides --config's).")
@click.option("--right-ms", default=None, type=int, help="Lookahead per step (overrides --config's).")
@click.option("--decoder", default="auto", type=click.Choice(["auto", "greedy", "beam"]), show_default=True,
              help="As for stream: auto is beam search with the model's LM when it has one, else greedy.")
@click.option("--lookahead/--no-lookahead", default=DEFAULT_LOOKAHEAD, show_default=True,
              help="As for stream: the beam's commits read the right context too.")
@click.option("--streams", "streams_", default=None,
              help="N real-time streams through the server's batching scheduler, in process (e.g. 100,500,1000): "
              "windows per second, worker busy share, lag, whether they keep up.")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(1),
              help="With --streams: split the streams over this many processes, each with its own model and "
                   "scheduler, as serve --workers does.")
@click.option("--seconds", default=None, type=click.FloatRange(0.5),
              help="Audio to stream per setting (default: 60; 20 per stream with --streams).")
@click.option("--minutes", default=None, type=float, help="Stream this many minutes (memory check).")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1),
              help="Run every setting this many times, the settings taking turns, and report the median RTF with "
                   "the range (a shared or busy CPU moves single runs by tens of percent).")
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 60000))
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1),
              help="With --streams: most windows per forward pass (as serve's).")
@click.option("--max-wait-ms", default=10.0, show_default=True, type=click.FloatRange(0),
              help="With --streams: how long a ready window waits for others (as serve's).")
@click.option("--json", "json_out", is_flag=True)
@_handles_errors
def bench(model, device, threads, dtype, configs, chunk_ms, left_ms, right_ms, decoder, lookahead, streams_, processes,
          seconds, minutes, repeat, feed_ms, max_batch, max_wait_ms, json_out) -> None:
    """Real-time factor, per-chunk latency, emission delay and memory of streaming; with --streams, how many
    real-time streams the server's scheduler carries."""
    from . import bench as bench_mod

    pin_blas_threads()  # as stream and serve run (_recognizer): one BLAS thread for the head, none spinning

    counts = None
    if streams_ is not None:
        from .client import parse_streams

        counts = parse_streams(streams_)
        if minutes is not None:
            raise ValueError("--minutes is for the single-stream memory check; with --streams give --seconds")
        if repeat > 1:
            raise ValueError("--repeat is for the single-stream bench; --streams reports whether streams keep up")
    elif processes > 1:
        raise ValueError("--processes is for --streams")
    if model == "null":
        from .models.null import NullModel

        load: Callable = NullModel
    else:
        if processes > 1 and threads is None:
            from .workers import threads_per_worker

            threads = threads_per_worker(processes)
        load = functools.partial(load_model, "random-base" if model is None else None if model == "default" else model,
                                 device=device, threads=threads, dtype=dtype)
    loaded = load()
    cfgs = bench_mod.parse_configs(list(configs), loaded)
    cfgs = [StreamConfig(c.chunk_ms if chunk_ms is None else chunk_ms, c.left_ms if left_ms is None else left_ms,
                         c.right_ms if right_ms is None else right_ms) for c in cfgs]
    if counts is not None:
        _bench_streams(bench_mod, loaded, load, processes, cfgs, counts, decoder, lookahead,
                       20.0 if seconds is None else seconds, feed_ms, max_batch, max_wait_ms, json_out)
        return
    total = minutes * 60 if minutes is not None else 60.0 if seconds is None else seconds
    rows = []
    for cfg, r in bench_mod.run_repeated(loaded, cfgs, repeat, total, feed_ms=feed_ms, offline=minutes is None,
                                         decoder=decoder, lookahead=lookahead):
        rows.append({"chunk/left/right ms": f"{cfg.chunk_ms}/{cfg.left_ms}/{cfg.right_ms}", "audio_s": r["audio_s"],
                     "rtf": r["rtf"], **({"rtf_runs": r["rtf_runs"]} if repeat > 1 else {}), "cpu_rtf": r["cpu_rtf"],
                     "offline_rtf": r.get("offline_rtf"), "chunk_compute_ms": r["chunk_compute_ms"],
                     "emission_delay_s": r["emission_delay_s"], "emission_delay_wall_s": r["emission_delay_wall_s"],
                     "frame_delay_s": r["frame_delay_s"], "decoder": r["decoder"],
                     "rss_mb_first_minute": r["rss_mb_first_minute"], "rss_mb_end": r["rss_mb_end"],
                     "model": r["model"]})
    if json_out:
        click.echo(json.dumps(rows))
        return
    print_rows([{k: v for k, v in row.items() if k != "model"} for row in rows],
               f"bench: {rows[0]['model']} (latency cells: p50 / p95)")


def _bench_streams(bench_mod, model, load, processes, cfgs, counts, decoder, lookahead, seconds, feed_ms, max_batch,
                   max_wait_ms, json_out) -> None:
    """``bench --streams``: one row per window setting and number of streams."""
    rows = []
    for cfg in cfgs:
        cfg.samples(model)  # a bad window is one line before any stream starts
        for n in counts:
            r = (bench_mod.run_streams(model, cfg, n, seconds, decoder, feed_ms, max_batch, max_wait_ms,
                                       lookahead=lookahead)
                 if processes == 1 else bench_mod.run_streams_processes(load, cfg, n, processes, seconds, decoder,
                                                                         feed_ms, max_batch, max_wait_ms, lookahead))
            rows.append(r)
            if not json_out:
                click.echo(f"{n} streams ({r['chunk/left/right ms']} ms): lag p95 {r['lag_s']['p95']} s, worker "
                           f"busy {r['worker_share']:.0%}", err=True)
    if json_out:
        click.echo(json.dumps(rows))
        return
    shown = [{"streams": r["streams"], "processes": r["processes"], "window ms": r["chunk/left/right ms"],
              "decoder": r["decoder"],
              "windows/s (offered)": f"{r['windows_per_s']:g} ({r['offered_windows_per_s']:g})",
              "per batch": r["windows_per_batch"], "busy: model + outside": f"{r['model_share']:.2f} + "
              f"{r['outside_share']:.2f}", "cpu ms/window: worker, all": f"{r['worker_cpu_ms_per_window']}, "
              f"{r['process_cpu_ms_per_window']}", "lag s": r["lag_s"], "delay s": r["emission_delay_s"],
              "dropped s": r["dropped_s"], "errors": r["errors"], "real time": "yes" if r["keeps_up"] else "NO"}
             for r in rows]
    print_rows(shown, f"bench --streams: {model.description}, {seconds:g} s of real-time audio per stream, max batch "
               f"{max_batch}, max wait {max_wait_ms:g} ms. Busy: share of wall time the worker (with --processes: each "
               "process's, averaged) spent in the model and "
               "outside it; cpu: CPU time per window of the worker thread and of the whole process; lag: event "
               "arrival - audio time it was produced at; delay: phoneme arrival - its end (cells p50 / p95)")
    for r in rows:
        if r["error_sample"]:
            click.echo(f"{r['streams']} streams: first error: {r['error_sample']}", err=True)


@main.command()
@click.option("--json", "json_out", is_flag=True, help="Print the key as one JSON list.")
def phonemes(json_out) -> None:
    """The ARPAbet key: each phoneme symbol the default model prints, its IPA and an example word."""
    from .phones import phoneme_key

    key = phoneme_key()
    if json_out:
        click.echo(json.dumps(key, ensure_ascii=False))
        return
    print_rows([{"ARPAbet": k["arpabet"], "IPA": k["ipa"], "as in": k["example"],
                 "pronounced (ARPAbet)": k["example_arpabet"], "pronounced (IPA)": k["example_ipa"],
                 "kind": k["kind"]} for k in key],
               "ARPAbet phonemes: what phonestream prints (--ipa prints the IPA column instead)")


def _train_group() -> click.Group:
    from .train.cli import train

    return train


main.add_command(_train_group(), name="train")  # phonestream/train/cli.py: custom, and the recipe's stages

__all__ = ["main", "print_summary"]


# -- the network: serve, client, loadtest (phonestream.server / phonestream.client) --------------------


def _server_settings(host, port, token, allow_insecure_bind, allow_origin, max_message_bytes, max_stream_s,
                     max_streams, idle_timeout_s, max_upload_mb, min_chunk_ms, max_window_ms, max_batch, max_wait_ms,
                     max_connections=1000, request_timeout_s=10.0):
    from .server import Limits, ServerSettings, check_bind

    settings = ServerSettings(host, port, token, allow_insecure_bind, tuple(allow_origin), max_batch, max_wait_ms,
                              Limits(max_message_bytes, max_stream_s, max_streams, idle_timeout_s,
                                     int(max_upload_mb * (1 << 20)), min_chunk_ms, max_window_ms),
                              max_connections=max_connections, request_timeout_s=request_timeout_s)
    check_bind(settings)  # before the (slow) model load
    return settings


@main.command()
@model_options
@decoder_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", default=None, envvar="PHONESTREAM_TOKEN",
              help="Secret every connection must give ('Authorization: Bearer ...', or ?token=... from browsers; "
                   "redacted in the log).")
@click.option("--allow-insecure-bind", is_flag=True, help="Allow a non-loopback --host without --token.")
@click.option("--allow-origin", multiple=True,
              help="Another web origin whose pages may use /ws and /transcribe, e.g. http://myhost:8765 "
                   "(repeatable; the server's own loopback origins are always allowed).")
@click.option("--max-message-bytes", default=1 << 20, show_default=True, type=click.IntRange(1024))
@click.option("--max-stream-s", default=3600.0, show_default=True, type=click.FloatRange(1), help="Audio per stream.")
@click.option("--max-streams", default=64, show_default=True, type=click.IntRange(1), help="Live streams at once.")
@click.option("--idle-timeout-s", default=30.0, show_default=True, type=click.FloatRange(0.1))
@click.option("--max-upload-mb", default=50.0, show_default=True, type=click.FloatRange(0.01))
@click.option("--min-chunk-ms", default=80, show_default=True, type=click.IntRange(1))
@click.option("--max-window-ms", default=10000, show_default=True, type=click.IntRange(1))
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1), help="Windows per forward pass.")
@click.option("--max-wait-ms", default=10.0, show_default=True, type=click.FloatRange(0),
              help="How long a ready window waits for others to join its batch.")
@click.option("--max-connections", default=1000, show_default=True, type=click.IntRange(1),
              help="Open TCP connections at once; more are answered 503 and closed.")
@click.option("--request-timeout-s", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="A connection that sends no complete request head for this long is closed.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--allocator", default="auto", show_default=True,
              type=click.Choice(["auto", "jemalloc", "mimalloc", "system"]),
              help="Memory allocator: auto runs on jemalloc (or mimalloc) when installed, which keeps memory flat "
                   "over hours; system is the C library's.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Server processes sharing the port, each with its own model and scheduler (and its own "
                   "--max-streams): the beam search runs on that many cores.")
@_handles_errors
def serve(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms, decoding, host, port,
          token, allow_insecure_bind, allow_origin, max_message_bytes, max_stream_s, max_streams, idle_timeout_s,
          max_upload_mb, min_chunk_ms, max_window_ms, max_batch, max_wait_ms, max_connections, request_timeout_s,
          log_level, allocator, workers) -> None:
    """Serve live phonemes over WebSocket (/ws), file uploads (POST /transcribe), /health and a web page (/).

    --model random-base serves a randomly initialised wav2vec2-base-sized model (load tests)."""
    from . import memory

    # Before anything is loaded: this may start the same command again with the allocator preloaded. Only
    # for a real command line (not click's test runner, whose sys.argv is the caller's).
    in_use = memory.reexec_with(allocator, sys.argv[1:]) if sys.argv[1:2] == ["serve"] else memory.active_allocator()

    from .server import App, ServerError, uvicorn_server

    try:
        settings = _server_settings(host, port, token, allow_insecure_bind, allow_origin, max_message_bytes,
                                    max_stream_s, max_streams, idle_timeout_s, max_upload_mb, min_chunk_ms,
                                    max_window_ms, max_batch, max_wait_ms, max_connections, request_timeout_s)
    except ServerError as err:
        _fail(str(err))
    recipe = dict(model=model, backbone=backbone, vocab=vocab, head=head, head_type=head_type, device=device,
                  threads=threads, chunk_ms=chunk_ms, left_ms=left_ms, right_ms=right_ms, decoding=decoding,
                  dtype=click.get_current_context().meta.get("phonestream.dtype", "auto"))
    if workers > 1:
        from .workers import bind_socket, serve_workers, threads_per_worker

        if threads is None:
            recipe["threads"] = threads_per_worker(workers)
        sock = bind_socket(host, port)
        port = sock.getsockname()[1]
        sys.exit(serve_workers(functools.partial(_worker_app, recipe, settings, workers),
                               functools.partial(_worker_serve, log_level), sock, workers,
                               on_ready=lambda: click.echo(
                                   f"phonestream: {workers} workers loading {model or 'the default model'}, serving "
                                   f"http://{host}:{port}/ (WebSocket ws://{host}:{port}/ws; allocator {in_use})",
                                   err=True)))
    app = App(_recognizer(**recipe), settings)
    click.echo(f"phonestream: serving {app.model.description} on http://{host}:{port}/ "
               f"(WebSocket ws://{host}:{port}/ws; allocator {in_use})", err=True)
    uvicorn_server(app, log_level).run()


def _worker_app(recipe: dict, settings, workers: int, index: int):
    """``serve --workers``: worker ``index``'s app, built in the worker process (phonestream/workers.py)."""
    import dataclasses

    from .server import App

    try:
        return App(_recognizer(**recipe), dataclasses.replace(settings, worker=index, workers=workers))
    except USER_ERRORS as err:  # one line and exit 2, which stops the other workers too (workers.py)
        _fail(str(err))


def _worker_serve(log_level: str, app, sock) -> None:
    from .server import uvicorn_server

    uvicorn_server(app, log_level).run(sockets=[sock])


@main.command()
@click.argument("file", required=False)
@click.option("--mic", is_flag=True, help="Stream the microphone (until Ctrl-C) instead of a file.")
@click.option("--url", default="ws://127.0.0.1:8765/ws", show_default=True, help="The server's WebSocket address.")
@click.option("--token", default=None, envvar="PHONESTREAM_TOKEN")
@click.option("--realtime", is_flag=True, help="Send a file no faster than real time.")
@click.option("--format", "pcm_format", default="f32le", type=click.Choice(["s16le", "f32le"]), show_default=True)
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 60000))
@click.option("--chunk-ms", default=None, type=int, help="Ask the server for these window sizes.")
@click.option("--left-ms", default=None, type=int)
@click.option("--right-ms", default=None, type=int)
@click.option("--option", "options", multiple=True, help="Extra config KEY=VALUE (JSON value) for the engine.")
@click.option("--input-device", default=None, help="Microphone name or index (with --mic).")
@output_options
def client(file, mic, url, token, realtime, pcm_format, feed_ms, chunk_ms, left_ms, right_ms, options,
           input_device, json_lines, ipa, min_confidence) -> None:
    """Stream FILE (or --mic) to a phonestream server and print its events like the local CLI."""
    from . import client as net

    printer = EventPrinter(json_lines, to_ipa if ipa else str, min_confidence)

    def show(event: dict) -> None:
        obj = net.to_event(event)
        if obj is not None:
            printer(obj)
        elif event.get("type") != "error" and json_lines:
            click.echo(json.dumps(event, ensure_ascii=False))

    try:
        net.stream_to_server(url, file or None, mic=mic, input_device=_input_device(input_device), feed_ms=feed_ms,
                             fmt=pcm_format, realtime=realtime, token=token, on_event=show,
                             options=net.stream_options(chunk_ms, left_ms, right_ms, options))
    except (net.ClientError, *USER_ERRORS) as err:
        _fail(str(err), printer)


@main.command()
@click.option("--url", default="ws://127.0.0.1:8765/ws", show_default=True)
@click.option("--streams", "streams_", default="1,2,4,8", show_default=True,
              help="Numbers of simultaneous real-time streams, one round each.")
@click.option("--seconds", default=20.0, show_default=True, type=click.FloatRange(0.5), help="Audio per stream.")
@click.option("--file", "file_", default=None, type=click.Path(), help="Recording to loop (default: the sample).")
@click.option("--format", "pcm_format", default="s16le", type=click.Choice(["s16le", "f32le"]), show_default=True)
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 1000))
@click.option("--chunk-ms", default=None, type=int)
@click.option("--left-ms", default=None, type=int)
@click.option("--right-ms", default=None, type=int)
@click.option("--token", default=None, envvar="PHONESTREAM_TOKEN")
@click.option("--soak", "soak_minutes", default=None, type=click.FloatRange(0.1),
              help="Soak test: --streams N real-time streams (each reconnecting after --seconds) for MINUTES, with "
                   "hostile clients alongside; reports server RSS, errors, dropped audio, delay.")
@click.option("--bad-per-s", default=2.0, show_default=True, type=click.FloatRange(0),
              help="With --soak: hostile clients started per second (0: none, the idle comparison).")
@click.option("--seed", default=0, show_default=True, help="With --soak: seed of the hostile clients.")
@click.option("--json", "json_out", is_flag=True)
def loadtest(url, streams_, seconds, file_, pcm_format, feed_ms, chunk_ms, left_ms, right_ms, token, soak_minutes,
             bad_per_s, seed, json_out) -> None:
    """Stream N real-time clients at once; per N: emission delay, real-time lag, audio dropped."""
    from . import client as net

    if soak_minutes is not None:
        _soak(net, url, streams_, soak_minutes, seconds, file_, pcm_format, token, bad_per_s, seed, json_out)
        return
    try:
        counts = net.parse_streams(streams_)
        rows = net.loadtest(url, counts, seconds, file_ or net.SAMPLE, feed_ms, pcm_format,
                            net.stream_options(chunk_ms, left_ms, right_ms), token,
                            on_row=None if json_out else lambda r: click.echo(
                                f"{r['streams']} streams: lag p95 {r['lag_s']['p95']} s, dropped {r['dropped_s']} s, "
                                f"errors {r['errors']}", err=True))
    except (net.ClientError, *USER_ERRORS) as err:
        _fail(str(err))
    if json_out:
        click.echo(json.dumps(rows))
        return
    shown = [{"streams": r["streams"], "audio s": r["audio_s"], "delay s": r["emission_delay_s"], "lag s": r["lag_s"],
              "lag max": r["lag_s"]["max"], "end->summary s": r["final_s"], "dropped s": r["dropped_s"],
              "errors": r["errors"], "batch": r["avg_batch"], "busy": r["model_busy"],
              "real time": "yes" if r["keeps_up"] else "NO"} for r in rows]
    print_rows(shown, f"loadtest {url}: per stream, cells p50 / p95; delay = phoneme arrival - its end; lag = "
               "event arrival - audio the server had; batch = windows per forward pass; busy = model share of time")
    for r in rows:
        if r["error_sample"]:
            click.echo(f"{r['streams']} streams: first error: {r['error_sample']}", err=True)


def _soak(net, url, streams_, minutes, seconds, file_, pcm_format, token, bad_per_s, seed, json_out) -> None:
    """``loadtest --soak``: one long round with hostile clients; prints a summary table and the answers."""
    try:
        counts = net.parse_streams(streams_)
        if len(counts) != 1:
            raise ValueError(f"--soak takes one number of streams (--streams N), got {streams_!r}")
        r = net.soak(url, minutes, counts[0], seconds, file_ or net.SAMPLE, pcm_format, token, bad_per_s, seed,
                     on_progress=None if json_out else lambda line: click.echo(line, err=True))
    except (net.ClientError, *USER_ERRORS) as err:
        _fail(str(err))
    if json_out:
        click.echo(json.dumps(r))
        return
    print_rows([{"streams": r["streams"], "minutes": r["minutes"], "good conns": r["good_connections"],
                 "bad clients": r["bad_clients"], "unanswered": len(r["unanswered"]), "errors": r["errors"],
                 "dropped s": r["dropped_s"], "delay s": r["emission_delay_s"], "lag s": r["lag_s"],
                 "RSS start / 1st min / last min / max MB": f"{r['rss_start_mb']} / {r['rss_first_minute_mb']} / "
                                                            f"{r['rss_last_minute_mb']} / {r['rss_max_mb']}",
                 "RSS growth": f"{r['rss_growth_pct']:+.1f} %",
                 "server ok": "yes" if r["server_ok"] else "NO"}],
               f"soak {url}: {r['wall_s']} s, hostile clients {r['bad_per_s']}/s (seed {seed}); cells p50 / p95; "
               "RSS 1st / last min: medians of the server's RSS over 30-90 s and over the last minute with every "
               "good stream live")
    print_rows([{"bad client": kind, "answers": ", ".join(f"{k} x{v}" for k, v in sorted(answers.items()))}
                for kind, answers in sorted(r["outcomes"].items())], "how the server answered the hostile clients")
    for line in r["unanswered"][:10]:
        click.echo(f"unanswered: {line}", err=True)
    if r["error_sample"]:
        click.echo(f"first good-stream error: {r['error_sample']}", err=True)


from . import cli_batch, cli_check  # noqa: E402,F401  (register batch, serve-ray, check, check-eval)
