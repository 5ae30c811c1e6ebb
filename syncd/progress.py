"""A progress display for long passes on a terminal: members done / total per (group, provider) pair.

Driven by the Reconciler's progress hook (called after every op). It draws on the terminal's status line
(`syncd.logs.TerminalHandler`), so log lines keep scrolling above it; redraws are throttled, and `close()`
erases it. It exists only when stderr is a terminal and logs are text: `progress_display()` returns None
otherwise (JSON logs, pipes, files, containers).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from syncd.logs import TerminalHandler, status_line

__all__ = ["ProgressDisplay", "progress_display"]

REDRAW_INTERVAL = 0.2  # seconds between redraws: smooth enough, and cheap for passes of thousands of ops


class ProgressDisplay:
    def __init__(
        self,
        status: TerminalHandler,
        *,
        interval: float = REDRAW_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        width: Callable[[], int] | None = None,
    ) -> None:
        self.status = status
        self.interval = interval
        self.clock = clock
        self.width = width or (lambda: shutil.get_terminal_size((100, 24)).columns)
        self.pairs: dict[tuple[str, str], tuple[int, int]] = {}
        self._last = float("-inf")
        self.redraws = 0

    def __call__(self, group: str, provider: str, done: int, total: int) -> None:
        self.pairs[(group, provider)] = (done, total)
        now = self.clock()
        if now - self._last < self.interval and done < total:  # a finished pair leaves the line at once
            return
        self._last = now
        self.redraws += 1
        self.status.set_status(self.render())

    def render(self) -> str:
        active = [(key, dt) for key, dt in self.pairs.items() if dt[0] < dt[1]]
        if not active:
            return ""
        done = sum(d for d, _ in self.pairs.values())
        total = sum(t for _, t in self.pairs.values())
        head = f"syncd: {done:,}/{total:,} member changes ({done * 100 // max(total, 1)}%)"
        parts = [f"{g} → {p} {d:,}/{t:,}" for (g, p), (d, t) in active]
        line = head + "  " + " · ".join(parts)
        width = max(20, self.width() - 1)  # never the last column: some terminals wrap there
        return line if len(line) <= width else line[: width - 1] + "…"

    def close(self) -> None:
        """Erase the display (end of a pass); it can be used again for the next one."""
        self.pairs.clear()
        self._last = float("-inf")
        self.status.set_status("")


def progress_display() -> ProgressDisplay | None:
    """A display on the terminal's status line, or None when stderr is not a terminal or logs are JSON."""
    status = status_line()
    return ProgressDisplay(status) if status is not None else None
