"""A seeded fuzzer for the WebSocket protocol, with well-behaved streams running alongside.

``python -m phonestream.fuzz --cases 10000`` drives the server application in process (its ASGI
interface, the real scheduler and model; no sockets) with hostile clients: config messages with every key
given wrong types, out-of-range, non-finite or absurd values, nested endpoint rules, unknown keys, deep
nesting; malformed JSON and non-objects; binary audio of odd sizes, non-finite and clipping samples;
unexpected and repeated messages; disconnects mid-stream; and valid random configs that must complete.
Meanwhile a well-behaved client streams the sample recording again and again, and each of its runs must
give exactly the phonemes the local engine gives.

Each case ends in one outcome: ``completed`` (summary, close 1000), ``refused`` (one error event, then
close 1008/1009), ``left`` (the client disconnected first), or a failure: ``crash`` (an exception out of
the application: a traceback and a dropped connection under uvicorn), ``server error`` (close 1011 for
something a client sent), ``hung`` (no close within the time limit) or ``unclean`` (a close without its
error event, an error without its close, internals in a message). Exceptions logged by the server count
as ``tracebacks``. The run passes when failures, tracebacks and affected good streams are all zero.
Case ``k`` of seed ``s`` is always the same case: ``--seed s --only k`` replays it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Recognizer
from .protocol import ConfigMessage, EndpointRules

SAMPLES = Path(__file__).resolve().parent / "samples"
KINDS = ("config value", "endpoint rules", "raw text", "after config", "valid config", "disconnect")
FAILURES = ("crash", "server error", "hung", "unclean")
# words that give Python internals away in a message meant for a client
INTERNALS = ("Traceback", 'File "', "ufunc", "object has no attribute", "not supported between", "unsupported operand",
             "NoneType", "dtype(")

# every key the schema declares is fuzzed, keys added to it later included
CONFIG_KEYS = tuple(k for k in ConfigMessage.model_fields if k != "type")
ENDPOINT_KEYS = tuple(EndpointRules.model_fields)
# "json" values are raw JSON text, for what Python values cannot say (NaN, Infinity, 1e999, deep nesting)
ODD_VALUES: tuple[Any, ...] = (
    0, -1, 1, 2, 20, 80, 320, 330, 640, 4000, 16000, 48000, 192001, 10 ** 9, 2 ** 63, -(2 ** 63), 10 ** 40,
    0.0, 0.5, -0.5, 1.5, 16000.0, 1e-300, 1e308, -1e308, True, False, None, "", "x", "auto", "none", "beam",
    "greedy", "s16le", "f32le", "16000", "NaN", "A" * 5000, [], [1], ["s16le"], {}, {"a": 1}, {"rule1_s": 1},
    ("json", "NaN"), ("json", "Infinity"), ("json", "-Infinity"), ("json", "1e999"), ("json", "-1e999"),
    ("json", "[" * 60 + "]" * 60), ("json", "{\"a\":" * 60 + "1" + "}" * 60),
)
RAW_TEXTS = ("", " ", "{nope", "null", "true", "42", "\"config\"", "[1, 2]", "{}", "{\"type\": 5}", "{\"type\": null}",
             "{\"type\": \"\"}", "{\"type\": \"end\"}", "{\"type\": \"CONFIG\"}", "{\"type\": \"config\"",
             "[" * 100_000 + "]" * 100_000, "{\"type\": \"config\", \"x\": " + "[" * 5000 + "]" * 5000 + "}",
             "{\"type\": \"config\", \"sample_rate\": NaN}", "{\"type\": \"config\", \"sample_rate\": 1e999}",
             "{\"type\": \"config\"}\u0000", "{\"type\": \"\u00e9\u4e2d\"}",
             "{\"type\": \"config\", \"type\": \"end\"}")


@dataclass
class Case:
    """One hostile client: the messages it sends (text or binary), in order, then it disconnects."""

    number: int
    kind: str
    messages: list[str | bytes]
    note: str


@dataclass
class Exchange:
    """What the server did with a case."""

    events: list[dict] = field(default_factory=list)
    close: int | None = None
    accepted: bool = False
    error: str | None = None  # an exception out of the application (with its traceback)


@dataclass
class Report:
    """Outcomes of a fuzz run; :meth:`table` prints them."""

    seed: int
    cases: int = 0
    by_kind: dict[str, Counter] = field(default_factory=lambda: {k: Counter() for k in KINDS})
    tracebacks: int = 0
    good_streams: int = 0
    good_affected: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(c[f] for c in self.by_kind.values() for f in FAILURES)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.tracebacks and not self.good_affected and self.good_streams > 0

    def table(self) -> str:
        cols = ("completed", "refused", "left", *FAILURES)
        rows = ["| case kind | cases | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
        total: Counter = Counter()
        for kind, counts in self.by_kind.items():
            total += counts
            rows.append(f"| {kind} | {sum(counts.values())} | " + " | ".join(str(counts[c]) for c in cols) + " |")
        rows.append(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[c]) for c in cols) + " |")
        rows.append("")
        rows.append(f"seed {self.seed}: {self.cases} cases in {self.seconds:.0f} s; tracebacks logged: "
                    f"{self.tracebacks}; good streams: {self.good_streams}, affected: {self.good_affected}; "
                    f"{'PASS' if self.ok else 'FAIL'}")
        rows += [f"  {line}" for line in self.failures[:20]]
        return "\n".join(rows)


# -- cases --------------------------------------------------------------------------------------------


def _json_value(value: Any) -> str:
    if isinstance(value, tuple) and value[:1] == ("json",):
        return value[1]
    return json.dumps(value)


def _config_text(config: dict[str, Any]) -> str:
    """JSON text of a config whose values may be raw JSON (``("json", text)``)."""
    return "{" + ", ".join(f"{json.dumps(k)}: {_json_value(v)}" for k, v in config.items()) + "}"


def _audio(rng: random.Random, speech: np.ndarray, seconds: float, fmt: str = "s16le", channels: int = 1,
           odd: bool = False) -> list[bytes]:
    """Binary frames of ``seconds`` of audio (a slice of speech, noise or silence), in pieces of 20-500 ms."""
    n = int(seconds * 16000)
    choice = rng.random()
    if choice < 0.6:
        start = rng.randrange(0, max(1, len(speech) - n))
        audio = speech[start : start + n].astype(np.float32)
    elif choice < 0.8:
        noise = np.random.default_rng(rng.randrange(2 ** 32))
        audio = noise.normal(0, rng.choice((0.01, 0.3, 3.0)), n).astype(np.float32)
    else:
        audio = np.zeros(n, np.float32)
    if odd and fmt == "f32le" and len(audio):
        audio[rng.randrange(len(audio))] = rng.choice((np.nan, np.inf, -np.inf, 1e30))
    audio = np.repeat(audio[:, None], channels, axis=1).ravel()
    data = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes() if fmt == "s16le" else audio.astype("<f4").tobytes()
    frames, i = [], 0
    while i < len(data):
        step = rng.choice((640, 3200, 16000)) * channels * (2 if fmt == "s16le" else 4)
        frames.append(data[i : i + step])
        i += step
    return frames


def _valid_config(rng: random.Random, stride_ms: int = 20) -> dict[str, Any]:
    """A random config inside every limit (a server with Limits() defaults and a 20 ms frame model)."""
    cfg: dict[str, Any] = {"type": "config"}
    if rng.random() < 0.5:
        cfg["sample_rate"] = rng.choice((8000, 16000, 22050, 44100, 48000))
    if rng.random() < 0.5:
        cfg["format"] = rng.choice(("s16le", "f32le"))
    if rng.random() < 0.2:
        cfg["channels"] = rng.randint(1, 3)
    if rng.random() < 0.4:
        cfg["chunk_ms"] = stride_ms * rng.randint(4, 40)
        cfg["left_ms"] = stride_ms * rng.randint(0, 50)
        cfg["right_ms"] = stride_ms * rng.randint(0, 20)
    for key, make in (("partials", lambda: rng.random() < 0.5),
                      ("decoder", lambda: rng.choice(("auto", "greedy", "beam"))),
                      ("beam", lambda: rng.randint(1, 8)), ("lm", lambda: rng.choice(("auto", "none"))),
                      ("lm_weight", lambda: round(rng.uniform(0, 3), 3)),
                      ("insertion_bonus", lambda: rng.choice((None, round(rng.uniform(-3, 3), 3)))),
                      ("lookahead", lambda: rng.random() < 0.5),
                      ("silence_db", lambda: rng.choice((None, -200, -60, -30.5, 0))),
                      ("endpoint", lambda: rng.choice((True, False, {"rule1_s": round(rng.uniform(0.1, 5), 2),
                                                                     "rule2_s": round(rng.uniform(0.1, 3), 2),
                                                                     "max_utterance_s": round(rng.uniform(0.5, 30), 2)},
                                                       {"blank_threshold": 1, "rule2_s": 0.2})))):
        if rng.random() < 0.3:
            cfg[key] = make()
    return cfg


def make_case(seed: int, number: int, speech: np.ndarray) -> Case:
    """Case ``number`` of ``seed`` (the same every time)."""
    rng = random.Random(f"{seed}/{number}")
    kind = KINDS[number % len(KINDS)] if number % 7 else rng.choice(KINDS)
    if kind == "config value":
        cfg: dict[str, Any] = _valid_config(rng)
        for key in rng.sample(CONFIG_KEYS + ("bogus", "type", "model_dir", "keep_audio"), rng.randint(1, 3)):
            cfg[key] = rng.choice(ODD_VALUES)
        note = f"config {_config_text(cfg)[:160]}"
        fmt = cfg["format"] if cfg.get("format") in ("s16le", "f32le") else "s16le"
        return Case(number, kind, [_config_text(cfg), *_audio(rng, speech, rng.uniform(0.1, 1.0), fmt),
                                   json.dumps({"type": "end"})], note)
    if kind == "endpoint rules":
        rules = {k: rng.choice(ODD_VALUES) for k in rng.sample(ENDPOINT_KEYS + ("rule3_s",), rng.randint(1, 3))}
        cfg = {"type": "config", "endpoint": rules if rng.random() < 0.8 else rng.choice(ODD_VALUES)}
        text = _config_text({**cfg, "endpoint": ("json", _config_text(rules))}) if isinstance(cfg["endpoint"], dict) \
            else _config_text(cfg)
        return Case(number, kind, [text, *_audio(rng, speech, rng.uniform(0.1, 1.0)), json.dumps({"type": "end"})],
                    f"config {text[:160]}")
    if kind == "raw text":
        if rng.random() < 0.2:
            return Case(number, kind, [*_audio(rng, speech, 0.1)], "audio before config")
        text = rng.choice(RAW_TEXTS)
        return Case(number, kind, [text, json.dumps({"type": "end"})], f"text {text[:60]!r}")
    if kind == "after config":
        cfg = _valid_config(rng)
        fmt, channels = cfg.get("format", "s16le"), cfg.get("channels", 1)
        messages: list[str | bytes] = [json.dumps(cfg)]
        notes = []
        for _ in range(rng.randint(1, 4)):
            what = rng.choice(("audio", "odd bytes", "empty", "huge", "text", "config", "bad text", "nan audio"))
            notes.append(what)
            if what == "audio":
                messages += _audio(rng, speech, rng.uniform(0.05, 0.6), fmt, channels)
            elif what == "nan audio":
                messages += _audio(rng, speech, rng.uniform(0.05, 0.6), fmt, channels, odd=True)
            elif what == "odd bytes":
                messages.append(bytes(rng.randrange(256) for _ in range(rng.choice((1, 3, 5, 7)))))
            elif what == "empty":
                messages.append(b"")
            elif what == "huge":
                messages.append(b"\0" * (1 << 20) + b"\0\0")
            elif what == "text":
                messages.append(json.dumps({"type": rng.choice(("pause", "end", "", "ping", "END"))}))
            elif what == "config":
                messages.append(json.dumps(cfg))
            else:
                messages.append(rng.choice(RAW_TEXTS[:15]))
        if rng.random() < 0.8:
            messages.append(json.dumps({"type": "end"}))
        return Case(number, kind, messages, f"{json.dumps(cfg)[:120]} then {', '.join(notes)}")
    if kind == "valid config":
        cfg = _valid_config(rng)
        fmt, channels = cfg.get("format", "s16le"), cfg.get("channels", 1)
        return Case(number, kind, [json.dumps(cfg), *_audio(rng, speech, rng.uniform(0.2, 2.0), fmt, channels),
                                   json.dumps({"type": "end"})], f"valid {json.dumps(cfg)[:160]}")
    cfg = _valid_config(rng)
    frames = _audio(rng, speech, rng.uniform(0.1, 1.5), cfg.get("format", "s16le"), cfg.get("channels", 1))
    return Case(number, kind, [json.dumps(cfg), *frames[: rng.randint(0, len(frames))]], "disconnect mid-stream")


# -- talking to the application -------------------------------------------------------------------------


async def talk(app, messages: list[str | bytes], timeout: float) -> Exchange:
    """Run one WebSocket connection through the ASGI application: the client sends ``messages`` as fast
    as the server reads them, then disconnects. Returns what the server sent."""
    inbox: asyncio.Queue = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    for m in messages:
        inbox.put_nowait({"type": "websocket.receive", "bytes": m} if isinstance(m, bytes)
                         else {"type": "websocket.receive", "text": m})
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
    out = Exchange()

    async def send(message: dict) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            out.accepted = True
        elif kind == "websocket.send":
            out.events.append(json.loads(message["text"]))
        elif kind == "websocket.close":
            out.close = message.get("code", 1000)
        elif kind == "websocket.http.response.start":
            out.close = message["status"]

    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "http_version": "1.1", "path": "/ws",
             "raw_path": b"/ws", "root_path": "", "query_string": b"", "headers": [(b"host", b"127.0.0.1:8765")],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8765), "subprotocols": [], "state": {}}
    try:
        await asyncio.wait_for(app(scope, inbox.get, send), timeout)
    except asyncio.TimeoutError:
        out.error = "hung"
    except Exception:  # noqa: BLE001 - what uvicorn would log as "Exception in ASGI application"
        out.error = traceback.format_exc()
    return out


def classify(case: Case, ex: Exchange) -> tuple[str, str]:
    """(outcome, why) of one exchange."""
    if ex.error == "hung":
        return "hung", "no close within the time limit"
    if ex.error:
        return "crash", ex.error.strip().splitlines()[-1]
    errors = [e for e in ex.events if e.get("type") == "error"]
    leaked = [e["message"] for e in errors if any(w in e.get("message", "") for w in INTERNALS)]
    if leaked:
        return "unclean", f"internals in {leaked[0][:100]!r}"
    if ex.close == 1011:
        return "server error", errors[0]["message"][:100] if errors else "close 1011"
    if ex.close == 1000:
        ok = ex.events and ex.events[-1].get("type") == "summary" and not errors
        return ("completed", "") if ok else ("unclean", "close 1000 without a summary")
    if ex.close in (1008, 1009):
        ok = len(errors) == 1 and ex.events[-1] is errors[0]
        return ("refused", "") if ok else ("unclean", f"close {ex.close} with {len(errors)} error events")
    if ex.close is None:
        return ("left", "") if not errors else ("unclean", "an error event without a close")
    return "unclean", f"close {ex.close}"


class _Tracebacks(logging.Handler):
    """Counts log records that carry an exception (what a server log shows as a traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


def _decoded(events: list[dict]) -> list[tuple]:
    return [(e["phoneme"], e["start"], e["end"], round(e["confidence"], 2)) if e["type"] == "phoneme"
            else ("<endpoint>", e["start"], e["end"]) for e in events if e["type"] in ("phoneme", "endpoint")]


async def run(recognizer: Recognizer, cases: int = 1000, seed: int = 0, concurrency: int = 4,
              only: int | None = None, timeout: float = 60.0, progress: bool = False) -> Report:
    """Fuzz an :class:`~phonestream.server.App` serving ``recognizer`` with ``cases`` hostile clients,
    ``concurrency`` at a time, while a well-behaved client streams the sample recording over and over."""
    from .audio import load_audio
    from .server import App, Limits, ServerSettings

    rate = recognizer.model.sample_rate
    app = App(recognizer, ServerSettings(limits=Limits(max_message_bytes=1 << 20, max_streams=concurrency + 2,
                                                       idle_timeout_s=timeout / 2)))
    speech = load_audio(SAMPLES / "LJ001-0001.flac", rate)
    good_audio = load_audio(SAMPLES / "LJ001-0002.flac", rate)
    pcm = (np.clip(good_audio, -1, 1) * 32767).astype("<i2")
    reference = recognizer.stream()
    expected = []
    received = pcm.astype(np.float32) / 32768.0  # what the server decodes
    for i in range(0, len(received), 320):
        expected += reference.accept(received[i : i + 320])
    expected += reference.finish(offline=False)
    want = _decoded([e.to_dict() for e in expected])
    good_messages = [json.dumps({"type": "config", "sample_rate": rate, "format": "s16le"}),
                     *(pcm[i : i + 320].tobytes() for i in range(0, len(pcm), 320)), json.dumps({"type": "end"})]

    report = Report(seed)
    handler = _Tracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    numbers = [only] if only is not None else list(range(cases))
    done = asyncio.Event()
    t0 = time.perf_counter()

    async def good_client() -> None:
        while not done.is_set() or report.good_streams == 0:
            ex = await talk(app, good_messages, timeout)
            report.good_streams += 1
            if ex.close != 1000 or _decoded(ex.events) != want:
                report.good_affected += 1
                report.failures.append(f"good stream {report.good_streams}: close {ex.close}, "
                                       f"{len(_decoded(ex.events))} of {len(want)} decoded events, {ex.error or ''}")

    async def worker(queue: list[int]) -> None:
        while queue:
            number = queue.pop()
            case = make_case(seed, number, speech)
            outcome, why = classify(case, await talk(app, case.messages, timeout))
            report.by_kind[case.kind][outcome] += 1
            report.cases += 1
            if outcome in FAILURES:
                report.failures.append(f"case {number} ({case.kind}: {case.note[:120]}): {outcome}: {why}")
            if progress and report.cases % 500 == 0:
                print(f"  {report.cases} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    app.scheduler.start()
    try:
        good = asyncio.create_task(good_client())
        queue = numbers[::-1]
        await asyncio.gather(*(worker(queue) for _ in range(concurrency)))
        done.set()
        await good
    finally:
        app.scheduler.stop()
        root.removeHandler(handler)
    report.tracebacks = len(handler.records)
    report.failures += [f"logged: {r.getMessage()[:120]}" for r in handler.records[:5]]
    report.seconds = time.perf_counter() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phonestream.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="hostile clients to run (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="which cases (default 0)")
    parser.add_argument("--only", type=int, default=None, metavar="K", help="run case K of the seed alone")
    parser.add_argument("--concurrency", type=int, default=4, help="hostile clients at once (default 4)")
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the shipped model)")
    parser.add_argument("--decoder", default="auto", choices=("auto", "greedy", "beam"))
    args = parser.parse_args(argv)
    if args.cases < 1 or args.concurrency < 1:
        parser.error("--cases and --concurrency must be at least 1")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from .models import load_model

    recognizer = Recognizer(load_model(args.model), decoder=args.decoder)
    print(f"model: {recognizer.model.description}; decoder {args.decoder}; {args.cases} cases, seed {args.seed}",
          flush=True)
    report = asyncio.run(run(recognizer, args.cases, args.seed, args.concurrency, args.only, progress=True))
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
