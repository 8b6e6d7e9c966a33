#!/usr/bin/env python3
"""Rerun what README.md, MODEL_CARD.md and docs/*.md quote that takes seconds, and fail where text and
output disagree.

Usage: .venv/bin/python scripts/check-docs.py [--skip-model]

Prints one row per check (ok / FAIL and what differed) and exits 1 if any failed. Checked:

- every ``phonestream COMMAND --option ...`` in the docs' code (fenced blocks and inline spans) names a
  command and options it takes;
- the defaults the docs state: decoder ``auto`` (beam 4 + the model's LM), the LM's order, the default
  model's windows and presets, the pronunciation check's threshold, the 39 symbols of ``phonestream
  phonemes`` and the IPA example;
- with the shipped model (seconds; ``--skip-model`` leaves it out): the README's first transcript line of
  ``phonestream stream phonestream/samples/LJ001-0001.flac`` (time and phonemes), the keys of the JSON
  examples (phoneme, partial, summary, word events) against the events the same commands print, and the
  windows and model named in the example hello, ready and summary messages.

The expensive figures (PER tables, speed, install sizes) are not rerun here: each has its command beside
it in the docs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "MODEL_CARD.md", *sorted((ROOT / "docs").glob("*.md"))]
SAMPLE = "phonestream/samples/LJ001-0001.flac"
SAMPLE_TEXT = "Printing, in the only sense with which we are at present concerned"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _commands() -> dict[str, click.Command]:
    """Every phonestream command by its path (``stream``, ``lm build``, ``train custom``...)."""
    from phonestream.cli import main

    out: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: str) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            if cmd is None:
                continue
            out[f"{prefix}{name}"] = cmd
            if isinstance(cmd, click.Group):
                walk(cmd, f"{prefix}{name} ")

    walk(main, "")
    return out


def _code(text: str) -> list[str]:
    """The docs' code: every line of a fenced block and every inline code span."""
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        out += block.splitlines()
    out += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return out


#: ``phonestream WORD [WORD] options...`` up to a pipe, ``;``, ``&&``, a comment or the span's end (not
#: Python's ``from phonestream import``).
COMMAND_LINE = re.compile(r"(?:^|[\s/(])(?<!from )(?<!import )phonestream((?: [a-z][a-z-]*){1,2})([^|;&#`]*)")


def check_commands_and_options() -> list[tuple[str, str]]:
    """Failures: a ``phonestream ...`` command line in the docs' code naming a command the CLI lacks, or an
    option that command does not take."""
    commands = _commands()
    failures = []
    for path in DOCS:
        for line in _code(_text(path)):
            for m in COMMAND_LINE.finditer(line):
                words = m.group(1).split()
                name = " ".join(words[:2]) if " ".join(words[:2]) in commands else words[0]
                if name not in commands:
                    failures.append((path.name, f"no command `phonestream {words[0]}`"))
                    continue
                cmd = commands[name]
                options = {"--help"}
                for param in cmd.params:
                    if isinstance(param, click.Option):
                        options.update(param.opts + param.secondary_opts)
                for opt in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(2)):
                    if opt not in options:
                        failures.append((path.name, f"`phonestream {name}` has no option {opt}"))
    return sorted(set(failures))


def check_defaults() -> list[tuple[str, str]]:
    """Failures: defaults the docs state that the code does not have."""
    import gzip

    from phonestream.check import DEFAULT_THRESHOLD
    from phonestream.cli import main
    from phonestream.decoding import DEFAULT_BEAM
    from phonestream.models import DEFAULT_MODEL_DIR
    from phonestream.phones import phoneme_key, to_ipa

    failures = []
    readme, card = _text(ROOT / "README.md"), _text(ROOT / "MODEL_CARD.md")
    decoder = next(p for p in main.get_command(click.Context(main), "stream").params if p.name == "decoder")
    if decoder.default != "auto" or "The default,\n`--decoder auto`, is the prefix beam search (beam 4)" not in readme:
        failures.append(("README.md", f"default decoder: code says {decoder.default!r}, the README's sentence changed"))
    if DEFAULT_BEAM != 4:
        failures.append(("README.md", f"docs say beam 4, DEFAULT_BEAM is {DEFAULT_BEAM}"))
    with gzip.open(DEFAULT_MODEL_DIR / "lm.arpa.gz", "rt", encoding="utf-8") as f:
        order = max(int(m.group(1)) for m in re.finditer(r"ngram (\d+)=", f.read(400)))
    if f"a {order}-gram phoneme LM" not in card:
        failures.append(("MODEL_CARD.md", f"the shipped LM is a {order}-gram"))
    meta = json.loads((DEFAULT_MODEL_DIR / "phonestream.json").read_text())
    windows = meta.get("streaming", {})
    balanced = "/".join(str(windows.get(k)) for k in ("chunk_ms", "left_ms", "right_ms"))
    if f"{balanced} ms" not in readme.replace("\n", " ") or f"| default model, balanced (the default) | {balanced} |" \
            not in readme:
        failures.append(("README.md", f"the default model's windows are {balanced} ms"))
    for name in ("low", "accurate"):
        preset = "/".join(map(str, windows.get("presets", {}).get(name, ())))
        if f"| default model, {'accurate' if name == 'accurate' else '`--latency low`'}" not in readme or \
                f"| {preset} |" not in readme:
            failures.append(("README.md", f"the {name} preset is {preset}"))
    shipped = meta.get("check", {}).get("threshold")
    if f"{shipped:g} for the shipped one" not in readme.replace("\n", " ") or shipped != DEFAULT_THRESHOLD:
        failures.append(("README.md", f"the shipped model's check threshold is {shipped}, the fallback "
                         f"DEFAULT_THRESHOLD {DEFAULT_THRESHOLD:g} (README says both are the shipped head's)"))
    n = len(phoneme_key())
    if f"`phonestream phonemes` lists all {n}" not in readme.replace("\n", " "):
        failures.append(("README.md", f"`phonestream phonemes` lists {n}"))
    first = re.search(r"```\n +\d+\.\d+ ([A-Z ]+?)  ", readme)  # the sample's first word, as transcribed
    ipa = " ".join(to_ipa(p) for p in first.group(1).split()) if first else "?"
    if f"`--ipa` prints IPA instead (`{ipa}`)" not in readme.replace("\n", " "):
        failures.append(("README.md", f"--ipa of the first transcribed word is {ipa}"))
    return failures


def _json_events(args: list[str]) -> list[dict]:
    from phonestream.cli import main

    result = CliRunner().invoke(main, args)
    if result.exit_code != 0:
        raise RuntimeError(f"phonestream {' '.join(args)} failed: {result.output[-300:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _example_keys(text: str, kind: str) -> set[str]:
    """The top-level keys of a docs JSON example of one event type (examples are abridged with ``...``)."""
    keys: set[str] = set()
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        for example in re.split(r"\n(?=\{)", block):
            if f'"type":"{kind}"' in example:
                depth, key = 0, ""
                for m in re.finditer(r'[{}\[\]]|"(\w+)":', example):
                    tok = m.group(0)
                    if tok in "{[":
                        depth += 1
                    elif tok in "}]":
                        depth -= 1
                    elif depth == 1:
                        key = m.group(1)
                        keys.add(key)
    return keys


def check_sample() -> list[tuple[str, str]]:
    """Failures: the README's first transcript line and the JSON examples against the shipped model's output."""
    failures = []
    readme = _text(ROOT / "README.md")
    events = _json_events(["stream", SAMPLE, "--json"])
    phonemes = [e for e in events if e["type"] == "phoneme"]
    m = re.search(r"```\n +(\d+\.\d+) ([A-Z ]+)\n +printing", readme)
    if m is None:
        failures.append(("README.md", "the sample's first transcript line is gone"))
    else:
        quoted = m.group(2).split()
        got = [p["phoneme"] for p in phonemes[: len(quoted)]]
        if got != quoted or f"{phonemes[0]['start']:.2f}" != m.group(1):
            failures.append(("README.md", f"first line: streamed {phonemes[0]['start']:.2f} {' '.join(got)}"))
    windows = {k: events[-1][k] for k in ("chunk_ms", "left_ms", "right_ms")}
    for path in DOCS:  # the docs' example messages are the shipped model's, at its default windows
        for example in re.findall(r'\{"type":"(?:hello|ready|summary)".*', _text(path)):
            for key, value in windows.items():
                m = re.search(f'"{key}":(\\d+)', example)
                if m and int(m.group(1)) != value:
                    failures.append((path.name, f"example {example[:30]}...: {key} {m.group(1)}, default {value}"))
            m = re.search(r'"model":"(Whisper[^"]*)"', example)
            if m and m.group(1) != events[-1]["model"]:
                failures.append((path.name, f"example names the model {m.group(1)!r}; the shipped one is "
                                            f"{events[-1]['model']!r}"))
    checked = _json_events(["check", SAMPLE, "--text", SAMPLE_TEXT, "--json"])
    by_type = {}
    for e in events + checked:
        by_type.setdefault(e["type"], set()).update(e)
    for path in DOCS:
        for kind, real in by_type.items():
            extra = _example_keys(_text(path), kind) - real - {"type"}
            if extra:
                failures.append((path.name, f"{kind} example has keys the {kind} event lacks: {sorted(extra)}"))
    return failures


def main(argv: list[str]) -> int:
    checks = [("commands and options", check_commands_and_options), ("stated defaults", check_defaults)]
    if "--skip-model" not in argv:
        checks.append(("shipped model on the sample", check_sample))
    rows, failed = [], 0
    for name, check in checks:
        problems = check()
        failed += len(problems)
        rows.append((name, "ok" if not problems else "FAIL", ""))
        rows += [("", f"  {doc}", what) for doc, what in problems]
    width = max(len(r[0]) for r in rows)
    for name, status, what in rows:
        print(f"{name:<{width}}  {status}  {what}".rstrip())
    print(f"{failed} disagreement(s)" if failed else "docs agree with the code")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
