"""scripts/test-time-probes.py: the test-time levers' table, on a work folder and selection sets made here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from phonestream.train.evaluate import is_synth_dev

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "phonestream" / "samples" / "LJ001-0002.flac"
PHONES = "IH N B IY IH NG K AH M P EH R AH T IH V L IY M AA D ER N"


def _manifest(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_probes_print_one_row_per_variant(tmp_path):
    work = tmp_path / "work"
    _manifest(work / "synth" / "manifest.tsv", "id\taudio\tduration_s\tsource\tvoice\ttext\tphones",
              [f"u{i}\t{SAMPLE}\t1.9\tespeak\ten-us\tin being comparatively modern.\t{PHONES}" for i in range(3)])
    fsdd_rows = [f"fsdd_0_lj_{take}\t{SAMPLE}\t1.9\tlj\tin being comparatively modern.\t{PHONES}" for take in (5, 45)]
    header = "id\taudio\tduration_s\tspeaker\ttext\tphones_cmu"
    _manifest(tmp_path / "data" / "fsdd" / "manifest.tsv", header, fsdd_rows)
    asterisk = _manifest(tmp_path / "asterisk" / "manifest.tsv", header,
                         [f"modern\t{SAMPLE}\t1.9\tallison\tin being comparatively modern.\t{PHONES}"])
    script = REPO / "scripts" / "test-time-probes.py"
    out = subprocess.run([sys.executable, str(script), "--asterisk", str(asterisk), "--work", str(work),
                          "--data", str(tmp_path / "data"), "--other", str(REPO / "phonestream" / "default_model")],
                         capture_output=True, text=True, check=True).stdout
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")][1:]
    assert [r[1] for r in rows if r[0] == "speed (default decoder)"] == ["x 0.9", "x 0.95", "x 1", "x 1.05", "x 1.1"]
    cells = {(r[0], r[1]): r for r in rows}
    # the model averaged with itself is the model: the ensemble row equals the head alone
    assert cells[("head ensemble", "mean posteriors")][2] == cells[("state statistics", "none (greedy)")][2]
    # the unchanged model decodes the same with either probe's baseline
    assert cells[("speed (default decoder)", "x 1")][2] == cells[("phone priors", "none (default decoder)")][2]
    assert cells[("speed (default decoder)", "x 1")][3] != "-"  # FSDD's take 45 is scored by the speed probe
    # the statistics read the synthetic training utterances (not the held-out ones) and FSDD's training takes
    trained = sum(not is_synth_dev(f"u{i}") for i in range(3))
    assert f"training statistics: {trained + 1} utterances" in out
