"""What a new user hits in the first hour: pipes, help texts, mistyped paths, checkpoints saved by current
transformers, the phoneme key (issue 13)."""

from __future__ import annotations

import subprocess
import sys

import soundfile as sf

from .conftest import SAMPLES


def phonestream(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phonestream", *map(str, args)], capture_output=True, timeout=300,
                          **kwargs)


def test_stream_into_a_closed_pipe_ends_quietly(tiny_model_dir):
    audio = sf.read(SAMPLES / "LJ001-0001.flac", dtype="int16")[0]
    proc = subprocess.Popen([sys.executable, "-m", "phonestream", "stream", "-", "--rate", "22050", "-m",
                             str(tiny_model_dir), "--chunk-ms", "320", "--left-ms", "320", "--right-ms", "160"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(audio[: 22050 * 3].tobytes())
    proc.stdin.flush()
    lines = [proc.stdout.readline() for _ in range(3)]  # like `| head -3`
    proc.stdout.close()
    try:
        proc.stdin.write(audio[22050 * 3 :].tobytes())  # more phonemes: written into the closed pipe
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it stopped reading once its output was gone
    assert proc.wait(timeout=120) == 0
    assert lines[0].split()[:3] == [b"start_s", b"end_s", b"phoneme"]
    assert proc.stderr.read().decode().strip() == ""
