"""Log lines (text on a terminal, JSON otherwise, no email at INFO) and the terminal progress display."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxes._core import Fault
from sandboxes.server import ServerThread
from syncd import logs
from syncd.logs import JsonFormatter, TerminalHandler, TextFormatter, bind, setup_logging, status_line
from syncd.progress import ProgressDisplay, progress_display
from tests.e2e import World, emails, provider_entries


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs._active_terminal = None


def record(msg: str, *args: object, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("syncd.test", level, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_structured_fields_and_bound_context() -> None:
    with bind(run_id="abc123", trigger="serve"):
        line = JsonFormatter().format(record("pass %s done", "x", outcome="success", pairs=2))
    out = json.loads(line)
    assert out["msg"] == "pass x done" and out["level"] == "info" and out["logger"] == "syncd.test"
    assert out["ts"].endswith("Z")
    assert (out["run_id"], out["trigger"], out["outcome"], out["pairs"]) == ("abc123", "serve", "success", 2)
    outside = json.loads(JsonFormatter().format(record("later")))
    assert "run_id" not in outside  # bound fields end with their context


def test_no_email_at_info_and_above_but_at_debug() -> None:
    info = JsonFormatter().format(record("failed: HTTP 400: bad member Alice.X@example.com", who="bob@example.org"))
    assert "@" not in info and json.loads(info)["msg"].endswith("bad member <email>")
    assert json.loads(info)["who"] == "<email>"
    url = JsonFormatter().format(record("state DB postgresql+psycopg://syncd@db.example.com/syncd is open"))
    assert "syncd@db.example.com" in url  # a URL's user@host is not an email
    debug = JsonFormatter().format(record("add alice@example.com", level=logging.DEBUG))
    assert "alice@example.com" in debug
    text = TextFormatter().format(record("error for carol@example.com", level=logging.ERROR))
    assert "carol@example.com" not in text and "<email>" in text
    try:
        raise ValueError("dave@example.com refused")
    except ValueError:
        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "crashed", (), sys.exc_info())
    assert "dave@example.com" not in JsonFormatter().format(rec)


def test_text_lines_show_fields_after_the_message() -> None:
    with bind(run_id="0123456789abcdef"):
        text = TextFormatter().format(record("pass done", outcome="success"))
    assert text.endswith("INFO    pass done  [run=01234567 outcome=success]")


def test_format_is_text_on_a_terminal_and_json_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCD_LOG_FORMAT", raising=False)
    tty = Terminal()
    setup_logging("auto", "info", stream=tty)
    assert isinstance(logging.getLogger().handlers[0], TerminalHandler) and status_line() is not None
    logging.getLogger("syncd.x").info("hello")
    assert "INFO    hello" in tty.getvalue()

    pipe = io.StringIO()
    setup_logging("auto", "info", stream=pipe)
    logging.getLogger("syncd.x").info("hello")
    assert json.loads(pipe.getvalue())["msg"] == "hello"
    assert status_line() is None and progress_display() is None

    setup_logging("json", "info", stream=Terminal())  # asked for: JSON even on a terminal, and no progress
    assert status_line() is None and progress_display() is None

    monkeypatch.setenv("SYNCD_LOG_FORMAT", "text")
    pipe = io.StringIO()
    setup_logging(None, None, stream=pipe)  # from the environment
    logging.getLogger("syncd.x").info("plain")
    assert "INFO    plain" in pipe.getvalue() and status_line() is None  # text, but no status line off a tty


def test_log_lines_print_above_the_status_line() -> None:
    tty = Terminal()
    handler = TerminalHandler(tty)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.set_status("syncd: 1/10")
    handler.emit(record("a log line"))
    handler.set_status("")
    assert tty.getvalue() == "\r\x1b[Ksyncd: 1/10" + "\r\x1b[Ka log line\n" + "syncd: 1/10" + "\r\x1b[K"


def test_progress_display_is_throttled_and_cleaned_up() -> None:
    tty = Terminal()
    now = [0.0]
    display = ProgressDisplay(TerminalHandler(tty), interval=0.2, clock=lambda: now[0], width=lambda: 200)
    display("US Sales", "c8", 100, 1000)
    assert display.redraws == 1
    assert tty.getvalue().endswith("syncd: 100/1,000 member changes (10%)  US Sales → c8 100/1,000")
    for done in range(200, 1000, 100):  # many ops within the interval: no redraw
        now[0] += 0.01
        display("US Sales", "c8", done, 1000)
    assert display.redraws == 1
    display("US Sales", "c8", 1000, 1000)  # a pair that finishes is taken off the line at once
    assert display.redraws == 2 and tty.getvalue().endswith("\r\x1b[K")
    display("US Sales", "c8", 900, 1000)  # (not a real sequence: shows the throttle again)
    now[0] += 0.5
    display("Newsletter", "cr", 5, 50)
    assert display.redraws == 3
    assert tty.getvalue().endswith(
        "syncd: 905/1,050 member changes (86%)  US Sales → c8 900/1,000 · Newsletter → cr 5/50"
    )
    display.close()
    assert tty.getvalue().endswith("\r\x1b[K")  # erased at the end of the pass


def test_progress_line_fits_the_terminal() -> None:
    display = ProgressDisplay(TerminalHandler(Terminal()), width=lambda: 40)
    display.pairs = {(f"Group {i}", "c8"): (1, 10) for i in range(10)}
    line = display.render()
    assert len(line) <= 39 and line.endswith("…")


def test_run_on_a_terminal_shows_progress_and_erases_it(tmp_path: Path) -> None:
    """`syncd run` with stderr on a real pseudo-terminal: progress lines appear, and are erased at the end."""
    world = World(tmp_path)
    world.cr.inject(Fault(status=0, delay=0.25, path="/upsert", times=0))
    with ServerThread(world.app) as server:
        providers = provider_entries(server.url, batch_size=100, max_concurrency=1)
        path = world.write_config([{"name": "Big", "members": emails(800), "targets": ["cr"]}], providers=providers)
        leader, follower = pty.openpty()
        env = {**os.environ}
        env.pop("SYNCD_LOG_FORMAT", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=follower,
            env=env,
        )
        os.close(follower)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        os.close(leader)
        stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, seen.decode(errors="replace")
    screen = seen.decode()
    assert "syncd: " in screen and "member changes" in screen and "Big → cr" in screen
    assert screen.rstrip("\r\n").endswith("\r\x1b[K") or screen.rfind("\r\x1b[K") > screen.rfind("member changes (")
    assert "INFO" in screen and "{" not in screen.split("\n")[0]  # text lines on a terminal, not JSON
    assert b"800 member changes made" in stdout
