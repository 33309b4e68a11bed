"""Logging set-up: readable text or JSON lines, with request and session ids.

Privacy rule: log records carry ids, counts, codes and durations, never a coordinate,
a display name or a token.  The formatters are the last line of defence: a record
``extra`` whose key names such a thing is dropped; and request lines, whose query
strings can hold a WebSocket token, are never logged (hypercorn's access log is off).
"""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "locshare_request_id", default="-"
)

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_FORBIDDEN_KEYS = {
    "lat",
    "lng",
    "latitude",
    "longitude",
    "location",
    "token",
    "display_name",
    "name",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and key not in _FORBIDDEN_KEYS and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid != "-":
            entry["request_id"] = rid
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _extras(record)
        rid = request_id_var.get()
        if rid != "-":
            context = {"request_id": rid, **context}
        if context:
            text += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        return text


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Hypercorn logs every request line through this logger only if accesslog is set;
    # we never set it, because URLs can carry WebSocket tokens.
    logging.getLogger("hypercorn.access").disabled = True
    # pgserver's error records paste the whole PostgreSQL log; locshare reports those
    # failures itself, with the log's FATAL line and its path (locshare._embedded).
    logging.getLogger("pgserver").setLevel(logging.CRITICAL)
