"""The server's log output: text lines for people, or JSON lines for log pipelines (`server.log_format`),
each with the session and stream it concerns.

Log calls do not pass ids themselves. The WebSocket side binds the session id, and the stream name and
mediaSessionId of the message being handled, to context variables (`bind`); everything that runs for that
message (hooks, stream statuses, tasks it starts, which copy the context) logs with them. A log call may
also give them with `extra={"session_id": ..., "stream": ..., "media_session_id": ...}`, which wins.

A JSON line: {"time": "2026-01-01T12:00:00.123Z", "level": "INFO", "logger": "streaming.ws",
"message": "...", "session_id": "...", "stream": "cam1", "media_session_id": "..."} with the ids only when
known, and "exception" (the formatted traceback) when there is one.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import IO, Any

CONTEXT_FIELDS = ("session_id", "stream", "media_session_id")

_vars: dict[str, ContextVar[str | None]] = {name: ContextVar(f"log_{name}", default=None) for name in CONTEXT_FIELDS}
_UNSET: Any = object()


def bind(session_id: str | None = _UNSET, stream: str | None = _UNSET, media_session_id: str | None = _UNSET) -> None:
    """Set the ids later log lines of this task (and of the tasks it starts) carry; None clears one."""
    for name, value in (("session_id", session_id), ("stream", stream), ("media_session_id", media_session_id)):
        if value is not _UNSET:
            _vars[name].set(value)


def current() -> dict[str, str]:
    """The ids bound in this context."""
    return {name: value for name, var in _vars.items() if (value := var.get()) is not None}


class ContextFilter(logging.Filter):
    """Puts the bound ids on every record that does not carry its own (through `extra`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _vars.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


def _ids(record: logging.LogRecord) -> dict[str, str]:
    return {name: str(value) for name in CONTEXT_FIELDS if (value := getattr(record, name, None)) is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_ids(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with the ids at the end in brackets when there are any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = _ids(record)
        if not ids:
            return text
        first, newline, rest = text.partition("\n")  # after the message, before any traceback
        return first + " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]" + newline + rest


def configure(level: str, fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Route the root logger to `stream` (stderr) at `level` in `fmt` ("text" or "json")."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # Python warnings become log lines, in the same format
