"""A frozen pretrained speech encoder (the backbone) with a small CTC head on top.

This is how phonestream gets real phonemes without fine-tuning a whole model: the backbone turns a
window of audio into states, the head turns states into phoneme log posteriors. The shipped default
model is one of these (a Whisper encoder); a user's Hugging Face encoder folder plus a vocabulary file
makes another. Saved form, a folder::

    phonestream.json   {"format": "phonestream-backbone-head", "backbone": {...}, "head": {...},
                        "streaming": {"chunk_ms": .., "left_ms": .., "right_ms": ..},
                        "check": {"threshold": ..}}   (optional: the pronunciation check's, for this head)
    vocab.txt          one symbol per line, blank first
    head.safetensors   the head's weights
    encoder.safetensors  (optional) fine-tuned Whisper encoder layers, named in the backbone config
                         (``"weights"``; :func:`phonestream.models.whisper.tuned_encoder_path`)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import Backbone, CTCModel, ModelError, StreamingDefaults, Vocabulary, require_hf, umask_mode
from .heads import Head, head_radius, load_head, random_head
from .whisper import BY_CONFIG_KEY as WHISPER_ENCODERS
from .whisper import ENCODER_WEIGHTS_FILE, WhisperBackbone

FORMAT = "phonestream-backbone-head"
#: The files of a model folder: its description (what makes a folder a phonestream model), the
#: vocabulary and the head's weights.
MODEL_FILE, VOCAB_FILE, HEAD_FILE = "phonestream.json", "vocab.txt", "head.safetensors"
BLANK = "<blank>"
#: ``type`` of a Hugging Face encoder in a backbone config (the Whisper encoders' are in :data:`WHISPER_ENCODERS`).
HF_ENCODER_KEY = "hf-encoder"


class HFEncoderBackbone(Backbone):
    """A Hugging Face audio encoder (Wav2Vec2Model, HubertModel, WavLMModel, ...), last hidden state."""

    def __init__(self, path: str, device: str = "cpu", dtype: str = "auto") -> None:
        require_hf(f"the Hugging Face encoder {path}")
        from transformers import AutoConfig, AutoModel

        from .hf import conv_geometry, conv_num_frames, feature_settings, normalise_window, torch_dtype

        self.dtype = torch_dtype(dtype, device)
        try:
            cfg = AutoConfig.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).eval().to(device=device, dtype=self.dtype)
        except Exception as err:  # config/weights errors come in many types
            raise ModelError(f"cannot load encoder {path!r}: {str(err).splitlines()[0]}") from None
        self.path, self.device = str(path), device
        self.precision = str(self.dtype).removeprefix("torch.")
        self._kernels, self._strides = conv_geometry(cfg)
        self._conv_num_frames, self._normalise = conv_num_frames, normalise_window
        self.frame_stride = int(np.prod(self._strides))
        self.dim = int(cfg.hidden_size)
        self.sample_rate, self.do_normalize = feature_settings(path)
        self.description = f"{type(self.model).__name__} encoder"

    def num_frames(self, n_samples: int) -> int:
        return self._conv_num_frames(n_samples, self._kernels, self._strides)

    def encode_batch(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        out = []
        with torch.inference_mode():
            for w in windows:  # one at a time: padding would change group-norm encoders' outputs
                if self.num_frames(len(w)) == 0:
                    out.append(np.zeros((0, self.dim), np.float32))
                    continue
                if self.do_normalize:
                    w = self._normalise(w)
                x = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))[None].to(self.device, self.dtype)
                out.append(self.model(x).last_hidden_state[0].float().cpu().numpy())  # the head runs in float32
        return out

    def config(self) -> dict[str, Any]:
        return {"type": HF_ENCODER_KEY, "path": self.path}


# ---- the model -------------------------------------------------------------------------------------


class BackboneCTCModel(CTCModel):
    """Backbone states through a CTC head, as a :class:`CTCModel`."""

    def __init__(self, backbone: Backbone, head: Head, vocab: Vocabulary,
                 streaming_defaults: StreamingDefaults | None = None, check_threshold: float | None = None) -> None:
        self.backbone = backbone
        self.check_threshold = check_threshold
        self.head = head
        self.head_spec = head.spec
        self.vocab = vocab
        self.sample_rate = backbone.sample_rate
        self.frame_stride = backbone.frame_stride
        self.device, self.precision = backbone.device, backbone.precision
        self.max_window_s = backbone.max_window_s
        self.streaming_defaults = streaming_defaults or StreamingDefaults()
        self.description = f"{backbone.description} + {head.kind} CTC head ({head.num_parameters / 1e6:.2f}M)"
        self._radius = head_radius(head.spec)  # frames the head reads either side of an output frame

    def num_frames(self, n_samples: int) -> int:
        return self.backbone.num_frames(n_samples)

    def log_probs_batch(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        return [self.head.log_probs(s) if len(s) else np.zeros((0, len(self.vocab)), np.float32)
                for s in self.backbone.encode_batch(windows)]

    def log_probs_from(self, windows: list[np.ndarray], first: Sequence[int]) -> list[np.ndarray]:
        """The head runs on frames ``first[i]`` onward only, reading the ``head_radius`` frames before them
        as it would in the whole window, so those frames come out exactly as :meth:`log_probs_batch`'s
        (about a quarter of the balanced preset's window; the encoder still sees all of it)."""
        out = []
        for s, f in zip(self.backbone.encode_batch(windows), first):
            f = min(max(0, int(f)), len(s))
            lo = max(0, f - self._radius)
            lp = self.head.log_probs(s[lo:]) if len(s) > lo else np.zeros((0, len(self.vocab)), np.float32)
            out.append(lp[f - lo :])
        return out

    def save(self, folder: str | Path) -> None:
        """Write the folder form described in this module's docstring (with the backbone's fine-tuned
        encoder weights, if it has any)."""
        save_model_folder(folder, self.backbone.config(), self.head, self.vocab, self.streaming_defaults,
                          check_threshold=self.check_threshold)
        weights = getattr(self.backbone, "weights", None)
        if weights is not None and Path(weights).resolve() != (Path(folder) / ENCODER_WEIGHTS_FILE).resolve():
            shutil.copyfile(weights, Path(folder) / ENCODER_WEIGHTS_FILE)


def save_model_folder(folder: str | Path, backbone_config: dict[str, Any], head: Head, vocab: Vocabulary,
                      streaming: StreamingDefaults, training: dict[str, Any] | None = None,
                      check_threshold: float | None = None) -> None:
    """Write the folder form described in this module's docstring for a head on the backbone that
    ``backbone_config`` describes (:meth:`Backbone.config`), without loading that backbone; ``training``
    (how the head was trained) is kept in the description as it is; ``check_threshold``, if given, is the
    pronunciation check's threshold calibrated for this head."""
    folder = Path(folder)
    check = None if check_threshold is None else {"threshold": _threshold(check_threshold, folder / MODEL_FILE)}
    folder.mkdir(parents=True, exist_ok=True)  # (a bad threshold is refused before anything is written)
    save_vocab_file(folder / VOCAB_FILE, vocab)
    head.save(folder / HEAD_FILE)
    umask_mode(folder / HEAD_FILE)  # safetensors writes 0600; the folder is meant to be shared
    meta = {
        "format": FORMAT,
        "backbone": backbone_config,
        "head": {**head.spec, "weights": HEAD_FILE},
        "vocab": VOCAB_FILE,
        "streaming": streaming.to_dict(),
    }
    if check is not None:
        meta["check"] = check
    if training:
        meta["training"] = training
    (folder / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def read_vocab_file(path: str | Path) -> Vocabulary:
    """A phoneme vocabulary file: one symbol per line; ``<blank>`` is added first if absent.

    Raises:
        ModelError: missing file, no symbols, or a symbol listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"vocabulary file not found: {path}")
    symbols = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not symbols:
        raise ModelError(f"vocabulary file {path} holds no symbols")
    dupes = sorted({s for s in symbols if symbols.count(s) > 1})
    if dupes:
        raise ModelError(f"vocabulary file {path} lists {', '.join(dupes)} more than once")
    if BLANK not in symbols:
        symbols.insert(0, BLANK)
    return Vocabulary(tuple(symbols), symbols.index(BLANK))


def save_vocab_file(path: str | Path, vocab: Vocabulary) -> None:
    Path(path).write_text("".join(s + "\n" for s in vocab.symbols), encoding="utf-8")


def load_backbone(spec: dict[str, Any] | str, device: str = "cpu", base: Path | None = None,
                  dtype: str = "auto", threads: int | None = None) -> Backbone:
    """A backbone from its config dict, or from a path / registered name given as a string, to run in
    ``dtype`` (:data:`~phonestream.models.base.DTYPES`); ``threads``: the CPU threads of the default
    encoder (None: its default, :func:`.whisper.default_threads`; a torch encoder follows
    torch's setting)."""
    if isinstance(spec, str):
        spec = {"type": spec} if spec in WHISPER_ENCODERS else {"type": HF_ENCODER_KEY, "path": spec}
    kind = spec.get("type")
    if kind == HF_ENCODER_KEY:
        path = Path(spec["path"])
        if not path.is_absolute() and base is not None and (base / path).exists():
            path = base / path
        return HFEncoderBackbone(str(path), device, dtype)
    if kind in WHISPER_ENCODERS:
        options = {k: v for k, v in spec.items() if k not in ("type", "threads")}
        if "weights" in options:  # fine-tuned encoder variables, a file of the model folder
            options["weights"] = (base or Path(".")) / str(options["weights"])
        return WhisperBackbone(**options, device=device, dtype=dtype, threads=threads,
                               encoder=WHISPER_ENCODERS[kind].name)
    raise ModelError(f"unknown backbone type {kind!r}")


def load_backbone_model(folder: str | Path, device: str = "cpu", dtype: str = "auto",
                        threads: int | None = None) -> BackboneCTCModel:
    """Load the folder form written by :meth:`BackboneCTCModel.save`, its backbone to run in ``dtype``
    (the head always runs in float32) with ``threads`` as :func:`load_backbone` takes them."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / MODEL_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"cannot read {folder / MODEL_FILE}: {err}") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{folder} is not a {FORMAT} folder")
    vocab = read_vocab_file(folder / meta.get("vocab", VOCAB_FILE))
    backbone = load_backbone(meta["backbone"], device, base=folder, dtype=dtype, threads=threads)
    head_spec = {k: v for k, v in meta.get("head", {"type": "linear"}).items() if k != "weights"}
    weights = meta.get("head", {}).get("weights")
    check = meta.get("check", {})
    if not isinstance(check, dict):
        raise ModelError(f"{folder / MODEL_FILE}: \"check\" must be an object like {{\"threshold\": 0.07}}")
    threshold = None if check.get("threshold") is None else _threshold(check["threshold"], folder / MODEL_FILE)
    return assemble(backbone, vocab, head_spec, folder / weights if weights else None,
                    StreamingDefaults.from_dict(meta["streaming"]) if "streaming" in meta else None,
                    check_threshold=threshold)


def _threshold(value: Any, where: Path) -> float:
    """A check threshold as it may stand in ``phonestream.json``: a number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ModelError(f"{where}: the check threshold must be a number between 0 and 1, got {value!r}")
    return float(value)


def assemble(backbone: Backbone, vocab: Vocabulary, head_spec: dict[str, Any] | None = None,
             weights: str | Path | None = None, streaming: StreamingDefaults | None = None,
             seed: int = 0, check_threshold: float | None = None) -> BackboneCTCModel:
    """Backbone + vocabulary + head (random, seeded, unless ``weights`` names a safetensors file).

    Raises:
        ModelError: the weights do not fit the head, or their output size differs from the vocabulary.
    """
    head_spec = head_spec or {"type": "linear"}
    head = (random_head(head_spec, backbone.dim, len(vocab), seed) if weights is None
            else load_head(head_spec, weights, backbone.dim, len(vocab)))
    return BackboneCTCModel(backbone, head, vocab, streaming, check_threshold)
