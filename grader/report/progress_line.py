"""The live progress line of ``grade DIR``: one line on a terminal's stderr, rewritten in place.

It shows at once (while torch loads and the runner starts, a student would otherwise wait in
silence), then a bar of the checks judged, and is wiped before the report prints, so stdout
(the report) never holds any of it. It is only shown where stderr is a terminal, and not with ``-q``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Optional, TextIO

from grader.judge.progress import CHECKING, LOADING, PREPARING, STARTING, ProgressEvent

#: what each phase before the checks is called
PHASES = {STARTING: "starting the grader", PREPARING: "preparing the checks", LOADING: "loading your files"}
#: seconds between repaints while nothing happens (the elapsed time keeps moving)
TICK = 0.5
BAR_WIDTH = 20
_CLEAR = "\r\x1b[K"  # back to the line's start, erase to its end


def shows_progress(stream: Any, quiet: bool) -> bool:
    """Whether a progress line belongs on ``stream``: a terminal that can rewrite a line, and not ``-q``."""
    if quiet or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced by something without a terminal
        return False


class ProgressLine:
    """Callable with each :class:`ProgressEvent`; :meth:`close` wipes the line (also on leaving a ``with``).

    :param label: what is being graded, as the student named it (e.g. ``my_rnn/``).
    """

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream, self.label = stream, label
        self.event = ProgressEvent(STARTING)
        self.started = time.monotonic()
        encoding = (getattr(stream, "encoding", None) or "ascii").lower().replace("-", "")
        self.fancy = encoding in ("utf8", "utf16", "utf32")
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._shown = ""
        self._paint()
        self._ticker = threading.Thread(target=self._tick, name="progress-line", daemon=True)
        self._ticker.start()

    def __call__(self, event: ProgressEvent) -> None:
        self.event = event
        self._paint()

    def text(self) -> str:
        """The line as it reads now, before fitting it to the terminal."""
        event, dots = self.event, "…" if self.fancy else "..."
        seconds = f"{time.monotonic() - self.started:.0f} s"
        if event.phase != CHECKING:
            return f"grading {self.label}: {PHASES.get(event.phase, event.phase)}{dots} {seconds}"
        filled = BAR_WIDTH * event.checks_done // event.checks_total if event.checks_total else 0
        full, empty = ("█", "░") if self.fancy else ("#", "-")
        bar = full * filled + empty * (BAR_WIDTH - filled)
        text = (f"grading {self.label} {bar} {event.checks_done}/{event.checks_total} checks, "
                f"{event.exercises_done}/{event.exercises_total} exercises")
        if event.exercise:
            text += f" ({event.exercise})"
        return f"{text} {seconds}"

    def _paint(self) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            text = self.text()[: _columns(self.stream) - 1]  # a line that wraps could not be rewritten
            if text != self._shown:
                self._write(_CLEAR + text)
                self._shown = text

    def _tick(self) -> None:
        while not self._stopped.wait(TICK):
            self._paint()

    def close(self) -> None:
        """Stop and wipe the line, so what prints next starts on a clean line."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            if self._shown:
                self._write(_CLEAR)
        if self._ticker is not threading.current_thread():
            self._ticker.join(timeout=2)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError, UnicodeError):  # a closed or narrow stream costs the progress line only
            pass

    def __enter__(self) -> "ProgressLine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_line(stream: TextIO, label: str, quiet: bool) -> Optional[ProgressLine]:
    """A started progress line on ``stream``, or None where none belongs (not a terminal, or ``-q``)."""
    return ProgressLine(stream, label) if shows_progress(stream, quiet) else None


def _columns(stream: Any) -> int:
    """The terminal's width; 80 where it does not say (a pseudo-terminal nobody sized says 0)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 80
    return max(columns, 20) if columns > 0 else 80
