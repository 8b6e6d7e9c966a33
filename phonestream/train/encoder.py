"""The shipped Whisper encoders in PyTorch, with the weights of their CTranslate2 files, for fine-tuning.

:class:`WhisperEncoder` is Whisper's audio encoder (two GELU convolutions, the second with stride 2,
sinusoidal positions, pre-LayerNorm transformer layers, a final LayerNorm) built from a CTranslate2
``model.bin`` (:mod:`phonestream.models.ct2_file`). In float32 it gives CTranslate2's float32 states
within 1e-4 (``tests/test_train_encoder.py``); the int8 states the streamer reads differ from both by
int8 rounding. Fine-tuned layers go back into a model folder as CTranslate2 variables
(:func:`tuned_variables`), which the Whisper backbone writes into a copy of the pinned file.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.ct2_file import Ct2Model

_LINEARS = (("qkv", "self_attention/linear_0"), ("out", "self_attention/linear_1"),
            ("fc1", "ffn/linear_0"), ("fc2", "ffn/linear_1"))
_NORMS = (("attn_norm", "self_attention/layer_norm"), ("ffn_norm", "ffn/layer_norm"))


class EncoderLayer(nn.Module):
    """One pre-LayerNorm transformer layer; query, key and value in one fused projection, as CTranslate2
    stores them (Whisper's key projection has no bias: its third of the fused bias stays zero and, a
    constant added to every key, cannot change attention)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm, self.qkv, self.out = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn_norm, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """``keys``: [B, 1, 1, T] booleans, False where a frame is padding no frame may attend to."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.out(F.scaled_dot_product_attention(q, k, v, attn_mask=keys).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder: log-mel ``[B, 80, T]`` (``phonestream.models.whisper.log_mel``) -> states
    ``[B, ceil(T / 2), dim]``."""

    def __init__(self, dim: int, layers: int, heads: int, positions: int = 1500, mels: int = 80) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(positions, dim))
        self.layers = nn.ModuleList(EncoderLayer(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, mel: torch.Tensor, frozen: int = 0, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """States of ``mel``; the convolutions and the first ``frozen`` layers run without building a
        graph (the cheap way to train only the layers above them).

        ``lengths``: each item's mel frames, the rest zero padding. The padding then changes nothing: the
        first convolution's outputs there are zeroed (what the second one's own zero padding would read)
        and no frame attends to it, so item ``i``'s first ``(lengths[i] + 1) // 2`` states are those of
        its mel alone. Windows of many lengths can so share a pass."""
        keys = None
        with torch.set_grad_enabled(torch.is_grad_enabled() and frozen == 0):
            x = F.gelu(self.conv1(mel))
            if lengths is not None:
                x = x * (torch.arange(x.shape[2]) < lengths[:, None])[:, None, :]
                keys = (torch.arange((x.shape[2] + 1) // 2) < ((lengths + 1) // 2)[:, None])[:, None, None, :]
            x = F.gelu(self.conv2(x)).transpose(1, 2)
            x = x + self.positions[: x.shape[1]]
        for i, layer in enumerate(self.layers):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= frozen):
                x = layer(x, keys)
        return self.norm(x)

    def tunable(self, top: int) -> list[nn.Parameter]:
        """The parameters of the top ``top`` layers and the final LayerNorm, made trainable; all others frozen."""
        for p in self.parameters():
            p.requires_grad = False
        chosen = [p for layer in self.layers[len(self.layers) - top :] for p in layer.parameters()]
        chosen += list(self.norm.parameters())
        for p in chosen:
            p.requires_grad = True
        return chosen

    @classmethod
    def from_ct2(cls, model: Ct2Model) -> WhisperEncoder:
        """The encoder of a CTranslate2 Whisper model (float32 copies of its float16 weights)."""
        var = model.variables
        layers = sum(1 for name in var if name.startswith("encoder/layer_") and name.endswith("/ffn/linear_0/weight"))
        dim = var["encoder/conv1/bias"].shape[0]
        enc = cls(dim, layers, int(var["encoder/num_heads"]), var["encoder/position_encodings/encodings"].shape[0])
        enc.load_state_dict({key: torch.from_numpy(np.asarray(var[name], np.float32))
                             for key, name in _names(layers).items()})
        return enc.eval()


def _names(layers: int) -> dict[str, str]:
    """PyTorch parameter name -> CTranslate2 variable name."""
    names = {"conv1.weight": "encoder/conv1/weight", "conv1.bias": "encoder/conv1/bias",
             "conv2.weight": "encoder/conv2/weight", "conv2.bias": "encoder/conv2/bias",
             "positions": "encoder/position_encodings/encodings",
             "norm.weight": "encoder/layer_norm/gamma", "norm.bias": "encoder/layer_norm/beta"}
    for i in range(layers):
        for ours, theirs in _NORMS:
            names[f"layers.{i}.{ours}.weight"] = f"encoder/layer_{i}/{theirs}/gamma"
            names[f"layers.{i}.{ours}.bias"] = f"encoder/layer_{i}/{theirs}/beta"
        for ours, theirs in _LINEARS:
            names[f"layers.{i}.{ours}.weight"] = f"encoder/layer_{i}/{theirs}/weight"
            names[f"layers.{i}.{ours}.bias"] = f"encoder/layer_{i}/{theirs}/bias"
    return names


def tuned_variables(state: dict[str, torch.Tensor], top: int) -> dict[str, np.ndarray]:
    """The top ``top`` layers and the final LayerNorm of a :class:`WhisperEncoder`'s ``state_dict()`` as
    CTranslate2 variables (float16, the files' dtype): what a model folder's ``encoder.safetensors`` holds."""
    layers = sum(1 for key in state if key.startswith("layers.") and key.endswith(".fc1.weight"))
    keep = tuple(f"layers.{i}." for i in range(layers - top, layers)) + ("norm.",)
    return {name: state[key].detach().cpu().numpy().astype(np.float16)
            for key, name in _names(layers).items() if key.startswith(keep)}
