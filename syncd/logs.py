"""Log output: readable lines on a terminal, JSON lines otherwise (containers, log shippers).

Nothing at INFO names a member: ops describe themselves by counts, emails appear at DEBUG only. As a safety
net, anything that looks like an email address in a record at INFO or above (message, structured fields,
traceback) is replaced by ``<email>``; at DEBUG, where a user asked for member detail, nothing is redacted.

JSON lines carry structured fields besides the message: ``ts``, ``level``, ``logger``, ``msg``, the fields a
caller passes with ``extra={...}``, and those bound to the current context with `bind` (``syncd serve`` binds
the run id, so every line of a pass can be grouped by it).

On a terminal (text mode), `TerminalHandler` also keeps a *status line* under the log lines: the progress
display (`syncd.progress`) writes there, and every log line is printed above it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

__all__ = [
    "JsonFormatter",
    "TerminalHandler",
    "TextFormatter",
    "bind",
    "redact",
    "setup_logging",
    "status_line",
]

FORMATS = ("auto", "text", "json")
LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has: anything else on a record came from `extra=` and is a structured field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}
# An email-like token; not the user@host of a URL ("postgresql://syncd@db.example.com/…" stays readable).
_EMAIL = re.compile(r"(?<![\w.%+\-'/])[A-Za-z0-9._%+\-']+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_CONTEXT: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("syncd_log_context", default=None)

_active_terminal: TerminalHandler | None = None


def redact(text: str) -> str:
    """`text` with every email-like token replaced by ``<email>``."""
    return _EMAIL.sub("<email>", text)


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add `fields` to every record logged in this context (asyncio tasks started inside inherit them)."""
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_field(name: str, value: Any) -> None:
    """Set one field for the rest of the current context (e.g. the run id, once it is known)."""
    _CONTEXT.set({**(_CONTEXT.get() or {}), name: value})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(_CONTEXT.get() or {})
    fields.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
    return fields


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, structured fields, exc (when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            if key not in out:
                out[key] = _jsonable(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.levelno >= logging.INFO:
            out = _scrub(out)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``12:00:01 INFO    message  key=value …`` for people; structured fields trail the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if fields:
            shown = " ".join(f"{k}={_jsonable(v)}" for k, v in fields.items() if k != "run_id")
            if "run_id" in fields:
                shown = f"run={str(fields['run_id'])[:8]} {shown}".rstrip()
            text = f"{text}  [{shown}]" if shown else text
        return redact(text) if record.levelno >= logging.INFO else text


class TerminalHandler(logging.StreamHandler[TextIO]):
    """Log lines on a terminal, with a status line (the progress display) kept below them.

    A log line first erases the status line, is written, then the status line is drawn again, so the two
    never garble each other.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._status = ""
        self._status_lock = threading.RLock()

    def set_status(self, text: str) -> None:
        """Show `text` (one line, no newline) as the status line; an empty text removes it."""
        with self._status_lock:
            if text == self._status:
                return
            self.stream.write("\r\x1b[K" + text)
            self._status = text
            self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        with self._status_lock:
            if self._status:
                self.stream.write("\r\x1b[K")
            super().emit(record)
            if self._status:
                self.stream.write(self._status)
                self.stream.flush()


def status_line() -> TerminalHandler | None:
    """The terminal's status line, when logs go to a terminal as text (None for JSON or a pipe)."""
    return _active_terminal


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(fmt: str | None = "auto", level: str | None = "info", stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr) as `fmt` (auto: text on a terminal, JSON otherwise) at `level`.

    `fmt` and `level` default to ``$SYNCD_LOG_FORMAT`` / ``$SYNCD_LOG_LEVEL`` when not given (None).
    """
    global _active_terminal
    stream = stream if stream is not None else sys.stderr
    fmt = (fmt or os.environ.get("SYNCD_LOG_FORMAT") or "auto").lower()
    level = (level or os.environ.get("SYNCD_LOG_LEVEL") or "info").lower()
    if fmt not in FORMATS:
        fmt = "auto"
    if level not in LEVELS:
        level = "info"
    tty = _is_tty(stream)
    if fmt == "auto":
        fmt = "text" if tty else "json"
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        _active_terminal = None
    elif tty:
        handler = _active_terminal = TerminalHandler(stream)
        handler.setFormatter(TextFormatter())
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(TextFormatter())
        _active_terminal = None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; ours are counted and timed in metrics instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # APScheduler narrates every job at INFO; syncd.scheduling reports skipped and missed passes itself.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # Procrastinate (the replicas' queue) narrates every job at INFO; syncd logs each pair's pass itself.
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    # uvicorn (the /metrics server of `syncd serve`): syncd.server logs the address itself.
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
