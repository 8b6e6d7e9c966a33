"""The WebSocket config message, declared: every key a client may send, its type and its range.

A client's first message (``{"type": "config", ...}``) is validated against :class:`ConfigMessage`
(pydantic) before anything is built from it: integers must be JSON integers (not ``true``, ``16000.0``
or ``"16000"``), numbers must be finite and in range, strings one of their listed values, and
``endpoint`` either a boolean or an object of the rules below. Only the keys declared here reach the
engine, each mapped by hand in :meth:`ConfigMessage.stream_options` / :meth:`ConfigMessage.recognizer_options`,
so an argument the engine gains later is never exposed to clients by accident: it must be added here.

Limits that depend on the server's flags (smallest chunk, largest window, largest beam) are checked by
:meth:`ConfigMessage.check_limits`; whether the window sizes suit the model (multiples of its frame
stride) is left to the engine's own check. Every failure is a :class:`ConfigInvalid` with a one-line
message that names the key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, Tag, ValidationError

from .endpoint import EndpointConfig
from .streaming import StreamConfig

__all__ = ["ConfigInvalid", "ConfigMessage", "EndpointRules", "parse_config"]


class ConfigInvalid(ValueError):
    """A config message the server refuses (one line, naming the key)."""


def _int(lo: int, hi: int) -> Any:
    """A JSON integer (not a float, string or boolean) in ``[lo, hi]``."""
    return Annotated[int, Field(strict=True, ge=lo, le=hi)]


def _number(lo: float, hi: float, *, open_low: bool = False) -> Any:
    """A finite JSON number (an integer is fine) in ``[lo, hi]`` (``(lo, hi]`` with ``open_low``)."""
    low = {"gt": lo} if open_low else {"ge": lo}
    return Annotated[float, Field(strict=True, allow_inf_nan=False, le=hi, **low)]


# the value types of the keys below
SampleRate = _int(4000, 192000)
Channels = _int(1, 8)
ChunkMs = _int(1, 600_000)
ContextMs = _int(0, 600_000)
BeamWidth = _int(1, 1024)
LMWeight = _number(0, 10)
Bonus = _number(-20, 20)
Decibels = _number(-200, 0)
RuleSeconds = _number(0, 600, open_low=True)
UtteranceSeconds = _number(0, 3600, open_low=True)
Fraction = _number(0, 1, open_low=True)
# the pronunciation check's text: bounded, since words missing from the dictionary each cost an espeak-ng run
ExpectedText = Annotated[str, Field(strict=True, min_length=1, max_length=2000)]
Threshold = _number(0, 1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointRules(_Strict):
    """``endpoint`` as an object: the trailing-silence rules of :class:`~phonestream.endpoint.EndpointConfig`
    (seconds), each optional."""

    rule1_s: RuleSeconds = EndpointConfig.rule1_s
    rule2_s: RuleSeconds = EndpointConfig.rule2_s
    max_utterance_s: UtteranceSeconds = EndpointConfig.max_utterance_s
    blank_threshold: Fraction = EndpointConfig.blank_threshold

    def to_engine(self) -> EndpointConfig:
        return EndpointConfig(self.rule1_s, self.rule2_s, self.max_utterance_s, self.blank_threshold)


def _endpoint_kind(value: Any) -> str:
    return "rules" if isinstance(value, (dict, EndpointRules)) else "switch"


Endpoint = Annotated[
    Union[Annotated[StrictBool, Tag("switch")], Annotated[EndpointRules, Tag("rules")]],
    Discriminator(_endpoint_kind),
]


class ConfigMessage(_Strict):
    """The client's ``config`` message. Every key but ``type`` is optional; an absent key means the
    server's default, and so does ``null`` except for ``silence_db`` (null: never skip the model)."""

    type: Literal["config"]
    # the audio the client sends
    sample_rate: SampleRate | None = None
    format: Literal["s16le", "f32le"] = "s16le"
    channels: Channels = 1
    # window sizes (ms): a latency preset of the model's, then explicit sizes over it; the server's
    # min_chunk_ms / max_window_ms and the model's frame stride apply too
    latency: Literal["low", "balanced", "accurate"] | None = None
    chunk_ms: ChunkMs | None = None
    left_ms: ContextMs | None = None
    right_ms: ContextMs | None = None
    # per-stream engine options (Recognizer.stream); lm: clients cannot name files on the server
    partials: StrictBool = True
    decoder: Literal["auto", "greedy", "beam"] | None = None
    beam: BeamWidth | None = None
    lm: Literal["auto", "none"] | None = None
    lm_weight: LMWeight | None = None
    insertion_bonus: Bonus | None = None
    lookahead: StrictBool | None = None
    endpoint: Endpoint | None = None
    # a Recognizer field: windows quieter than this (dBFS) skip the model
    silence_db: Decibels | None = None
    # the pronunciation check (Recognizer.check, phonestream.check): the text the speaker should say, and
    # the word score below which a word is mispronounced
    expected: ExpectedText | None = None
    threshold: Threshold | None = None

    def stream_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Recognizer.stream``: the options the client gave."""
        out = {k: getattr(self, k) for k in _STREAM_OPTIONS if k in self.model_fields_set}
        if isinstance(self.endpoint, EndpointRules):
            out["endpoint"] = self.endpoint.to_engine()
        return out  # None (JSON null) is what Recognizer.stream takes for "the recognizer's setting"

    def recognizer_options(self) -> dict[str, Any]:
        """Fields of ``Recognizer`` to replace for this stream (``dataclasses.replace``)."""
        return {"silence_db": self.silence_db} if "silence_db" in self.model_fields_set else {}

    def check_limits(self, default: StreamConfig, *, min_chunk_ms: int, max_window_ms: int,
                     max_beam: int) -> StreamConfig:
        """The stream's window sizes (the client's, else ``default``: the server's window, or the preset
        the client named), checked against the server's limits.

        Raises:
            ConfigInvalid: a chunk below ``min_chunk_ms``, a window over ``max_window_ms``, a beam over
                ``max_beam``.
        """
        cfg = StreamConfig(default.chunk_ms if self.chunk_ms is None else self.chunk_ms,
                           default.left_ms if self.left_ms is None else self.left_ms,
                           default.right_ms if self.right_ms is None else self.right_ms)
        if cfg.chunk_ms < min_chunk_ms:
            raise ConfigInvalid(f"chunk_ms={cfg.chunk_ms} is below the server's minimum of {min_chunk_ms}")
        window = cfg.chunk_ms + cfg.left_ms + cfg.right_ms
        if window > max_window_ms:
            raise ConfigInvalid(f"chunk_ms + left_ms + right_ms = {window} exceeds the server's limit of "
                                f"{max_window_ms}")
        if self.beam is not None and self.beam > max_beam:
            raise ConfigInvalid(f"beam={self.beam} exceeds the server's limit of {max_beam}")
        return cfg


# the keys above that are options of Recognizer.stream, passed on as they are (endpoint rules converted)
_STREAM_OPTIONS = ("partials", "decoder", "beam", "lm", "lm_weight", "insertion_bonus", "lookahead", "endpoint")


def parse_config(message: dict[str, Any]) -> ConfigMessage:
    """Validate a decoded config message.

    Raises:
        ConfigInvalid: naming the first offending key(s), e.g. ``bad config: endpoint.rule1_s must be
            greater than 0, got -1``.
    """
    try:
        return ConfigMessage.model_validate(message)
    except ValidationError as err:
        raise ConfigInvalid(_describe(err)) from None


def _describe(err: ValidationError) -> str:
    """One line from pydantic's errors: unknown keys together, else the first problem."""
    errors = err.errors(include_url=False)
    unknown = [_key(e["loc"]) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        return f"unknown config key(s): {', '.join(unknown[:5])}{more}"
    first = errors[0]
    key = _key(first["loc"]) or "config"
    if key == "endpoint" and first["type"] in ("union_tag_invalid", "bool_type"):
        return f'bad config: endpoint must be true, false or an object of rules, got {_short(first["input"])}'
    if first["type"] == "missing":
        return f"bad config: {key} is required"
    message = first["msg"].replace("Input should be", "must be")
    return f"bad config: {key} {message}, got {_short(first['input'])}"


def _key(loc: tuple[int | str, ...]) -> str:
    """``endpoint.rule1_s`` from pydantic's location (less the union branch tag after ``endpoint``)."""
    parts = [str(part) for part in loc]
    if parts[:1] == ["endpoint"] and parts[1:2] in (["rules"], ["switch"]):
        del parts[1]
    return ".".join(_clip(p) for p in parts)


def _short(value: Any) -> str:
    """A client's value as it goes into an error message: its repr, cut to 40 characters."""
    return _clip(repr(value))


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
