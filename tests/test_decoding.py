"""Incremental greedy CTC and the commit rule."""

import numpy as np
import pytest

from phonestream.decoding import GreedyDecoder, greedy_decode
from phonestream.engine import Recognizer
from phonestream.events import Partial, Phoneme
from phonestream.models.base import Vocabulary
from phonestream.streaming import FrameBlock, StreamConfig

VOCAB = Vocabulary(("<b>", "A", "B", "|"), 0, frozenset({3}))


def onehot(ids):
    lp = np.full((len(ids), len(VOCAB)), np.log(0.01), np.float32)
    lp[np.arange(len(ids)), ids] = np.log(0.97)
    return lp


def decode_in_blocks(ids, sizes):
    lp = onehot(ids)
    dec = GreedyDecoder(VOCAB, 0.02, 16000)
    out, start = [], 0
    for i, n in enumerate(sizes):
        last = i == len(sizes) - 1
        out += dec.advance(FrameBlock(start, lp[start : start + n], lp[:0], (start + n) * 320, last))
        start += n
    return out


def test_symbol_spanning_boundary_is_not_doubled():
    ids = [0, 1, 1, 1, 1, 0, 2, 2]
    phones = decode_in_blocks(ids, [3, 5])
    assert [p.phoneme for p in phones] == ["A", "B"]
    assert (phones[0].start, phones[0].end) == (0.02, 0.1)


def test_repeat_separated_by_blank_is_kept_across_boundary():
    phones = decode_in_blocks([1, 1, 0, 1, 1], [2, 1, 2])
    assert [p.phoneme for p in phones] == ["A", "A"]


def test_skip_tokens_act_as_blank():
    phones = decode_in_blocks([1, 3, 1, 2], [4])
    assert [p.phoneme for p in phones] == ["A", "A", "B"]


def test_every_blocking_gives_the_offline_result():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, 200).tolist()
    offline = [(p.phoneme, p.start, p.end) for p in greedy_decode(onehot(ids), VOCAB, 0.02, 200 * 320, 16000)]
    for sizes in ([200], [1] * 200, [7] * 28 + [4], [50, 150]):
        assert [(p.phoneme, p.start, p.end) for p in decode_in_blocks(ids, sizes)] == offline


def test_phoneme_committed_only_when_closed_by_a_final_frame():
    dec = GreedyDecoder(VOCAB, 0.02, 16000)
    lp = onehot([1, 1, 2])
    assert dec.advance(FrameBlock(0, lp[:2], lp[2:], 640, False)) == []  # A still open
    assert dec.partial(FrameBlock(0, lp[:2], lp[2:], 640, False)) == ["A", "B"]
    committed = dec.advance(FrameBlock(2, lp[2:], lp[:0], 960, False))
    assert [p.phoneme for p in committed] == ["A"] and committed[0].committed_at == 960 / 16000


def test_confidence_is_mean_posterior():
    lp = onehot([1, 1, 0])
    lp[1, 1] = np.log(0.5)
    (p,) = greedy_decode(lp, VOCAB, 0.02, 960, 16000)
    assert abs(p.confidence - (0.97 + 0.5) / 2) < 1e-5


def stream_events(model, audio, config, piece, recorder=None):
    """Events of a stream fed ``piece`` samples at a time; ``recorder`` (a list) receives the blocks
    of frames its decoder was given."""
    stream = Recognizer(model, config).stream(keep_audio=True)
    stream.recorder = recorder
    events = []
    for i in range(0, len(audio), piece):
        events += stream.accept(audio[i : i + piece])
    events += stream.finish(offline=True)
    return events


def test_stream_never_retracts_and_timestamps_are_sane(tiny_model, speechlike):
    duration = len(speechlike) / 16000
    recorder: list = []
    events = stream_events(tiny_model, speechlike, StreamConfig(160, 320, 160), 160, recorder)
    phonemes = [e for e in events if isinstance(e, Phoneme)]
    assert len(phonemes) > 5 and any(isinstance(e, Partial) for e in events)
    assert [p.index for p in phonemes] == list(range(len(phonemes)))
    for prev, cur in zip(phonemes, phonemes[1:]):
        assert prev.end <= cur.start and prev.committed_at <= cur.committed_at
    for p in phonemes:
        assert 0 <= p.start < p.end <= duration
        assert p.committed_at >= p.end and 0 < p.confidence <= 1

    # Never retracted: a committed phoneme is read from final frames only, which never change, so what
    # the stream committed step by step is exactly the greedy reading of all its final frames at once;
    # a phoneme committed from a lookahead frame, or a run cut at a step boundary, would not be.
    blocks = [b for step, _ in recorder for b in step]
    assert [b.start_frame for b in blocks] == list(np.cumsum([0] + [len(b.final) for b in blocks[:-1]]))
    truth = greedy_decode(np.concatenate([b.final for b in blocks]), tiny_model.vocab, 0.02, len(speechlike),
                          16000)
    assert [(p.phoneme, p.start, p.end) for p in phonemes] == [(p.phoneme, p.start, p.end) for p in truth]


def test_full_context_stream_matches_offline_decode(tiny_model, speechlike):
    events = stream_events(tiny_model, speechlike, StreamConfig(100, 5000, 5000), 320)
    summary = events[-1].metrics
    assert summary["stream_vs_offline"]["edit_distance"] == 0
    assert summary["phoneme_string"] == summary["offline_string"]


def test_offline_comparison_runs_only_when_asked(tiny_model, speechlike):
    """The summary never decodes the audio a second time on its own: only ``finish(offline=True)`` (or
    ``compare_offline()``) does, and only on a stream that kept its audio."""
    rec = Recognizer(tiny_model, StreamConfig(160, 320, 160))
    kept = rec.stream(keep_audio=True)
    kept.accept(speechlike)
    summary = kept.finish()[-1].metrics
    assert "phoneme_string" in summary and not {"offline_string", "stream_vs_offline"} & set(summary)
    comparison = kept.compare_offline()
    assert set(comparison) == {"offline_rtf", "offline_string", "stream_vs_offline"}
    not_kept = rec.stream()
    not_kept.accept(speechlike)
    with pytest.raises(ValueError, match="keep_audio"):
        not_kept.finish(offline=True)
