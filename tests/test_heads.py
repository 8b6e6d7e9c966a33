"""The NumPy inference heads equal the PyTorch modules the recipe trains, and the default model runs
without PyTorch installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from phonestream.models import DEFAULT_MODEL_DIR, ModelError
from phonestream.models.heads import head_radius, load_head, random_head
from phonestream.models.torch_heads import build_head, head_spec, to_inference

#: The stated tolerance: NumPy and PyTorch heads agree to this on log posteriors (float32 arithmetic).
ATOL = 2e-5
# float32 keeps about 7 digits: a log posterior of -40 (a probability of 4e-18) differs in its 5th decimal
# between two correct orders of summation, so far-off classes are compared relatively
RTOL = 2e-6
SAMPLE = Path(__file__).resolve().parents[1] / "phonestream" / "samples" / "LJ001-0001.flac"


@pytest.mark.parametrize("spec", [{"type": "linear"}, {"type": "conv", "hidden": 256, "kernel": 5, "layers": 1},
                                  {"type": "conv", "hidden": 16, "kernel": 3, "layers": 2}])
def test_numpy_head_equals_torch_head(spec):
    torch.manual_seed(0)
    module = build_head(spec, 48, 7).eval()
    for p in module.parameters():  # move off the initial values so every parameter matters
        p.data += 0.1 * torch.randn_like(p)
    states = np.random.default_rng(0).standard_normal((37, 48)).astype(np.float32) * 3
    with torch.inference_mode():
        expected = torch.log_softmax(module(torch.from_numpy(states)[None])[0], -1).numpy()
    head = to_inference(module)
    assert head.spec == head_spec(module)
    np.testing.assert_allclose(head.log_probs(states), expected, atol=ATOL, rtol=RTOL)
    convs = [m for m in getattr(module, "convs", []) if isinstance(m, torch.nn.Conv1d)]
    assert head_radius(head.spec) == sum(m.kernel_size[0] // 2 for m in convs)


def test_shipped_head_file_gives_the_same_posteriors_in_numpy_and_torch():
    import json

    from safetensors.torch import load_file

    meta = json.loads((DEFAULT_MODEL_DIR / "phonestream.json").read_text())
    spec = {k: v for k, v in meta["head"].items() if k != "weights"}
    module = build_head(spec, 384, 40).eval()
    module.load_state_dict(load_file(str(DEFAULT_MODEL_DIR / "head.safetensors")))
    head = load_head(spec, DEFAULT_MODEL_DIR / "head.safetensors", 384, 40)
    states = np.random.default_rng(1).standard_normal((50, 384)).astype(np.float32)
    with torch.inference_mode():
        expected = torch.log_softmax(module(torch.from_numpy(states)[None])[0], -1).numpy()
    np.testing.assert_allclose(head.log_probs(states), expected, atol=ATOL, rtol=RTOL)


def test_head_weights_that_do_not_fit_are_refused(tmp_path):
    random_head({"type": "linear"}, 8, 5).save(tmp_path / "h.safetensors")
    with pytest.raises(ModelError, match="have 5 outputs but the vocabulary has 6 symbols"):
        load_head({"type": "linear"}, tmp_path / "h.safetensors", 8, 6)
    with pytest.raises(ModelError, match="do not fit a conv head"):
        load_head({"type": "conv"}, tmp_path / "h.safetensors", 8, 5)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read head weights"):
        load_head({"type": "linear"}, tmp_path / "bad.safetensors", 8, 5)


BLOCK_TORCH = textwrap.dedent('''
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, _Block())
''')


def _cli_without_torch(tmp_path, *args):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "phonestream", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_default_model_streams_without_torch_and_hf_models_name_the_extra(tmp_path):
    r = _cli_without_torch(tmp_path, "stream", str(SAMPLE), "--json", "--decoder", "greedy")
    assert r.returncode == 0, r.stderr
    phonemes = [line for line in r.stdout.splitlines() if '"type":"phoneme"' in line]
    assert len(phonemes) > 40  # the sample's ~100 phonemes, decoded by the NumPy head
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    r = _cli_without_torch(tmp_path, "stream", str(SAMPLE), "-m", str(tmp_path / "hf"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"phonestream: error: the Hugging Face model {tmp_path / 'hf'} needs "
                                             "PyTorch and transformers: pip install 'phonestream[hf]'"]


def test_head_cost_script_times_the_heads_own_calls(tmp_path):
    # scripts/head-cost.py: one row per model, the head's per-step time inside the model's
    import shutil

    one_layer = tmp_path / "one-layer"
    shutil.copytree(DEFAULT_MODEL_DIR, one_layer)
    cfg = json.loads((one_layer / "phonestream.json").read_text())
    cfg["head"]["layers"] = 1
    (one_layer / "phonestream.json").write_text(json.dumps(cfg))
    spec = {k: v for k, v in cfg["head"].items() if k != "weights"}
    random_head(spec, 384, 40).save(one_layer / "head.safetensors")
    script = Path(__file__).resolve().parents[1] / "scripts" / "head-cost.py"
    out = subprocess.run([sys.executable, str(script), str(DEFAULT_MODEL_DIR), str(one_layer), "--latency", "low"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "conv" in line]
    assert [r[1].strip() for r in rows] == ["conv 0.83M", "conv 0.50M"]
    for r in rows:
        steps, frames, head_ms, step_ms = int(r[2]), float(r[3]), float(r[4]), float(r[5])
        assert steps > 20 and frames > 8 and 0 < head_ms < step_ms
    # the two-layer head reads 2 more frames either side of the steps' new frames than the one-layer one
    assert float(rows[0][3]) > float(rows[1][3])


def test_step_cost_script_splits_a_step_and_times_both_log_mels():
    # scripts/step-cost.py: a row per log-mel way, every part timed, the parts within the step
    script = Path(__file__).resolve().parents[1] / "scripts" / "step-cost.py"
    out = subprocess.run([sys.executable, str(script), "--seconds", "6", "--rounds", "1", "--latency", "low"],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "ms" not in line]
    assert [r[0].strip() for r in rows] == ["frame cache (MelCache)", "whole window (log_mel)"]
    for r in rows:
        mel, encoder, head, rest, step = (float(c) for c in r[1:6])
        assert min(mel, encoder, head) > 0 and rest >= 0
        assert mel + encoder + head < step
        assert 0 < float(r[6].split()[0]) < 5
