"""Audio sources: files, raw PCM on stdin and the microphone, all delivered as mono float32 pieces.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, AIFF... without FFmpeg) and resampling
uses soxr (the SoX resampler: high quality and fast, and streamable so live sources can be resampled
piece by piece). The microphone goes through sounddevice (PortAudio), imported only when it is used so
that machines without an audio stack can still run everything else.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """Audio could not be read or used (one-line message for the user)."""


class AudioTooLarge(AudioError):
    """Audio longer than the caller allows (found from the file's header, before decoding it)."""


# A file on disk, its bytes in memory, or an open binary file (e.g. an HTTP upload).
AudioSource = Union[str, Path, bytes, BinaryIO]


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says, read without decoding its samples."""

    sample_rate: int
    channels: int
    frames: int | None  # None: the header does not say (e.g. a FLAC written as a stream)

    @property
    def seconds(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate

    @property
    def decoded_bytes(self) -> int | None:
        """Memory the samples take decoded as float32 with every channel."""
        return None if self.frames is None else self.frames * self.channels * 4


PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels (``[n, channels]`` -> ``[n]``) and return float32."""
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return np.ascontiguousarray(samples, dtype=np.float32)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a whole mono signal with soxr's high-quality setting."""
    if from_rate == to_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    return soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read a whole audio file as mono float32 at ``sample_rate``.

    Raises:
        AudioError: the file is missing, empty, corrupt or in a format libsndfile cannot read.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"audio path is a folder, not a file: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty: {path}")
    return decode_audio(path, sample_rate, name=f"audio file {path}")


def _open(source: AudioSource, name: str) -> sf.SoundFile:
    """Open ``source`` with libsndfile (reads the header only).

    Raises:
        AudioError: nothing to read, or data libsndfile cannot decode.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise AudioError(f"{name} is empty")
        source = io.BytesIO(source)
    try:
        return sf.SoundFile(source if not isinstance(source, Path) else str(source))
    except sf.LibsndfileError as err:
        # its str() names the file object ("<_io.BytesIO object at 0x...>"); the reason alone is enough
        raise AudioError(f"cannot decode {name}: {err.error_string.splitlines()[0]}") from None
    except (RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"cannot decode {name}: {str(err).splitlines()[0]}") from None


def _checked(f: sf.SoundFile, name: str, max_seconds: float | None, max_channels: int | None) -> AudioInfo:
    # libsndfile reports an unknown length as the largest count it has
    info = AudioInfo(int(f.samplerate), int(f.channels), int(f.frames) if f.frames < 1 << 62 else None)
    if max_channels is not None and info.channels > max_channels:
        raise AudioError(f"{name} has {info.channels} channels; at most {max_channels} are accepted")
    if max_seconds is not None and info.seconds is not None and info.seconds > max_seconds:
        raise AudioTooLarge(f"{name} is {info.seconds:.1f} s long ({info.decoded_bytes / 2**20:.0f} MiB decoded), "
                            f"over the limit of {max_seconds:g} s")
    return info


def audio_info(source: AudioSource, name: str = "audio", max_seconds: float | None = None,
               max_channels: int | None = None) -> AudioInfo:
    """Rate, channels and length from the header of ``source``, without decoding the samples.

    Raises:
        AudioError: unreadable data or more than ``max_channels`` channels.
        AudioTooLarge: longer than ``max_seconds``.
    """
    with _open(source, name) as f:
        return _checked(f, name, max_seconds, max_channels)


def audio_blocks(source: AudioSource, sample_rate: int, block_s: float = 1.0, *, name: str = "audio",
                 max_seconds: float | None = None, max_channels: int | None = None) -> Iterator[np.ndarray]:
    """Decode ``source`` a block at a time as mono float32 at ``sample_rate`` (streamed soxr resampling,
    which gives the same samples as :func:`resample` on the whole signal). The header is checked against
    the limits before any sample is decoded, and the frames actually decoded are counted too, so a header
    that understates the length cannot get past ``max_seconds``. Memory stays at one block.

    Raises:
        AudioError: unreadable, empty or corrupt data, too many channels.
        AudioTooLarge: longer than ``max_seconds``.
    """
    with _open(source, name) as f:
        info = _checked(f, name, max_seconds, max_channels)
        limit = None if max_seconds is None else int(max_seconds * info.sample_rate)
        convert = StreamResampler(info.sample_rate, sample_rate)
        frames = 0
        try:
            step = max(1, int(block_s * info.sample_rate))
            # read() until it comes back empty rather than blocks(): that seeks, which fails when the
            # header does not give the length
            while len(block := f.read(step, dtype="float32", always_2d=True)):
                frames += len(block)
                if limit is not None and frames > limit:
                    raise AudioTooLarge(f"{name} is longer than the limit of {max_seconds:g} s")
                yield convert(block)
        except sf.LibsndfileError as err:
            raise AudioError(f"cannot decode {name}: {err.error_string.splitlines()[0]}") from None
        except (RuntimeError, ValueError) as err:
            raise AudioError(f"cannot decode {name}: {str(err).splitlines()[0]}") from None
        if frames == 0:
            raise AudioError(f"{name} has no samples")
        yield convert(np.zeros((0, info.channels), np.float32), last=True)


def decode_audio(source: AudioSource, sample_rate: int, *, name: str = "audio", max_seconds: float | None = None,
                 max_channels: int | None = None) -> np.ndarray:
    """A whole audio file (path, bytes or binary file) as mono float32 at ``sample_rate``; see
    :func:`audio_blocks` for the limits. Channels are mixed block by block, so the peak memory is the
    mono signal, not every channel of it.

    Raises:
        AudioError: unreadable, empty or corrupt data, too many channels.
        AudioTooLarge: longer than ``max_seconds``.
    """
    blocks = [b for b in audio_blocks(source, sample_rate, 10.0, name=name, max_seconds=max_seconds,
                                      max_channels=max_channels) if len(b)]
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def pieces(samples: np.ndarray, piece_samples: int) -> Iterator[np.ndarray]:
    """Split a signal into consecutive pieces of ``piece_samples`` (the last may be shorter)."""
    for start in range(0, len(samples), piece_samples):
        yield samples[start : start + piece_samples]


def paced(source: Iterable[np.ndarray], sample_rate: int) -> Iterator[np.ndarray]:
    """Yield pieces no faster than real time, as a live source would deliver them."""
    t0 = time.perf_counter()
    sent = 0
    for piece in source:
        sent += len(piece)
        delay = t0 + sent / sample_rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield piece


class StreamResampler:
    """Mono conversion plus streaming resampling of pieces arriving one at a time."""

    def __init__(self, from_rate: int, to_rate: int, channels: int = 1) -> None:
        self._stream = None
        if from_rate != to_rate:
            self._stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32", quality="HQ")

    def __call__(self, piece: np.ndarray, last: bool = False) -> np.ndarray:
        mono = to_mono(piece)
        if self._stream is None:
            return mono
        return self._stream.resample_chunk(mono, last=last)


def read_pcm(
    stream: BinaryIO, rate: int, fmt: str, sample_rate: int, piece_ms: int, channels: int = 1
) -> Iterator[np.ndarray]:
    """Raw interleaved PCM from a binary stream (e.g. stdin) as mono float32 pieces at ``sample_rate``.

    Raises:
        AudioError: unknown format or a stream that ends in the middle of a sample.
    """
    if fmt not in PCM_FORMATS:
        raise AudioError(f"unknown PCM format {fmt!r}; use one of {', '.join(PCM_FORMATS)}")
    if rate <= 0:
        raise AudioError(f"sample rate must be positive, got {rate}")
    dtype = PCM_FORMATS[fmt]
    frame_bytes = dtype.itemsize * channels
    want = max(1, rate * piece_ms // 1000) * frame_bytes
    convert = StreamResampler(rate, sample_rate)
    pending = b""
    while True:
        data = stream.read(want - len(pending))
        if not data:
            break
        pending += data
        if len(pending) < want:
            continue
        yield convert(decode_pcm(pending, dtype, channels))
        pending = b""
    if len(pending) % frame_bytes:
        raise AudioError(f"PCM input ended inside a sample ({len(pending) % frame_bytes} stray bytes)")
    tail = decode_pcm(pending, dtype, channels) if pending else np.zeros((0,), np.float32)
    yield convert(tail, last=True)


def decode_pcm(data: bytes, dtype: np.dtype, channels: int = 1) -> np.ndarray:
    """Whole little-endian PCM samples (``dtype`` from :data:`PCM_FORMATS`) as float32 in [-1, 1): one
    column per channel when there are several (the caller averages or resamples them)."""
    samples = np.frombuffer(data, dtype=dtype).astype(np.float32)
    if dtype.kind == "i":
        samples /= 32768.0
    return samples.reshape(-1, channels) if channels > 1 else samples


def stdin_pcm(rate: int, fmt: str, sample_rate: int, piece_ms: int) -> Iterator[np.ndarray]:
    """Raw PCM from standard input; see :func:`read_pcm`."""
    return read_pcm(sys.stdin.buffer, rate, fmt, sample_rate, piece_ms)


def _input_device(device: str | int | None):
    try:
        import sounddevice as sd
    except (ImportError, OSError) as err:
        raise AudioError(f"microphone unavailable: {err}") from None
    try:
        return sd, sd.query_devices(device, kind="input")
    except (ValueError, sd.PortAudioError) as err:
        raise AudioError(f"no microphone found: {err}") from None


def check_microphone(device: str | int | None = None) -> None:
    """Raise :class:`AudioError` now if there is no input device (before anything slow is loaded)."""
    _input_device(device)


def microphone(sample_rate: int, piece_ms: int, device: str | int | None = None) -> Iterator[np.ndarray]:
    """Live microphone pieces (mono float32 at ``sample_rate``) until the caller stops iterating.

    Raises:
        AudioError: no audio library, no input device, or the device refuses the stream.
    """
    sd, info = _input_device(device)
    rate = int(info["default_samplerate"])
    convert = StreamResampler(rate, sample_rate)
    block = max(1, rate * piece_ms // 1000)
    try:
        with sd.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=block, device=device) as mic:
            while True:
                data, _overflow = mic.read(block)
                yield convert(data[:, 0])
    except sd.PortAudioError as err:
        raise AudioError(f"microphone stream failed: {err}") from None
