"""The command line: JSON schema, offline/eval/bench commands, and one clear line for every bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from .conftest import SAMPLES, fake_sound_card

PHONEME_KEYS = {"type", "phoneme", "start", "end", "confidence", "committed_at", "index"}


def run(*args, stdin: bytes | None = None, check_rc: int | None = 0):
    proc = subprocess.run([sys.executable, "-m", "phonestream", *map(str, args)], input=stdin,
                          capture_output=True, timeout=300)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr.decode()
    return proc


def events(proc):
    return [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]


def test_stream_json_schema(tiny_model_dir):
    proc = run("stream", SAMPLES / "LJ001-0002.flac", "-m", tiny_model_dir, "--json", "--chunk-ms", "320",
               "--left-ms", "640", "--right-ms", "160")
    evs = events(proc)
    kinds = [e["type"] for e in evs]
    assert kinds[-1] == "summary" and kinds.count("summary") == 1
    phonemes = [e for e in evs if e["type"] == "phoneme"]
    assert phonemes and all(set(e) == PHONEME_KEYS for e in phonemes)
    assert any(e["type"] == "partial" and isinstance(e["phonemes"], list) for e in evs)
    s = evs[-1]
    for key in ("audio_s", "chunks", "chunk_compute_ms", "rtf", "emission_delay_s", "phonemes", "phoneme_string",
                "offline_string", "stream_vs_offline"):
        assert key in s, key
    assert set(s["chunk_compute_ms"]) == {"avg", "p50", "p95", "max"}
    assert set(s["emission_delay_s"]) == {"avg", "p50", "p95", "max"}
    assert s["phonemes"] == len(phonemes)
    assert abs(s["audio_s"] - 1.9) < 0.01


def test_live_view_plain_output_and_summary_table(tiny_model_dir):
    proc = run("stream", SAMPLES / "LJ001-0002.flac", "-m", tiny_model_dir, "--chunk-ms", "320",
               "--left-ms", "320", "--right-ms", "160")
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert len(out.splitlines()) > 3 and "rtf" in err and "stream_vs_offline" in err


def test_stdin_pcm(tiny_model_dir):
    audio = sf.read(SAMPLES / "LJ001-0002.flac", dtype="int16")[0]
    proc = run("stream", "-", "--rate", "22050", "--format", "s16le", "-m", tiny_model_dir, "--json",
               "--compare-offline", "--chunk-ms", "320", "--left-ms", "320", "--right-ms", "160",
               stdin=audio.tobytes())
    s = events(proc)[-1]
    assert abs(s["audio_s"] - 1.9) < 0.02 and "offline_string" in s


def test_stdin_truncated_keeps_committed_output(tiny_model_dir):
    audio = sf.read(SAMPLES / "LJ001-0002.flac", dtype="int16")[0]
    proc = run("stream", "-", "--rate", "22050", "-m", tiny_model_dir, "--json", "--chunk-ms", "320",
               "--left-ms", "320", "--right-ms", "160", stdin=audio.tobytes() + b"\x01", check_rc=2)
    assert any(e["type"] == "phoneme" for e in events(proc))
    assert proc.stderr.decode().strip().splitlines()[-1].startswith("phonestream: error: PCM input ended")


def test_transcribe_json(tiny_model_dir):
    evs = events(run("transcribe", SAMPLES / "LJ001-0002.flac", "-m", tiny_model_dir, "--json"))
    assert evs[-1]["type"] == "summary" and evs[-1]["mode"] == "offline"
    assert evs[-1]["phonemes"] == sum(e["type"] == "phoneme" for e in evs)


def test_eval_manifest(tmp_path, tiny_model_dir, speechlike):
    for i in range(2):
        sf.write(tmp_path / f"u{i}.wav", speechlike[i * 8000 : i * 8000 + 16000], 16000)
    (tmp_path / "m.tsv").write_text("id\twav\tphones\tphones_cmu\nu0\tu0.wav\tAA B\tAA1 B\nu1\tu1.wav\tK S\tZH AO\n"
                                    "u2\tu1.wav\t\t\n")
    res = json.loads(run("eval", tmp_path / "m.tsv", "-m", tiny_model_dir, "--json", "--chunk-ms", "320",
                         "--left-ms", "320", "--right-ms", "160").stdout)
    assert res["utterances"] == 2 and res["skipped_no_phones"] == 1
    names = [r["system"] for r in res["systems"]]
    assert names == ["stream", "offline"]
    assert all(r["ref_phones"] == 4 and r["per"] >= 0 for r in res["systems"])
    folded = json.loads(run("eval", tmp_path / "m.tsv", "-m", tiny_model_dir, "--json", "--phones-column",
                            "phones_cmu", "--fold", "timit39", "--chunk-ms", "320", "--left-ms", "320",
                            "--right-ms", "160").stdout)
    assert folded["systems"][0]["ref_phones"] == 4
    table = run("eval", tmp_path / "m.tsv", "-m", tiny_model_dir, "--baseline", "pocketsphinx").stdout.decode()
    assert "stream" in table and "offline" in table and "per" in table and "pocketsphinx" in table


def test_bench_json(tiny_model_dir):
    rows = json.loads(run("bench", "-m", tiny_model_dir, "--seconds", "3", "--config", "320/320/160",
                          "--config", "640/640/160", "--json").stdout)
    assert [r["chunk/left/right ms"] for r in rows] == ["320/320/160", "640/640/160"]
    for r in rows:
        assert r["rtf"] > 0 and r["offline_rtf"] > 0 and r["chunk_compute_ms"]["p95"] > 0
        assert r["frame_delay_s"]["p95"] >= 0.16


def write_bad(tmp_path, kind):
    p = tmp_path / "bad.wav"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "corrupt":
        p.write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    elif kind == "unsupported":
        p = tmp_path / "bad.mp4"
        p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    elif kind == "missing":
        p = tmp_path / "missing.wav"
    return p


@pytest.mark.parametrize("kind, message", [("empty", "is empty"), ("corrupt", "cannot decode"),
                                           ("unsupported", "cannot decode"), ("missing", "not found")])
def test_bad_audio_files(tmp_path, tiny_model_dir, kind, message):
    proc = run("stream", write_bad(tmp_path, kind), "-m", tiny_model_dir, check_rc=2)
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("phonestream: error:")


@pytest.mark.parametrize("args, message", [
    (["--chunk-ms", "0"], "--chunk-ms must be positive"),
    (["--chunk-ms", "-20"], "--chunk-ms must be positive"),
    (["--left-ms", "-1"], "--left-ms must be zero or more"),
    (["--chunk-ms", "330"], "not a multiple of the model's frame stride"),
    (["--right-ms", "10"], "not a multiple"),
])
def test_bad_sizes(tiny_model_dir, args, message):
    proc = run("stream", SAMPLES / "LJ001-0002.flac", "-m", tiny_model_dir, *args, check_rc=2)
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_bad_models(tmp_path, tiny_encoder_dir):
    cases = [
        (["-m", tmp_path / "nope"], "no such model folder"),
        (["-m", tiny_encoder_dir], "no trained CTC head"),
        (["--backbone", tiny_encoder_dir, "--vocab", tmp_path / "none.txt"], "vocabulary file not found"),
    ]
    (tmp_path / "empty.txt").write_text("\n")
    cases.append((["--backbone", tiny_encoder_dir, "--vocab", tmp_path / "empty.txt"], "holds no symbols"))
    for args, message in cases:
        proc = run("stream", SAMPLES / "LJ001-0002.flac", *args, check_rc=2)
        lines = proc.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, lines)


class NoInputDevice:
    """A fake sounddevice whose PortAudio finds no input device (whatever this machine has)."""

    PortAudioError = OSError

    @staticmethod
    def query_devices(device, kind):
        assert kind == "input"
        raise OSError("Error querying device -1")

    def InputStream(self, *args, **kwargs):  # noqa: N802 (sounddevice's name)
        raise AssertionError("a stream was opened without an input device")


@pytest.mark.parametrize("sounddevice", [NoInputDevice(), None], ids=["no-input-device", "no-portaudio"])
def test_mic_without_device(tiny_model_dir, monkeypatch, capsys, sounddevice):
    """No sound card (or no PortAudio library): one clear line and exit 2. The sound card is always a
    fake, so the test runs the same (and cannot hang recording) on a machine with a microphone."""
    from phonestream import cli

    monkeypatch.setitem(sys.modules, "sounddevice", sounddevice)  # None: the import fails
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["mic", "-m", str(tiny_model_dir)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "microphone" in lines[0], lines


def test_manifest_errors(tmp_path, tiny_model_dir):
    (tmp_path / "m.tsv").write_text("id\tpath\tphones\n")
    proc = run("eval", tmp_path / "m.tsv", "-m", tiny_model_dir, check_rc=2)
    assert "no 'audio' or 'wav' column" in proc.stderr.decode()


def test_mic_streams_a_fake_sound_card_until_ctrl_c(monkeypatch, capsys):
    """The microphone path end to end, with sounddevice replaced by a fake 44.1 kHz card that plays
    the sample recording and then raises KeyboardInterrupt, as Ctrl-C does: pieces are resampled,
    streamed through the default model, and the run ends with a summary and the offline comparison."""
    import soxr

    from phonestream.cli import main

    audio, sr = sf.read(SAMPLES / "LJ001-0002.flac", dtype="float32")
    card = soxr.resample(audio, sr, 44100).astype(np.float32)
    reads = []

    fake_sound_card(monkeypatch, card, 44100, reads)
    with pytest.raises(SystemExit) as exit_info:
        main(["mic", "--json", "--compare-offline", "--feed-ms", "50"])
    assert exit_info.value.code in (0, None)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = events[-1]
    assert summary["type"] == "summary" and set(reads[:-1]) == {2205}  # 50 ms blocks at 44.1 kHz
    assert summary["audio_s"] == pytest.approx(len(reads) * 0.05, abs=0.03)
    phonemes = [e for e in events if e["type"] == "phoneme"]
    assert len(phonemes) > 20 and summary["phonemes"] == len(phonemes)
    assert summary["stream_vs_offline"]["ratio"] < 0.2
