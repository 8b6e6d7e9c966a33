"""The recipe end to end on a handful of clips: cache, one training step, export, load (seconds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from phonestream.models import ModelError, load_model
from phonestream.models.base import StreamingDefaults
from phonestream.train.cli import TrainError
from phonestream.train.phones import SYMBOLS
from phonestream.train.pipeline import export_model
from phonestream.train.states import Item, cache_shard
from phonestream.train.trainer import TrainConfig, load_states, train_head


def _clips(folder: Path, speechlike: np.ndarray) -> list[Item]:
    items = []
    phones = ["P R IH N T IH NG", "IH N DH AH", "OW N L IY S EH N S"]
    for i, ph in enumerate(phones):
        path = folder / f"c{i}.wav"
        sf.write(path, speechlike[i * 16000 : (i + 1) * 16000], 16000)
        items.append(Item(f"c{i}", str(path), ph, "test"))
    return items


def _one_clip_work(tmp_path: Path, speechlike: np.ndarray, monkeypatch) -> Path:
    """A work folder whose synthetic set is one training clip and whose FSDD training set is another."""
    from phonestream.train import pipeline
    from phonestream.train.evaluate import is_synth_dev

    clips = _clips(tmp_path, speechlike)
    work = tmp_path / "work"
    (work / "synth").mkdir(parents=True)
    uid = next(u for u in (f"espeak-{i:05d}" for i in range(40)) if not is_synth_dev(u))
    (work / "synth" / "manifest.tsv").write_text(
        "id\taudio\tduration_s\tsource\tvoice\ttext\tphones\n"
        f"{uid}\t{Path(clips[0].path).resolve()}\t1.0\tespeak\tv\tt\t{clips[0].phones}\n")
    monkeypatch.setattr(pipeline, "fsdd_train_items", lambda root=None: clips[1:2])
    return work


@pytest.mark.parametrize("encoder", ["tiny.en", "base"])
def test_whisper_recipe_one_step_export_and_load(tmp_path, speechlike, encoder, monkeypatch):
    """Either Whisper encoder: the exported folder names the encoder its head was trained on."""
    import json

    from phonestream.models.whisper import ENCODERS, WhisperBackbone

    monkeypatch.setenv("PHONESTREAM_CACHE", str(tmp_path / "enc-cache"))  # base's halves joined afresh
    bb = WhisperBackbone(threads=1, encoder=encoder)
    dim = ENCODERS[encoder].dim
    items = _clips(tmp_path, speechlike)
    shard = tmp_path / "cache" / "s.npz"
    cache_shard(bb, items, shard, seed=0, augment_audio=True, log_every=0)
    data = load_states([shard])
    assert len(data.ids) == 3 and data.states.shape[1] == dim
    # 1 s = 50 frames whatever the windows; speed perturbation may stretch a clip by up to 15%
    assert all(40 <= int(data.seg_kept[s].sum()) <= 60 for s in data.utt_segs)
    cfg = TrainConfig(head={"type": "conv", "hidden": 32, "kernel": 5, "layers": 1}, max_epochs=1, eval_every=10**6,
                      encoder=encoder)
    train_head(data, list(SYMBOLS), tmp_path / "run", cfg, dim, None, lambda m: None)
    assert (tmp_path / "run" / "ckpt.pt").exists()
    out = export_model(tmp_path / "run" / "last.pt", tmp_path / "model", StreamingDefaults(640, 1280, 320))
    assert json.loads((out / "phonestream.json").read_text())["backbone"]["type"] == ENCODERS[encoder].config_key
    model = load_model(str(out))
    assert model.vocab.symbols == SYMBOLS
    lp = model.log_probs(speechlike[:16000])
    assert lp.shape == (50, 40) and np.isfinite(lp).all()
    assert (out / "NOTICE").exists()
    assert (out / "lm.arpa.gz").exists()  # decodes with the default LM, as the model it may replace


def test_custom_backbone_head_fits_and_loads(tmp_path, speechlike, tiny_encoder_dir):
    from phonestream.train.custom import fit_custom

    items = _clips(tmp_path, speechlike)
    manifest = tmp_path / "train.tsv"
    manifest.write_text("audio\tphones\n" + "".join(f"{Path(i.path).name}\t{i.phones}\n" for i in items))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["<blank>"] + sorted({p for i in items for p in i.phones.split()})) + "\n")
    out = fit_custom(str(tiny_encoder_dir), vocab, manifest, tmp_path / "mine", tmp_path / "work",
                     {"type": "linear"}, minutes=0.1, epochs=1, log=lambda m: None)
    model = load_model(str(out))
    assert model.vocab.symbols[0] == "<blank>"
    lp = model.log_probs(speechlike[:16000])
    assert lp.shape[1] == len(model.vocab) and np.isfinite(lp).all()


def test_cache_stage_keeps_the_real_speech_share_with_fsdd_copies(tmp_path, speechlike, monkeypatch):
    """``--fsdd-copies`` caches the FSDD takes (the only real speech) more often than the synthetic rounds,
    ``--round-copies`` a named round more often than the others, per round as many shards as copies x
    workers; one utterance in 25 of a round is held out."""
    from phonestream.train import pipeline
    from phonestream.train.__main__ import recipe
    from phonestream.train.evaluate import is_synth_dev

    clips = _clips(tmp_path, speechlike)
    synth = tmp_path / "work" / "synth"
    synth.mkdir(parents=True)
    uids = [u for u in (f"r3-kokoro-{i:05d}" for i in range(40)) if not is_synth_dev(u)][:2]
    uids += [u for u in (f"espeak-{i:05d}" for i in range(40)) if not is_synth_dev(u)][:1]  # round 1
    rows = ["id\taudio\tduration_s\tsource\tvoice\ttext\tphones"]
    rows += [f"{u}\t{Path(c.path).resolve()}\t1.0\tkokoro\tv\tt\t{c.phones}" for u, c in zip(uids, clips)]
    (synth / "manifest.tsv").write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(pipeline, "fsdd_train_items", lambda root=None: clips[2:])
    assert recipe(["cache", "--work", str(tmp_path / "work"), "--rounds", "3", "--copies", "1",
                   "--fsdd-copies", "3", "--round-copies", "1=2", "--workers", "1"]) == 0
    shards = sorted(p.name for p in (tmp_path / "work" / "cache").glob("*.npz"))
    assert shards == ["fsdd-copy0-part0of1.npz", "fsdd-copy1-part0of1.npz", "fsdd-copy2-part0of1.npz",
                      "synth-r1-copy0-part0of1.npz", "synth-r1-copy1-part0of1.npz", "synth-r3-copy0-part0of1.npz"]
    assert load_states([tmp_path / "work" / "cache" / "synth-r3-copy0-part0of1.npz"]).ids == uids[:2]
    assert load_states([tmp_path / "work" / "cache" / "synth-r1-copy1-part0of1.npz"]).ids == uids[2:]
    # the recipe's log says when the stage finished, so its duration can be read back from a run
    assert "min after the command started" in (tmp_path / "work" / "logs" / "cache.log").read_text()


def test_eval_states_encode_a_changed_set_afresh(tmp_path, speechlike):
    """Cached held-out / dev states are named by their items: a set that gained utterances (a new synthesis
    round) or changed labels (an edited dev manifest) is encoded again, never read stale."""
    from phonestream.models.whisper import WhisperBackbone
    from phonestream.train.evaluate import eval_states

    bb = WhisperBackbone(threads=1)
    clips = _clips(tmp_path, speechlike)
    cache = tmp_path / "eval-cache"
    assert eval_states(bb, "dev", clips[:2], None, cache).ids == ["c0", "c1"]
    assert eval_states(bb, "dev", clips[:2], None, cache).ids == ["c0", "c1"]  # the same set: read back
    assert len(list(cache.glob("*.npz"))) == 1
    assert eval_states(bb, "dev", clips, None, cache).ids == ["c0", "c1", "c2"]
    relabelled = [Item(c.uid, c.path, "AA", c.source) for c in clips]
    assert eval_states(bb, "dev", relabelled, None, cache).phones == ["AA"] * 3
    assert len(list(cache.glob("*.npz"))) == 3
    # another augmentation draw (compare-heads-heldout --draws): the same utterances, degraded otherwise
    first, other = (eval_states(bb, "aug", clips, None, cache, augment_audio=True, draw=d) for d in (0, 1))
    assert first.ids == other.ids and not np.array_equal(first.states, other.states)
    assert np.array_equal(first.states, eval_states(bb, "aug", clips, None, cache, augment_audio=True).states)
    assert len(list(cache.glob("aug-*.npz"))) == 2


def test_cache_stage_with_windows_streams_through_those_windows_only(tmp_path, speechlike, monkeypatch):
    """``--windows`` caches every utterance through one of the named windows (no whole-utterance ones), in
    shards named after them, augmented with other draws than the mix's shards, which it leaves alone."""
    from phonestream.train import pipeline
    from phonestream.train.__main__ import recipe
    from phonestream.train.evaluate import is_synth_dev

    clips = _clips(tmp_path, speechlike)
    (tmp_path / "work" / "synth").mkdir(parents=True)
    uid = next(u for u in (f"espeak-{i:05d}" for i in range(40)) if not is_synth_dev(u))  # round 1
    (tmp_path / "work" / "synth" / "manifest.tsv").write_text(
        "id\taudio\tduration_s\tsource\tvoice\ttext\tphones\n"
        f"{uid}\t{Path(clips[0].path).resolve()}\t1.0\tespeak\tv\tt\t{clips[0].phones}\n")
    monkeypatch.setattr(pipeline, "fsdd_train_items", lambda root=None: clips)
    work = str(tmp_path / "work")
    assert recipe(["cache", "--work", work, "--copies", "1", "--workers", "1"]) == 0
    assert recipe(["cache", "--work", work, "--copies", "2", "--workers", "1",
                   "--windows", "balanced,160-1280-160"]) == 0
    cache = tmp_path / "work" / "cache"
    named = [f"{tag}-w240-1920-320_160-1280-160-copy{c}-part0of1.npz" for tag in ("fsdd", "synth-r1") for c in (0, 1)]
    assert sorted(p.name for p in cache.glob("*.npz")) == sorted(
        ["fsdd-copy0-part0of1.npz", "synth-r1-copy0-part0of1.npz", *named])
    configs = []
    for name in named:
        with np.load(cache / name) as z:
            configs += list(z["config"])
    assert len(configs) == 2 * (3 + 1) and set(configs) <= {"240/1920/320", "160/1280/160"}
    mix = load_states([cache / "fsdd-copy0-part0of1.npz"])
    named = load_states([cache / named[0]])
    assert sorted(mix.ids) == sorted(named.ids) == ["c0", "c1", "c2"]
    # other augmentation draws: the states differ even where both happened to stream the same window
    assert not np.array_equal(mix.states[:50], named.states[:50])


@pytest.mark.parametrize("text", ["250-1920-320", "0-1920-320", "balanced,fast", "240-1920", ","])
def test_windows_option_rejects_what_is_not_a_window(text):
    from phonestream.train.cli import TrainError, parse_windows

    with pytest.raises(TrainError):
        parse_windows(text)


def test_fit_with_init_starts_from_another_runs_head(tmp_path, speechlike):
    """``fit --init RUN`` starts from RUN's weights (with a zero learning rate they come out unchanged) and
    refuses a checkpoint of another head shape in one line."""
    import torch

    from phonestream.models.whisper import WhisperBackbone

    bb = WhisperBackbone(threads=1)
    shard = tmp_path / "cache" / "s.npz"
    cache_shard(bb, _clips(tmp_path, speechlike), shard, seed=0, augment_audio=False, log_every=0)
    data = load_states([shard])
    spec = {"type": "conv", "hidden": 16, "kernel": 3, "layers": 2}
    train_head(data, list(SYMBOLS), tmp_path / "a", TrainConfig(head=spec, max_epochs=1, eval_every=10**6, seed=1),
               bb.dim, None, lambda m: None)
    logs: list[str] = []
    cfg = TrainConfig(head=spec, max_epochs=1, eval_every=10**6, seed=2, lr=1e-12, weight_decay=0.0,
                      init=str(tmp_path / "a" / "last.pt"))
    train_head(data, list(SYMBOLS), tmp_path / "b", cfg, bb.dim, None, logs.append)
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=False)["head"] for r in ("a", "b"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any("started from the head in" in m for m in logs)
    other = TrainConfig(head={**spec, "layers": 1}, max_epochs=1, init=str(tmp_path / "a" / "last.pt"))
    with pytest.raises(ValueError, match="--init .* holds a"):
        train_head(data, list(SYMBOLS), tmp_path / "c", other, bb.dim, None, lambda m: None)


def test_data_stage_keep_makes_the_same_utterances_as_the_full_set(tmp_path, monkeypatch):
    """``stage_data(keep=...)`` (how scripts/commit-heldout.py makes only the held-out utterances) asks
    for exactly those jobs of the full set, each with the voice and prosody it has there."""
    from phonestream.train import pipeline, synth, text
    from phonestream.train.evaluate import is_synth_dev

    asked: list[list] = []
    monkeypatch.setattr(text, "load_sentences", lambda *a, **k: [f"sentence {i}" for i in range(20000)])
    monkeypatch.setattr(synth, "synthesise", lambda jobs, out, workers=2: asked.append(jobs) or out / "manifest.tsv")
    pipeline.stage_data(tmp_path, rounds=4)
    pipeline.stage_data(tmp_path, rounds=4, keep=is_synth_dev)
    full, held = asked
    assert held == [j for j in full if is_synth_dev(j.uid)]
    assert 0 < len(held) < len(full) / 10 and {j.source for j in held} >= {"espeak", "kokoro"}


def test_cache_with_teacher_stores_its_offline_posteriors_with_the_same_draws(tmp_path, speechlike,
                                                                              frozen_default):
    """``cache --teacher``: the states are those of a plain cache with the same seed (the teacher draws
    nothing), and beside them, per utterance, the teacher head's log posteriors of the whole utterance,
    as the model folder computes them offline."""
    from phonestream.models.whisper import WhisperBackbone
    from phonestream.train.pipeline import load_teacher

    bb = WhisperBackbone(threads=1)
    items = _clips(tmp_path, speechlike)
    teacher = load_teacher(frozen_default, "tiny.en")
    cache_shard(bb, items, tmp_path / "plain.npz", seed=3, augment_audio=False, log_every=0)
    cache_shard(bb, items, tmp_path / "taught.npz", seed=3, augment_audio=False, log_every=0, teacher=teacher)
    plain, taught = load_states([tmp_path / "plain.npz"]), load_states([tmp_path / "taught.npz"], teacher=True)
    assert plain.teacher is None and np.array_equal(plain.states, taught.states)
    assert plain.config == taught.config and taught.teacher_name.startswith(f"{frozen_default.name}@")
    model = load_model(str(frozen_default))
    for u, it in enumerate(items):
        n = int(taught.seg_kept[taught.utt_segs[u]].sum())
        got = taught.teacher[taught.teacher_start[u] : taught.teacher_start[u] + n].astype(np.float32)
        want = model.log_probs(sf.read(it.path, dtype="float32")[0])
        assert got.shape == want.shape
        np.testing.assert_allclose(np.exp(got), np.exp(want), atol=2e-3)
    with pytest.raises(TrainError, match="plain.npz has none"):
        load_states([tmp_path / "plain.npz", tmp_path / "taught.npz"], teacher=True)
    with pytest.raises(TrainError, match="reads whisper-tiny.en-ct2 states, not the base"):
        load_teacher(frozen_default, "base")
    with pytest.raises(TrainError, match="reads states with a 0 ms tail, not the 300 ms being cached"):
        load_teacher(frozen_default, "tiny.en", 300)
    tuned = tmp_path / "tuned"
    shutil.copytree(frozen_default, tuned)
    meta = json.loads((tuned / "phonestream.json").read_text())
    (tuned / "phonestream.json").write_text(json.dumps({**meta, "backbone": {**meta["backbone"],
                                                                           "weights": "encoder.safetensors"}}))
    with pytest.raises(TrainError, match="fine-tuned encoder's states"):
        load_teacher(tuned, "tiny.en")


def test_distill_loss_is_zero_at_the_teacher_and_pulls_towards_it(tmp_path, speechlike, frozen_default):
    """The KL term: zero where the head says what the teacher says, positive elsewhere, only over each
    utterance's own frames; a distilled fit runs from a model folder's head (``fit --init DIR``)."""
    import torch

    from phonestream.models.whisper import WhisperBackbone
    from phonestream.train.pipeline import load_teacher
    from phonestream.train.trainer import distill_loss

    t = torch.log_softmax(torch.randn(2, 7, 40), -1)
    lengths, tl = torch.tensor([7, 4]), torch.tensor([3, 2])
    assert distill_loss(t, t, lengths, tl).abs() < 1e-6
    other = torch.randn(2, 7, 40)
    moved = other.clone()
    moved[1, 4:] = 100.0  # past the second utterance's end: not counted
    assert distill_loss(other, t, lengths, tl) > 0
    assert torch.allclose(distill_loss(other, t, lengths, tl), distill_loss(moved, t, lengths, tl))

    bb = WhisperBackbone(threads=1)
    shard = tmp_path / "cache" / "s.npz"
    cache_shard(bb, _clips(tmp_path, speechlike), shard, seed=0, log_every=0,
                teacher=load_teacher(frozen_default, "tiny.en"))
    data = load_states([shard], teacher=True)
    spec = {"type": "conv", "hidden": 256, "kernel": 5, "layers": 2}
    logs: list[str] = []
    cfg = TrainConfig(head=spec, max_epochs=1, eval_every=10**6, init=str(frozen_default), distill=1.0)
    train_head(data, list(SYMBOLS), tmp_path / "run", cfg, bb.dim, None, logs.append)
    assert any(f"started from the head in {frozen_default}" in m for m in logs)
    with pytest.raises(ValueError, match="distill > 0 needs"):
        train_head(load_states([shard]), list(SYMBOLS), tmp_path / "run2", cfg, bb.dim, None, lambda m: None)


def test_synth_items_come_in_one_order_whatever_order_synthesis_finished_in(tmp_path, speechlike):
    """Augmentation draws follow the item order, and the manifest's order is the order synthesis finished
    (it differs between runs and after a resumed one): the recipe reads the items in one fixed order,
    held-out and training apart, and that order mixes the engines (the babble comes from earlier items)."""
    from phonestream.train.evaluate import is_synth_dev
    from phonestream.train.pipeline import synth_items

    clip = _clips(tmp_path, speechlike)[0]
    uids = [f"r2-espeak-{i:05d}" for i in range(60)] + [f"espeak-{i:05d}" for i in range(60)]
    synth = tmp_path / "synth"
    synth.mkdir()
    seen = []
    for order in (uids, uids[::-1]):
        rows = ["id\taudio\tduration_s\tsource\tvoice\ttext\tphones"]
        rows += [f"{u}\t{Path(clip.path).resolve()}\t1.0\tespeak\tv\tt\t{clip.phones}" for u in order]
        (synth / "manifest.tsv").write_text("\n".join(rows) + "\n")
        held, train = synth_items(tmp_path, held_out=True), synth_items(tmp_path, held_out=False)
        assert sorted(it.uid for it in held) == sorted(u for u in uids if is_synth_dev(u)) != []
        assert sorted(it.uid for it in train) == sorted(u for u in uids if not is_synth_dev(u))
        seen.append(([it.uid for it in held], [it.uid for it in train]))
    assert seen[0] == seen[1]
    first_ten = [it.startswith("r2-") for it in seen[0][1][:10]]
    assert any(first_ten) and not all(first_ten)  # both rounds early on, not one after the other


def test_a_silent_tail_goes_from_cache_to_the_exported_model(tmp_path, speechlike, monkeypatch):
    """``--tail-ms`` caches into a folder of its own with the tailed encoder's states, the fit records it,
    export writes it into the model folder, and the loaded model encodes with it (as does the held-out
    scoring, which reads it from the folder)."""
    import json

    from phonestream.models.whisper import WhisperBackbone
    from phonestream.train import pipeline
    from phonestream.train.__main__ import recipe
    from phonestream.train.evaluate import load_exported_head

    work = _one_clip_work(tmp_path, speechlike, monkeypatch)
    assert recipe(["cache", "--work", str(work), "--copies", "1", "--workers", "1", "--tail-ms", "300"]) == 0
    assert not (work / "cache").exists()
    assert sorted(p.name for p in (work / "cache-tail300").glob("*.npz")) == [
        "fsdd-copy0-part0of1.npz", "synth-r1-copy0-part0of1.npz"]
    tailed = load_states(sorted((work / "cache-tail300").glob("*.npz")))
    # the same draws (copy 0, worker 0: seed 0) through a tailed backbone by hand give the same states
    by_hand = tmp_path / "by-hand.npz"
    cache_shard(WhisperBackbone(threads=1, tail_ms=300), pipeline.synth_items(work, held_out=False), by_hand,
                seed=0, log_every=0)
    np.testing.assert_array_equal(load_states([work / "cache-tail300" / "synth-r1-copy0-part0of1.npz"]).states,
                                  load_states([by_hand]).states)

    cfg = TrainConfig(head={"type": "conv", "hidden": 16, "kernel": 3, "layers": 1}, max_epochs=1,
                      eval_every=10**6, tail_ms=300)
    train_head(tailed, list(SYMBOLS), tmp_path / "run", cfg, 384, None, lambda m: None)
    out = export_model(tmp_path / "run" / "last.pt", tmp_path / "model", StreamingDefaults(640, 1280, 320))
    assert json.loads((out / "phonestream.json").read_text())["backbone"]["tail_ms"] == 300
    assert load_exported_head(out)[1:] == ("tiny.en", 300)
    meta = json.loads((out / "phonestream.json").read_text())
    meta["backbone"]["tail_ms"] = "300"  # by hand, as a string
    (out / "phonestream.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"phonestream.json: tail_ms must be a whole number of ms from 0 to 5000"):
        load_exported_head(out)
    meta["backbone"]["tail_ms"] = 300
    (out / "phonestream.json").write_text(json.dumps(meta))
    model = load_model(str(out))
    assert model.backbone.tail_ms == 300 and model.backbone.max_window_s == pytest.approx(29.7)


def test_held_out_sets_clean_or_augmented_and_per_tail(tmp_path, speechlike, monkeypatch):
    """``compare-heads-heldout --clean`` scores the held-out synthetic utterances unaugmented, as their own
    set; a head with a tail is scored on states encoded with it, cached apart from the others."""
    from phonestream.models.whisper import WhisperBackbone
    from phonestream.train import evaluate
    from phonestream.train.__main__ import _dev_sets
    from phonestream.train.evaluate import is_synth_dev

    clips = _clips(tmp_path, speechlike)
    work = tmp_path / "work"
    (work / "synth").mkdir(parents=True)
    uid = next(u for u in (f"espeak-{i:05d}" for i in range(200)) if is_synth_dev(u))
    (work / "synth" / "manifest.tsv").write_text(
        "id\taudio\tduration_s\tsource\tvoice\ttext\tphones\n"
        f"{uid}\t{Path(clips[0].path).resolve()}\t1.0\tespeak\tv\tt\t{clips[0].phones}\n")
    monkeypatch.setattr(evaluate, "fsdd_items", lambda root=None, split="test": clips[1:2])
    clean = _dev_sets(work, [None], clean=True)
    noisy = _dev_sets(work, [None])
    assert set(clean) == {("synthclean", None), ("fsdddev", None)} and set(noisy) == {("synthdev", None),
                                                                                   ("fsdddev", None)}
    by_hand = WhisperBackbone(threads=1).encode_batch([sf.read(clips[0].path, dtype="float32")[0]])[0]
    np.testing.assert_allclose(clean[("synthclean", None)].states[8:-8].astype(np.float32), by_hand, rtol=2e-3,
                               atol=2e-3)  # stored as float16
    augmented = noisy[("synthdev", None)].states[8:-8].astype(np.float32)  # speed perturbation may resize it
    assert augmented.shape != by_hand.shape or not np.allclose(augmented, by_hand, rtol=2e-3, atol=2e-3)
    tailed = _dev_sets(work, [None], clean=True, tail_ms=300)
    assert sorted(p.name.split("-")[0] for p in (work / "eval-cache-tail300").glob("*.npz")) == [
        "fsdddev", "synthclean"]
    assert not np.array_equal(tailed[("synthclean", None)].states, clean[("synthclean", None)].states)


def test_encoder_weights_go_from_cache_to_the_exported_model(tmp_path, speechlike, monkeypatch):
    """``--encoder-weights`` (a tuned encoder, here the shipped model's): the cache stage streams through that
    encoder into a folder of its own, the fit records the file and its hash, export ships it beside the head
    and the folder loads with it; a file that changed after the fit, or one that is not an encoder's
    variables, is a one-line error."""
    from phonestream.models import DEFAULT_MODEL_DIR
    from phonestream.models.whisper import ENCODER_WEIGHTS_FILE, WhisperBackbone, weights_digest
    from phonestream.train import pipeline
    from phonestream.train.__main__ import recipe

    monkeypatch.setenv("PHONESTREAM_CACHE", str(tmp_path / "enc-cache"))
    shipped = DEFAULT_MODEL_DIR / ENCODER_WEIGHTS_FILE
    weights = tmp_path / "tuned.safetensors"
    shutil.copyfile(shipped, weights)
    work = _one_clip_work(tmp_path, speechlike, monkeypatch)
    assert recipe(["cache", "--work", str(work), "--copies", "1", "--workers", "1",
                   "--encoder-weights", str(weights)]) == 0
    cache = pipeline.cache_folder(work, weights=weights)
    assert cache.name.startswith("cache-tuned") and not (work / "cache").exists()
    tuned = load_states([cache / "synth-r1-copy0-part0of1.npz"])
    by_hand = tmp_path / "by-hand.npz"  # the same draws through the tuned backbone by hand
    cache_shard(WhisperBackbone(threads=1, weights=weights), pipeline.synth_items(work, held_out=False), by_hand,
                seed=0, log_every=0)
    np.testing.assert_array_equal(tuned.states, load_states([by_hand]).states)
    pinned = tmp_path / "pinned.npz"
    cache_shard(WhisperBackbone(threads=1), pipeline.synth_items(work, held_out=False), pinned, seed=0, log_every=0)
    assert not np.allclose(tuned.states, load_states([pinned]).states, atol=1e-2)  # other states: other encoder

    cfg = TrainConfig(head={"type": "conv", "hidden": 16, "kernel": 3, "layers": 1}, max_epochs=1, eval_every=10**6,
                      encoder_weights=str(weights), encoder_weights_sha256=weights_digest(weights))
    train_head(tuned, list(SYMBOLS), tmp_path / "run", cfg, 384, None, lambda m: None)
    out = export_model(tmp_path / "run" / "last.pt", tmp_path / "model", StreamingDefaults(640, 1280, 320))
    assert json.loads((out / "phonestream.json").read_text())["backbone"]["weights"] == ENCODER_WEIGHTS_FILE
    assert (out / ENCODER_WEIGHTS_FILE).read_bytes() == shipped.read_bytes()
    model = load_model(str(out))
    assert model.backbone.weights is not None
    np.testing.assert_array_equal(model.backbone.encode_batch([speechlike[:16000]])[0],
                                  WhisperBackbone(threads=1, weights=weights).encode_batch([speechlike[:16000]])[0])
    weights.write_bytes(b"changed")
    with pytest.raises(TrainError, match="have changed since"):
        export_model(tmp_path / "run" / "last.pt", tmp_path / "model2", StreamingDefaults(640, 1280, 320))
    with pytest.raises(TrainError, match="--encoder-weights .*not a safetensors file"):
        recipe(["cache", "--work", str(work), "--encoder-weights", str(weights)])
