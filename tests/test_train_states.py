"""The training recipe sees exactly what the streamer sees (fast: a fake backbone, no Whisper)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phonestream.models.backbone import Backbone, BackboneCTCModel
from phonestream.models.base import Vocabulary
from phonestream.models.torch_heads import ConvHead, LinearHead, to_inference
from phonestream.streaming import StreamConfig, Streamer
from phonestream.train.evaluate import log_posteriors, mean_posteriors
from phonestream.train.states import segments_for
from phonestream.train.trainer import States, batch_logits, head_radius, make_batch


class WindowDependentBackbone(Backbone):
    """States depend on the audio, the frame's position in the window and the window's length, like
    a transformer encoder's do, so any mismatch between training and streaming windows shows."""

    sample_rate, frame_stride, dim, max_window_s = 16000, 320, 6, 30.0

    def num_frames(self, n_samples: int) -> int:
        return (n_samples // 160 + 1) // 2

    def encode_batch(self, windows):
        out = []
        for w in windows:
            n = self.num_frames(len(w))
            pad = np.pad(w, (0, n * 320 - len(w)))
            frames = pad[: n * 320].reshape(n, 320)
            t = np.arange(n)[:, None]
            feats = np.concatenate([frames.mean(1, keepdims=True), frames.std(1, keepdims=True),
                                    t / 50.0, np.full((n, 1), len(w) / 16000), np.sin(t / 3.0),
                                    np.abs(frames).max(1, keepdims=True)], axis=1)
            out.append(feats.astype(np.float32))
        return out

    def config(self):
        return {"type": "fake"}


def _streamed(model, audio, cfg):
    s = Streamer(model, StreamConfig(*cfg))
    s.push(audio)
    s.finish()
    return np.concatenate([b.final for b in s.step()])


def _cached(bb, audio, cfg) -> States:
    """One utterance's states as the cache stage stores them."""
    segs = segments_for(bb, audio, cfg, margin=8)
    return States(
        states=np.concatenate([s for s, *_ in segs]).astype(np.float32),
        seg_start=np.concatenate([[0], np.cumsum([len(s) for s, *_ in segs])[:-1]]).astype(np.int64),
        seg_len=np.array([len(s) for s, *_ in segs]), seg_lo=np.array([lo for _, lo, _, _ in segs]),
        seg_hi=np.array([hi for _, _, hi, _ in segs]), seg_kept=np.array([k for *_, k in segs]),
        utt_segs=[np.arange(len(segs))], ids=["u"], phones=["A B"], config=["x"], margin=8,
    )


@pytest.mark.parametrize("head_cls", [ConvHead, LinearHead])
@pytest.mark.parametrize("cfg", [(480, 960, 240), (320, 640, 80), (640, 1280, 320), None])
def test_cached_segments_reproduce_streamer_posteriors(head_cls, cfg):
    rng = np.random.default_rng(1)
    audio = rng.standard_normal(16000 * 3 + 1234).astype(np.float32) * 0.1
    bb = WindowDependentBackbone()
    torch.manual_seed(0)
    head = (head_cls(bb.dim, 5, hidden=16, kernel=5, layers=2) if head_cls is ConvHead else head_cls(bb.dim, 5)).eval()
    # the NumPy inference head the engine runs, built from the trained PyTorch module's weights
    model = BackboneCTCModel(bb, to_inference(head), Vocabulary(("<blank>", "A", "B", "C", "D"), 0))
    if cfg is None:
        expected = model.log_probs(audio)
    else:
        expected = _streamed(model, audio, cfg)

    data = _cached(bb, audio, cfg)
    vocab = {"<blank>": 0, "A": 1, "B": 2, "C": 3, "D": 4}
    for radius in (None, head_radius(head)):  # the cached margin, and segments cropped to the head's reach
        x, mask, gather, lengths, _, _ = make_batch(data, [0], vocab, radius)
        with torch.inference_mode():
            got = torch.log_softmax(batch_logits(head, x, mask, gather), -1)[0].numpy()
        assert got.shape == expected.shape == (bb.num_frames(len(audio)), 5)
        np.testing.assert_allclose(got, expected, atol=2e-5)


def test_heldout_posteriors_are_the_streamers_and_two_heads_average_as_probabilities():
    """scripts/compare-heads-heldout.py scores cached states through ``log_posteriors``, and NAME=A+B
    through ``mean_posteriors``: the first must be what the engine streams, the second the log of the
    mean of the two heads' streamed posteriors."""
    rng = np.random.default_rng(2)
    audio = rng.standard_normal(16000 * 3 + 1234).astype(np.float32) * 0.1
    bb, cfg, symbols = WindowDependentBackbone(), (320, 640, 80), ["<blank>", "A", "B", "C", "D"]
    vocab = Vocabulary(tuple(symbols), 0)
    heads, streamed = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        head = ConvHead(bb.dim, 5, hidden=16, kernel=5, layers=1).eval()
        heads.append(head)
        streamed.append(_streamed(BackboneCTCModel(bb, to_inference(head), vocab), audio, cfg))
    data = _cached(bb, audio, cfg)
    (got,) = log_posteriors(data, heads[0], symbols)
    np.testing.assert_allclose(got, streamed[0], atol=2e-5)
    (mean,) = mean_posteriors([log_posteriors(data, h, symbols) for h in heads])
    np.testing.assert_allclose(np.exp(mean), (np.exp(streamed[0]) + np.exp(streamed[1])) / 2, atol=2e-5)
    np.testing.assert_allclose(np.exp(mean).sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("chunk_ms", [160, 240])
def test_block_replay_commits_what_a_stream_commits(tiny_model, speechlike, tmp_path, chunk_ms):
    """scripts/tune-decoder-heldout.py scores decoder settings by replaying streamed posteriors in the
    blocks the cache keeps (each window's final frames, from stream_windows): that must commit exactly the
    phonemes a live stream with the same beam search and LM commits (endpointing off, as the tuner has it;
    the final-frames commit rule, since the cache keeps no lookahead frames to search)."""
    from phonestream.beam import BeamDecoder
    from phonestream.engine import Recognizer
    from phonestream.events import Phoneme
    from phonestream.lm import build_kneser_ney
    from phonestream.train.evaluate import replay_in_blocks
    from phonestream.train.states import stream_windows

    lm = build_kneser_ney([["AA", "B", "K", "S"], ["S", "AA", "B"]] * 5, order=3)
    lm.write_arpa(tmp_path / "lm.arpa")
    rec = Recognizer(tiny_model, StreamConfig(chunk_ms, 640, 160), decoder="beam", beam=4, lm=str(tmp_path / "lm.arpa"),
                     lm_weight=0.3, insertion_bonus=1.0, endpoint=False, lookahead=False)
    stream = rec.stream(partials=False)
    record: list = []
    stream.recorder = record
    events = []
    for i in range(0, len(speechlike), 800):
        events += stream.accept(speechlike[i : i + 800])
    events += stream.finish(offline=False)
    streamed = [e.phoneme for e in events if isinstance(e, Phoneme)]
    final = np.concatenate([b.final for blocks, _ in record for b in blocks])
    dec = BeamDecoder(tiny_model.vocab, 0.02, 16000, beam=4, lm=lm, lm_weight=0.3, insertion_bonus=1.0)
    sizes = [k1 - k0 for _, _, k0, k1 in stream_windows(tiny_model, speechlike, (chunk_ms, 640, 160))]
    assert sum(sizes) == len(final)
    assert streamed and replay_in_blocks(dec, final, sizes) == streamed
