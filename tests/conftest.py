"""Shared fixtures: tiny randomly initialised models saved to temporary folders, and test audio.

Nothing is downloaded: the real loading code runs on checkpoints the tests build themselves. The tiny
models are Hugging Face checkpoints: without the [hf] extra (PyTorch, transformers) the tests that use
them are skipped, and the rest run (``scripts/test-without-torch.sh``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

#: Packages of optional extras: a test module that imports one that is not installed is skipped, whole.
EXTRA_OF = {"torch": "hf", "transformers": "hf", "ray": "ray"}


class _ModuleNeedingExtras(pytest.Module):
    """A test module that is reported as skipped, with the extra to install, when it imports a missing
    package of an optional extra (the default install has no PyTorch)."""

    def collect(self):
        try:
            return super().collect()
        except self.CollectError as err:
            missing = err.__cause__
            if isinstance(missing, ModuleNotFoundError) and missing.name in EXTRA_OF:
                extra = EXTRA_OF[missing.name]
                pytest.skip(f"{self.path.name} needs {missing.name}: pip install 'phonestream[{extra}]'")
            raise


def pytest_pycollect_makemodule(module_path, parent):
    return _ModuleNeedingExtras.from_parent(parent, path=module_path)


SAMPLES = Path(__file__).resolve().parent.parent / "phonestream" / "samples"
VOCAB = ("<pad>", "AA", "B", "K", "S", "|")


def hf():
    """``(torch, transformers)``, or skip the calling test when the [hf] extra is not installed."""
    reason = "needs PyTorch and transformers: pip install 'phonestream[hf]'"
    return pytest.importorskip("torch", reason=reason), pytest.importorskip("transformers", reason=reason)


def tiny_config(vocab_size: int = len(VOCAB), layer_norm: bool = True):
    return hf()[1].Wav2Vec2Config(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, feat_extract_norm="layer" if layer_norm else "group", do_stable_layer_norm=layer_norm,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, pad_token_id=0,
    )


def save_ctc(folder: Path, vocab=VOCAB, layer_norm: bool = True, head_size: int | None = None, seed: int = 0) -> Path:
    torch, transformers = hf()
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2ForCTC(tiny_config(head_size or len(vocab), layer_norm))
    with torch.no_grad():  # spread the head so random models emit varied phonemes, not one long run
        model.lm_head.weight.mul_(40.0)
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000, "do_normalize": True}))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_ctc(tmp_path_factory.mktemp("tiny_ctc"))


@pytest.fixture(scope="session")
def tiny_group_norm_dir(tmp_path_factory) -> Path:
    return save_ctc(tmp_path_factory.mktemp("tiny_ctc_gn"), layer_norm=False)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    torch, transformers = hf()
    folder = tmp_path_factory.mktemp("tiny_encoder")
    torch.manual_seed(1)
    transformers.Wav2Vec2Model(tiny_config()).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000, "do_normalize": True}))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from phonestream.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def frozen_default(tmp_path_factory) -> Path:
    """The shipped model folder without its fine-tuned encoder layers: its head on the pinned, frozen
    encoder (what ``train tune`` and ``--teacher`` start from; v11, the head the shipped model tunes under)."""
    import shutil

    from phonestream.models import DEFAULT_MODEL_DIR

    folder = tmp_path_factory.mktemp("frozen") / "default"
    shutil.copytree(DEFAULT_MODEL_DIR, folder, ignore=shutil.ignore_patterns("encoder.safetensors"))
    meta = json.loads((folder / "phonestream.json").read_text())
    meta["backbone"].pop("weights", None)
    meta.pop("training", None)
    (folder / "phonestream.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


@pytest.fixture(scope="session")
def speechlike() -> np.ndarray:
    """3 s of the shipped sample recording at 16 kHz (real speech)."""
    from phonestream.audio import load_audio

    return load_audio(SAMPLES / "LJ001-0001.flac", 16000)[: 3 * 16000]


@pytest.fixture()
def wav_file(tmp_path, speechlike) -> Path:
    path = tmp_path / "speech.wav"
    sf.write(path, speechlike, 16000)
    return path


def fake_sound_card(monkeypatch, card: np.ndarray, rate: int, reads: list[int] | None = None) -> None:
    """Replace ``sounddevice`` by a card at ``rate`` Hz that plays ``card`` (mono float32) in the blocks the
    reader asks for, then raises KeyboardInterrupt as Ctrl-C does; ``reads`` collects the block sizes."""
    import sys
    import types

    class FakeInputStream:
        def __init__(self, samplerate, channels, dtype, blocksize, device):
            assert (samplerate, channels, dtype) == (rate, 1, "float32")
            self.pos = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, frames):
            if self.pos >= len(card):
                raise KeyboardInterrupt
            piece = card[self.pos : self.pos + frames]
            self.pos += frames
            if reads is not None:
                reads.append(len(piece))
            return np.pad(piece, (0, frames - len(piece)))[:, None], False

    fake = types.SimpleNamespace(PortAudioError=OSError, InputStream=FakeInputStream,
                                 query_devices=lambda device, kind: {"default_samplerate": float(rate)})
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
