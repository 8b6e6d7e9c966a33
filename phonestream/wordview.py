"""Terminal view of a pronunciation check: the expected text, each word coloured by its verdict.

On a terminal the expected sentence is redrawn in place as verdicts arrive: ok words green,
mispronounced red with what was heard, missing words red and struck through, the word being read
(the first without a verdict) highlighted, the rest plain. Piped, each verdict is one plain line. With
``--json`` every event of the stream is one JSON line (phonemes, partials, words, summary).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .check import ExpectedWord
from .console import print_summary
from .events import Event, Summary, Word, to_json

STYLES = {"ok": "bold green", "mispronounced": "bold red", "missing": "red strike"}


class WordView:
    """Prints a checked stream's events; a drop-in for :class:`~phonestream.console.EventPrinter`."""

    def __init__(self, words: list[ExpectedWord], json_lines: bool = False,
                 symbol: Callable[[str], str] = str) -> None:
        self.words = words
        self.json_lines = json_lines
        self.symbol = symbol
        self.verdicts: dict[int, Word] = {}
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False)
        self._live: Live | None = None
        if not json_lines and self.out.is_terminal:
            self._live = Live(self.render(), console=self.out, auto_refresh=False, transient=False)
            self._live.start()

    def render(self) -> Text:
        """The expected text with the verdicts so far."""
        view = Text()
        current = next((i for i in range(len(self.words)) if i not in self.verdicts), None)
        for i, w in enumerate(self.words):
            if i:
                view.append(" ")
            v = self.verdicts.get(i)
            if v is None:
                view.append(w.text, style="reverse" if i == current else "")
            else:
                view.append(w.text, style=STYLES[v.verdict])
                if v.verdict == "mispronounced":
                    view.append(f" [{' '.join(self.symbol(p) for p in v.heard)}]", style="red dim")
            if w.source != "cmudict":
                view.append("*", style="dim")
        return view

    def line(self, w: Word) -> str:
        """One plain line for a verdict (piped output)."""
        when = "        -" if w.start is None else f"{w.start:9.2f}"
        score = "    -" if w.score is None else f"{w.score:5.2f}"
        heard = " ".join(self.symbol(p) for p in w.heard)
        expected = " ".join(self.symbol(p) for p in w.expected)
        mark = "*" if w.source != "cmudict" else ""
        return f"{when} {w.verdict:<13} {score}  {w.word}{mark}  /{expected}/  heard /{heard}/"

    def __call__(self, event: Event) -> None:
        if self.json_lines:
            print(to_json(event), flush=True)
            return
        if isinstance(event, Word):
            self.verdicts[event.index] = event
            if self._live is None:
                print(self.line(event), flush=True)
        elif isinstance(event, Summary):
            self.close()
            check = event.metrics.get("check", {})
            if check:
                note = "; * = not in the CMU dictionary (espeak-ng)" if check.get("not_in_dictionary") else ""
                self.err.print(f"words ok: {check['ok']}/{check['words']} ({100 * check['ok_share']:.1f}%), "
                               f"mispronounced {check['mispronounced']}, missing {check['missing']}{note}")
            print_summary(event.metrics, self.err)
            return
        if self._live is not None:
            self._live.update(self.render(), refresh=True)

    def close(self) -> None:
        """Stop the live view, leaving the coloured text on screen."""
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            self._live.stop()
            self._live = None

    def error(self, message: str) -> None:
        """One clear line on stderr, after whatever was already shown."""
        self.close()
        print(f"phonestream: error: {message}", file=sys.stderr, flush=True)
