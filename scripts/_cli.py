"""What the measuring scripts share: one phonestream command run as a subprocess, its ``--json`` result read.

The scripts are run by path (``scripts/latency-table.py``), so Python puts this folder first on ``sys.path``
and ``from _cli import phonestream_json`` finds this module.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any


def phonestream_json(*args: str, cwd: Path | None = None) -> Any:
    """``python -m phonestream ARGS --json``'s last output line, parsed; a failure ends the script with the
    command and its last line of error."""
    cmd = [sys.executable, "-m", "phonestream", *args, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode:
        sys.exit(f"{shlex.join(cmd)} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
