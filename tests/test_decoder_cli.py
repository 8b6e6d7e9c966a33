"""Decoder selection from the command line: stream with beam + LM, eval side by side."""

import json

import soundfile as sf
from click.testing import CliRunner

from phonestream.cli import main
from phonestream.lm import build_kneser_ney


def test_stream_with_beam_lm_and_endpoints(tiny_model_dir, wav_file, tmp_path):
    lm = tmp_path / "lm.arpa.gz"
    build_kneser_ney([["AA", "B", "K", "S"]] * 5, order=3).write_arpa(lm)
    result = CliRunner().invoke(main, ["stream", str(wav_file), "--model", str(tiny_model_dir), "--json",
                                       "--decoder", "beam", "--beam", "4", "--lm", str(lm), "--lm-weight", "0.3",
                                       "--chunk-ms", "160", "--left-ms", "320", "--right-ms", "160"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert any(e["type"] == "phoneme" for e in events)
    summary = events[-1]
    assert summary["type"] == "summary" and summary["decoder"].startswith("beam 4 + LM lm.arpa.gz")
    endpoints = [e for e in events if e["type"] == "endpoint"]
    assert endpoints[-1]["rule"] == "end_of_stream" and endpoints[-1]["utterance"] == len(endpoints) - 1
    ahead = CliRunner().invoke(main, ["stream", str(wav_file), "--model", str(tiny_model_dir), "--json",
                                      "--decoder", "beam", "--lm", str(lm), "--lookahead"])
    assert ahead.exit_code == 0, ahead.output
    assert json.loads(ahead.output.splitlines()[-1])["decoder"].endswith(", lookahead commit")


def test_bad_lm_is_one_clear_line(tiny_model_dir, wav_file, tmp_path):
    bad = tmp_path / "x.arpa"
    bad.write_text("nope\n")
    result = CliRunner().invoke(main, ["stream", str(wav_file), "--model", str(tiny_model_dir), "--json",
                                       "--decoder", "beam", "--lm", str(bad)])
    assert result.exit_code == 2 and "not an ARPA file" in result.output


def test_eval_compares_decoders(tiny_model_dir, speechlike, tmp_path):
    sf.write(tmp_path / "a.wav", speechlike[:16000], 16000)
    (tmp_path / "m.tsv").write_text("id\taudio\tphones\nu1\ta.wav\tAA B K S AA\n")
    args = ["eval", str(tmp_path / "m.tsv"), "--model", str(tiny_model_dir), "--json", "--decoders", "greedy,beam"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [s["system"] for s in out["systems"]] == ["stream greedy", "stream beam", "offline greedy", "offline beam"]
    assert set(out["confidence"]) == {"greedy", "beam"} and len(out["confidence"]["beam"]["reliability"]) == 10
    missing = CliRunner().invoke(main, args[:-1] + ["greedy,beam+lm"])
    assert missing.exit_code == 2 and "beam+lm needs an LM" in missing.output


def test_eval_split_gap_decodes_the_streamed_frames_at_once(tiny_model_dir, speechlike, tmp_path):
    """Greedy's commit rule costs nothing (a phoneme is committed when its last frame is final), so
    without endpoints its stream equals its streamed frames decoded at once, phoneme for phoneme."""
    sf.write(tmp_path / "a.wav", speechlike[:24000], 16000)
    (tmp_path / "m.tsv").write_text("id\taudio\tphones\nu1\ta.wav\tAA B K S AA\n")
    args = ["eval", str(tmp_path / "m.tsv"), "--model", str(tiny_model_dir), "--json", "--decoders", "greedy,beam",
            "--split-gap", "--no-endpoint", "--chunk-ms", "160", "--left-ms", "320", "--right-ms", "160"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = {s["system"]: s for s in json.loads(result.output)["systems"]}
    assert list(rows) == ["stream greedy", "stream beam", "stream at once greedy", "stream at once beam",
                          "offline greedy", "offline beam"]
    same = ("per", "sub", "del", "ins")
    assert rows["stream greedy"]["ins"] > 0  # the random model emits phonemes: the comparison is not empty
    assert [rows["stream greedy"][k] for k in same] == [rows["stream at once greedy"][k] for k in same]
    assert rows["stream at once beam"]["ref_phones"] == 5 and rows["stream at once beam"]["rtf"] > 0
