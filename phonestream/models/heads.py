"""CTC heads for inference, in NumPy: frozen-encoder states in, phoneme logits out.

The default model needs no PyTorch at run time: its encoder runs in CTranslate2 and its head -- a few
hundred thousand parameters -- runs here, on the weights the training recipe saved
(``head.safetensors``, read with ``safetensors.numpy``). Parameter names and shapes are those of the
PyTorch modules the recipe trains (:mod:`phonestream.models.torch_heads`), so one file serves both; a
test checks the two agree to within 2e-5 on log posteriors.

Two kinds, described by a JSON spec:

- ``{"type": "linear"}``: ``proj`` only;
- ``{"type": "conv", "hidden": H, "kernel": K, "layers": L}``: LayerNorm, then L times (Conv1d over
  time with K frames, same zero padding, GELU), then ``proj``. Dropout is a training-only layer; its
  slot keeps the PyTorch module indexes (``convs.0``, ``convs.3``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import ModelError

#: Default conv head options (the PyTorch module's defaults).
CONV_DEFAULTS = {"hidden": 256, "kernel": 5, "layers": 2}
_LN_EPS = 1e-5


def _options(spec: dict[str, Any]) -> tuple[str, dict[str, int]]:
    kind = spec.get("type", "linear")
    if kind == "linear":
        return kind, {}
    if kind == "conv":
        opts = {k: int(spec.get(k, v)) for k, v in CONV_DEFAULTS.items()}
        if min(opts.values()) < 1 or opts["kernel"] % 2 == 0:
            raise ModelError(f"conv head needs positive sizes and an odd kernel, got {opts}")
        return kind, opts
    raise ModelError(f"unknown head type {kind!r}; known: linear, conv")


def head_shapes(spec: dict[str, Any], dim: int, n_out: int) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the head ``spec`` on ``dim``-dim states with ``n_out`` outputs."""
    kind, o = _options(spec)
    shapes: dict[str, tuple[int, ...]] = {}
    width = dim
    if kind == "conv":
        shapes["norm.weight"] = shapes["norm.bias"] = (dim,)
        for layer in range(o["layers"]):
            shapes[f"convs.{3 * layer}.weight"] = (o["hidden"], width, o["kernel"])
            shapes[f"convs.{3 * layer}.bias"] = (o["hidden"],)
            width = o["hidden"]
    shapes["proj.weight"], shapes["proj.bias"] = (n_out, width), (n_out,)
    return shapes


def head_radius(spec: dict[str, Any]) -> int:
    """Frames the head reads either side of an output frame (0 for a linear head)."""
    kind, o = _options(spec)
    return o["layers"] * (o["kernel"] // 2) if kind == "conv" else 0


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): exact-erf GELU as torch computes it, without SciPy.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(1 / np.sqrt(2)))).astype(np.float32)


class Head:
    """A CTC head: ``states [T, dim]`` float32 -> logits ``[T, n_out]``; a window's edges see zeros."""

    def __init__(self, spec: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        self.kind, self.options = _options(spec)
        self.spec = {"type": self.kind, **self.options}
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        w = self.weights["proj.weight"]
        self.n_out, width = w.shape
        self.dim = self.weights["norm.weight"].shape[0] if self.kind == "conv" else width
        if self.weights.keys() != head_shapes(self.spec, self.dim, self.n_out).keys():
            raise ModelError(f"weights do not fit a {self.kind} head")
        # each conv kernel [H, C, K] as a contiguous [K*C, H] matrix (tap-major, to match the input's
        # K shifted copies side by side), made once: a transposed view costs the GEMM about a quarter more
        self._gemm = [np.ascontiguousarray(self.weights[f"convs.{3 * i}.weight"].transpose(2, 1, 0).reshape(
            -1, self.options["hidden"])) for i in range(self.options.get("layers", 0))]
        self._proj = np.ascontiguousarray(w.T)

    @property
    def num_parameters(self) -> int:
        return int(sum(v.size for v in self.weights.values()))

    def __call__(self, states: np.ndarray) -> np.ndarray:
        x = np.asarray(states, dtype=np.float32)
        w = self.weights
        if self.kind == "conv":
            mean = x.mean(-1, keepdims=True)
            var = ((x - mean) ** 2).mean(-1, keepdims=True)
            x = (x - mean) / np.sqrt(var + _LN_EPS) * w["norm.weight"] + w["norm.bias"]
            k = self.options["kernel"]
            for layer, kernel in enumerate(self._gemm):
                padded = np.pad(x, ((k // 2, k // 2), (0, 0)))
                # the K shifted copies of the padded input side by side [T, K*C] times the [K*C, H] kernel:
                # one GEMM per layer, and contiguous row copies (reshaping a [T, C, K] window view took a
                # slow strided gather)
                win = np.concatenate([padded[j : j + len(x)] for j in range(k)], axis=1)
                x = _gelu(win @ kernel + w[f"convs.{3 * layer}.bias"])
        return x @ self._proj + w["proj.bias"]

    def log_probs(self, states: np.ndarray) -> np.ndarray:
        """Log softmax of :meth:`__call__`, float32."""
        z = self(states)
        z = z - z.max(-1, keepdims=True)
        return (z - np.log(np.exp(z).sum(-1, keepdims=True))).astype(np.float32)

    def save(self, path: str | Path) -> None:
        """Write the weights as safetensors (the names the PyTorch module uses)."""
        from safetensors.numpy import save_file

        save_file(self.weights, str(path))


def random_head(spec: dict[str, Any], dim: int, n_out: int, seed: int = 0) -> Head:
    """A seeded random head (uniform in +-1/sqrt(fan_in), like PyTorch's default initialisation)."""
    rng = np.random.default_rng(seed)
    shapes = head_shapes(spec, dim, n_out)
    weights = {}
    for name, shape in shapes.items():
        if name.startswith("norm."):
            weights[name] = np.ones(shape, np.float32) if name.endswith("weight") else np.zeros(shape, np.float32)
            continue
        # a weight and its bias share the layer's fan-in (the weight's size per output)
        bound = 1.0 / np.sqrt(np.prod(shapes[name.replace("bias", "weight")][1:]))
        weights[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return Head(spec, weights)


def load_head(spec: dict[str, Any], path: str | Path, dim: int, n_out: int) -> Head:
    """The head ``spec`` with weights from a safetensors file, checked against ``dim`` and ``n_out``.

    Raises:
        ModelError: a missing file, or weights of another shape (naming the vocabulary when only the
            output size differs).
    """
    from safetensors.numpy import load_file

    if not Path(path).is_file():
        raise ModelError(f"head weights not found: {path}")
    try:
        weights = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ModelError(f"cannot read head weights {path}: {str(err).splitlines()[0]}") from None
    expected = head_shapes(spec, dim, n_out)
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if expected != got:
        out = got.get("proj.bias")
        if out and out[0] != n_out:
            raise ModelError(f"head weights {path} have {out[0]} outputs but the vocabulary has {n_out} symbols")
        raise ModelError(f"head weights {path} do not fit a {spec.get('type', 'linear')} head on a {dim}-dim backbone")
    return Head(spec, weights)
