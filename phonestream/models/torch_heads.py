"""The PyTorch form of the CTC heads, for training (the ``train`` extra needs PyTorch; inference does not).

Parameter names and shapes match :mod:`phonestream.models.heads`, the NumPy heads that run them:
:func:`to_inference` turns a trained module into one, and ``head.safetensors`` serves both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import ModelError
from .heads import Head


class LinearHead(nn.Module):
    """One linear layer from states to CTC logits."""

    def __init__(self, dim: int, n_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, n_out)

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # [B, T, dim] -> [B, T, n_out]
        return self.proj(states)


class ConvHead(nn.Module):
    """A few 1-D convolutions over time (``kernel`` frames each, same padding), then a linear layer.

    Its receptive field (``layers * (kernel - 1) + 1`` frames) lies inside every streaming window, so
    the streamer's context covers it.
    """

    def __init__(self, dim: int, n_out: int, hidden: int = 256, kernel: int = 5, layers: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.kernel, self.layers = kernel, layers
        blocks: list[nn.Module] = []
        width = dim
        for _ in range(layers):
            blocks += [nn.Conv1d(width, hidden, kernel, padding=kernel // 2), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.convs = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(width, n_out)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = self.norm(states).transpose(1, 2)
        return self.proj(self.convs(x).transpose(1, 2))


HEADS: dict[str, type[nn.Module]] = {"linear": LinearHead, "conv": ConvHead}


def build_head(spec: dict[str, Any], dim: int, n_out: int) -> nn.Module:
    """A head from its JSON spec ``{"type": "linear"|"conv", ...constructor options}``."""
    spec = dict(spec)
    kind = spec.pop("type", "linear")
    spec.pop("weights", None)
    if kind not in HEADS:
        raise ModelError(f"unknown head type {kind!r}; known: {', '.join(HEADS)}")
    return HEADS[kind](dim, n_out, **spec)


def head_spec(module: nn.Module) -> dict[str, Any]:
    """The JSON spec of a PyTorch head (what :func:`build_head` and :class:`~.heads.Head` read)."""
    if isinstance(module, ConvHead):
        return {"type": "conv", "hidden": module.proj.in_features, "kernel": module.kernel,
                "layers": module.layers}
    return {"type": "linear"}


def to_inference(module: nn.Module) -> Head:
    """The NumPy inference head with this module's weights (same names and shapes)."""
    return Head(head_spec(module), {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})
