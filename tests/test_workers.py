"""`serve --workers N`: N server processes on one port (phonestream/workers.py), the allocator they run on
(phonestream/memory.py), and `bench --streams --processes`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from phonestream import memory
from phonestream.bench import SAMPLE, run_streams_processes
from phonestream.models.null import NullModel
from phonestream.streaming import StreamConfig

PY = sys.executable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(*args: str) -> tuple[subprocess.Popen, int]:
    """`phonestream serve ARGS` on a free port, in its own process group; returns it and the port it printed."""
    proc = subprocess.Popen([PY, "-m", "phonestream", "serve", "--port", str(_free_port()), *args],
                            stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if found:
            return proc, int(found.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the server did not start: {proc.stderr.read()}")


def _health(port: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                return json.load(reply)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _workers(pid: int) -> set[int]:
    """The parent's worker processes (multiprocessing also starts a resource tracker: not a worker)."""
    return {p for p in _children(pid) if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()}


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and ps")
def test_workers_share_one_port_serve_the_same_phonemes_and_are_restarted(tmp_path):
    proc, port = _start("--workers", "2", "--decoder", "greedy", "--allocator", "system")
    try:
        health = _health(port)
        assert health["workers"] == 2 and health["worker"] in (0, 1) and health["status"] == "ok"
        deadline = time.monotonic() + 30
        while len(_workers(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = _workers(proc.pid)
        assert len(workers) == 2

        # a stream through the pool gives the local engine's phonemes
        client = subprocess.run([PY, "-m", "phonestream", "client", str(SAMPLE), "--url", f"ws://127.0.0.1:{port}/ws",
                                 "--json"], capture_output=True, text=True, timeout=120)
        assert client.returncode == 0, client.stderr
        served = [e["phoneme"] for e in map(json.loads, client.stdout.splitlines()) if e["type"] == "phoneme"]
        local = subprocess.run([PY, "-m", "phonestream", "stream", str(SAMPLE), "--decoder", "greedy", "--json",
                                "--no-compare-offline"], capture_output=True, text=True, timeout=120)
        assert local.returncode == 0, local.stderr
        expected = [e["phoneme"] for e in map(json.loads, local.stdout.splitlines()) if e["type"] == "phoneme"]
        assert served == expected and len(served) > 20

        # a worker that dies is started again, and the port keeps answering
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _workers(proc.pid)
            if victim not in now and len(now) == 2:
                break
            time.sleep(0.3)
        assert victim not in _workers(proc.pid) and len(_workers(proc.pid)) == 2
        assert _health(port)["status"] == "ok"
    finally:
        code = _stop(proc)
    assert code == 0
    assert not _children(proc.pid)


def test_workers_bad_arguments_are_one_line(tmp_path):
    bad = subprocess.run([PY, "-m", "phonestream", "serve", "--workers", "0"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "--workers" in bad.stderr and "Traceback" not in bad.stderr
    # a model the workers cannot load: each says so in one line, and the server stops (no restart loop)
    bad = subprocess.run([PY, "-m", "phonestream", "serve", "--workers", "2", "--port", str(_free_port()), "-m",
                          str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "phonestream: error: no such model folder" in bad.stderr


def test_allocator_choice():
    assert memory.active_allocator() in ("system", *memory.ALLOCATORS)
    assert memory.reexec_with("system", ["serve"]) == memory.active_allocator()  # never re-executes
    with pytest.raises(ValueError, match="unknown allocator"):
        memory.find_allocator("tcmalloc-not-known")


@pytest.mark.skipif(not sys.platform.startswith("linux") or memory.find_allocator("jemalloc") is None,
                    reason="needs libjemalloc (Debian: libjemalloc2; .ci/run installs it)")
def test_serve_runs_on_jemalloc_when_installed():
    proc, port = _start("--decoder", "greedy")  # --allocator auto
    try:
        assert _health(port)["allocator"] == "jemalloc"
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libjemalloc" in maps  # the same process (re-executed in place), not a child
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        conf = os.environ.get("MALLOC_CONF", memory.JEMALLOC_CONF)  # a user's own settings are kept
        assert f"MALLOC_CONF={conf}".encode() in environ  # else prompt purging (memory.py)
    finally:
        assert _stop(proc) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it stopped on
    proc, port = _start("--decoder", "greedy", "--allocator", "system")
    try:
        assert _health(port)["allocator"] == "system"
    finally:
        _stop(proc)


def test_bench_streams_split_over_processes():
    row = run_streams_processes(NullModel, StreamConfig(640, 640, 160), 12, processes=2, seconds=2.0,
                                decoder="greedy")
    assert row["processes"] == 2 and row["streams"] == 12
    assert row["errors"] == 0 and row["dropped_s"] == 0
    assert row["lag_s"]["p50"] is not None and row["windows_per_s"] > 0
