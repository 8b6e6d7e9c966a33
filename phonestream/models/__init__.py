"""Model backends: everything that turns an audio window into CTC phoneme log posteriors.

:func:`load_model` picks the backend from what it is given:

- nothing: the default model shipped inside the package (``phonestream/default_model``);
- a folder with ``phonestream.json``: a frozen backbone plus CTC head (:mod:`.backbone`);
- any other folder or a hub id: a Hugging Face ``*ForCTC`` checkpoint (:mod:`.hf`);
- ``backbone=`` plus ``vocab=`` (and optionally ``head=`` weights): a backbone-plus-head model built
  on the fly, the quick way to put a phoneme head on a user's own encoder;
- ``"random-base"`` (:data:`RANDOM_BASE`): a randomly initialised wav2vec2-base-sized model, for
  benchmarks and load tests (compute does not depend on the weights).
"""

from __future__ import annotations

import re
from pathlib import Path

from .backbone import MODEL_FILE, BackboneCTCModel, assemble, load_backbone, load_backbone_model, read_vocab_file
from .base import CTCModel, ModelError, StreamingDefaults, Vocabulary, check_dtype, has_torch, require_hf

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "default_model"
#: The shape of a hub id, as ``huggingface_hub.utils.validate_repo_id`` checks it (with no ``--``, ``..``
#: or ``.git`` ending).
_HUB_ID = re.compile(r"(\b[\w\-.]+\b/)?\b[\w\-.]{1,96}\b", re.ASCII)
#: The model name of :func:`random_base_model`.
RANDOM_BASE = "random-base"

__all__ = ["CTCModel", "ModelError", "StreamingDefaults", "Vocabulary", "BackboneCTCModel", "load_model",
           "random_base_model", "DEFAULT_MODEL_DIR", "RANDOM_BASE"]


def load_model(
    name: str | Path | None = None,
    *,
    backbone: str | None = None,
    vocab: str | Path | None = None,
    head: str | Path | None = None,
    head_type: str = "linear",
    device: str = "cpu",
    threads: int | None = None,
    dtype: str = "auto",
) -> CTCModel:
    """Load a CTC phoneme model.

    Args:
        name: local folder or hub id; None for the shipped default model (or the backbone set-up);
            :data:`RANDOM_BASE` for :func:`random_base_model`.
        backbone: encoder folder / hub id / ``whisper-tiny.en-ct2`` or ``whisper-base-ct2``
            (:data:`.whisper.BY_CONFIG_KEY`) for a backbone-plus-head model.
        vocab: phoneme vocabulary file (one symbol per line) for the backbone set-up.
        head: safetensors weights of the head; a seeded random head when omitted.
        head_type: ``linear`` or ``conv`` when building a head on the fly.
        device: ``cpu`` or ``cuda``.
        threads: CPU threads: the default encoder's (None: ``PHONESTREAM_THREADS``, else the cores, at most
            2), torch's intra-op threads for torch models (None keeps torch's default).
        dtype: the precision the model computes in, one of :data:`.base.DTYPES`: ``auto`` is half precision on
            CUDA (bfloat16 where the GPU has it, else float16; the default model's encoder int8 weights with
            float16 activations) and the backend's own on the CPU (float32; the default model's int8).
            Heads and log-softmax run in float32 and posteriors come back as float32 whatever it is.

    Raises:
        ModelError: with a one-line reason (missing folder, no CTC head, vocabulary mismatch, a dtype the
            device cannot do...).
    """
    check_dtype(dtype)
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ModelError(f"unknown device {device!r}; use cpu or cuda")
    if device.startswith("cuda") and not _cuda_available():
        raise ModelError("--device cuda asked for, but no CUDA GPU is visible")
    if threads is not None:
        if threads < 1:
            raise ModelError(f"thread count must be at least 1, got {threads}")
        # torch is only told when a torch model loads, so a process without one never imports it (~160 MB)
    if name == RANDOM_BASE:
        _torch_threads(threads)
        return random_base_model(device, dtype=dtype)
    if backbone is not None or vocab is not None:
        if name is not None:
            raise ModelError("give either a model or --backbone/--vocab, not both")
        if backbone is None or vocab is None:
            raise ModelError("the backbone set-up needs both --backbone and --vocab")
        symbols = read_vocab_file(vocab)  # before the (slow) backbone, so a bad file fails fast
        _torch_threads(threads)
        return assemble(load_backbone(str(backbone), device, dtype=dtype, threads=threads), symbols,
                        {"type": head_type}, head)
    if name is None:
        if not (DEFAULT_MODEL_DIR / MODEL_FILE).exists():
            raise ModelError("no default model is installed in this copy of phonestream; pass --model "
                             "(a Hugging Face CTC folder or hub id)")
        return _with_source(load_backbone_model(DEFAULT_MODEL_DIR, device, dtype, threads), DEFAULT_MODEL_DIR)
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise ModelError(f"model path is a file, not a folder: {path}")
    if path.is_dir() and (path / MODEL_FILE).exists():
        return _with_source(load_backbone_model(path, device, dtype, threads), path)
    if path.is_dir() and not (path / "config.json").exists():
        raise ModelError(f"{path} is not a model folder (no config.json or phonestream.json)")
    if not path.exists() and looks_like_a_path(str(name)):
        raise ModelError(f"no such model folder: {name}")
    require_hf(f"the Hugging Face model {name}")
    _torch_threads(threads)
    _quiet_transformers()
    from .hf import load_hf_ctc

    return _with_source(load_hf_ctc(str(path) if path.is_dir() else str(name), device, dtype),
                        path if path.is_dir() else None)


def _torch_threads(threads: int | None) -> None:
    if threads is not None and has_torch():
        import torch

        torch.set_num_threads(threads)


def random_base_model(device: str = "cpu", threads: int | None = None, dtype: str = "auto") -> CTCModel:
    """A randomly initialised (seed 0) wav2vec2-base-sized CTC model (94M parameters) over the 39 ARPAbet
    phonemes, for benchmarks and load tests; needs the [hf] extra."""
    require_hf("the random wav2vec2-base benchmark model")
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    from ..phones import ARPABET
    from .hf import HFCTCModel

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    vocab = Vocabulary(("<pad>", *ARPABET), 0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=len(vocab), pad_token_id=0))
    m = HFCTCModel(model, vocab, 16000, do_normalize=False, device=device, dtype=dtype)
    m.description = "random wav2vec2-base " + m.description
    return m


def looks_like_a_path(name: str) -> bool:
    """Whether a model name that is not an existing folder was meant as one rather than as a hub id:
    it starts with ``.``, ``/`` or ``~``, has a backslash or a trailing separator, is not shaped like
    a hub id (``name`` or ``namespace/name``), or its parent folder exists here (``models/typo``)."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.endswith("/"):
        return True
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:  # the light install has no hub client (it comes with [hf]): huggingface_hub's own rule
        if not _HUB_ID.fullmatch(name) or "--" in name or ".." in name or name.endswith(".git"):
            return True
    else:
        try:
            validate_repo_id(name)
        except HFValidationError:
            return True
    parent = Path(name).parent
    return str(parent) not in ("", ".") and parent.is_dir()


def _with_source(model: CTCModel, folder: Path | None) -> CTCModel:
    """Remember the folder a model came from (:attr:`CTCModel.source_dir`): files beside it (the phoneme
    LM ``lm.arpa*``) go with it."""
    model.source_dir = folder
    return model


def _cuda_available() -> bool:
    if has_torch():
        import torch

        return torch.cuda.is_available()
    import ctranslate2

    return ctranslate2.get_cuda_device_count() > 0


def _quiet_transformers() -> None:
    """Progress bars and load reports from transformers would break the one-line error contract."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
