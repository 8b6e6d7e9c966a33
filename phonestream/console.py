"""Terminal output: the live phoneme view, JSON Lines, and metric tables (rich).

On a terminal, :class:`LiveView` shows the transcript as it grows: committed phonemes in bold (dimmed
when their confidence is low), wrapped to the terminal's width, each line starting with the time of its
first phoneme; full lines scroll up into the terminal's history, so the newest phonemes are always on
screen. Below them the provisional tail (dim italic) and a status line (audio heard, phonemes, the
last phoneme's delay, the legend) are redrawn in place. When stdout is not a terminal, a header line is
followed by one plain line per committed phoneme (start, end, symbol, confidence) so the output can be
piped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rich.cells import cell_len
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .events import Endpoint, Event, Partial, Phoneme, Summary, to_json

#: Committed phonemes below this confidence are shown dimmed in the live view.
LOW_CONFIDENCE = 0.5
#: Header of the piped (not a terminal) output, aligned with its lines.
PLAIN_HEADER = f"{'start_s':>8} {'end_s':>8}  {'phoneme':<7} confidence"
_TIME_WIDTH = 8  # "  12.34 " in front of each transcript line


class LiveView:
    """The live terminal view of one stream (see the module docstring).

    Finished transcript lines are printed above the live region (they scroll into the terminal's
    history); the live region holds the line being filled, the provisional tail and the status line.
    """

    def __init__(self, console: Console, low_confidence: float = LOW_CONFIDENCE) -> None:
        self.console = console
        self.low_confidence = low_confidence
        self.line: list[Phoneme] = []
        self.tail: list[str] = []
        self.heard = 0.0
        self.count = 0
        self.delay: float | None = None
        self.live = Live(self._render(), console=console, auto_refresh=False, transient=True,
                         vertical_overflow="visible")
        self.live.start()

    # -- what is drawn ----------------------------------------------------------------------------

    def _styled(self, p: Phoneme) -> Text:
        return Text(p.phoneme, style="dim" if p.confidence < self.low_confidence else "bold")

    def _line_text(self, phonemes: list[Phoneme], start: float | None = None) -> Text:
        first = phonemes[0].start if phonemes else start
        text = Text()
        text.append(f"{first:7.2f} " if first is not None else " " * _TIME_WIDTH, style="cyan")
        for i, p in enumerate(phonemes):
            if i:
                text.append(" ")
            text.append_text(self._styled(p))
        return text

    def _status(self) -> Text:
        parts = [f"{self.heard:.2f} s heard", f"{self.count} phoneme{'' if self.count == 1 else 's'}"]
        if self.delay is not None:
            parts.append(f"delay {self.delay:.2f} s")
        status = Text(" | ".join(parts), style="reverse")
        legend = Text("  bold: committed, dim: confidence < "
                      f"{self.low_confidence:g}, italic: provisional", style="dim")
        if cell_len(status.plain) + cell_len(legend.plain) <= self.console.width:
            status.append_text(legend)
        return status

    def _render(self) -> Group:
        current = self._line_text(self.line, self.heard if not self.line else None)
        if self.tail:
            current.append(" " if self.line else "")
            current.append(" ".join(self.tail), style="dim italic")
        return Group(current, self._status())

    def _refresh(self) -> None:
        self.live.update(self._render(), refresh=True)

    # -- events -----------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Print the current line above the live region: it stays in the terminal's history."""
        if self.line:
            self.console.print(self._line_text(self.line), soft_wrap=False, overflow="fold")
            self.line = []

    def phoneme(self, p: Phoneme) -> None:
        width = max(self.console.width, _TIME_WIDTH + 8)
        if self.line and cell_len(self._line_text(self.line + [p]).plain) > width:
            self._flush()
        self.line.append(p)
        self.count += 1
        self.heard = max(self.heard, p.committed_at)
        self.delay = p.committed_at - p.end
        self._refresh()

    def partial(self, event: Partial) -> None:
        self.tail = list(event.phonemes)
        self.heard = max(self.heard, event.received)
        self._refresh()

    def endpoint(self, event: Endpoint) -> None:
        """An utterance ended: its last line is finished, and a dim rule says so."""
        self._flush()
        self.console.print(Text(f"{'':{_TIME_WIDTH}}-- end of utterance {event.utterance} "
                                f"({event.start:.2f}-{event.end:.2f} s)", style="dim"))
        self._refresh()

    def close(self) -> None:
        """Print the last line and remove the live region (the transcript stays on screen)."""
        self.tail = []
        self._flush()
        self.live.stop()


class EventPrinter:
    """Prints a stream's events as they arrive: live view, plain lines or JSON Lines.

    Args:
        json_lines: one JSON object per event instead of the human-readable forms.
        symbol: maps each phoneme symbol for display (``phonestream.phones.to_ipa`` for ``--ipa``);
            also applied to the summary's ``phoneme_string`` and ``offline_string``.
        min_confidence: committed phonemes below this confidence are not shown at all.
    """

    def __init__(self, json_lines: bool = False, symbol: Callable[[str], str] = str,
                 min_confidence: float = 0.0) -> None:
        self.json_lines = json_lines
        self.symbol = symbol
        self.min_confidence = min_confidence
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)
        self._live: LiveView | None = None
        self._header_done = False
        self._tail_shown: list[str] = []
        if not json_lines and self.out.is_terminal:
            self._live = LiveView(self.out)

    def _convert(self, event: Event) -> Event:
        if self.symbol is str:
            return event
        if isinstance(event, Phoneme):
            return Phoneme(**{**event.__dict__, "phoneme": self.symbol(event.phoneme)})
        if isinstance(event, Partial):
            return Partial([self.symbol(s) for s in event.phonemes], event.received)
        if isinstance(event, Summary):
            metrics = dict(event.metrics)
            for key in ("phoneme_string", "offline_string"):
                if isinstance(metrics.get(key), str):
                    metrics[key] = " ".join(self.symbol(s) for s in metrics[key].split())
            return Summary(metrics)
        return event

    def _plain(self, line: str) -> None:
        if not self._header_done:
            self._header_done = True
            print(PLAIN_HEADER, flush=True)
        print(line, flush=True)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Phoneme) and event.confidence < self.min_confidence:
            return
        if isinstance(event, Partial):  # only changes of the tail: no empty partial when none was shown
            if list(event.phonemes) == self._tail_shown:
                return
            self._tail_shown = list(event.phonemes)
        event = self._convert(event)
        if self.json_lines:
            print(to_json(event), flush=True)
            return
        if isinstance(event, Summary):
            live = self._live is not None
            self.close()
            print_summary(event.metrics, self.out if live else self.err)
        elif self._live is not None:
            if isinstance(event, Phoneme):
                self._live.phoneme(event)
            elif isinstance(event, Partial):
                self._live.partial(event)
            elif isinstance(event, Endpoint):
                self._live.endpoint(event)
        elif isinstance(event, Phoneme):
            self._plain(f"{event.start:8.2f} {event.end:8.2f}  {event.phoneme:<7} {event.confidence:.2f}")
        elif isinstance(event, Endpoint):
            self._plain(f"{'':8} {event.end:8.2f}  -- end of utterance {event.utterance} "
                        f"({event.start:.2f}-{event.end:.2f} s)")

    def close(self) -> None:
        """Stop the live view (leaving the committed phonemes on screen)."""
        if self._live is not None:
            self._live.close()
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
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
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
