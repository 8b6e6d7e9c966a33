"""The docs say what the code does: scripts/check-docs.py's checks, run by the suite."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check-docs.py"


@pytest.fixture(scope="module")
def check_docs() -> dict:
    return runpy.run_path(str(SCRIPT))


def test_documented_commands_and_options_exist(check_docs):
    assert check_docs["check_commands_and_options"]() == []


def test_documented_defaults_are_the_code_defaults(check_docs):
    assert check_docs["check_defaults"]() == []


def test_the_checker_catches_a_wrong_command_line(check_docs, tmp_path, monkeypatch):
    doc = tmp_path / "WRONG.md"
    doc.write_text("Run `phonestream stream FILE --no-such-option` or\n\n```sh\nphonestream nosuch FILE\n"
                   "phonestream lm build out.arpa --order 3 --decoder greedy   # build takes no --decoder\n```\n"
                   "but `from phonestream import Recognizer` is Python.\n", encoding="utf-8")
    monkeypatch.setitem(check_docs["check_commands_and_options"].__globals__, "DOCS", [doc])
    assert check_docs["check_commands_and_options"]() == [
        ("WRONG.md", "`phonestream lm build` has no option --decoder"),
        ("WRONG.md", "`phonestream stream` has no option --no-such-option"),
        ("WRONG.md", "no command `phonestream nosuch`"),
    ]


def test_sample_transcript_and_json_examples_match_the_shipped_model(check_docs):
    """The README's first transcript line of the shipped sample, and the docs' JSON examples' keys, against
    what `phonestream stream` and `phonestream check` print with the shipped model."""
    assert check_docs["check_sample"]() == []
