"""The live terminal view as a person sees it: the real ``phonestream stream`` run under a pseudo-terminal
of a fixed size, its output fed to a terminal emulator (pyte), and the screen read back."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
from rich.console import Console

from phonestream.console import LOW_CONFIDENCE, PLAIN_HEADER, EventPrinter, LiveView
from phonestream.events import Partial, Phoneme, Summary
from phonestream.phones import to_ipa

from .conftest import SAMPLES

pyte = pytest.importorskip("pyte")

SAMPLE = SAMPLES / "LJ001-0001.flac"
LINE = re.compile(r"^\s*(\d+\.\d\d) (.*)$")  # a transcript line: the time of its first phoneme, then phonemes
STATUS = re.compile(r"([\d.]+) s heard \| (\d+) phonemes?(?: \| delay ([\d.]+) s)?")


def _row(line, cols: int) -> list[tuple[str, bool]]:
    return [(line[x].data, line[x].italics) for x in range(cols)]


def run_in_terminal(args: list[str], cols: int, rows: int, timeout: float = 180):
    """Run ``phonestream ARGS`` on a pty of cols x rows; return (snapshots, history, final screen rows).

    A snapshot is taken whenever the output has been quiet for 0.15 s (between model steps), so each
    is what a person would be looking at; each row is a list of (character, italic) cells.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "phonestream", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True)
    os.close(slave)
    screen = pyte.HistoryScreen(cols, rows, history=5000)
    stream = pyte.ByteStream(screen)
    snapshots, dirty, deadline = [], False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.15)
            if ready:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:  # EIO: the program ended and closed the terminal
                    break
                if not data:
                    break
                stream.feed(data)
                dirty = True
            elif dirty:
                snapshots.append([_row(screen.buffer[y], cols) for y in range(rows)])
                dirty = False
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    history = [_row(line, cols) for line in screen.history.top]
    return snapshots, history, [_row(screen.buffer[y], cols) for y in range(rows)]


def text(row) -> str:
    return "".join(c for c, _ in row).rstrip()


def transcript(rows) -> tuple[list[str], list[str], int]:
    """Committed phonemes (upright) and provisional ones (italic) on transcript lines, and the line count."""
    committed, provisional, lines = [], [], 0
    for row in rows:
        m = LINE.match(text(row))
        if not m or STATUS.search(text(row)):
            continue
        lines += 1
        start = m.start(2)
        for token in re.finditer(r"\S+", text(row)[start:]):
            italic = row[start + token.start()][1]
            (provisional if italic else committed).append(token.group())
    return committed, provisional, lines


def reference(*extra: str) -> list[dict]:
    """The same run's committed phonemes as JSON events (the decoding does not depend on pacing)."""
    out = subprocess.run([sys.executable, "-m", "phonestream", "stream", str(SAMPLE), "--json", *extra],
                         capture_output=True, check=True, timeout=180).stdout.decode()
    return [e for e in map(json.loads, out.splitlines()) if e["type"] == "phoneme"]


def test_realtime_view_wraps_and_keeps_the_newest_phonemes_in_sight():
    cols, rows = 60, 12
    ref = reference()
    snapshots, history, final = run_in_terminal(["stream", str(SAMPLE), "--realtime"], cols, rows)
    checked = 0
    for snap in snapshots:
        status = [m for m in (STATUS.search(text(r)) for r in snap) if m]
        if not status:
            continue
        heard, count = float(status[-1].group(1)), int(status[-1].group(2))
        committed, _, lines = transcript(snap)
        assert count == len([p for p in ref if p["committed_at"] <= heard + 1e-6])
        if count == 0:
            continue
        # the newest committed phonemes are the ones on screen, in order, ending with the very latest
        assert committed == [p["phoneme"] for p in ref[:count]][-len(committed):], (heard, committed)
        last = ref[count - 1]
        assert status[-1].group(3) == f"{last['committed_at'] - last['end']:.2f}"
        if heard >= 5:
            assert lines >= 2, "the view must wrap onto several lines"
            checked += 1
    assert checked >= 3, f"too few live snapshots past 5 s: {len(snapshots)} snapshots in all"
    # when it is over, every committed phoneme is in the terminal (history + screen), none cropped
    committed, provisional, lines = transcript(history + final)
    assert committed == [p["phoneme"] for p in ref] and not provisional and lines >= 4
    assert any("phonestream run" in text(r) for r in history + final)


def test_ipa_view_and_summary_in_a_narrow_terminal():
    ref = reference()
    _snapshots, history, final = run_in_terminal(["stream", str(SAMPLE), "--ipa"], 40, 10)
    committed, _, lines = transcript(history + final)
    assert committed == [to_ipa(p["phoneme"]) for p in ref] and lines >= 6
    screen = "\n".join(text(r) for r in history + final)
    assert "ð ʌ" in screen and " DH " not in screen  # the summary's strings are IPA too


def render(events, width: int = 40) -> str:
    """Feed events to a LiveView on an in-memory terminal; return the ANSI output."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, height=10, force_terminal=True, color_system="standard",
                      highlight=False)
    view = LiveView(console)
    for e in events:
        view.phoneme(e) if isinstance(e, Phoneme) else view.partial(e)
    return buf.getvalue(), view


def test_low_confidence_is_dimmed_and_the_tail_italic():
    out, view = render([Phoneme("AA", 0.1, 0.2, 0.95, 0.9), Phoneme("B", 0.2, 0.3, LOW_CONFIDENCE / 2, 1.0),
                        Partial(["K", "S"], 1.0)])
    assert "\x1b[1mAA\x1b[0m" in out  # bold: confident
    assert "\x1b[2mB\x1b[0m" in out  # dim: low confidence
    assert "\x1b[2;3mK S\x1b[0m" in out  # dim italic: provisional
    assert "delay 0.70 s" in out and "1.00 s heard" in out and "2 phonemes" in out
    view.close()


def test_piped_output_has_a_header_and_ipa_summary(capsys):
    printer = EventPrinter(symbol=to_ipa)
    printer(Phoneme("DH", 0.1, 0.2, 0.9, 0.9))
    printer(Summary({"phoneme_string": "DH AH", "offline_string": "DH AH N"}))
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == PLAIN_HEADER and out.splitlines()[1].split()[2] == "ð"
    assert "ð ʌ n" in err and "DH" not in err
