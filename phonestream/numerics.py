"""Reproducible numbers: which settings change a model's floating-point output, and pinning them.

The decoders are exact functions of the model's log posteriors, and no decision anywhere depends on the
wall clock (compute times are measured, never acted on). What can change the posteriors, in the last
bits, is how the arithmetic is split and which machine instructions do it:

- the BLAS thread count of NumPy (the default model's head): OpenBLAS splits a matrix product across
  threads, and a different split sums in a different order. Its default is the machine's core count,
  so the same files gave different posteriors on different machines. :func:`pin_blas_threads` sets it
  to 1 (the head's matrices are small; it costs nothing measurable);
- the instruction set picked at run time by CTranslate2 (the Whisper encoder's int8 kernels) and by
  OpenBLAS: AVX-512, AVX2 or generic code round differently. Fixed for a given machine;
  ``CT2_FORCE_CPU_ISA=AVX2`` (or ``GENERIC``) forces CTranslate2's choice to compare machines;
- PyTorch's intra-op thread count for Hugging Face models (``--threads``; default: the core count);
- the precision the model computes in (``--dtype``: half precision on CUDA by default) and the device;
- library versions (CTranslate2, OpenBLAS/NumPy, PyTorch).

A difference of 1e-5 in one frame's log posterior rarely matters, but the beam search's choice
between two near-equal hypotheses can flip on it, and so a phoneme or two over a test set.
:func:`numeric_setup` reports these settings, and ``phonestream eval`` prints them with its figures.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def pin_blas_threads(threads: int = 1) -> None:
    """Set NumPy's BLAS libraries to ``threads`` threads for the rest of the process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


def numeric_setup(model: Any = None) -> dict[str, Any]:
    """The settings that decide a model's floating-point output on this machine (see the module doc)."""
    from importlib.metadata import version

    from threadpoolctl import threadpool_info

    out: dict[str, Any] = {
        "machine": platform.machine(),
        "blas": [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} threads={i.get('num_threads')}"
                 for i in threadpool_info() if i.get("user_api") == "blas"],
    }
    if model is not None:  # --dtype: half precision moves posteriors far more than any setting below
        out["precision"] = f"{getattr(model, 'device', 'cpu')} {getattr(model, 'precision', 'float32')}"
    backbone = getattr(model, "backbone", None)
    if getattr(backbone, "compute_type", None) is not None:  # the Whisper encoder on CTranslate2
        out["ctranslate2"] = version("ctranslate2")
        out["ctranslate2_threads"] = getattr(backbone, "threads", None)
        out["ctranslate2_isa"] = os.environ.get("CT2_FORCE_CPU_ISA", "auto")
    torch = sys.modules.get("torch")  # only when a Hugging Face model loaded it
    if torch is not None:
        out["torch"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
    return out
