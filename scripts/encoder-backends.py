#!/usr/bin/env python3
"""What one streaming step of the default model's encoder costs in each runtime on this CPU, one thread.

phonestream runs the Whisper encoder in CTranslate2 int8. Issue 8 asks to weigh the alternatives (PyTorch
or ONNX Runtime with the same weights, which would also give every layer) against that int8 speed. This
times the encoder alone (the log-mel features are made once, outside the timing) on one balanced window
(1920 + 240 + 320 ms of the shipped sample recording) in:

- CTranslate2 int8, the GEMM backend it picks on this CPU (Intel MKL on Intel CPUs, oneDNN on others),
  then with the other one forced (``CT2_USE_MKL``), then CTranslate2 float32;
- PyTorch float32 (:mod:`phonestream.train.encoder`, the fine-tuning copy) and PyTorch dynamic int8
  (``torch.ao.quantization.quantize_dynamic`` on the linear layers);
- ONNX Runtime float32 and dynamic int8 (per-channel weights, MatMul and Gemm only), exported from the
  PyTorch copy (needs ``pip install onnx``; the rows say so when it is missing).

The runtimes take turns (8 rounds of 5 warm-up and 5 timed calls each; the row is the median of the
rounds' medians), so a shared, noisy CPU slows them alike. Each row also says how far its states are from
PyTorch float32's (mean |difference| / mean |states|; int8 rows differ by their rounding). CTranslate2
picks its GEMM backend once per process from the environment, so the forced-backend row runs in a child
process, after the others.

Usage::

    scripts/encoder-backends.py [--model phonestream/default_model] [--calls 40] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WINDOW_MS = 1920 + 240 + 320


def _time(call, calls: int) -> float:
    for _ in range(5):
        call()
    took = []
    for _ in range(calls):
        t = time.perf_counter()
        call()
        took.append((time.perf_counter() - t) * 1e3)
    return statistics.median(took)


def _deviation(states: np.ndarray, ref: np.ndarray) -> float:
    states = np.asarray(states, np.float32).reshape(ref.shape)
    return float(np.abs(states - ref).mean() / np.abs(ref).mean())


def _features(model) -> np.ndarray:
    from phonestream import load_audio
    from phonestream.models.whisper import log_mel

    audio = load_audio(str(REPO / "phonestream/samples/LJ001-0001.flac"), 16000)
    return log_mel(audio[: WINDOW_MS * 16]).astype(np.float32)


def ct2_child(folder: str, dtype: str, ref_path: str, calls: int) -> None:
    """Run inside a child process: print one JSON row for CTranslate2 at ``dtype``."""
    import ctranslate2

    from phonestream import load_model

    model = load_model(folder, threads=1, dtype=dtype)
    enc = model.backbone._model
    feats = ctranslate2.StorageView.from_array(_features(model)[None])
    states = np.asarray(enc.encode(feats, to_cpu=True))
    ms = _time(lambda: enc.encode(feats, to_cpu=True), calls)
    print(json.dumps({"ms": ms, "dev": _deviation(states, np.load(ref_path)), "type": model.backbone.compute_type}))


def ct2_row(folder: str, dtype: str, ref_path: str, calls: int, env: dict[str, str]) -> tuple[float, float, str]:
    proc = subprocess.run([sys.executable, __file__, "--ct2-child", dtype, "--model", folder, "--ref", ref_path,
                           "--calls", str(calls)], capture_output=True, text=True,
                          env={**os.environ, **env, "CT2_VERBOSE": "1"})
    if proc.returncode:
        raise SystemExit(f"CTranslate2 {dtype} {env}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return row["ms"], row["dev"], _backends(proc.stderr)["int8" if "int8" in row["type"] else "float32"]


def _backends(log: str) -> dict[str, str]:
    """The GEMM backends a CT2_VERBOSE log names, by compute type (it lists them at a process's first load)."""
    found = dict(re.findall(r"(SGEMM|GEMM_S8) backend: (\w+)", log))
    return {"float32": found.get("SGEMM", "?"), "int8": found.get("GEMM_S8", "?")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(REPO / "phonestream/default_model"))
    p.add_argument("--calls", type=int, default=40)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--ct2-child", help=argparse.SUPPRESS)
    p.add_argument("--ref", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.ct2_child:
        return ct2_child(a.model, a.ct2_child, a.ref, a.calls)

    import ctranslate2
    import torch

    from phonestream import load_model
    from phonestream.models.ct2_file import read_model
    from phonestream.train.encoder import WhisperEncoder

    torch.set_num_threads(1)
    model = load_model(a.model, threads=1)
    feats = _features(model)
    mel = torch.from_numpy(feats)[None]
    view = ctranslate2.StorageView.from_array(feats[None])
    torch_enc = WhisperEncoder.from_ct2(read_model(Path(model.backbone.path) / "model.bin"))
    with torch.inference_mode():
        ref = torch_enc(mel).numpy()
        dyn = torch.ao.quantization.quantize_dynamic(torch_enc, {torch.nn.Linear}, dtype=torch.qint8)
    ct2_int8, ct2_fp32 = model.backbone._model, load_model(a.model, threads=1, dtype="float32").backbone._model
    backends = _ct2_backends(a.model)
    # name -> (GEMM backend, one call returning states)
    runtimes = {
        "CTranslate2 int8 (phonestream's default)": (backends["int8"],
                                                     lambda: np.asarray(ct2_int8.encode(view, to_cpu=True))),
        "CTranslate2 float32": (backends["float32"], lambda: np.asarray(ct2_fp32.encode(view, to_cpu=True))),
        "PyTorch float32": ("-", lambda: torch_enc(mel).numpy()),
        "PyTorch dynamic int8 (linear layers)": ("-", lambda: dyn(mel).numpy()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        ort = _ort_runtimes(torch_enc, mel, Path(tmp))
        runtimes.update(ort if isinstance(ort, dict) else {})
        # interleaved rounds: a shared, noisy CPU slows every runtime alike instead of whichever ran then
        per_round: dict[str, list[float]] = {name: [] for name in runtimes}
        with torch.inference_mode():
            for _ in range(a.rounds):
                for name, (_, call) in runtimes.items():
                    per_round[name].append(_time(call, max(1, a.calls // a.rounds)))
            rows = [(name, backend, statistics.median(per_round[name]), _deviation(call(), ref))
                    for name, (backend, call) in runtimes.items()]
        cpuinfo = Path("/proc/cpuinfo")
        intel = cpuinfo.exists() and "GenuineIntel" in cpuinfo.read_text(errors="replace")
        ref_path = str(Path(tmp) / "ref.npy")
        np.save(ref_path, ref)
        ms, dev, backend = ct2_row(a.model, "auto", ref_path, a.calls, {"CT2_USE_MKL": "0" if intel else "1"})
        rows.insert(1, ("CTranslate2 int8, the other GEMM backend forced (not interleaved)", backend, ms, dev))
    if not isinstance(ort, dict):
        rows.append(("ONNX Runtime float32 / dynamic int8", "-", None, ort))
    print(f"encoder of {a.model}: one {WINDOW_MS} ms window ({mel.shape[2]} mel frames), one thread; median over "
          f"{a.rounds} interleaved rounds of each round's median of {max(1, a.calls // a.rounds)} calls")
    print("| runtime | GEMM backend | ms per step | states vs PyTorch float32 |")
    print("|---|---|---|---|")
    for name, backend, ms, dev in rows:
        print(f"| {name} | {backend} | " + (f"{ms:.1f} | {dev:.4f} |" if ms is not None else f"{dev} | - |"))


def _ct2_backends(folder: str) -> dict[str, str]:
    """The GEMM backends CTranslate2 picks in a fresh process with this environment (:func:`_backends`)."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from phonestream import load_model; "
                           "load_model(sys.argv[1], threads=1)", folder],
                          capture_output=True, text=True, env={**os.environ, "CT2_VERBOSE": "1"})
    return _backends(proc.stderr)


def _ort_runtimes(torch_enc, mel, tmp: Path):
    """ONNX Runtime float32 and dynamic int8 sessions of the PyTorch copy, as runtimes; or why not."""
    try:
        import onnx  # noqa: F401  (the exporter and the quantiser need it)
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return "not measured: pip install onnx onnxruntime"
    import torch

    class MelOnly(torch.nn.Module):  # the exporter would trace forward's keyword defaults as inputs too
        def __init__(self) -> None:
            super().__init__()
            self.encoder = torch_enc

        def forward(self, x):
            return self.encoder(x)

    fp32, int8 = tmp / "encoder.onnx", tmp / "encoder-int8.onnx"
    torch.onnx.export(MelOnly(), (mel,), str(fp32), input_names=["mel"], output_names=["states"],
                      dynamic_axes={"mel": {0: "batch", 2: "frames"}}, opset_version=17, dynamo=False)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"])
    runtimes = {}
    feed = {"mel": mel.numpy()}
    for name, path in (("ONNX Runtime float32", fp32), ("ONNX Runtime dynamic int8 (per-channel weights)", int8)):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        runtimes[name] = ("MLAS", lambda s=session: s.run(None, feed)[0])
    return runtimes


if __name__ == "__main__":
    main()
