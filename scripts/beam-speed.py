"""The beam search's time per 640 ms block (32 frames of the null model, beam 4, no LM) at a base commit
and now, run interleaved in one process (min of 5 rounds each), so that other load on the machine
affects both alike. Prints a table.

Usage: python scripts/beam-speed.py [BASE_COMMIT]   (default 0b051bb, before the issue-10 changes)
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import phonestream.beam as now
from phonestream.console import print_rows
from phonestream.models.null import NullModel
from phonestream.streaming import FrameBlock

ROOT = Path(__file__).resolve().parents[1]


def load_beam_at(commit: str):
    """``phonestream/beam.py`` as it was at ``commit``, imported beside today's package."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:phonestream/beam.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "beam_base.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("phonestream._beam_base", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def per_block_ms(module, model: NullModel, out: np.ndarray) -> float:
    decoder = module.BeamDecoder(model.vocab, 0.02, 16000, beam=4)
    t0 = time.process_time()
    for pos in range(0, len(out), 32):
        block = FrameBlock(pos, out[pos : pos + 32], out[pos + 32 : pos + 40], (pos + 32) * 320, pos + 32 >= len(out))
        decoder.advance(block)
        decoder.partial(block)
    return 1000 * (time.process_time() - t0) / (len(out) / 32)


def main() -> None:
    base = sys.argv[1] if len(sys.argv) > 1 else "0b051bb"
    old = load_beam_at(base)
    model = NullModel()
    out = model.log_probs(np.zeros(16000 * 300, np.float32))
    times: dict[str, list[float]] = {base: [], "now": []}
    for _ in range(5):
        times[base].append(per_block_ms(old, model, out))
        times["now"].append(per_block_ms(now, model, out))
    print_rows([{"beam.py": name, "cpu ms per 32-frame block (min of 5)": round(min(t), 3),
                 "median": round(float(np.median(t)), 3)} for name, t in times.items()],
               "beam search, beam 4, no LM, 300 s of null-model posteriors")


if __name__ == "__main__":
    main()
