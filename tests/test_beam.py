"""Prefix beam search: agrees with greedy where it should, uses the LM, and never retracts a commit."""

import numpy as np
import pytest

from phonestream.beam import BeamDecoder
from phonestream.decoding import DecoderConfig, GreedyDecoder, greedy_decode
from phonestream.engine import Recognizer
from phonestream.events import Partial, Phoneme
from phonestream.lm import build_kneser_ney
from phonestream.models.base import Vocabulary
from phonestream.streaming import FrameBlock, StreamConfig

VOCAB = Vocabulary(("<b>", "A", "B", "C", "|"), 0, frozenset({4}))


def peaky(ids, p=0.96):
    lp = np.full((len(ids), len(VOCAB)), np.log((1 - p) / (len(VOCAB) - 1)), np.float32)
    lp[np.arange(len(ids)), ids] = np.log(p)
    return lp


def noisy(n, seed):
    """Posteriors where several symbols compete: beams disagree for a while."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(len(VOCAB), 0.4), n)
    return np.log(p + 1e-6).astype(np.float32)


def run(dec, lp, sizes, lookahead=0):
    out, start = [], 0
    for i, n in enumerate(sizes):
        last = i == len(sizes) - 1
        final, prov = lp[start : start + n], lp[start + n : start + n + lookahead]
        block = FrameBlock(start, final, prov if not last else lp[:0], (start + n) * 320, last)
        out += dec.advance(block)
        dec.partial(block)
        start += n
    return out


def splits(n, rng):
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 30)))
    sizes[-1] -= sum(sizes) - n
    return [s for s in sizes if s > 0]


def key(phonemes):
    return [(p.phoneme, round(p.start, 4), round(p.end, 4)) for p in phonemes]


@pytest.mark.parametrize("beam", [1, 8])
def test_beam_without_lm_equals_greedy_on_peaky_posteriors(beam):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(VOCAB), 300).tolist()
    lp = peaky(ids)
    expected = key(greedy_decode(lp, VOCAB, 0.02, 300 * 320, 16000))
    assert len(expected) > 100  # every phoneme of the utterance is compared, with its start and end
    for sizes in ([300], [1] * 300, splits(300, rng)):  # (confidence is defined differently)
        assert key(run(BeamDecoder(VOCAB, 0.02, 16000, beam=beam), lp, sizes)) == expected


def test_agreement_rule_streams_exactly_the_offline_beam_result():
    """Committing only what every hypothesis agrees on never prunes a hypothesis, so the streamed
    phonemes equal the whole-utterance beam search whatever the block sizes. (A committed phoneme's end
    is its best path's at commit time; the offline path may stretch it a frame or two later.)"""
    lp = noisy(400, 1)
    offline = [p.phoneme for p in run(BeamDecoder(VOCAB, 0.02, 16000, beam=6, commit_wait_s=None), lp, [400])]
    rng = np.random.default_rng(2)
    for _ in range(5):
        streamed = run(BeamDecoder(VOCAB, 0.02, 16000, beam=6, commit_wait_s=None), lp, splits(400, rng), 5)
        assert [p.phoneme for p in streamed] == offline


@pytest.mark.parametrize("lookahead", [False, True])
def test_commits_never_retract_and_are_ordered_under_any_split(lookahead):
    lp = noisy(500, 3)
    rng = np.random.default_rng(4)
    for wait in (0.0, 0.1, None):
        dec = BeamDecoder(VOCAB, 0.02, 16000, beam=5, commit_wait_s=wait, lookahead=lookahead)
        out = run(dec, lp, splits(500, rng), lookahead=8)
        assert [p.index for p in out] == list(range(len(out)))
        for prev, cur in zip(out, out[1:]):
            assert prev.end <= cur.start and prev.committed_at <= cur.committed_at
        for p in out:
            assert p.start < p.end <= 500 * 0.02 and p.committed_at >= p.end - 1e-9 and 0 <= p.confidence <= 1


def test_commits_come_before_the_end_of_the_stream():
    ids = ([1] * 3 + [0] * 5 + [2] * 3 + [0] * 5) * 10
    dec = BeamDecoder(VOCAB, 0.02, 16000, beam=8)
    early = dec.advance(FrameBlock(0, peaky(ids), peaky(ids)[:0], len(ids) * 320, False))
    assert len(early) >= 19  # everything but possibly the last phoneme, without waiting for the end


def test_lm_changes_the_ranking():
    # Frame 4 is slightly more B than A; an LM that has only seen "C A" should pull it to A.
    ids = [3, 3, 0, 0, 1, 0]
    lp = peaky(ids)
    lp[4] = np.log([0.08, 0.44, 0.46, 0.01, 0.01])
    lm = build_kneser_ney([["C", "A"]] * 50, order=2, vocab=["A", "B", "C"])
    plain = run(BeamDecoder(VOCAB, 0.02, 16000, beam=8), lp, [len(ids)])
    with_lm = run(BeamDecoder(VOCAB, 0.02, 16000, beam=8, lm=lm, lm_weight=1.0), lp, [len(ids)])
    assert [p.phoneme for p in plain] == ["C", "B"]
    assert [p.phoneme for p in with_lm] == ["C", "A"]


def test_lookahead_lets_the_right_context_overturn_a_commit():
    """Frame 3 is slightly more A than B, and the LM prefers B after C (it saw "C B" and "A C" only). On
    the final frames alone the commit is "C B"; the provisional frames show a C next, after which "C A C"
    is the better reading, and the lookahead commits A, as the whole utterance decodes."""
    ids = [3, 3, 0, 1, 0, 3, 3, 0]
    lp = peaky(ids)
    lp[3] = np.log([0.08, 0.46, 0.44, 0.01, 0.01])
    lm = build_kneser_ney([["C", "B"]] * 50 + [["A", "C"]] * 50, order=2, vocab=["A", "B", "C"])
    whole = run(BeamDecoder(VOCAB, 0.02, 16000, beam=8, lm=lm, lm_weight=1.0), lp, [len(ids)])
    assert [p.phoneme for p in whole] == ["C", "A", "C"]
    block = FrameBlock(0, lp[:5], lp[5:], 5 * 320, False)
    for lookahead, expected in ((False, ["C", "B"]), (True, ["C", "A"])):
        dec = BeamDecoder(VOCAB, 0.02, 16000, beam=8, lm=lm, lm_weight=1.0, lookahead=lookahead)
        assert [p.phoneme for p in dec.advance(block)] == expected
        assert dec.partial(block) == ["C"]  # the provisional C, read by the beam (True) or greedily
        rest = dec.advance(FrameBlock(5, lp[5:], lp[:0], len(ids) * 320, True))
        assert [p.phoneme for p in rest] == ["C"]  # committed stays committed; the stream goes on from it


def test_lookahead_partial_is_the_beam_reading_and_commits_what_closed_on_its_path():
    lp = peaky([1, 1, 0, 2, 2, 0, 3])
    dec = BeamDecoder(VOCAB, 0.02, 16000, commit_wait_s=0.0, lookahead=True)
    block = FrameBlock(0, lp[:4], lp[4:], 4 * 320, False)
    assert [p.phoneme for p in dec.advance(block)] == ["A"]  # B goes on into the lookahead: open
    assert dec.partial(block) == ["B", "C"]
    block = FrameBlock(0, lp[:5], lp[5:], 5 * 320, False)
    dec = BeamDecoder(VOCAB, 0.02, 16000, commit_wait_s=0.0, lookahead=True)
    assert [p.phoneme for p in dec.advance(block)] == ["A", "B"]  # B ends at the boundary on the lookahead's path
    assert dec.partial(block) == ["C"]
    dec.advance(FrameBlock(5, lp[5:6], lp[:0], 6 * 320, False))  # a block without lookahead frames
    assert dec.partial(FrameBlock(5, lp[5:6], lp[:0], 6 * 320, False)) == []


def test_insertion_bonus_trades_deletions_for_insertions():
    ids = [1, 0, 0, 2, 0]
    lp = peaky(ids)
    lp[1] = np.log([0.6, 0.05, 0.05, 0.29, 0.01])  # a weak C between A and B
    assert [p.phoneme for p in run(BeamDecoder(VOCAB, 0.02, 16000), lp, [5])] == ["A", "B"]
    bonus = run(BeamDecoder(VOCAB, 0.02, 16000, insertion_bonus=2.0), lp, [5])
    assert [p.phoneme for p in bonus] == ["A", "C", "B"]


def test_partial_is_best_tail_then_lookahead():
    lp = peaky([1, 1, 0, 2, 2, 0, 3])
    dec = BeamDecoder(VOCAB, 0.02, 16000, commit_wait_s=0.0)
    block = FrameBlock(0, lp[:4], lp[4:], 4 * 320, False)
    committed = dec.advance(block)
    assert [p.phoneme for p in committed] == ["A"]
    assert dec.partial(block) == ["B", "C"]  # B open (spans the boundary, not doubled), C from the lookahead


def test_reset_starts_a_new_utterance_and_keeps_counting():
    dec = BeamDecoder(VOCAB, 0.02, 16000)
    first = dec.advance(FrameBlock(0, peaky([1, 0]), peaky([])[:0], 640, True))
    dec.reset()
    second = dec.advance(FrameBlock(2, peaky([1, 0]), peaky([])[:0], 1280, True))
    assert [p.index for p in first + second] == [0, 1] and second[0].start == pytest.approx(0.04)


def test_decoder_config_validates_and_overrides():
    with pytest.raises(ValueError):
        DecoderConfig("viterbi")
    with pytest.raises(ValueError):
        DecoderConfig("beam", beam=0)
    cfg = DecoderConfig().with_options(decoder="beam", beam=3, lm=None)
    assert (cfg.kind, cfg.beam, cfg.lm) == ("beam", 3, "auto")
    assert DecoderConfig("beam", lm="none").lm_path("/nowhere") is None


def test_recognizer_streams_with_beam_and_lm(tiny_model, speechlike, tmp_path):
    lm = build_kneser_ney([["AA", "B", "K", "S"], ["S", "AA"]] * 5, order=3)
    path = tmp_path / "lm.arpa"
    lm.write_arpa(path)
    rec = Recognizer(tiny_model, StreamConfig(160, 320, 160), decoder="beam", beam=4, lm=str(path), lm_weight=0.3)
    stream = rec.stream(keep_audio=True)
    events = []
    for i in range(0, 16000 * 2, 1600):
        events += stream.accept(speechlike[i : i + 1600])
    events += stream.finish()
    phonemes = [e for e in events if isinstance(e, Phoneme)]
    assert phonemes and any(isinstance(e, Partial) for e in events)
    summary = events[-1].metrics
    assert summary["decoder"].startswith("beam 4 + LM lm.arpa")
    assert summary["decoder"].endswith(", lookahead commit")  # on by default
    off = rec.stream(lookahead=False)
    assert not off.decoder.lookahead
    for i in range(0, 16000, 1600):
        off.accept(speechlike[i : i + 1600])
    assert "lookahead" not in off.finish()[-1].metrics["decoder"]
    # the lookahead commit, per stream or for the recognizer: the same stream, nothing retracted or reordered
    for ahead in (rec.stream(lookahead=True), Recognizer(tiny_model, StreamConfig(160, 320, 160), decoder="beam",
                                                         lm=str(path), lookahead=True).stream()):
        assert ahead.decoder.lookahead
        out = []
        for i in range(0, 16000 * 2, 1600):
            out += ahead.accept(speechlike[i : i + 1600])
        out += ahead.finish()
        committed = [e for e in out if isinstance(e, Phoneme)]
        assert [p.index for p in committed] == list(range(len(committed))) and committed
        assert all(a.end <= b.start for a, b in zip(committed, committed[1:]))
        assert out[-1].metrics["decoder"].endswith(", lookahead commit")
    # per-stream override back to greedy
    assert rec.stream(decoder="greedy").decoder.__class__ is GreedyDecoder
    with pytest.raises(ValueError):
        rec.stream(decoder="nope")


def test_auto_decoder_is_beam_only_with_an_lm(tiny_model, tmp_path):
    """The default decoder: the beam search where the model has an LM beside it (the shipped model
    does) or one is given; greedy otherwise, and with --lm none."""
    from phonestream.beam import BeamDecoder

    assert DecoderConfig().kind == "auto"
    assert DecoderConfig().resolve(tmp_path).kind == "greedy"  # no lm.arpa* there
    build_kneser_ney([["AA", "B", "S"]] * 5, order=2).write_arpa(tmp_path / "lm.arpa")
    assert DecoderConfig().resolve(tmp_path).kind == "beam"
    assert DecoderConfig(lm="none").resolve(tmp_path).kind == "greedy"

    assert Recognizer(tiny_model, StreamConfig(160, 320, 160)).stream().decoder.__class__ is GreedyDecoder
    rec = Recognizer(tiny_model, StreamConfig(160, 320, 160), model_dir=tmp_path)
    assert rec.stream().decoder.__class__ is BeamDecoder and rec.decoder_config().lm_path(tmp_path) is not None
    assert rec.stream(lm="none").decoder.__class__ is GreedyDecoder
    assert rec.stream(decoder="greedy").decoder.__class__ is GreedyDecoder


def test_commit_heldout_script_scores_both_rules_on_the_same_streams(tmp_path):
    """scripts/commit-heldout.py: a held-out synthetic utterance (here the second sample under the id of
    one, ``espeak-00039``) and FSDD takes 45-49, streamed once, decoded by both commit rules."""
    import subprocess
    import sys
    from pathlib import Path

    from phonestream.models import DEFAULT_MODEL_DIR
    from phonestream.train.evaluate import SHARED, is_synth_dev

    if not (SHARED / "fsdd" / "manifest.tsv").exists():
        pytest.skip("needs ../shared/data (FSDD)")
    assert is_synth_dev("espeak-00039")
    sample = DEFAULT_MODEL_DIR.parent / "samples" / "LJ001-0002.flac"
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "manifest.tsv").write_text(
        "id\taudio\tduration\tsource\tvoice\ttext\tphones\n"
        f"espeak-00039\t{sample}\t2.0\tespeak\tx\tin being comparatively modern\t"
        "IH N B IY IH NG K AH M P EH R AH T IH V L IY M AA D ER N\n")
    script = Path(__file__).resolve().parents[1] / "scripts" / "commit-heldout.py"
    out = subprocess.run([sys.executable, str(script), "--work", str(tmp_path), "--lm",
                          str(DEFAULT_MODEL_DIR / "lm.arpa.gz"), "--latency", "balanced", "--limit", "3",
                          "--blend", "0.35"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| balanced")]
    assert "4 recordings" in out and [r[1].strip() for r in rows] == ["final", "lookahead", "final, blend 0.35"], out
    for r in rows:  # preset, rule, synth, r1, fsdd, delay, decoder ms
        assert 0 <= float(r[2]) < 75 and float(r[-1]) > 0 and "/" in r[-2]  # augmented: noise, room, babble


def test_blended_mixes_each_final_frame_with_its_earlier_provisional_estimate():
    """scripts/commit-heldout.py's blended(): frame f's final row mixed with the row the step before gave
    it as provisional; frames with no earlier estimate (the first step's) stay as they were."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "commit-heldout.py"
    spec = importlib.util.spec_from_file_location("commit_heldout", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lp = noisy(10, 7)
    earlier = noisy(10, 8)
    record = [([FrameBlock(0, lp[:4], earlier[4:7], 4 * 320, False)], 0.1),
              ([FrameBlock(4, lp[4:8], lp[:0], 8 * 320, True)], 0.1)]
    assert mod.blended(record, 0.0) is record
    out = mod.blended(record, 0.25)
    np.testing.assert_array_equal(out[0][0][0].final, lp[:4])
    mixed = out[1][0][0].final
    expect = np.log(0.75 * np.exp(lp[4:7].astype(np.float64)) + 0.25 * np.exp(earlier[4:7].astype(np.float64)))
    np.testing.assert_allclose(mixed[:3], expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mixed[3], lp[7])  # no earlier estimate of frame 7
    assert out[1][0][0].last and out[1][1] == 0.1
