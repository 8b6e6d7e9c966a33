"""``phonestream check`` and ``phonestream check-eval``: the pronunciation check on the command line.

Registered on the ``phonestream`` group by :mod:`phonestream.cli`; ``phonestream mic --text`` uses
:func:`read_expected` and :func:`checked_stream` from here too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import click
import numpy as np

from .audio import load_audio, paced, pieces, stdin_pcm
from .check import DEFAULT_THRESHOLD, CheckError, expected_words, model_threshold
from .cli import _handles_errors, _recognizer, _run_stream, _stderr, decoder_options, main, model_options
from .console import print_rows
from .engine import Recognizer, Stream
from .manifest import Where
from .phones import to_ipa
from .wordview import WordView


def read_expected(text: str | None, text_file: str | None) -> str:
    """The expected text from ``--text`` or ``--text-file`` (exactly one).

    Raises:
        CheckError: neither or both given, or the file cannot be read.
    """
    if (text is None) == (text_file is None):
        raise CheckError("give the expected text with either --text or --text-file")
    if text_file is not None:
        try:
            return Path(text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CheckError(f"cannot read --text-file {text_file}: {err}") from None
    return text  # type: ignore[return-value]


def checked_stream(recognizer: Recognizer, text: str, threshold: float | None, json_lines: bool, ipa: bool,
                   keep_audio: bool = False) -> tuple[Stream, WordView]:
    """A stream checking ``text`` and the word view printing it."""
    stream = recognizer.check(text, threshold, keep_audio=keep_audio)
    return stream, WordView(stream.checker.words, json_lines, to_ipa if ipa else str)


def threshold_option(func):
    return click.option("--threshold", default=None, type=click.FloatRange(0, 1),
                        help="Word score below which a word is mispronounced (default: the model's phonestream.json "
                        f"check threshold, else {DEFAULT_THRESHOLD}).")(func)


@main.command()
@click.argument("file")
@click.option("--text", default=None, help="The expected text (what the speaker should say).")
@click.option("--text-file", default=None, type=click.Path(), help="Read the expected text from a file.")
@threshold_option
@model_options
@decoder_options
@click.option("--json", "json_lines", is_flag=True, help="JSON Lines events (phonemes, words, summary).")
@click.option("--ipa", is_flag=True, help="Show ARPAbet phonemes in IPA.")
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 60000))
@click.option("--realtime", is_flag=True, help="Deliver the audio no faster than real time.")
@click.option("--rate", default=16000, show_default=True, help="Sample rate of raw PCM on stdin (FILE '-').")
@click.option("--format", "pcm_format", default="s16le", type=click.Choice(["s16le", "f32le"]), show_default=True)
@_handles_errors
def check(file, text, text_file, threshold, model, backbone, vocab, head, head_type, device, threads, chunk_ms,
          left_ms, right_ms, decoding, json_lines, ipa, feed_ms, realtime, rate, pcm_format) -> None:
    """Check the pronunciation of FILE (or raw PCM on stdin with '-') against the expected text, live:
    one verdict per expected word (ok, mispronounced, missing) as soon as its frames are final."""
    expected = read_expected(text, text_file)
    expected_words(expected)  # a bad text fails before the model loads
    recognizer = _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
                             decoding=decoding)
    sr = recognizer.model.sample_rate
    if file == "-":
        source: Iterable[np.ndarray] = stdin_pcm(rate, pcm_format, sr, feed_ms)
    else:
        source = pieces(load_audio(file, sr), max(1, sr * feed_ms // 1000))
    if realtime:
        source = paced(source, sr)
    stream, view = checked_stream(recognizer, expected, threshold, json_lines, ipa)
    _run_stream(recognizer, source, view, False, stream)


@main.command(name="check-eval")
@click.argument("manifest", type=click.Path())
@model_options
@decoder_options
@click.option("--text-column", default="text", show_default=True, help="Column holding each recording's text.")
@click.option("--where", "where_", multiple=True, help="Keep rows whose COLUMN=REGEX (or COLUMN!=REGEX); repeatable.")
@click.option("--limit", default=None, type=int, help="Only the first N selected rows.")
@click.option("--cases", default="correct,near,random,drop,insert", show_default=True,
              help="Which expected texts to check each recording against.")
@click.option("--pairs", is_flag=True, help="Single-word sets (FSDD digits): check each recording against every "
              "other text of the set instead of --cases.")
@threshold_option
@click.option("--thresholds", default=None, help="Also print the main rates at these thresholds (comma-separated).")
@click.option("--seed", default=0, show_default=True, help="Seed of the changed-text choices.")
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 60000))
@click.option("--json", "json_out", is_flag=True, help="Print the result as one JSON object.")
@_handles_errors
def check_eval(manifest, model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
               decoding, text_column, where_, limit, cases, pairs, threshold, thresholds, seed, feed_ms,
               json_out) -> None:
    """Measure the pronunciation check on MANIFEST.tsv (recordings and their text): false alarms on
    correct readings, changed words flagged, ROC AUC, FSDD pairs, verdict latency."""
    from rich.progress import track

    from . import check_eval as ce

    kinds = [k.strip() for k in cases.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in ce.CASES]
    if unknown:
        raise ce.EvalError(f"unknown case {unknown[0]!r}; choose from {', '.join(ce.CASES)}")
    rows = ce.read_rows(manifest, text_column, [Where.parse(w) for w in where_], limit)
    if not rows:
        raise ce.EvalError("no rows selected")
    recognizer = _recognizer(model, backbone, vocab, head, head_type, device, threads, chunk_ms, left_ms, right_ms,
                             decoding=decoding)
    threshold = model_threshold(recognizer.model) if threshold is None else threshold
    collected = ce.run(recognizer, rows, kinds, pairs, seed, feed_ms,
                       progress=None if json_out else lambda it: track(it, total=len(rows), description="check-eval",
                                                                       console=_stderr()))
    result = {"manifest": str(manifest), "rows": collected.rows, "audio_s": round(collected.audio_s, 2),
              "threshold": threshold, "table": ce.table(collected, threshold), "latency": ce.latency(collected),
              "skipped": collected.skipped}
    sweep = [float(x) for x in thresholds.split(",")] if thresholds else []
    result["sweep"] = [{"threshold": t, **{r["case"]: r["flagged %"] for r in ce.table(collected, t)}} for t in sweep]
    if json_out:
        click.echo(json.dumps(result))
        return
    cfg = recognizer.config
    print_rows(result["table"], f"{Path(manifest).name}: {collected.rows} recordings, {result['audio_s']} s, "
               f"threshold {threshold}, chunk/left/right {cfg.chunk_ms}/{cfg.left_ms}/{cfg.right_ms} ms")
    lat = result["latency"]
    print_rows([{"verdict delay s (p50 / p95)": lat["verdict_delay_s"],
                 "phoneme emission delay s (p50 / p95)": lat["emission_delay_s"],
                 "bound: emission p95 + 0.2 s": lat["bound_s"], "verdict p95 within bound": lat["within_bound"]}],
               "latency: word verdict committed_at - word end (audio time)")
    if sweep:
        keys = [k for k in result["sweep"][0] if k != "threshold"]
        print_rows([{"threshold": r["threshold"], **{k: r[k] for k in keys}} for r in result["sweep"]],
                   "flagged % by threshold")
    for s in collected.skipped:
        click.echo(f"skipped: {s}", err=True)
