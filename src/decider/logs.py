"""The process's log: JSON lines for a log shipper, or text for a person at a terminal.

DECIDER_LOG_FORMAT=json|text (auto: text when stderr is a terminal). One event per start,
stop, reload and error; an error names its request's id. Never a person's id, an email
hash, a trait value or an IP address: messages are written without them (see the README's
Privacy section), uvicorn's access log (client addresses) is off, and an exception is logged
as its type and where it was raised, not its message, which could quote data.
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal

import msgspec

LogFormat = Literal["auto", "json", "text"]
# what every record has, and uvicorn's colored copy of its message
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                event[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            event["exception"] = where(*record.exc_info)
        return _encode(event).decode()


class TextFormatter(logging.Formatter):
    """uvicorn's style, extras appended as key=value, exceptions without their messages."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s:     %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        exc_info, record.exc_info, record.exc_text = record.exc_info, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info = exc_info
        extras = [
            f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _RECORD_FIELDS and not key.startswith("_")
        ]
        if extras:
            line += " (" + ", ".join(extras) + ")"
        if exc_info and exc_info[0] is not None:
            line += "\n  " + where(*exc_info)
        return line


def where(
    kind: type[BaseException] | None, _: BaseException | None, tb: TracebackType | None
) -> str:
    """An exception's type and the frames it passed through, never its message."""
    frames = [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(tb)]
    return f"{kind.__name__ if kind else 'exception'} at " + " <- ".join(reversed(frames[-6:]))


class _Worker(logging.Filter):
    """Names the worker (of `decider serve --workers N`) on each of its records."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def configure_logging(log_format: LogFormat = "auto", worker: int | None = None) -> None:
    """Decider's and uvicorn's messages at INFO on stderr, in the chosen format; each
    record names `worker`, if this process is one of several."""
    if log_format == "auto":
        log_format = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(_Worker(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # the access log would write client IP addresses, which are personal data
    logging.getLogger("uvicorn.access").disabled = True
