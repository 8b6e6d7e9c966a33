"""The declared schema of the WebSocket config message (phonestream/protocol.py) and the server's use of it."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from phonestream.endpoint import EndpointConfig
from phonestream.engine import Recognizer
from phonestream.protocol import ConfigInvalid, ConfigMessage, parse_config
from phonestream.server import App, Limits, ProtocolError, ServerSettings
from phonestream.streaming import StreamConfig

# (config text less its type, the start of the error) -- the failures and their neighbours
REFUSED = [
    ('{"endpoint":{"rule1_s":-1}}', "bad config: endpoint.rule1_s must be greater than 0"),
    ('{"endpoint":5}', "bad config: endpoint must be true, false or an object of rules"),
    ('{"endpoint":[]}', "bad config: endpoint must be true, false or an object of rules"),
    ('{"endpoint":{"max_utterance_s":Infinity}}', "bad config: endpoint.max_utterance_s must be a finite number"),
    ('{"endpoint":{"blank_threshold":1.5}}', "bad config: endpoint.blank_threshold must be less than or equal to 1"),
    ('{"endpoint":{"rule2_s":"1"}}', "bad config: endpoint.rule2_s must be a valid number"),
    ('{"endpoint":{"rule3_s":1}}', "unknown config key(s): endpoint.rule3_s"),
    ('{"format":["s16le"]}', "bad config: format must be 's16le' or 'f32le'"),
    ('{"lm_weight":"0.5"}', "bad config: lm_weight must be a valid number"),
    ('{"insertion_bonus":"x"}', "bad config: insertion_bonus must be a valid number"),
    ('{"lookahead":"yes"}', "bad config: lookahead must be a valid boolean"),
    ('{"lm_weight":1e308}', "bad config: lm_weight must be less than or equal to 10"),
    ('{"silence_db":"x"}', "bad config: silence_db must be a valid number"),
    ('{"silence_db":{}}', "bad config: silence_db must be a valid number"),
    ('{"silence_db":[]}', "bad config: silence_db must be a valid number"),
    ('{"silence_db":true}', "bad config: silence_db must be a valid number"),
    ('{"silence_db":NaN}', "bad config: silence_db must be a finite number"),
    ('{"silence_db":-Infinity}', "bad config: silence_db must be a finite number"),
    ('{"sample_rate":16000.0}', "bad config: sample_rate must be a valid integer"),
    ('{"sample_rate":true}', "bad config: sample_rate must be a valid integer"),
    ('{"sample_rate":100}', "bad config: sample_rate must be greater than or equal to 4000"),
    ('{"channels":0}', "bad config: channels must be greater than or equal to 1"),
    ('{"chunk_ms":"640"}', "bad config: chunk_ms must be a valid integer"),
    ('{"left_ms":-20}', "bad config: left_ms must be greater than or equal to 0"),
    ('{"partials":1}', "bad config: partials must be a valid boolean"),
    ('{"decoder":"viterbi"}', "bad config: decoder must be 'auto', 'greedy' or 'beam'"),
    ('{"beam":0}', "bad config: beam must be greater than or equal to 1"),
    ('{"lm":"/etc/passwd"}', "bad config: lm must be 'auto' or 'none'"),
    # engine arguments that exist but are not the client's to set
    ('{"keep_audio":true}', "unknown config key(s): keep_audio"),
    ('{"model_dir":"/"}', "unknown config key(s): model_dir"),
    ('{"config":null,"model":1}', "unknown config key(s): config, model"),
]


@pytest.mark.parametrize("text,error", REFUSED)
def test_each_invalid_value_is_refused_naming_its_key(text, error):
    message = {"type": "config", **json.loads(text)}
    with pytest.raises(ConfigInvalid) as caught:
        parse_config(message)
    assert str(caught.value).startswith(error), str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_a_valid_config_maps_to_the_engine_options_it_names():
    cfg = parse_config({"type": "config", "sample_rate": 48000, "format": "f32le", "channels": 2, "chunk_ms": 320,
                        "partials": False, "decoder": "beam", "beam": 8, "lm": "none", "lm_weight": 1,
                        "insertion_bonus": None, "lookahead": True, "endpoint": {"rule2_s": 0.8}, "silence_db": None})
    assert (cfg.sample_rate, cfg.format, cfg.channels, cfg.chunk_ms, cfg.left_ms) == (48000, "f32le", 2, 320, None)
    assert cfg.stream_options() == {"partials": False, "decoder": "beam", "beam": 8, "lm": "none", "lm_weight": 1.0,
                                    "insertion_bonus": None, "lookahead": True, "endpoint": EndpointConfig(rule2_s=0.8)}
    assert cfg.recognizer_options() == {"silence_db": None}
    assert parse_config({"type": "config"}).stream_options() == {}  # nothing given: the server's defaults
    assert parse_config({"type": "config", "endpoint": False}).stream_options() == {"endpoint": False}


def test_every_declared_key_is_an_engine_option_or_the_protocols_own():
    """The schema names engine arguments by hand: a renamed one must fail here, not at a client."""
    stream_args = set(inspect.signature(Recognizer.stream).parameters)
    recognizer_fields = {f.name for f in dataclasses.fields(Recognizer)}
    check_args = set(inspect.signature(Recognizer.check).parameters) - {"dictionary"}  # the pronunciation check
    protocol = {"type", "sample_rate", "format", "channels", "latency", "chunk_ms", "left_ms", "right_ms"}
    for key in ConfigMessage.model_fields:
        assert key in protocol | stream_args | recognizer_fields | check_args, key
    everything = {k: None for k in ConfigMessage.model_fields if k not in protocol}
    options = ConfigMessage.model_validate({"type": "config", **everything, "partials": True})
    assert set(options.stream_options()) <= stream_args
    assert set(options.recognizer_options()) <= recognizer_fields


def test_the_server_limits_are_checked_after_the_schema():
    cfg = parse_config({"type": "config", "chunk_ms": 40, "beam": 64})
    default = StreamConfig(640, 1280, 320)
    with pytest.raises(ConfigInvalid, match="chunk_ms=40 is below the server's minimum of 80"):
        cfg.check_limits(default, min_chunk_ms=80, max_window_ms=10000, max_beam=32)
    with pytest.raises(ConfigInvalid, match="beam=64 exceeds the server's limit of 32"):
        cfg.check_limits(default, min_chunk_ms=20, max_window_ms=10000, max_beam=32)
    with pytest.raises(ConfigInvalid, match="= 8960 exceeds the server's limit of 5000"):
        parse_config({"type": "config", "left_ms": 8000}).check_limits(default, min_chunk_ms=80, max_window_ms=5000,
                                                                       max_beam=32)
    assert parse_config({"type": "config", "right_ms": 0}).check_limits(
        default, min_chunk_ms=80, max_window_ms=10000, max_beam=32) == StreamConfig(640, 1280, 0)


def test_the_app_builds_streams_only_from_valid_configs(tiny_model):
    app = App(Recognizer(tiny_model, StreamConfig(320, 640, 160)), ServerSettings(limits=Limits(max_beam=8)))
    spec, stream = app._parse_config({"type": "config", "silence_db": -50, "decoder": "beam", "beam": 3,
                                      "endpoint": {"rule1_s": 1.0}, "right_ms": 0})
    assert spec.recognizer.silence_db == -50.0 and spec.recognizer.config == StreamConfig(320, 640, 0)
    assert stream.decoder.beam == 3 and stream.endpointer.config.rule1_s == 1.0
    assert spec.sample_rate == tiny_model.sample_rate and spec.channels == 1
    for bad, text in [({"silence_db": "x"}, "silence_db"), ({"beam": 9}, "beam=9"),
                      ({"chunk_ms": 330}, "frame stride"), ({"lm_weight": float("nan")}, "lm_weight")]:
        with pytest.raises(ProtocolError, match=text) as caught:
            app._parse_config({"type": "config", **bad})
        assert caught.value.code == 1008
