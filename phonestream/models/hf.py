"""Hugging Face CTC checkpoints (wav2vec2, HuBERT, WavLM, Data2VecAudio, anything AutoModelForCTC loads).

The phoneme symbols and the blank come from the checkpoint's tokenizer vocabulary (``vocab.json``, as
written by Wav2Vec2CTCTokenizer and Wav2Vec2PhonemeCTCTokenizer); the blank is the pad token, as in
transformers' CTC training. The feature extractor's settings (sampling rate, ``do_normalize``) are
read the way transformers reads them (:func:`feature_settings`: ``preprocessor_config.json`` or the
``processor_config.json`` that current ``Wav2Vec2Processor.save_pretrained`` writes) and honoured, so
that windows are prepared exactly as the checkpoint was trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .base import CTCModel, ModelError, StreamingDefaults, Vocabulary, check_dtype

# Tokens that tokenizers add which are never phonemes; decoders treat them as blank.
_NON_PHONEME_TOKENS = {"<s>", "</s>", "<unk>", "[UNK]", "[PAD]", "<pad>", "|", " "}


def torch_dtype(dtype: str, device: str) -> torch.dtype:
    """The torch dtype that ``--dtype`` means on ``device``.

    ``auto`` is bfloat16 on a CUDA GPU that has it (its range is float32's, so no layer overflows), float16
    on an older GPU, and float32 on the CPU, where half precision is slower.

    Raises:
        ModelError: an unknown name, or bfloat16 asked for on a GPU without it.
    """
    check_dtype(dtype)
    on_gpu = device.startswith("cuda")
    if dtype == "auto":
        if not on_gpu:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype == "bfloat16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise ModelError(f"--dtype bfloat16 is not supported by this GPU ({torch.cuda.get_device_name(device)}); "
                         "use float16")
    return getattr(torch, dtype)


def keep_float32(module: torch.nn.Module) -> None:
    """Run ``module`` (a CTC head) in float32 whatever precision the rest of its model runs in: its
    weights become float32 and its input is cast up, so logits and log-softmax are computed in float32."""
    module.float()
    module.register_forward_pre_hook(lambda _m, args: tuple(a.float() for a in args))


def conv_geometry(config) -> tuple[list[int], list[int]]:
    """Kernel sizes and strides of a transformers audio config's convolutional feature encoder.

    Raises:
        ModelError: the config has none (not a wav2vec2-family model).
    """
    kernels = list(getattr(config, "conv_kernel", []) or [])
    strides = list(getattr(config, "conv_stride", []) or [])
    if not kernels or len(kernels) != len(strides):
        raise ModelError("model config has no convolutional feature encoder (conv_kernel/conv_stride)")
    return kernels, strides


def conv_num_frames(n_samples: int, kernels: list[int], strides: list[int]) -> int:
    """Output length of a stack of unpadded 1-D convolutions (wav2vec2's feature encoder)."""
    n = n_samples
    for k, s in zip(kernels, strides):
        if n < k:
            return 0
        n = (n - k) // s + 1
    return n


def normalise_window(window: np.ndarray) -> np.ndarray:
    """Zero-mean unit-variance normalisation of one window, as Wav2Vec2FeatureExtractor does for a
    checkpoint whose ``do_normalize`` is set (:func:`feature_settings`). In float64: a client's f32le
    samples may be finite but huge (1e30), whose float32 variance overflows to inf."""
    w = window.astype(np.float64)
    return ((w - w.mean()) / np.sqrt(w.var() + 1e-7)).astype(np.float32)


#: Settings assumed for a checkpoint that has no feature-extractor configuration at all.
DEFAULT_SAMPLE_RATE, DEFAULT_DO_NORMALIZE = 16000, True


def feature_settings(folder: str | Path) -> tuple[int, bool]:
    """Sampling rate and ``do_normalize`` of a checkpoint's feature extractor (a folder or a hub id).

    Loaded with ``AutoFeatureExtractor``, so every file layout transformers reads is honoured
    (``preprocessor_config.json``, or ``processor_config.json`` with the settings nested under
    ``feature_extractor``). A folder with neither gets 16000 Hz and normalisation, the wav2vec2 defaults.

    Raises:
        ModelError: a feature-extractor configuration exists but cannot be read.
    """
    from transformers import AutoFeatureExtractor

    local = Path(folder)
    if local.is_dir() and not any((local / f).is_file() for f in ("preprocessor_config.json",
                                                                  "processor_config.json")):
        return DEFAULT_SAMPLE_RATE, DEFAULT_DO_NORMALIZE
    try:
        extractor = AutoFeatureExtractor.from_pretrained(str(folder))
    except OSError:
        if local.is_dir():
            raise ModelError(f"cannot read the feature extractor settings of {folder}") from None
        return DEFAULT_SAMPLE_RATE, DEFAULT_DO_NORMALIZE  # a hub checkpoint without one
    except Exception as err:  # JSON, type and lookup errors: one line for the user
        raise ModelError(f"cannot read the feature extractor settings of {folder}: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    rate = getattr(extractor, "sampling_rate", None)
    if not isinstance(rate, int) or rate <= 0:
        raise ModelError(f"the feature extractor of {folder} has no valid sampling_rate ({rate!r})")
    return rate, bool(getattr(extractor, "do_normalize", DEFAULT_DO_NORMALIZE))


def load_vocabulary(folder: Path, config) -> Vocabulary:
    """Vocabulary of a CTC checkpoint from its ``vocab.json`` and the model's pad (= blank) id."""
    vocab_file = folder / "vocab.json"
    if not vocab_file.exists():
        raise ModelError(f"{folder} has no vocab.json: cannot tell which output is which phoneme")
    try:
        mapping = json.loads(vocab_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{vocab_file} is not valid JSON: {err}") from None
    # Multilingual phoneme tokenizers nest {language: {token: id}}; a single-language one is flat.
    if mapping and all(isinstance(v, dict) for v in mapping.values()):
        mapping = next(iter(mapping.values()))
    if not mapping:
        raise ModelError(f"{vocab_file} holds no symbols")
    size = max(mapping.values()) + 1
    symbols = ["<unused>"] * size
    for token, index in mapping.items():
        symbols[index] = token
    pad_id = config.pad_token_id if config.pad_token_id is not None else mapping.get("<pad>", 0)
    skip = {i for i, s in enumerate(symbols) if s in _NON_PHONEME_TOKENS or s == "<unused>"} - {pad_id}
    return Vocabulary(tuple(symbols), int(pad_id), frozenset(skip))


def count_text(n: int) -> str:
    """A parameter count for people: 94.4M, 57.3k, 812 (a tiny model is not "0.0M")."""
    if n >= 999_950:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}k" if n >= 1000 else str(n)


class HFCTCModel(CTCModel):
    """A transformers ``*ForCTC`` model run with inference mode on CPU or CUDA, in the precision ``dtype``
    (:func:`torch_dtype`) except its CTC head, which runs in float32."""

    def __init__(self, model, vocab: Vocabulary, sample_rate: int, do_normalize: bool, device: str,
                 dtype: str = "auto") -> None:
        self.dtype = torch_dtype(dtype, device)
        self.model = model.eval().to(device=device, dtype=self.dtype)
        if self.dtype != torch.float32:
            keep_float32(model.lm_head)
        self.device = device
        self.precision = str(self.dtype).removeprefix("torch.")
        self.vocab = vocab
        self.sample_rate = sample_rate
        self.do_normalize = do_normalize
        self._kernels, self._strides = conv_geometry(model.config)
        self.frame_stride = int(np.prod(self._strides))
        self.streaming_defaults = StreamingDefaults()
        n_params = sum(p.numel() for p in model.parameters())
        self.description = f"{type(model).__name__} ({count_text(n_params)} parameters)"

    def num_frames(self, n_samples: int) -> int:
        return conv_num_frames(n_samples, self._kernels, self._strides)

    def _prepare(self, window: np.ndarray) -> np.ndarray:
        if self.do_normalize:
            window = normalise_window(window)
        return window.astype(np.float32, copy=False)

    def log_probs_batch(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(windows)
        # Only equal-length windows share a pass: padding would change group-norm models' outputs.
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_length.setdefault(len(w), []).append(i)
        with torch.inference_mode():
            for length, idx in by_length.items():
                if self.num_frames(length) == 0:
                    for i in idx:
                        out[i] = np.zeros((0, len(self.vocab)), np.float32)
                    continue
                batch = torch.from_numpy(np.stack([self._prepare(windows[i]) for i in idx]))
                # normalised in float32 on the host, then cast: half precision starts at the model's input
                logits = self.model(batch.to(self.device, self.dtype)).logits.float()
                logp = torch.log_softmax(logits, dim=-1).cpu().numpy()
                for row, i in enumerate(idx):
                    out[i] = logp[row]
        return out  # type: ignore[return-value]


def load_hf_ctc(name: str, device: str = "cpu", dtype: str = "auto") -> HFCTCModel:
    """Load a CTC checkpoint from a local folder or a Hugging Face hub id, to run in ``dtype``
    (:func:`torch_dtype`).

    Raises:
        ModelError: no such folder/id, no CTC head, a vocabulary that does not match the head, or a dtype
            the device cannot do.
    """
    from transformers import AutoConfig, AutoModelForCTC

    torch_dtype(dtype, device)  # a dtype the device cannot do fails before the (slow) download and load
    local = Path(name)
    if local.exists():
        folder = local
    else:
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(name))
        except Exception as err:  # network, offline mode, no such repo, gated...: say what was tried
            reason = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0]
            raise ModelError(f"{name!r} is not a folder here, so it was looked up on the Hugging Face hub, which "
                             f"could not provide it ({reason[:160]}); for a local folder give its path, "
                             f"e.g. ./{name}") from None
    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as err:  # hub and config errors come in many types; the message is what matters
        raise ModelError(f"cannot load model {name!r}: {str(err).splitlines()[0]}") from None
    try:
        model, info = AutoModelForCTC.from_pretrained(folder, output_loading_info=True)
    except ValueError as err:
        raise ModelError(f"{name} has no CTC head ({type(config).__name__}): {str(err).splitlines()[0]}") from None
    except OSError as err:
        raise ModelError(f"cannot load weights from {name}: {str(err).splitlines()[0]}") from None
    if any(key.startswith("lm_head") for key in info.get("missing_keys", ())):
        raise ModelError(f"{name} has no trained CTC head (lm_head weights missing); to put a phoneme head on "
                         "this encoder use --backbone with --vocab")
    vocab = load_vocabulary(folder, config)
    head_size = model.lm_head.out_features
    if len(vocab) != head_size:
        raise ModelError(f"vocabulary of {name} has {len(vocab)} symbols but the CTC head has {head_size} outputs")
    sample_rate, do_normalize = feature_settings(folder)
    return HFCTCModel(model, vocab, sample_rate, do_normalize, device, dtype)
