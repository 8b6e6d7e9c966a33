"""Ray: `phonestream batch --ray` and the Ray Serve deployment, on a local Ray instance (2 CPUs) started here,
checked against the local (non-Ray) results."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import ray
from ray import serve

from phonestream import client as net
from phonestream.audio import load_audio
from phonestream.batch import JobOptions, list_inputs, transcribe_many
from phonestream.ray_serve import deployment
from phonestream.server import ServerSettings

from .conftest import SAMPLES
from .test_batch import GREEDY, local_row, read_rows, recordings, untimed  # noqa: F401  (recordings: a fixture)


@pytest.fixture(scope="module")
def ray_instance():
    # the raylet waits about 15 s for its agents by default, which a busy 2-core machine can overrun
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    for attempt in (1, 2):  # a raylet that loses the race with its agents on a loaded machine: once more
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def recognizer():
    return GREEDY.build()


def test_batch_on_ray_equals_local(ray_instance, recordings, recognizer, tmp_path):  # noqa: F811
    out = tmp_path / "ray.jsonl"
    report = transcribe_many(list_inputs(recordings), out, GREEDY, JobOptions(events=True), workers=2,
                             ray_address="local")
    assert (report.done, report.errors, report.workers) == (5, 2, 2)
    rows = read_rows(out)
    assert rows["empty.flac"]["error"] == f"audio file is empty: {recordings / 'empty.flac'}"
    assert rows["corrupt.wav"]["error"].startswith("cannot decode audio file")
    for name in ("a.wav", "b.flac", "stereo.wav"):
        local = local_row(recognizer, Path(rows[name]["path"]))
        assert rows[name]["events"] == local["events"]
        assert untimed(rows[name]["summary"]) == untimed(local["summary"])
    assert ray.is_initialized()  # an instance the caller started is left running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(url: str) -> dict:
    with urllib.request.urlopen(net.http_url(url, "/health"), timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def served(ray_instance):
    """Two replicas behind Ray Serve's proxy (half a CPU each, so they fit the 2-CPU instance)."""
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(deployment(GREEDY, ServerSettings(port=port), replicas=2, cpus_per_replica=0.5), name="phonestream",
              route_prefix="/")
    url = f"ws://127.0.0.1:{port}/ws"
    deadline = time.time() + 60
    while True:  # both replicas are up and have reported their figures
        try:
            if health(url).get("replicas") == 2:
                break
        except urllib.error.URLError:  # 503 while a replica starts its scheduler
            pass
        assert time.time() < deadline, "the replicas did not report"
        time.sleep(0.5)
    yield url
    serve.shutdown()


def phonemes(events: list[dict]) -> list[tuple]:
    return [(e["phoneme"], e["start"], e["end"], round(e["confidence"], 2)) for e in events if e["type"] == "phoneme"]


def test_streams_through_ray_serve_equal_the_local_engine(served, recognizer):
    audio = load_audio(SAMPLES / "LJ001-0001.flac", 16000)[: 4 * 16000]
    stream = recognizer.stream()  # the local engine on the same audio, in the same 20 ms pieces
    expected = []
    for start in range(0, len(audio), 320):
        expected += [e.to_dict() for e in stream.accept(audio[start: start + 320])]
    expected += [e.to_dict() for e in stream.finish()]

    def stream():
        return net.stream_audio(served, lambda rate: net.pieces(audio, 320))

    async def two_at_once():
        return await asyncio.gather(stream(), stream())

    for result in [asyncio.run(stream()), *asyncio.run(two_at_once())]:
        # The server's scheduler runs windows in batches (of one stream sent faster than real time, or of two
        # streams on one replica) where the local engine here runs them one by one, and the encoder's batched
        # int8 kernels round differently: the phonemes are the same, a boundary may move by one 20 ms frame
        # where two frames nearly tie, and a confidence may move in its last digits (as with `phonestream
        # serve`; Ray Serve adds nothing here).
        assert result.error is None and result.summary["audio_s"] == pytest.approx(4.0, abs=1e-3)
        assert result.summary["phoneme_string"] == expected[-1]["phoneme_string"]
        got, want = phonemes(result.events), phonemes(expected)
        assert [p[0] for p in got] == [p[0] for p in want] and len(want) > 10
        assert [t for p in got for t in p[1:3]] == pytest.approx([t for p in want for t in p[1:3]], abs=0.021)
        assert [p[3] for p in got] == pytest.approx([p[3] for p in want], abs=0.1)


def test_loadtest_runs_against_ray_serve_unchanged(served):
    rows = net.loadtest(served, [2], seconds=2.0)
    row = rows[0]
    assert (row["streams"], row["errors"], row["dropped_s"]) == (2, 0, 0)
    assert row["avg_batch"] is not None and row["avg_batch"] >= 1  # the replicas' summed counters moved
    deadline = time.time() + 10
    while (h := health(served))["streams"] and time.time() < deadline:  # replicas report every half second
        time.sleep(0.2)
    assert h["replicas"] == 2 and h["status"] == "ok" and h["streams"] == 0


def test_health_is_summed_over_replicas():
    from phonestream.ray_serve import combined_health

    a = {"status": "ok", "model": "m", "streams": 2, "batches": 10, "windows": 30, "model_busy_s": 1.5,
         "largest_batch": 4, "uptime_s": 9.0, "scheduler_sessions": 2, "rejected_busy": 0, "rss_mb": 300.0}
    b = {**a, "streams": 1, "batches": 5, "windows": 5, "model_busy_s": 0.25, "largest_batch": 7, "uptime_s": 3.0}
    h = combined_health([a, b])
    assert (h["streams"], h["batches"], h["windows"], h["model_busy_s"]) == (3, 15, 35, 1.75)
    assert (h["largest_batch"], h["uptime_s"], h["replicas"], h["status"], h["model"]) == (7, 9.0, 2, "ok", "m")
    assert combined_health([a, {**b, "status": "worker stopped"}])["status"] == "worker stopped"
