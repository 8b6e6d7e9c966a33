"""Precision (--dtype) and warm-up: half precision where the device has it, float32 posteriors always,
one-line errors for a dtype the device cannot do, and a warm-up that covers the server's batch shapes
without changing any result. The CUDA paths run only where a GPU is visible."""

import json

import numpy as np
import pytest
import torch

from phonestream.audio import load_audio
from phonestream.engine import Recognizer
from phonestream.models import ModelError, load_model
from phonestream.models.base import DTYPES, check_dtype, warmup_batch_sizes
from phonestream.models.whisper import compute_type_for
from phonestream.numerics import numeric_setup
from phonestream.server import App, ServerSettings
from phonestream.streaming import StreamConfig

from .conftest import SAMPLES
from .test_cli import run
from .test_server import running_server

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")

# A tiny random wav2vec2 with a sharpened head (conftest.save_ctc) in CPU bfloat16 against float32 on
# 3 s of real speech: bfloat16 keeps 8 bits of mantissa, so posteriors move by up to ~0.1 on this model.
BF16_MAX_POSTERIOR_DIFF, BF16_MIN_ARGMAX_AGREEMENT = 0.2, 0.95
FP16_MAX_POSTERIOR_DIFF, FP16_MIN_ARGMAX_AGREEMENT = 0.03, 0.99


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLES / "LJ001-0001.flac", 16000)[: 3 * 16000]


def test_dtype_names_are_checked():
    assert [check_dtype(d) for d in DTYPES] == list(DTYPES)
    with pytest.raises(ModelError, match="unknown dtype 'half'; use one of auto, float32, float16, bfloat16"):
        check_dtype("half")


def test_auto_is_float32_for_torch_and_int8_for_the_default_model_on_cpu(tiny_model_dir):
    assert load_model(str(tiny_model_dir)).precision == "float32"
    assert load_model("random-base", dtype="bfloat16").precision == "bfloat16"  # the benchmark model too
    default = load_model()
    assert (default.device, default.precision) == ("cpu", "int8")
    assert "CTranslate2 float32" in load_model(dtype="float32").description


@pytest.mark.parametrize("dtype, max_diff, min_agree",
                         [("bfloat16", BF16_MAX_POSTERIOR_DIFF, BF16_MIN_ARGMAX_AGREEMENT),
                          ("float16", FP16_MAX_POSTERIOR_DIFF, FP16_MIN_ARGMAX_AGREEMENT)])
def test_cpu_half_precision_agrees_with_float32(tiny_model_dir, speech, dtype, max_diff, min_agree):
    ref = load_model(str(tiny_model_dir), dtype="float32").log_probs(speech)
    model = load_model(str(tiny_model_dir), dtype=dtype)
    assert model.precision == dtype and numeric_setup(model)["precision"] == f"cpu {dtype}"  # eval prints it
    # the encoder computes in half precision, the CTC head in float32
    assert next(model.model.wav2vec2.parameters()).dtype == getattr(torch, dtype)
    assert model.model.lm_head.weight.dtype == torch.float32
    out = model.log_probs(speech)
    assert out.dtype == np.float32 and out.shape == ref.shape
    diff = np.abs(np.exp(out) - np.exp(ref)).max()
    assert 0 < diff < max_diff  # not 0: the pass really ran in half precision
    assert (out.argmax(1) == ref.argmax(1)).mean() >= min_agree
    np.testing.assert_allclose(np.exp(out).sum(1), 1, atol=1e-4)  # a float32 log-softmax


def test_backbone_encoder_runs_in_the_dtype_and_the_head_in_float32(tiny_encoder_dir, tmp_path, speech):
    vocab = tmp_path / "phones.txt"
    vocab.write_text("AA\nB\nK\n")
    ref = load_model(backbone=str(tiny_encoder_dir), vocab=vocab, dtype="float32").log_probs(speech)
    model = load_model(backbone=str(tiny_encoder_dir), vocab=vocab, dtype="bfloat16")
    assert model.precision == "bfloat16"
    out = model.log_probs(speech)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert 0 < np.abs(np.exp(out) - np.exp(ref)).max() < BF16_MAX_POSTERIOR_DIFF


def test_ctranslate2_compute_types(monkeypatch):
    import ctranslate2

    assert compute_type_for("auto", "cpu") == "int8"
    assert compute_type_for("float32", "cpu") == "float32"
    cpu = ctranslate2.get_supported_compute_types("cpu")
    if "bfloat16" not in cpu:
        with pytest.raises(ModelError, match=r"^--dtype bfloat16 is not supported by CTranslate2 on this CPU; "
                                             r"it supports .*float32"):
            compute_type_for("bfloat16", "cpu")
    # what auto means on a GPU, with CTranslate2 answering as a CUDA build on a GPU would
    gpu = {"float32", "float16", "bfloat16", "int8", "int8_float16", "int8_float32", "int8_bfloat16"}
    monkeypatch.setattr(ctranslate2, "get_supported_compute_types",
                        lambda kind, index=0: gpu if kind == "cuda" else cpu)
    assert compute_type_for("auto", "cuda") == "int8_float16"
    assert compute_type_for("auto", "cuda:1", "float32") == "float16"
    assert compute_type_for("bfloat16", "cuda") == "bfloat16"
    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda kind, index=0: {"float32", "float16"})
    with pytest.raises(ModelError, match=r"^--dtype auto \(int8_float16\) is not supported by CTranslate2 on this "
                                         r"GPU; it supports float16, float32$"):
        compute_type_for("auto", "cuda")


def test_cli_dtype_option_and_errors(tiny_model_dir):
    ok = run("transcribe", SAMPLES / "LJ001-0002.flac", "-m", tiny_model_dir, "--dtype", "bfloat16", "--json")
    assert json.loads(ok.stdout.decode().splitlines()[-1])["type"] == "summary"
    bad = run("transcribe", SAMPLES / "LJ001-0002.flac", "-m", tiny_model_dir, "--dtype", "half", check_rc=2)
    assert "Invalid value for '--dtype'" in bad.stderr.decode()
    import ctranslate2

    if "bfloat16" not in ctranslate2.get_supported_compute_types("cpu"):
        proc = run("transcribe", SAMPLES / "LJ001-0002.flac", "--dtype", "bfloat16", check_rc=2)
        err = proc.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and "not supported by CTranslate2 on this CPU" in err, err


def test_batch_command_takes_dtype_to_its_workers(wav_file, tmp_path):
    import ctranslate2

    if "bfloat16" in ctranslate2.get_supported_compute_types("cpu"):
        pytest.skip("this CPU runs CTranslate2 in bfloat16: no unsupported dtype to ask for")
    proc = run("batch", wav_file.parent, "-o", tmp_path / "out.jsonl", "-j", "1", "--dtype", "bfloat16", check_rc=2)
    last = proc.stderr.decode().strip().splitlines()[-1]  # after the progress bar's line
    assert last.startswith("phonestream: error: ") and "--dtype bfloat16 is not supported by CTranslate2" in last


def test_warmup_batch_sizes():
    assert warmup_batch_sizes(1024, "cuda") == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert warmup_batch_sizes(48, "cuda:0") == [1, 2, 4, 8, 16, 32, 48]
    assert warmup_batch_sizes(1, "cuda") == [1]
    assert warmup_batch_sizes(1024, "cpu") == [1]
    with pytest.raises(ValueError):
        warmup_batch_sizes(0, "cuda")


@pytest.mark.parametrize("which", ["hf", "default"])
def test_warmup_runs_every_batch_size_and_leaves_results_unchanged(tiny_model_dir, speech, which):
    model = load_model(str(tiny_model_dir)) if which == "hf" else load_model()
    windows = [speech[:28160], speech[8000:36160], speech[:12800]]
    before = model.log_probs_batch(windows)
    calls = []
    original = model.log_probs_batch
    model.log_probs_batch = lambda ws: calls.append([len(w) for w in ws]) or original(ws)
    model.warmup([1, 2, 4, 3], 28160)
    assert calls == [[28160] * n for n in (1, 2, 4, 3)]
    after = original(windows)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_server_warms_up_for_its_batches_and_window_before_serving(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    seen = []
    model.warmup = lambda sizes, window: seen.append((list(sizes), window))
    model.device = "cuda"  # as the scheduler would see a GPU model (the warm-up itself is recorded, not run)
    app = App(Recognizer(model, StreamConfig(320, 640, 160)), ServerSettings(max_batch=12))
    with running_server(app):
        assert seen == [([1, 2, 4, 8, 12], (320 + 640 + 160) * 16)]


@needs_cuda
def test_cuda_auto_is_half_precision_with_float32_posteriors(tiny_model_dir, speech):
    ref = load_model(str(tiny_model_dir), dtype="float32").log_probs(speech)
    model = load_model(str(tiny_model_dir), device="cuda")
    assert model.precision == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    out = model.log_probs(speech)
    assert out.dtype == np.float32 and np.abs(np.exp(out) - np.exp(ref)).max() < BF16_MAX_POSTERIOR_DIFF
    model.warmup(warmup_batch_sizes(8, model.device), len(speech))
    np.testing.assert_array_equal(model.log_probs(speech), out)


@needs_cuda
def test_cuda_default_model_encoder_in_half_precision(speech):
    try:
        model = load_model(device="cuda")
        out = model.log_probs(speech)
    except (ModelError, RuntimeError) as err:  # a CTranslate2 build without CUDA, or CUDA libraries it lacks
        pytest.skip(f"CTranslate2 cannot use this GPU: {err}")
    assert model.precision == "int8_float16"
    ref = load_model().log_probs(speech)
    assert out.dtype == np.float32 and (out.argmax(1) == ref.argmax(1)).mean() > 0.9
