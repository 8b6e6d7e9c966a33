"""``phonestream batch`` and ``phonestream serve-ray``: many files, or the server, past one process.

Registered on the ``phonestream`` group by :mod:`phonestream.cli`; the work is :mod:`phonestream.batch`
and :mod:`phonestream.ray_serve`.
"""

from __future__ import annotations

import click

from .cli import _fail, _handles_errors, _stderr, decoder_options, main, model_options
from .console import print_rows

MODEL_KEYS = ("model", "backbone", "vocab", "head", "head_type", "device", "threads", "chunk_ms", "left_ms",
              "right_ms")


def recognizer_spec(opts: dict):
    """A :class:`~phonestream.batch.RecognizerSpec` from the shared model and decoder options (all of
    ``opts``): the workers build the same recognizer the other commands build in process. Model options
    this module does not know (added to :func:`~phonestream.cli.model_options` later) go to ``load_model``
    as they are."""
    from .batch import RecognizerSpec
    from .batch import decoder_options as recognizer_decoder_options

    ctx = click.get_current_context()
    opts = dict(opts)
    decoding = opts.pop("decoding")
    model = {k: opts.pop(k) for k in MODEL_KEYS}
    load = {k: model[k] for k in ("backbone", "vocab", "head", "head_type", "device", "threads")}
    load["dtype"] = ctx.meta.get("phonestream.dtype", "auto")  # --dtype, kept on the context by model_options
    load.update(opts)
    return RecognizerSpec(model["model"], load, model["chunk_ms"], model["left_ms"], model["right_ms"],
                          ctx.meta.get("phonestream.latency", "balanced"),
                          recognizer_decoder_options(decoding))


@main.command()
@click.argument("input_", metavar="INPUT", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="JSON Lines results, one line per file; an existing file is resumed (its files are skipped).")
@click.option("--offline", is_flag=True, help="Decode each whole file at once instead of streaming it.")
@click.option("--events", is_flag=True, help="Keep every event (phonemes, partials, endpoints) in each line.")
@click.option("--compare-offline", is_flag=True, help="Streaming: also decode each whole file and compare.")
@click.option("--workers", "-j", default=None, type=click.IntRange(1),
              help="Worker processes (or Ray actors), each with its own model (default: the cores, or the "
                   "Ray cluster's CPUs).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run on Ray: alone, a local instance (attached to if one runs, else started); or a cluster's "
                   "address (ray://HOST:10001, auto). Needs pip install 'phonestream[ray]'.")
@click.option("--where", "where_", multiple=True,
              help="Keep manifest rows whose COLUMN=REGEX (or COLUMN!=REGEX), e.g. id='_[0-4]$'; repeatable.")
@click.option("--limit", default=None, type=click.IntRange(1), help="Only the first N files.")
@click.option("--feed-ms", default=20, show_default=True, type=click.IntRange(10, 60000))
@model_options
@decoder_options
@_handles_errors
def batch(input_, out, offline, events, compare_offline, workers, ray_address, where_, limit, feed_ms,
          **opts) -> None:
    """Transcribe a folder of recordings (recursively) or a manifest into --out, one JSON line per file:
    its id, path and summary (and with --events its events, the schema of `phonestream stream --json`),
    or an error. Run it again to resume."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .batch import BatchError, JobOptions, done_paths, list_inputs, transcribe_many
    from .manifest import Where

    if offline and compare_offline:
        _fail("--compare-offline compares streaming with offline decoding; it does not go with --offline")
    try:
        items = list_inputs(input_, [Where.parse(w) for w in where_], limit)
        spec = recognizer_spec(opts)
        options = JobOptions(offline=offline, events=events, compare_offline=compare_offline, feed_ms=feed_ms)
        done = done_paths(out)  # a bad --out fails here, before the progress bar
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[errors]} errors"))
        with Progress(*columns, console=_stderr(), transient=False) as progress:
            task = progress.add_task("batch (loading models)", total=len(items), errors=0)
            errors = 0

            def on_row(row: dict) -> None:
                nonlocal errors
                errors += "error" in row
                progress.update(task, advance=1, errors=errors, description="batch")

            progress.update(task, completed=sum(str(i.path) in done for i in items))
            report = transcribe_many(items, out, spec, options, workers, ray_address, on_row)
    except BatchError as err:
        _fail(str(err))
    if not report.done:
        click.echo(f"phonestream: all {report.total} files are already in {out}", err=True)
        return
    print_rows([{"files": report.done, "errors": report.errors, "skipped (in --out)": report.skipped,
                 "audio s": report.audio_s, "workers": report.workers, "startup s": report.startup_s,
                 "wall s": report.wall_s, "files/min": report.files_per_minute,
                 "x real time": round(report.audio_s / report.wall_s, 1) if report.wall_s else None}],
               f"batch {input_} -> {out} ({'offline' if offline else 'streaming'}, "
               f"{'Ray ' + ray_address if ray_address else 'local processes'}; wall s and files/min: from the "
               "first file to the last line, after the models loaded)")


@main.command(name="serve-ray")
@model_options
@decoder_options
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(1),
              help="Copies of the server, each with its own model and scheduler.")
@click.option("--ray", "ray_address", default="local", show_default=True, metavar="ADDRESS",
              help="'local' (attach to a Ray instance on this machine, else start one) or a cluster's address.")
@click.option("--cpus-per-replica", default=1.0, show_default=True, type=click.FloatRange(0.1))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address Ray Serve's proxy listens on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", default=None, envvar="PHONESTREAM_TOKEN", help="Secret every connection must give.")
@click.option("--allow-insecure-bind", is_flag=True, help="Allow a non-loopback --host without --token.")
@click.option("--max-streams", default=64, show_default=True, type=click.IntRange(1), help="Live streams per replica.")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1), help="Windows per forward pass.")
@click.option("--max-wait-ms", default=10.0, show_default=True, type=click.FloatRange(0),
              help="How long a ready window waits for others to join its batch.")
@_handles_errors
def serve_ray(replicas, ray_address, cpus_per_replica, host, port, token, allow_insecure_bind, max_streams, max_batch,
              max_wait_ms, **opts) -> None:
    """Serve live phonemes on Ray Serve: --replicas copies of `phonestream serve`'s app behind Ray's proxy, each
    WebSocket stream held by one replica (same protocol: /ws, /transcribe, /health, the page; `phonestream
    loadtest` works against it). Needs pip install 'phonestream[ray]'."""
    try:
        from . import ray_serve
    except ImportError:
        _fail("serve-ray needs Ray Serve: pip install 'phonestream[ray]'")
    from .server import Limits, ServerError, ServerSettings

    settings = ServerSettings(host, port, token, allow_insecure_bind, max_batch=max_batch, max_wait_ms=max_wait_ms,
                              limits=Limits(max_streams=max_streams))
    try:
        ray_serve.run(recognizer_spec(opts), settings, replicas, ray_address, cpus_per_replica=cpus_per_replica,
                      on_ready=lambda: click.echo(f"phonestream: {replicas} replicas serving on http://{host}:{port}/ "
                                                  f"(WebSocket ws://{host}:{port}/ws); Ctrl-C stops", err=True))
    except ServerError as err:
        _fail(str(err))
