"""Audio sources: formats, rates, channels, raw PCM and bad files."""

import io

import numpy as np
import pytest
import soundfile as sf

from phonestream.audio import AudioError, load_audio, pieces, read_pcm


def tone(rate, seconds=1.0, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("ext, subtype", [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS")])
def test_formats_rates_and_stereo(tmp_path, ext, subtype):
    stereo = np.stack([tone(44100), tone(44100)], axis=1)
    path = tmp_path / f"x.{ext}"
    sf.write(path, stereo, 44100, subtype=subtype)
    audio = load_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 2
    # the 440 Hz tone survives resampling: its spectral peak stays at 440 Hz
    spectrum = np.abs(np.fft.rfft(audio[:16000]))
    assert abs(np.argmax(spectrum) * 16000 / len(audio[:16000]) - 440) < 3


def test_stereo_is_averaged(tmp_path):
    left, right = tone(16000), np.zeros(16000, np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", 16000), left / 2, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "not found"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4), "cannot decode"),
    (lambda p: p.write_text("hello, not audio at all\n" * 20), "cannot decode"),
])
def test_bad_files(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=message):
        load_audio(path, 16000)


def test_header_only_file_has_no_samples(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(path, 16000)


def test_pieces_cover_signal():
    x = np.arange(1000, dtype=np.float32)
    assert np.array_equal(np.concatenate(list(pieces(x, 160))), x)


@pytest.mark.parametrize("fmt, scale, dtype", [("s16le", 32767, "<i2"), ("f32le", 1.0, "<f4")])
def test_raw_pcm(fmt, scale, dtype):
    x = tone(8000, 0.5)
    raw = (x * scale).astype(dtype).tobytes()
    out = np.concatenate(list(read_pcm(io.BytesIO(raw), 8000, fmt, 16000, 20)))
    assert abs(len(out) - 8000) <= 2
    assert abs(np.abs(out).max() - 0.5) < 0.02


def test_raw_pcm_truncated_sample():
    with pytest.raises(AudioError, match="stray bytes"):
        list(read_pcm(io.BytesIO(b"\x00\x01\x02"), 16000, "s16le", 16000, 20))


def test_raw_pcm_unknown_format():
    with pytest.raises(AudioError, match="unknown PCM format"):
        list(read_pcm(io.BytesIO(b""), 16000, "u8", 16000, 20))
