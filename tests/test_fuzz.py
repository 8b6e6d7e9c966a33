"""The seeded protocol fuzzer (phonestream/fuzz.py) in the suite: 1,000 hostile clients against the
server application, a well-behaved stream alongside whose phonemes must not change."""

from __future__ import annotations

import asyncio
import json

import pytest

from phonestream import fuzz
from phonestream.engine import Recognizer
from phonestream.lm import build_kneser_ney
from phonestream.models import load_model
from phonestream.protocol import ConfigMessage
from phonestream.streaming import StreamConfig

from .conftest import save_ctc


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory) -> Recognizer:
    """The tiny test model with a phoneme LM beside it: the default decoder is then beam + LM, so the
    fuzzed lm_weight / insertion_bonus / beam values all reach a real beam search."""
    folder = save_ctc(tmp_path_factory.mktemp("fuzz_model"))
    build_kneser_ney([["AA", "B", "K", "S"], ["S", "AA", "K"], ["B", "AA"]] * 5, order=3).write_arpa(folder / "lm.arpa")
    rec = Recognizer(load_model(str(folder)), StreamConfig(320, 640, 160))
    assert rec.decoder_config().kind == "beam" and rec.decoder_config().lm_path(rec.model_dir) is not None
    return rec


def test_a_thousand_hostile_clients_break_nothing(recognizer):
    report = asyncio.run(fuzz.run(recognizer, cases=1000, seed=20261127))
    print(report.table())
    assert report.cases == 1000
    assert report.failed == 0 and report.tracebacks == 0, report.table()
    assert report.good_streams >= 3 and report.good_affected == 0, report.table()
    for kind, counts in report.by_kind.items():  # every kind ran, and valid configs really completed
        assert sum(counts.values()) > 100, kind
    assert report.by_kind["valid config"]["completed"] == sum(report.by_kind["valid config"].values())
    assert report.by_kind["raw text"]["refused"] > 100 and report.by_kind["disconnect"]["left"] > 100


def test_the_cases_cover_every_config_key_and_message_kind():
    speech = fuzz.np.zeros(16000, fuzz.np.float32)
    cases = [fuzz.make_case(20261127, k, speech) for k in range(1000)]
    texts = " ".join(m for c in cases for m in c.messages if isinstance(m, str))
    for key in [k for k in ConfigMessage.model_fields if k != "type"] + list(fuzz.ENDPOINT_KEYS):
        assert f'"{key}"' in texts, key
    for raw in ("NaN", "Infinity", "1e999", "[" * 60, "{nope"):
        assert raw in texts, raw
    assert any(isinstance(m, bytes) and len(m) % 2 for c in cases for m in c.messages)  # half samples
    assert any(c.messages and isinstance(c.messages[0], bytes) for c in cases)  # audio before config
    assert [fuzz.make_case(5, k, speech).messages for k in range(20)] == [fuzz.make_case(5, k, speech).messages
                                                                          for k in range(20)]  # seeded


def test_the_fuzzer_tells_failures_apart():
    """classify() is what the test above relies on: it must call each bad ending a failure."""
    case = fuzz.Case(0, "raw text", [], "")
    err = {"type": "error", "message": "bad JSON"}
    assert fuzz.classify(case, fuzz.Exchange([err], 1008))[0] == "refused"
    assert fuzz.classify(case, fuzz.Exchange([{"type": "summary"}], 1000))[0] == "completed"
    assert fuzz.classify(case, fuzz.Exchange([], None, error="Traceback ...\nKeyError: 'x'"))[0] == "crash"
    assert fuzz.classify(case, fuzz.Exchange([], None, error="hung"))[0] == "hung"
    assert fuzz.classify(case, fuzz.Exchange([{"type": "error", "message": "model failed"}], 1011))[0] == "server error"
    assert fuzz.classify(case, fuzz.Exchange([], 1008))[0] == "unclean"  # a close without its error event
    assert fuzz.classify(case, fuzz.Exchange([err, err], 1008))[0] == "unclean"
    leak = {"type": "error", "message": "bad config: '>=' not supported between instances of 'float' and 'str'"}
    assert fuzz.classify(case, fuzz.Exchange([leak], 1008))[0] == "unclean"
    assert fuzz.classify(case, fuzz.Exchange([{"type": "phoneme"}], 1000))[0] == "unclean"
    assert json.loads(fuzz._config_text({"a": ("json", "NaN"), "b": 1}), parse_constant=str) == {"a": "NaN", "b": 1}
