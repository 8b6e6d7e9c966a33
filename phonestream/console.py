"""Terminal output: the live phoneme view, JSON Lines, and metric tables (rich).

On a terminal, committed phonemes appear in bold as they are committed and the provisional tail follows
them dimmed and italic, redrawn in place. When stdout is not a terminal, each committed phoneme is one
plain line (time, symbol, confidence) so the output can be piped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .events import Endpoint, Event, Partial, Phoneme, Summary, to_json


class EventPrinter:
    """Prints a stream's events as they arrive: live view, plain lines or JSON Lines."""

    def __init__(self, json_lines: bool = False, symbol: Callable[[str], str] = str,
                 min_confidence: float = 0.0) -> None:
        self.json_lines = json_lines
        self.symbol = symbol
        self.min_confidence = min_confidence
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False)
        self._committed = Text()
        self._tail: list[str] = []
        self._live: Live | None = None
        if not json_lines and self.out.is_terminal:
            self._live = Live(self._render(), console=self.out, auto_refresh=False, transient=False)
            self._live.start()

    def _render(self) -> Text:
        view = self._committed.copy()
        if self._tail:
            view.append(" ".join(self.symbol(s) for s in self._tail), style="dim italic")
        return view

    def __call__(self, event: Event) -> None:
        if isinstance(event, Phoneme):
            if event.confidence < self.min_confidence:
                return
            if self.symbol is not str:
                event = Phoneme(**{**event.__dict__, "phoneme": self.symbol(event.phoneme)})
        elif isinstance(event, Partial) and self.symbol is not str:
            event = Partial([self.symbol(s) for s in event.phonemes], event.received)
        if self.json_lines:
            print(to_json(event), flush=True)
            return
        if isinstance(event, Phoneme):
            if self._live is not None:
                self._committed.append(event.phoneme + " ", style="bold")
            else:
                print(f"{event.start:8.2f} {event.end:8.2f}  {event.phoneme:<4} {event.confidence:.2f}", flush=True)
        elif isinstance(event, Partial):
            self._tail = event.phonemes
        elif isinstance(event, Endpoint):  # end of an utterance: a line break in the live view
            if self._live is not None:
                self._committed.append("\n")
            else:
                print(f"{'':8} {event.end:8.2f}  -- end of utterance {event.utterance} "
                      f"({event.start:.2f}-{event.end:.2f} s)", flush=True)
        elif isinstance(event, Summary):
            self.close()
            print_summary(event.metrics, self.err if self._live is None else self.out)
            return
        if self._live is not None:
            self._live.update(self._render(), refresh=True)

    def close(self) -> None:
        """Stop the live view (leaving the committed phonemes on screen)."""
        if self._live is not None:
            self._tail = []
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None

    def error(self, message: str) -> None:
        """One clear line on stderr, after whatever was already shown."""
        self.close()
        print(f"phonestream: error: {message}", file=sys.stderr, flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and "p50" in value:
        return " / ".join(_fmt(v) for v in value.values())
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def print_summary(metrics: dict[str, Any], console: Console | None = None) -> None:
    """The end-of-run metrics as a two-column table."""
    console = console or Console(stderr=True)
    table = Table(title="phonestream run", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", overflow="fold")
    for key, value in metrics.items():
        label = key
        if isinstance(value, dict) and "p50" in value:
            label = f"{key} (avg / p50 / p95 / max)"
        table.add_row(label, _fmt(value))
    console.print(table)


def print_rows(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    """A list of same-keyed dicts as a table, one row each (dict cells shown as p50 / p95)."""
    console = console or Console()
    if not console.is_terminal:  # piped: do not squeeze a wide table into 80 columns
        console.width = max(console.width, 200)
    table = Table(title=title, header_style="bold")
    keys = list(rows[0]) if rows else []
    for k in keys:
        table.add_column(k)
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k)
            if isinstance(v, dict) and "p50" in v:
                v = f"{_fmt(v['p50'])} / {_fmt(v['p95'])}"
            cells.append(_fmt(v))
        table.add_row(*cells)
    console.print(table)
