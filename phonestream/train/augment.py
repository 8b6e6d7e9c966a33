"""Channel and speaker augmentation for training audio (numpy only, seeded, 16 kHz).

Each call draws a random chain: speed perturbation (tempo and pitch together, which also shifts the
formants like a different vocal tract), a random room (synthetic exponentially decaying impulse
response), a microphone colour (spectral tilt and a random peak/notch), band limiting (8 kHz
telephone channel with mu-law, or a random low-pass), additive noise (white, pink, brown, mains hum or
babble made of other training utterances) at 0-35 dB SNR, and gain with occasional clipping. About one
clip in eight stays clean.
"""

from __future__ import annotations

import numpy as np
import soxr

SR = 16000


def _fft_filter(x: np.ndarray, gain_fn) -> np.ndarray:
    n = len(x)
    nfft = 1 << (n - 1).bit_length()
    spec = np.fft.rfft(x, nfft)
    freqs = np.fft.rfftfreq(nfft, 1 / SR)
    return np.fft.irfft(spec * gain_fn(freqs), nfft)[:n]


def colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    if kind == "hum":
        t = np.arange(n) / SR
        f0 = rng.choice([50.0, 60.0])
        return sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 8)) + 0.05 * white
    exponent = {"pink": 0.5, "brown": 1.0, "blue": -0.5}[kind]
    return _fft_filter(white, lambda f: 1.0 / np.maximum(f, 20.0) ** exponent)


def room_impulse(rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.15, 0.9)
    n = int(SR * min(rt60 * 1.2, 1.0))
    t = np.arange(n) / SR
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir = _fft_filter(ir, lambda f: 1.0 / (1.0 + (f / rng.uniform(2000, 7000)) ** 2))  # air absorption
    pre = int(SR * rng.uniform(0.0, 0.004))
    ir[:pre] = 0.0
    direct = rng.uniform(1.0, 4.0) * np.abs(ir).max()
    ir[pre] += direct
    return ir / np.sqrt(np.sum(ir**2))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2) + 1e-12))


def augment(x: np.ndarray, rng: np.random.Generator, babble: list[np.ndarray] | None = None,
            strength: float = 1.0) -> np.ndarray:
    """A randomly degraded copy of ``x`` (float32, 16 kHz); labels are unchanged by every step."""
    x = np.asarray(x, dtype=np.float64)
    if rng.random() < 0.12 / max(strength, 1e-3):
        return (x / max(np.abs(x).max(), 1e-6) * rng.uniform(0.1, 0.9)).astype(np.float32)
    # speed / vocal tract
    if rng.random() < 0.7 * strength:
        factor = rng.uniform(0.85, 1.15)
        x = soxr.resample(x, SR, int(SR * factor))
    # room
    if rng.random() < 0.5 * strength:
        ir = room_impulse(rng)
        wet = np.convolve(x, ir)[: len(x)] if len(x) * len(ir) < 4e7 else _fft_conv(x, ir)
        x = wet * (_rms(x) / max(_rms(wet), 1e-9))
    # microphone colour
    if rng.random() < 0.6 * strength:
        tilt = rng.uniform(-6, 6)  # dB per octave re 1 kHz
        fc, q, g = rng.uniform(300, 5000), rng.uniform(0.5, 3), rng.uniform(-10, 10)
        hp = rng.uniform(20, 300)

        def eq(f):
            octv = np.log2(np.maximum(f, 20.0) / 1000.0)
            peak = g * np.exp(-0.5 * ((np.log2(np.maximum(f, 20.0) / fc)) * q * 2) ** 2)
            high_pass = 1.0 / np.sqrt(1.0 + (hp / np.maximum(f, 1.0)) ** 4)
            return 10 ** ((tilt * octv + peak) / 20) * high_pass

        x = _fft_filter(x, eq)
    # band limiting
    r = rng.random()
    if r < 0.2 * strength:  # telephone: 300-3400 Hz through an 8 kHz channel, mu-law
        x = _fft_filter(x, lambda f: ((f > 300) & (f < 3400)).astype(float) * 0.9 + 0.1 * (f < 4000))
        y = soxr.resample(x, SR, 8000)
        peak = max(np.abs(y).max(), 1e-9)
        mu = 255.0
        comp = np.sign(y / peak) * np.log1p(mu * np.abs(y / peak)) / np.log1p(mu)
        comp = np.round(comp * 127) / 127
        y = np.sign(comp) * ((1 + mu) ** np.abs(comp) - 1) / mu * peak
        x = soxr.resample(y, 8000, SR)
    elif r < 0.35 * strength:  # 8 kHz recording (as FSDD)
        x = soxr.resample(soxr.resample(x, SR, 8000), 8000, SR)
    elif r < 0.5 * strength:
        cutoff = rng.uniform(2500, 7000)
        x = _fft_filter(x, lambda f: 1.0 / np.sqrt(1.0 + (f / cutoff) ** 8))
    # noise
    if rng.random() < 0.75 * strength:
        snr = rng.uniform(0, 35) if rng.random() < 0.85 else rng.uniform(-3, 5)
        kinds = ["white", "pink", "brown", "blue", "hum"] + (["babble"] * 3 if babble else [])
        kind = kinds[rng.integers(len(kinds))]
        if kind == "babble":
            noise = np.zeros(len(x))
            for _ in range(rng.integers(2, 6)):
                b = np.asarray(babble[rng.integers(len(babble))], dtype=np.float64)
                if len(b) < len(x):
                    b = np.tile(b, len(x) // max(len(b), 1) + 1)
                off = rng.integers(0, len(b) - len(x) + 1)
                noise += b[off : off + len(x)] / max(_rms(b), 1e-6)
        else:
            noise = colored_noise(len(x), kind, rng)
        x = x + noise * (_rms(x) / max(_rms(noise), 1e-9)) * 10 ** (-snr / 20)
    # gain, occasional clipping
    peak = max(np.abs(x).max(), 1e-9)
    x = x / peak * 10 ** (rng.uniform(-30, 0) / 20)
    if rng.random() < 0.05 * strength:
        x = np.clip(x * rng.uniform(1.5, 4), -1, 1)
    return x.astype(np.float32)


def _fft_conv(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    n = len(x) + len(ir) - 1
    nfft = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(ir, nfft), nfft)[: len(x)]
