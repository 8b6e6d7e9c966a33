"""``--latency`` picks a window preset on every model-loading command; explicit sizes override it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from phonestream.cli import main
from phonestream.models import load_model
from phonestream.streaming import StreamConfig


def _summary(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.parametrize("latency", ["low", "balanced", "accurate"])
def test_stream_uses_the_latency_preset(tiny_model_dir, wav_file, latency):
    expected = StreamConfig.for_model(load_model(str(tiny_model_dir)), latency=latency)
    s = _summary(["stream", str(wav_file), "-m", str(tiny_model_dir), "--json", "--latency", latency])
    assert (s["chunk_ms"], s["left_ms"], s["right_ms"]) == (expected.chunk_ms, expected.left_ms, expected.right_ms)


def test_explicit_sizes_override_the_preset(tiny_model_dir, wav_file):
    low = StreamConfig.for_model(load_model(str(tiny_model_dir)), latency="low")
    s = _summary(["stream", str(wav_file), "-m", str(tiny_model_dir), "--json", "--latency", "low",
                  "--right-ms", "0"])
    assert (s["chunk_ms"], s["left_ms"], s["right_ms"]) == (low.chunk_ms, low.left_ms, 0)


def test_unknown_preset_is_a_usage_error(tiny_model_dir, wav_file):
    result = CliRunner().invoke(main, ["stream", str(wav_file), "-m", str(tiny_model_dir), "--latency", "fast"])
    assert result.exit_code == 2 and "'fast' is not one of" in result.output


def test_bench_names_the_decoder_it_ran(tiny_model_dir):
    """bench's decoder column says greedy, beam or beam+lm: what ran, not what was asked for (auto)."""
    for model, decoder, expected in ((str(tiny_model_dir), "greedy", "greedy"), (str(tiny_model_dir), "beam", "beam"),
                                     ("default", "auto", "beam+lm")):  # the shipped model has its LM beside it
        result = CliRunner().invoke(main, ["bench", "-m", model, "--seconds", "2", "--decoder", decoder, "--json",
                                           "--no-lookahead"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output.strip().splitlines()[-1])[0]["decoder"] == expected
    ahead = CliRunner().invoke(main, ["bench", "-m", "default", "--seconds", "2", "--json"])  # on by default
    assert json.loads(ahead.output.strip().splitlines()[-1])[0]["decoder"] == "beam+lm+lookahead"
    streams = CliRunner().invoke(main, ["bench", "-m", "default", "--streams", "2", "--seconds", "1", "--lookahead",
                                        "--json"])
    assert streams.exit_code == 0, streams.output
    assert json.loads(streams.output.strip().splitlines()[-1])[0]["decoder"] == "beam+lm+lookahead"  # as one stream's


def test_bench_repeat_takes_turns_and_reports_the_median(tiny_model_dir, monkeypatch):
    """--repeat N runs every setting N times, the settings taking turns, and reports the median run's RTF
    beside every run's; it is refused with --streams."""
    from phonestream import bench as bench_mod

    order, rtfs = [], iter([0.3, 0.1, 0.2, 0.5, 0.4, 0.6])

    def fake_run(model, config, seconds, **options):
        order.append(config.chunk_ms)
        return {**real_run(model, config, seconds, **options), "rtf": next(rtfs)}

    real_run = bench_mod.run
    monkeypatch.setattr(bench_mod, "run", fake_run)
    rows = json.loads(CliRunner().invoke(main, [
        "bench", "-m", str(tiny_model_dir), "--seconds", "1", "--config", "320/320/160", "--config", "160/320/160",
        "--repeat", "3", "--json"]).output.strip().splitlines()[-1])
    assert order == [320, 160, 320, 160, 320, 160]
    assert [(r["rtf"], r["rtf_runs"]) for r in rows] == [(0.3, [0.3, 0.2, 0.4]), (0.5, [0.1, 0.5, 0.6])]
    refused = CliRunner().invoke(main, ["bench", "-m", "null", "--streams", "2", "--repeat", "2"])
    assert refused.exit_code != 0 and "--repeat is for the single-stream bench" in refused.output


def test_latency_table_script_reads_eval_and_a_repeated_bench(tmp_path):
    """scripts/latency-table.py: a row per preset from eval on both sets, then one bench over the presets
    taking turns, whose RTF cell is the median with the range of the runs."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sample = repo / "phonestream" / "samples" / "LJ001-0002.flac"
    header = "id\taudio\tduration_s\tspeaker\ttext\tphones_cmu\n"
    phones = "IH N B IY IH NG K AH M P EH R AH T IH V L IY M AA D ER N"
    row = f"{{}}\t{sample}\t1.9\tlj\tin being comparatively modern.\t{phones}\n"
    for folder, uid in (("fraser_arctic", "arctic_a0001"), ("fsdd", "fsdd_0_lj_3")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "manifest.tsv").write_text(header + row.format(uid))
    out = subprocess.run([sys.executable, str(repo / "scripts" / "latency-table.py"), "--data", str(tmp_path),
                          "--presets", "low,balanced", "--repeat", "2", "--seconds", "1"],
                         capture_output=True, text=True, check=True).stdout
    table = [line.split("|")[1:-1] for line in out.split("\n\n")[-1].splitlines()[2:]]
    assert [r[0].strip() for r in table] == ["low", "balanced"]
    for r in table:
        median, _, spread = r[-1].strip().partition(" ")
        low, high = (float(x) for x in spread.strip("()").split("-"))
        assert 0 < low <= float(median) <= high


def test_bench_runs_as_stream_does_and_reports_its_cpu_time(tiny_model_dir):
    """bench pins NumPy's BLAS to one thread as stream and serve do (an OpenBLAS thread per core spun beside
    the NumPy head and made bench measure another setup), and reports the process's CPU seconds per audio
    second beside the wall-clock RTF."""
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):  # restored when the test ends
        rows = _summary(["bench", "-m", str(tiny_model_dir), "--seconds", "2", "--json"])
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
    assert rows[0]["cpu_rtf"] > 0 and rows[0]["rtf"] > 0
