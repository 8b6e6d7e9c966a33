"""The Whisper encoder in PyTorch from CTranslate2's file, fine-tuned layers in a model folder, and
``train tune`` end to end on a handful of clips."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from phonestream.models import ModelError, load_model
from phonestream.models.ct2_file import read_model, replace_variables, write_model
from phonestream.models.whisper import ENCODER_WEIGHTS_FILE, WhisperBackbone, default_encoder_path, log_mel
from phonestream.train.encoder import WhisperEncoder, tuned_variables
from phonestream.train.states import Item


@pytest.fixture(scope="module")
def ct2():
    return read_model(Path(default_encoder_path()) / "model.bin")


def test_model_bin_reads_and_writes_back_byte_for_byte(tmp_path, ct2):
    src = Path(default_encoder_path()) / "model.bin"
    assert ct2.spec == "WhisperSpec" and ct2.variables["encoder/conv1/weight"].shape == (384, 80, 3)
    write_model(ct2, tmp_path / "model.bin")
    assert (tmp_path / "model.bin").read_bytes() == src.read_bytes()
    (tmp_path / "cut.bin").write_bytes(src.read_bytes()[:5000])
    with pytest.raises(ModelError, match="not a CTranslate2 model.bin") as err:
        read_model(tmp_path / "cut.bin")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="shape"):
        replace_variables(ct2, {"encoder/layer_norm/gamma": np.zeros(5, np.float16)})
    with pytest.raises(ModelError, match="not a variable"):
        replace_variables(ct2, {"encoder/layer_9/x": np.zeros(5, np.float16)})


def test_torch_encoder_gives_ctranslate2s_float32_states(ct2, speechlike):
    import ctranslate2

    mel = log_mel(speechlike[:36000])
    with torch.no_grad():
        ours = WhisperEncoder.from_ct2(ct2)(torch.from_numpy(mel)[None]).numpy()[0]
    model = ctranslate2.models.Whisper(default_encoder_path(), compute_type="float32", intra_threads=1)
    mel_view = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))
    theirs = np.asarray(model.encode(mel_view, to_cpu=True))[0]
    assert ours.shape == theirs.shape == (113, 384)
    assert np.abs(ours - theirs).max() < 1e-3


def test_tuned_layers_in_a_model_folder_are_what_the_backbone_runs(tmp_path, ct2, speechlike, monkeypatch,
                                                                    frozen_default):
    """Changed top-layer weights, saved as a folder's encoder.safetensors, reach CTranslate2: its states
    follow the changed PyTorch encoder's, not the pinned one's."""
    from safetensors.numpy import save_file

    monkeypatch.setenv("PHONESTREAM_CACHE", str(tmp_path / "cache"))
    enc = WhisperEncoder.from_ct2(ct2)
    with torch.no_grad():
        enc.layers[-1].fc2.weight.mul_(-1.0)
        enc.norm.bias.add_(0.5)
    folder = tmp_path / "model"
    shutil.copytree(frozen_default, folder)
    save_file(tuned_variables(enc.state_dict(), 1), str(folder / ENCODER_WEIGHTS_FILE))
    meta = json.loads((folder / "phonestream.json").read_text())
    meta["backbone"]["weights"] = ENCODER_WEIGHTS_FILE
    (folder / "phonestream.json").write_text(json.dumps(meta))
    model = load_model(str(folder), dtype="float32")
    x = speechlike[:32000]
    with torch.no_grad():
        want = enc(torch.from_numpy(log_mel(x))[None]).numpy()[0]
    got = model.backbone.encode_batch([x])[0]
    pinned = WhisperBackbone(threads=1, compute_type="float32").encode_batch([x])[0]
    assert np.abs(got - want).max() < 1e-2 < np.abs(pinned - want).max()
    assert "fine-tuned" in model.backbone.description
    # saving the model writes the weights beside it; the folder loads again
    model.save(tmp_path / "saved")
    assert (tmp_path / "saved" / ENCODER_WEIGHTS_FILE).read_bytes() == (folder / ENCODER_WEIGHTS_FILE).read_bytes()
    assert np.allclose(load_model(str(tmp_path / "saved"), dtype="float32").backbone.encode_batch([x])[0], got)
    # held-out scoring keeps the tuned encoder's states apart from the pinned one's
    import hashlib

    from phonestream.train.evaluate import encoder_weights
    from phonestream.train.pipeline import cache_folder

    assert encoder_weights(folder) == folder / ENCODER_WEIGHTS_FILE and encoder_weights(frozen_default) is None
    digest = hashlib.sha256((folder / ENCODER_WEIGHTS_FILE).read_bytes()).hexdigest()[:12]
    tuned = cache_folder(tmp_path, "tiny.en", "eval-cache", 0, encoder_weights(folder))
    assert tuned.name == f"eval-cache-tuned{digest}"
    # a weights file that does not fit the encoder is one line
    save_file({"encoder/layer_norm/gamma": np.zeros(7, np.float16)}, str(folder / ENCODER_WEIGHTS_FILE))
    with pytest.raises(ModelError, match="shape") as err:
        load_model(str(folder))
    assert "\n" not in str(err.value)
    (folder / ENCODER_WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_model(str(folder))


def test_the_tuned_encoder_folder_is_built_whole_once_even_when_two_loads_race(tmp_path, ct2, monkeypatch):
    """Another process finishing the same folder first is not an error; an unwritable cache is one line;
    nothing half-written is left behind."""
    from safetensors.numpy import save_file

    import phonestream.models.ct2_file as ct2_file
    from phonestream.models.whisper import tuned_encoder_path

    weights = tmp_path / "w.safetensors"
    save_file({"encoder/layer_norm/beta": np.full(384, 0.25, np.float16)}, str(weights))
    monkeypatch.setenv("PHONESTREAM_CACHE", str(tmp_path / "cache"))
    real_write = ct2_file.write_model
    umask = os.umask(0o022)
    os.umask(umask)
    raced: list[str] = []

    def write_after_the_other_process(model, path):
        if not raced:  # the other process builds and renames its folder while this one writes
            raced.append("")
            raced[0] = tuned_encoder_path(weights)
        real_write(model, path)

    monkeypatch.setattr(ct2_file, "write_model", write_after_the_other_process)
    path = tuned_encoder_path(weights)
    assert raced == [path] and sorted(p.name for p in (tmp_path / "cache").iterdir()) == [Path(path).name]
    assert float(read_model(Path(path) / "model.bin").variables["encoder/layer_norm/beta"][0]) == 0.25
    assert Path(path).stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    monkeypatch.setenv("PHONESTREAM_CACHE", str(weights))  # a file, not a folder
    with pytest.raises(ModelError, match="cannot write the fine-tuned Whisper encoder") as err:
        tuned_encoder_path(weights)
    assert "\n" not in str(err.value)


def test_a_tuned_encoder_loads_from_memory_where_the_cache_cannot_be_written(tmp_path, monkeypatch, speechlike,
                                                                          frozen_default):
    """A read-only home must not stop the model from loading: the same encoder, built in memory."""
    from safetensors.numpy import save_file

    folder = tmp_path / "model"
    shutil.copytree(frozen_default, folder)
    save_file({"encoder/layer_norm/beta": np.full(384, 0.25, np.float16)}, str(folder / ENCODER_WEIGHTS_FILE))
    meta = json.loads((folder / "phonestream.json").read_text())
    meta["backbone"]["weights"] = ENCODER_WEIGHTS_FILE
    (folder / "phonestream.json").write_text(json.dumps(meta))
    monkeypatch.setenv("PHONESTREAM_CACHE", str(tmp_path / "cache"))
    x = speechlike[:16000]
    cached = load_model(str(folder)).backbone.encode_batch([x])[0]
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("PHONESTREAM_CACHE", str(blocked))
    model = load_model(str(folder))
    assert model.backbone.path.endswith("(in memory)")
    assert np.array_equal(model.backbone.encode_batch([x])[0], cached)
    assert blocked.read_text().startswith("a file")  # nothing written


def test_tune_steps_resumes_and_exports_a_loadable_folder(tmp_path, speechlike, monkeypatch, frozen_default):
    from phonestream.train.cli import TrainError
    from phonestream.train.tune import TuneConfig, export_tuned, tune_encoder

    monkeypatch.setenv("PHONESTREAM_CACHE", str(tmp_path / "cache"))
    items = []
    for i, ph in enumerate(["P R IH N T IH NG", "IH N DH AH", "OW N L IY S EH N S", "S IH K S"]):
        sf.write(tmp_path / f"c{i}.wav", speechlike[i * 12000 : i * 12000 + 16000], 16000)
        items.append(Item(f"c{i}", str(tmp_path / f"c{i}.wav"), ph, "test"))
    cfg = TuneConfig(utterances_per_step=2, lr=1e-3, threads=1)
    lines: list[str] = []
    ckpt = tune_encoder(items, frozen_default, tmp_path / "run", cfg, lines.append)
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 2 and lines[-1].startswith("step 2/2")
    pinned = WhisperEncoder.from_ct2(read_model(Path(default_encoder_path()) / "model.bin")).state_dict()
    assert not torch.equal(state["encoder"]["layers.3.fc1.weight"], pinned["layers.3.fc1.weight"])  # it learned
    assert torch.equal(state["encoder"]["layers.2.fc1.weight"], pinned["layers.2.fc1.weight"])  # below: frozen
    lines.clear()
    tune_encoder(items, frozen_default, tmp_path / "run", cfg, lines.append)  # finished: resumes at the end
    assert lines == ["resuming run at step 2/2"]
    with pytest.raises(TrainError, match="other settings"):
        tune_encoder(items, frozen_default, tmp_path / "run", TuneConfig(utterances_per_step=2, lr=5e-4), lines.append)
    out = export_tuned(ckpt, tmp_path / "tuned")
    meta = json.loads((out / "phonestream.json").read_text())
    assert meta["backbone"]["weights"] == ENCODER_WEIGHTS_FILE and meta["training"]["encoder_tuned"]["steps"] == 2
    assert (out / "lm.arpa.gz").exists() and (out / "head.safetensors").exists()
    assert (out / ENCODER_WEIGHTS_FILE).stat().st_mode & 0o044  # readable by others, as the head is
    model = load_model(str(out))
    lp = model.log_probs(speechlike[:16000])
    assert lp.shape == (50, 40) and np.isfinite(lp).all()
    # --init-weight: each exported variable averaged with the starting folder's (here the pinned encoder's)
    from safetensors.numpy import load_file

    half = export_tuned(ckpt, tmp_path / "half", init_weight=0.5)
    mixed, tuned = load_file(half / ENCODER_WEIGHTS_FILE), load_file(out / ENCODER_WEIGHTS_FILE)
    start = tuned_variables(pinned, 1)
    assert set(mixed) == set(tuned) == set(start)
    for name in ("encoder/layer_3/ffn/linear_0/weight", "encoder/layer_norm/gamma"):
        expected = (tuned[name].astype(np.float32) + start[name].astype(np.float32)) / 2
        assert np.allclose(mixed[name], expected, atol=1e-3)
    name = "encoder/layer_3/ffn/linear_0/weight"  # the run moved it, so the average lies between
    assert not np.array_equal(mixed[name], tuned[name]) and not np.array_equal(mixed[name], start[name])
    assert json.loads((half / "phonestream.json").read_text())["training"]["encoder_tuned"]["init_weight"] == 0.5
    assert "init_weight" not in meta["training"]["encoder_tuned"]
    # a tuned folder is tuned further from its own weights, its history kept; --top must cover its layers
    tuned_state = tuned_variables(state["encoder"], 1)
    again = torch.load(tune_encoder(items, out, tmp_path / "run2", TuneConfig(utterances_per_step=4, lr=1e-9,
                                                                            threads=1), lines.append),
                       weights_only=False)["encoder"]
    assert np.allclose(tuned_variables(again, 1)["encoder/layer_3/ffn/linear_0/weight"],
                       tuned_state["encoder/layer_3/ffn/linear_0/weight"], atol=1e-3)  # lr ~0: where it started
    again_out = json.loads((export_tuned(tmp_path / "run2" / "tune.pt", tmp_path / "again") / "phonestream.json")
                           .read_text())
    assert again_out["training"]["encoder_tuned"]["from"]["steps"] == 2
    from safetensors.numpy import save_file

    save_file(tuned_variables(state["encoder"], 2), str(out / ENCODER_WEIGHTS_FILE))  # now two layers tuned
    with pytest.raises(TrainError, match="top 2 layers are tuned already; --top must be at least 2"):
        tune_encoder(items, out, tmp_path / "run4", cfg, lines.append)
    with pytest.raises(TrainError, match="has 4 layers; --top 5"):
        tune_encoder(items, frozen_default, tmp_path / "run3", TuneConfig(top=5), lines.append)
    with pytest.raises(TrainError, match="tune needs a loss"):
        tune_encoder(items, frozen_default, tmp_path / "run5", TuneConfig(ctc=0.0), lines.append)


def test_tune_with_the_offline_posteriors_alone_pulls_the_windows_towards_them(tmp_path, speechlike, frozen_default):
    """``--distill 1 --ctc-weight 0``: the loss is the distance from the starting folder's own offline
    encoder states to the streamed windows' states, label-free; the encoder learns from it, and a run saved
    without these settings (an older checkpoint) still resumes."""
    from phonestream.train.tune import TuneConfig, tune_encoder

    items = []
    for i in range(4):
        sf.write(tmp_path / f"d{i}.wav", speechlike[i * 8000 : i * 8000 + 24000], 16000)
        items.append(Item(f"d{i}", str(tmp_path / f"d{i}.wav"), "S IH K S", "test"))
    cfg = TuneConfig(utterances_per_step=2, lr=1e-3, threads=1, distill=1.0, ctc=0.0)
    lines: list[str] = []
    state = torch.load(tune_encoder(items, frozen_default, tmp_path / "run", cfg, lines.append), weights_only=False)
    loss = float(lines[-1].split("loss ")[1].split()[0])
    assert 0 < loss < 1 and state["config"]["distill"] == 1.0  # relative distance: windows nearly agree
    pinned = WhisperEncoder.from_ct2(read_model(Path(default_encoder_path()) / "model.bin")).state_dict()
    assert not torch.equal(state["encoder"]["layers.3.fc1.weight"], pinned["layers.3.fc1.weight"])
    plain = TuneConfig(utterances_per_step=2, lr=1e-3, threads=1)
    old = torch.load(tmp_path / "run" / "tune.pt", weights_only=False)
    old["config"] = {k: v for k, v in old["config"].items() if k not in ("distill", "ctc")}
    old["config"].update(utterances_per_step=2, lr=1e-3, threads=1)
    torch.save(old, tmp_path / "run" / "tune.pt")
    lines.clear()
    tune_encoder(items, frozen_default, tmp_path / "run", plain, lines.append)
    assert lines == ["resuming run at step 2/2"]


def test_tune_learns_from_audio_without_phonemes_through_the_label_free_target(tmp_path, speechlike, monkeypatch,
                                                                                frozen_default):
    """``tune --rounds 0 --unlabelled M``: M's rows join the items with no phonemes (no synthetic speech
    needed), and the distillation target alone trains on them."""
    from phonestream.train import pipeline
    from phonestream.train.tune import TuneConfig, tune_encoder

    (tmp_path / "real").mkdir()
    for i in range(3):
        sf.write(tmp_path / "real" / f"u{i}.flac", speechlike[i * 8000 : i * 8000 + 24000], 16000)
    (tmp_path / "real" / "manifest.tsv").write_text("id\taudio\tspeaker\n"
                                                    + "".join(f"u{i}\tu{i}.flac\tx\n" for i in range(3)))
    monkeypatch.setattr(pipeline, "fsdd_train_items", lambda: [])
    items = pipeline.tune_items(tmp_path / "no-synth", 0, 1, [tmp_path / "real" / "manifest.tsv"])
    assert [(it.uid, it.phones, it.source) for it in items] == [(f"u{i}", "", "unlabelled:real") for i in range(3)]
    assert Path(items[0].path) == tmp_path / "real" / "u0.flac"
    from phonestream.train.cli import TrainError

    sf.write(tmp_path / "real" / "long.flac", np.zeros(26 * 16000, np.float32), 16000)
    (tmp_path / "real" / "long.tsv").write_text("id\taudio\nlong\tlong.flac\n")
    with pytest.raises(TrainError, match=r"long.flac \(long\) lasts 26.0 s; tune encodes each utterance whole"):
        pipeline.tune_items(tmp_path, 0, 1, [tmp_path / "real" / "long.tsv"])
    (tmp_path / "real" / "gone.tsv").write_text("id\taudio\ngone\tgone.flac\n")
    with pytest.raises(TrainError, match=r"gone.flac \(gone\): audio file not found"):
        pipeline.tune_items(tmp_path, 0, 1, [tmp_path / "real" / "gone.tsv"])
    lines: list[str] = []
    cfg = TuneConfig(utterances_per_step=3, lr=1e-3, threads=1, distill=1.0, ctc=0.0)
    state = torch.load(tune_encoder(items, frozen_default, tmp_path / "run", cfg, lines.append), weights_only=False)
    assert state["step"] == 1 and 0 < float(lines[-1].split("loss ")[1].split()[0]) < 1
    pinned = WhisperEncoder.from_ct2(read_model(Path(default_encoder_path()) / "model.bin")).state_dict()
    assert not torch.equal(state["encoder"]["layers.3.fc1.weight"], pinned["layers.3.fc1.weight"])


def test_windows_of_many_lengths_share_a_padded_pass_without_changing_a_state():
    from phonestream.train.tune import window_states

    torch.manual_seed(0)
    enc = WhisperEncoder(64, 2, 4)
    rng = np.random.default_rng(0)
    windows = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (320, 639, 3000, 16000, 17119, 18000, 20000)]
    with torch.no_grad():
        together = window_states(enc, windows, 0, 0)
        for w, got in zip(windows, together):
            alone = enc(torch.from_numpy(log_mel(w))[None])[0]
            assert got.shape == alone.shape and torch.allclose(got, alone, atol=1e-4)
        tailed = window_states(enc, windows[3:4], 0, 4800)[0]  # a 300 ms silent tail: its states dropped
        assert tailed.shape == together[3].shape and not torch.allclose(tailed, together[3], atol=1e-3)


def test_state_distance_is_zero_where_windows_hear_the_whole_utterance_and_reads_only_the_heads_frames():
    from phonestream.train.tune import state_distance

    torch.manual_seed(0)
    whole = torch.randn(30, 8)
    # two windows of one utterance: frames 0-19 keeping 0-9, frames 5-29 keeping 10-29
    cut = [[(None, 0, 0, 10), (None, 5, 10, 30)]]
    same = [whole[0:20].clone(), whole[5:30].clone()]
    assert float(state_distance(cut, same, [whole], radius=2)) == 0.0
    far = [same[0].clone(), same[1].clone()]
    far[0][15:] += 100.0  # beyond kept frames + radius (10 + 2): the head never reads them
    assert float(state_distance(cut, far, [whole], radius=2)) == 0.0
    far[0][11] += 1.0  # within the radius: counted
    assert float(state_distance(cut, far, [whole], radius=2)) > 0


def test_blend_script_averages_and_extrapolates_two_folders_encoders(tmp_path, frozen_default):
    """scripts/blend-encoders.py: w * A + (1 - w) * B per tuned variable, a folder that tuned nothing
    contributing the pinned encoder's; different heads refused."""
    import importlib.util

    from safetensors.numpy import load_file

    from phonestream.models import DEFAULT_MODEL_DIR

    spec = importlib.util.spec_from_file_location("blend", Path(__file__).parents[1] / "scripts" / "blend-encoders.py")
    blend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(blend)
    shipped = load_file(str(Path(DEFAULT_MODEL_DIR) / ENCODER_WEIGHTS_FILE))
    half = tmp_path / "half"
    record = blend.blend(frozen_default, Path(DEFAULT_MODEL_DIR), 0.5, half)
    assert record["weight"] == 0.5 and record["a"]["encoder_sha256"] is None
    pinned = tuned_variables(WhisperEncoder.from_ct2(read_model(Path(default_encoder_path()) / "model.bin"))
                             .state_dict(), record["top"])
    got = load_file(str(half / ENCODER_WEIGHTS_FILE))
    assert set(got) == set(shipped)
    for name, v in shipped.items():
        want = 0.5 * pinned[name].astype(np.float32) + 0.5 * v.astype(np.float32)
        assert np.allclose(got[name].astype(np.float32), want, atol=2e-3, rtol=2e-3), name
    back = tmp_path / "back"  # -1 x the pinned + 2 x the half-way folder: the shipped encoder again
    blend.blend(frozen_default, half, -1.0, back)
    again = load_file(str(back / ENCODER_WEIGHTS_FILE))
    for name, v in shipped.items():  # float16 rounding, doubled by the weight of 2
        assert np.allclose(again[name].astype(np.float32), v.astype(np.float32), atol=4e-3, rtol=4e-3), name
    assert load_model(str(half)).vocab  # a loadable folder
    other = tmp_path / "other"
    shutil.copytree(frozen_default, other)
    (other / "head.safetensors").write_bytes((other / "head.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(SystemExit, match="different heads"):
        blend.blend(other, half, 0.5, tmp_path / "refused")


def test_encoder_backends_script_times_every_runtime_on_the_shipped_encoder():
    """scripts/encoder-backends.py: a row per runtime, CTranslate2's own backend named, float32 runtimes
    agreeing with PyTorch float32 and int8 ones within their rounding; ONNX Runtime measured or said why not."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "encoder-backends.py"
    out = subprocess.run([sys.executable, str(script), "--calls", "2", "--rounds", "1"], capture_output=True,
                         text=True, check=True).stdout
    rows = {r[0]: r[1:] for r in ([c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines()
                                  if line.startswith("| ") and not line.startswith("| runtime"))}
    default, forced = rows["CTranslate2 int8 (phonestream's default)"], next(
        v for k, v in rows.items() if k.startswith("CTranslate2 int8, the other GEMM backend forced"))
    assert {default[0], forced[0]} == {"DNNL", "MKL"}
    for name in ("CTranslate2 int8 (phonestream's default)", "CTranslate2 float32", "PyTorch float32",
                 "PyTorch dynamic int8 (linear layers)"):
        ms, distance = float(rows[name][1]), float(rows[name][2])
        assert ms > 0 and distance < (1e-3 if "float32" in name else 0.2), (name, rows[name])
    ort = [k for k in rows if k.startswith("ONNX Runtime")]
    assert ort == ["ONNX Runtime float32", "ONNX Runtime dynamic int8 (per-channel weights)"] or \
        rows[ort[0]][1] == "not measured: pip install onnx onnxruntime"
