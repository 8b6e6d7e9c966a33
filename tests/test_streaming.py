"""Windows, context and stitching: streamed frames are the offline frames."""

import numpy as np
import pytest

from phonestream.streaming import ConfigError, StreamConfig, Streamer


def stream_frames(model, audio, config, piece=321):
    streamer = Streamer(model, config)
    blocks = []
    for i in range(0, len(audio), piece):
        streamer.push(audio[i : i + piece])
        blocks += streamer.step()
    streamer.finish()
    blocks += streamer.step()
    return streamer, blocks


@pytest.mark.parametrize("chunk", [20, 100, 320, 1000])
def test_full_context_stream_equals_offline(tiny_model, speechlike, chunk):
    offline = tiny_model.log_probs(speechlike)
    _, blocks = stream_frames(tiny_model, speechlike, StreamConfig(chunk, 5000, 5000))
    streamed = np.concatenate([b.final for b in blocks])
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=1e-4)


def test_frames_are_contiguous_and_complete_with_short_context(tiny_model, speechlike):
    _, blocks = stream_frames(tiny_model, speechlike, StreamConfig(160, 320, 80))
    starts = [b.start_frame for b in blocks]
    lengths = [len(b.final) for b in blocks]
    assert starts[0] == 0
    assert all(s + n == nxt for s, n, nxt in zip(starts, lengths, starts[1:]))
    assert sum(lengths) == tiny_model.num_frames(len(speechlike))
    assert blocks[-1].last and not any(b.last for b in blocks[:-1])


def test_context_makes_stream_approach_offline(tiny_model, speechlike):
    offline = tiny_model.log_probs(speechlike)
    errs = []
    for ctx in (0, 200, 2000):
        _, blocks = stream_frames(tiny_model, speechlike, StreamConfig(200, ctx, ctx))
        errs.append(np.abs(np.concatenate([b.final for b in blocks]) - offline).mean())
    assert errs[0] > errs[1] > errs[2]


def test_memory_bounded_over_long_stream(tiny_model):
    streamer = Streamer(tiny_model, StreamConfig(320, 640, 160))
    piece = np.zeros(1600, np.float32)
    sizes = []
    for _ in range(400):  # 40 s
        streamer.push(piece)
        streamer.step()
        sizes.append(len(streamer._buf))
    assert max(sizes[50:]) <= (320 + 640 + 160) * 16 + 1600


def test_provisional_frames_cover_the_lookahead(tiny_model, speechlike):
    _, blocks = stream_frames(tiny_model, speechlike, StreamConfig(320, 320, 160), piece=320 * 16)
    assert any(len(b.provisional) > 0 for b in blocks[:-1])
    assert len(blocks[-1].provisional) == 0


@pytest.mark.parametrize("cfg, message", [
    (StreamConfig(0, 0, 0), "--chunk-ms must be positive"),
    (StreamConfig(-20, 0, 0), "--chunk-ms must be positive"),
    (StreamConfig(320, -20, 0), "--left-ms must be zero or more"),
    (StreamConfig(330, 0, 0), "not a multiple of the model's frame stride (20 ms)"),
    (StreamConfig(320, 0, 15), "--right-ms=15 is not a multiple"),
])
def test_bad_sizes_are_refused(tiny_model, cfg, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Streamer(tiny_model, cfg)


def test_chunk_shorter_than_receptive_field_is_refused(tiny_model):
    # wav2vec2's feature encoder needs 400 samples (25 ms) for its first frame.
    with pytest.raises(ConfigError, match="shorter than one model frame"):
        Streamer(tiny_model, StreamConfig(20, 0, 0))


def test_long_offline_decode_uses_strided_chunks(tiny_model, speechlike):
    from phonestream.engine import OFFLINE_MAX_S, Recognizer

    audio = np.tile(speechlike, int(OFFLINE_MAX_S // 3) + 5)  # longer than one offline pass
    rec = Recognizer(tiny_model, StreamConfig(320, 320, 160))
    lp = rec.offline_log_probs(audio)
    assert lp.shape == (tiny_model.num_frames(len(audio)), len(tiny_model.vocab))
    # the first strided window is 20 s of new audio plus 5 s of lookahead: its kept frames are exact
    head = tiny_model.log_probs(audio[: 25 * 16000])
    np.testing.assert_allclose(lp[:1000], head[:1000], atol=1e-4)


def test_latency_presets_order_and_round_to_frames(tiny_model):
    """low < balanced < accurate in lookahead; derived presets stay whole frames; explicit sizes win."""
    cfgs = {name: StreamConfig.for_model(tiny_model, latency=name) for name in ("low", "balanced", "accurate")}
    assert cfgs["balanced"] == StreamConfig.for_model(tiny_model)
    assert cfgs["low"].chunk_ms + cfgs["low"].right_ms < cfgs["balanced"].chunk_ms + cfgs["balanced"].right_ms
    assert cfgs["accurate"].right_ms > cfgs["balanced"].right_ms
    for cfg in cfgs.values():
        cfg.samples(tiny_model)  # raises if not a multiple of the frame stride
    assert StreamConfig.for_model(tiny_model, chunk_ms=100, latency="low").chunk_ms == 100
    with pytest.raises(ConfigError, match="unknown latency preset"):
        StreamConfig.for_model(tiny_model, latency="fast")


def test_model_folder_keeps_its_own_presets(tmp_path):
    from phonestream.models.base import StreamingDefaults

    d = StreamingDefaults(320, 1280, 160, low=(160, 960, 160), accurate=(640, 1920, 320))
    assert StreamingDefaults.from_dict(d.to_dict()) == d
    assert d.preset("low") == (160, 960, 160) and d.preset("accurate") == (640, 1920, 320)
    derived = StreamingDefaults.from_dict({"chunk_ms": 960, "left_ms": 1280, "right_ms": 320})
    assert derived.preset("low") == (480, 1280, 160)


def test_head_runs_only_on_the_frames_the_stream_reads(speechlike):
    """The default model leaves a window's left-context frames out of its head (log_probs_from): the
    frames it returns equal the whole window's, and a stream stitches the same blocks as from full outputs."""
    from phonestream.models import load_model

    model = load_model(None)
    audio = speechlike[: 3 * 16000]
    windows = [audio[:28160], audio[5120:33280], audio[:4000], audio[:320]]
    full = model.log_probs_batch(windows)
    for first in ([0, 0, 0, 0], [64, 1, 2, 5], [len(f) for f in full], [10**6] * 4):
        part = model.log_probs_from(windows, first)
        for f, p, k in zip(full, part, first):
            k = min(k, len(f))
            assert p.shape == f[k:].shape
            np.testing.assert_allclose(p, f[k:], atol=2e-5, rtol=2e-6)

    class Full:  # the same model without the shortcut: every window computed whole
        def __getattr__(self, name):
            return getattr(model, name)

        def log_probs_from(self, windows, first):
            return model.log_probs_batch(windows)

    blocks = {}
    for name, m in (("trimmed", model), ("full", Full())):
        s = Streamer(m, StreamConfig(320, 1280, 160))
        out = []
        for start in range(0, len(audio), 1600):
            s.push(audio[start : start + 1600])
            out += s.step()
        s.finish()
        out += s.step()
        blocks[name] = out
    assert len(blocks["trimmed"]) == len(blocks["full"]) > 5
    for a, b in zip(blocks["trimmed"], blocks["full"]):
        assert a.start_frame == b.start_frame and a.final.shape == b.final.shape
        np.testing.assert_allclose(a.final, b.final, atol=2e-5, rtol=2e-6)
        np.testing.assert_allclose(a.provisional, b.provisional, atol=2e-5, rtol=2e-6)
