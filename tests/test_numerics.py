"""Reproducible evaluation (issue 13, point 6): the settings that change the model's floating-point
output are pinned or reported, and `phonestream eval` gives the same figures when run again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "manifest.tsv"

POSTERIORS = """
import hashlib, sys
from phonestream.audio import load_audio
from phonestream.cli import _recognizer
rec = _recognizer(None, None, None, None, "linear", "cpu", None, None, None, None, warmup=False)
lp = rec.offline_log_probs(load_audio(sys.argv[1], 16000))
print(hashlib.sha256(lp.tobytes()).hexdigest())
"""


def test_default_model_posteriors_do_not_depend_on_the_blas_thread_count():
    """OpenBLAS starts with as many threads as the machine has cores, and a different split of the
    head's matrix products rounds differently; the command line pins it to one thread."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: OpenBLAS cannot run two threads here")
    sample = ROOT / "phonestream" / "samples" / "LJ001-0001.flac"
    digests = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        digests.add(subprocess.run([sys.executable, "-c", POSTERIORS, str(sample)], env=env, capture_output=True,
                                   check=True, timeout=300).stdout.strip())
    assert len(digests) == 1


def _eval(*extra: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "phonestream", "eval", str(FSDD), "--where", "id=_0$",
                           "--phones-column", "phones_cmu", "--fold", "timit39", "--decoders", "greedy,beam+lm",
                           "--json", *extra], capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def _figures(result: dict) -> dict:
    """Everything but measured times."""
    systems = [{k: v for k, v in s.items() if k != "rtf"} for s in result["systems"]]
    return {**result, "systems": systems}


@pytest.mark.skipif(not FSDD.is_file(), reason="the FSDD evaluation set is not at ../shared/data/fsdd")
def test_eval_twice_gives_the_same_figures():
    first = _eval()
    assert first["utterances"] == 60 and first["numerics"]["blas"][0].endswith("threads=1")
    assert "ctranslate2_isa" in first["numerics"]
    again = _eval()
    assert _figures(first) == _figures(again)
