"""Endpointing: trailing-silence rules on CTC blank posteriors, placement in real pauses, clean resets."""

import numpy as np
import pytest

from phonestream.endpoint import EndpointConfig, Endpointer
from phonestream.engine import SILENCE_DB, Recognizer
from phonestream.events import Endpoint, Phoneme
from phonestream.models.base import CTCModel
from phonestream.streaming import StreamConfig

FS = 0.02  # seconds per frame


def frames(pattern):
    """log posteriors over (blank, X): 's' speech frame, '.' silence frame; counts in frames."""
    out = []
    for kind, n in pattern:
        p = 0.9 if kind == "s" else 0.02
        out += [[np.log(1 - p), np.log(p)]] * n
    return np.array(out, np.float32)


def scan_all(ep, lp, sizes):
    cuts, start = [], 0
    for n in sizes:
        cuts += [(start + off, e) for off, e in ep.scan(start, lp[start : start + n])]
        start += n
    return cuts


def test_rule2_fires_after_trailing_silence_and_not_inside_speech():
    # 1 s speech, 0.5 s pause (too short), 1 s speech, 2 s pause, 1 s speech
    lp = frames([("s", 50), (".", 25), ("s", 50), (".", 100), ("s", 50)])
    for sizes in ([len(lp)], [7] * 39 + [2], [1] * len(lp)):
        ep = Endpointer(EndpointConfig(), FS, [0])
        cuts = scan_all(ep, lp, sizes)
        assert [c for c, _ in cuts] == [125 + 60]
        (_, event), = cuts
        assert (event.utterance, event.start, event.rule) == (0, 0.0, "silence")
        assert event.end == pytest.approx(3.7) and event.speech_end == pytest.approx(2.5)
        last = ep.finish()
        assert last.utterance == 1 and last.start == pytest.approx(3.7) and last.rule == "end_of_stream"
        assert last.speech_start == pytest.approx(4.5)


def test_rule1_drops_empty_stretches_silently_and_rule3_caps_length():
    ep = Endpointer(EndpointConfig(rule1_s=1.0, max_utterance_s=2.0), FS, [0])
    cuts = scan_all(ep, frames([(".", 120), ("s", 200)]), [320])
    assert cuts[0] == (50, None) and cuts[1] == (100, None)  # nothing decoded: no event, no utterance id
    assert cuts[2][0] == 100 + 100 and cuts[2][1].rule == "max_length" and cuts[2][1].utterance == 0


def test_config_is_checked():
    with pytest.raises(ValueError):
        EndpointConfig(rule2_s=0)
    with pytest.raises(ValueError):
        EndpointConfig(blank_threshold=1.5)


def joined(speechlike, pause_s=2.0, noise_db=-75.0, seed=0):
    """Real speech, a pause of faint noise, the same speech again: (audio, pause start, pause end)."""
    rng = np.random.default_rng(seed)
    speech = speechlike[: int(1.5 * 16000)]
    pause = rng.normal(0, 10 ** (noise_db / 20), int(pause_s * 16000)).astype(np.float32)
    audio = np.concatenate([speech, pause, speech])
    return audio, len(speech) / 16000, (len(speech) + len(pause)) / 16000


def stream_events(rec, audio, piece=800, **options):
    stream = rec.stream(**options)
    events = []
    for i in range(0, len(audio), piece):
        events += stream.accept(audio[i : i + piece])
    return events + stream.finish(offline=False)


class HearsQuietAsBlank(CTCModel):
    """The tiny random model, except that it hears frames quieter than ``quiet_db`` as mostly blank
    (blank 0.8, the rest shared), as a trained model hears a pause. The random model alone hears
    phonemes in any noise (its input is normalised), so it cannot show the endpointer working on what
    a model says about a pause it actually ran on."""

    def __init__(self, inner: CTCModel, quiet_db: float = -45.0) -> None:
        self.inner, self.quiet_db = inner, quiet_db
        self.sample_rate, self.frame_stride, self.vocab = inner.sample_rate, inner.frame_stride, inner.vocab
        self.streaming_defaults, self.description = inner.streaming_defaults, "tiny, quiet frames blank"

    def num_frames(self, n_samples: int) -> int:
        return self.inner.num_frames(n_samples)

    def log_probs_batch(self, windows):
        out = []
        for window, lp in zip(windows, self.inner.log_probs_batch(windows)):
            lp = lp.copy()
            for t in range(len(lp)):
                frame = window[t * self.frame_stride : (t + 1) * self.frame_stride].astype(np.float64)
                if 10 * np.log10(np.mean(frame**2) + 1e-20) < self.quiet_db:
                    lp[t] = np.log(0.2 / (len(self.vocab) - 1))
                    lp[t, self.vocab.blank_id] = np.log(0.8)
            out.append(lp)
        return out


def test_endpoint_falls_in_the_pause_and_decoder_resets(tiny_model, speechlike):
    """The pause (-50 dBFS noise) is louder than the silence gate, so the model runs on every window
    and the endpointer decides from the posteriors the model gave it."""
    audio, pause_start, pause_end = joined(speechlike, noise_db=-50.0)
    assert -50.0 > SILENCE_DB
    rec = Recognizer(HearsQuietAsBlank(tiny_model), StreamConfig(160, 320, 160))
    events = stream_events(rec, audio)
    summary = events[-1].metrics
    assert summary["skipped_windows"] == 0  # not the gate: the model heard the pause
    endpoints = [e for e in events if isinstance(e, Endpoint)]
    assert [e.rule for e in endpoints] == ["silence", "end_of_stream"]
    first = endpoints[0]
    assert pause_start <= first.end <= pause_end and first.speech_end <= pause_start + 0.2
    assert first.end == pytest.approx(first.speech_end + EndpointConfig().rule2_s)
    phonemes = [e for e in events if isinstance(e, Phoneme)]
    assert [p.index for p in phonemes] == list(range(len(phonemes)))
    assert not [p for p in phonemes if pause_start + 0.2 < p.start < pause_end - 0.2]  # nothing in the pause
    order = [type(e).__name__ for e in events if isinstance(e, (Phoneme, Endpoint))]
    cut = order.index("Endpoint")
    assert phonemes[:cut] and phonemes[cut:]
    assert all(p.end <= first.end for p in phonemes[: cut]) and all(p.start >= first.end for p in phonemes[cut:])
    assert summary["utterances"] == 2


def test_a_pause_below_the_silence_gate_skips_the_model_and_still_ends_the_utterance(tiny_model, speechlike):
    """With the random model's own posteriors: a -75 dBFS pause is below the gate, so its windows are
    decoded as blank without running the model, and the endpointer cuts there."""
    audio, pause_start, pause_end = joined(speechlike, noise_db=-75.0)
    rec = Recognizer(tiny_model, StreamConfig(160, 320, 160))
    events = stream_events(rec, audio)
    endpoints = [e for e in events if isinstance(e, Endpoint)]
    assert [e.rule for e in endpoints] == ["silence", "end_of_stream"]
    assert pause_start <= endpoints[0].end <= pause_end
    assert events[-1].metrics["skipped_windows"] > 0
    rec = Recognizer(tiny_model, StreamConfig(160, 320, 160), silence_db=None)  # no gate: noise is heard
    events = stream_events(rec, audio)
    assert events[-1].metrics["skipped_windows"] == 0
    assert [e.rule for e in events if isinstance(e, Endpoint)] == ["end_of_stream"]


def test_endpointing_can_be_switched_off_and_works_with_beam(tiny_model, speechlike):
    audio, _, _ = joined(speechlike)
    rec = Recognizer(tiny_model, StreamConfig(160, 320, 160))
    assert not [e for e in stream_events(rec, audio, endpoint=False) if isinstance(e, Endpoint)]
    beam = [e for e in stream_events(rec, audio, decoder="beam", beam=4, lm="none") if isinstance(e, Endpoint)]
    assert [e.rule for e in beam] == ["silence", "end_of_stream"]


SAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "phonestream" / "samples"


@pytest.mark.skipif(not (SAMPLES.parent / "default_model" / "phonestream.json").exists(),
                    reason="no default model installed")
def test_default_model_endpoints_fall_in_pauses_of_silence_and_noise():
    """Two real recordings joined by a near-silent pause and a noisy one (low-frequency room noise at
    -40 dBFS, loud enough that the model runs on it): an endpoint in each pause, none inside speech,
    no confident phonemes in the pauses. (Broadband hiss is another matter: it can be heard as a faint S.)"""
    from phonestream.audio import load_audio
    from phonestream.models import load_model

    rec = Recognizer(load_model())
    rng = np.random.default_rng(0)
    a = load_audio(SAMPLES / "LJ001-0001.flac", 16000)
    b = load_audio(SAMPLES / "LJ001-0002.flac", 16000)
    quiet = rng.normal(0, 10 ** (-80 / 20), int(2.5 * 16000)).astype(np.float32)
    noise = np.cumsum(rng.normal(0, 1, int(3.0 * 16000)))
    noise -= np.convolve(noise, np.ones(400) / 400, mode="same")  # brown noise without its drift
    noise = (noise / np.sqrt(np.mean(noise**2)) * 10 ** (-40 / 20)).astype(np.float32)
    parts = [a, quiet, b, noise, a[: 3 * 16000]]
    bounds, t = [], 0.0
    for p in parts:
        bounds.append((t, t + len(p) / 16000))
        t += len(p) / 16000
    pauses = [bounds[1], bounds[3]]
    events = stream_events(rec, np.concatenate(parts), piece=1600)
    endpoints = [e for e in events if isinstance(e, Endpoint) and e.rule == "silence"]
    for lo, hi in pauses:
        assert any(lo < e.end <= hi for e in endpoints), (lo, hi, endpoints)
    for e in endpoints:
        assert any(lo < e.end <= hi for lo, hi in pauses), f"endpoint inside speech: {e}"
    phonemes = [e for e in events if isinstance(e, Phoneme)]
    for lo, hi in pauses:  # at most a stray low-confidence phoneme (hidden by --min-confidence 0.3)
        inside = [p for p in phonemes if lo + 0.3 < p.start and p.end < hi - 0.1]
        assert len(inside) <= 1 and all(p.confidence < 0.3 for p in inside), inside
    assert events[-1].metrics["skipped_windows"] > 0
