"""Read and write CTranslate2's ``model.bin``: the weights of the shipped Whisper encoders.

CTranslate2 itself only loads these files; reading them is what lets the training recipe run the same
encoder in PyTorch (:mod:`phonestream.train.encoder`) and lets a model folder carry fine-tuned encoder
layers that are written back into a copy of the pinned file (:func:`replace_variables`). The layout is
that of ``ctranslate2.specs.ModelSpec._serialize`` (binary version 6): little-endian ``uint32``
version, the spec's name, ``uint32`` revision, ``uint32`` count of variables, then per variable its
name, ``uint8`` rank, ``uint32`` dims, ``uint8`` dtype id, ``uint32`` byte count and the raw array;
then ``uint32`` count of aliases, each a name and its target. Strings are ``uint16`` length (with the
terminating NUL) + UTF-8 + NUL.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .base import ModelError

#: CTranslate2's dtype ids (``_dtype_to_type_id``); bfloat16 (5) has no NumPy type and is not read.
DTYPES: dict[int, np.dtype] = {0: np.dtype(np.float32), 1: np.dtype(np.int8), 2: np.dtype(np.int16),
                               3: np.dtype(np.int32), 4: np.dtype(np.float16)}
_IDS = {dt: i for i, dt in DTYPES.items()}


@dataclass
class Ct2Model:
    """The contents of one ``model.bin``: variables in file order (read-only views of the file's bytes)."""

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


def read_model(path: str | Path) -> Ct2Model:
    """Parse ``path`` (a CTranslate2 ``model.bin``).

    Raises:
        ModelError: unreadable, truncated, or holding a dtype NumPy cannot represent (one line)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ModelError(f"cannot read {path}: {err.strerror}") from None
    pos = 0

    def take(fmt: str):
        nonlocal pos
        value = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return value[0]

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return text

    try:
        model = Ct2Model(take("I"), string(), take("I"))
        for _ in range(take("I")):
            name = string()
            shape = tuple(take("I") for _ in range(take("B")))
            type_id, nbytes = take("B"), take("I")
            if type_id not in DTYPES:
                raise ModelError(f"{path}: variable {name} has CTranslate2 dtype id {type_id}, which is not read here")
            if pos + nbytes > len(data):
                raise struct.error("truncated")
            array = np.frombuffer(data, DTYPES[type_id], nbytes // DTYPES[type_id].itemsize, pos)
            model.variables[name] = array.reshape(shape)
            pos += nbytes
        for _ in range(take("I")):
            alias = string()  # (an assignment evaluates its right-hand side first)
            model.aliases[alias] = string()
    except (struct.error, UnicodeDecodeError, ValueError):
        raise ModelError(f"{path} is not a CTranslate2 model.bin (cut short or malformed at byte {pos})") from None
    return model


def dump_model(model: Ct2Model, fh: BinaryIO) -> None:
    """Write ``model`` in CTranslate2's ``model.bin`` layout to an open binary file (or ``io.BytesIO``)."""

    def string(text: str) -> None:
        raw = text.encode("utf-8")
        fh.write(struct.pack("<H", len(raw) + 1) + raw + b"\0")

    fh.write(struct.pack("<I", model.version))
    string(model.spec)
    fh.write(struct.pack("<II", model.revision, len(model.variables)))
    for name, array in model.variables.items():
        string(name)
        fh.write(struct.pack("<B", array.ndim) + b"".join(struct.pack("<I", d) for d in array.shape))
        fh.write(struct.pack("<BI", _IDS[array.dtype], array.nbytes))
        fh.write(np.ascontiguousarray(array).tobytes())
    fh.write(struct.pack("<I", len(model.aliases)))
    for alias, target in model.aliases.items():
        string(alias)
        string(target)


def write_model(model: Ct2Model, path: str | Path) -> None:
    """Write ``model`` to ``path`` atomically (a temporary file renamed over it); :func:`read_model` of an
    unchanged model writes the same bytes back."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            dump_model(model, fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_variables(model: Ct2Model, replacements: dict[str, np.ndarray], where: str = "the replacement") -> Ct2Model:
    """A copy of ``model`` with some variables replaced, each cast to the dtype it had.

    Raises:
        ModelError: a name the model does not have, or another shape (one line, naming ``where``)."""
    variables = dict(model.variables)
    for name, value in replacements.items():
        if name not in variables:
            raise ModelError(f"{where}: {name} is not a variable of this {model.spec}")
        if tuple(value.shape) != variables[name].shape:
            raise ModelError(f"{where}: {name} has shape {tuple(value.shape)}, the model's is {variables[name].shape}")
        variables[name] = np.asarray(value).astype(variables[name].dtype)
    return Ct2Model(model.version, model.spec, model.revision, variables, dict(model.aliases))
