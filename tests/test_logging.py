"""Structured logs: JSON lines or text, with request and session ids, nothing private."""

from __future__ import annotations

import io
import json
import logging

from locshare._logging import JsonFormatter, TextFormatter, configure_logging, request_id_var


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "locshare.test", logging.WARNING, __file__, 1, "something %s", ("happened",), None
    )
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_ids_and_drop_private_extras() -> None:
    token = request_id_var.set("req-123")
    try:
        line = JsonFormatter().format(
            record(session_id="s-1", lat=47.1, lng=8.2, display_name="Ann", token="eyJ...", count=3)
        )
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["msg"] == "something happened"
    assert entry["level"] == "warning"
    assert entry["request_id"] == "req-123"
    assert entry["session_id"] == "s-1"
    assert entry["count"] == 3
    for private in ("lat", "lng", "display_name", "token"):
        assert private not in entry
    assert entry["ts"].endswith("Z")


def test_text_format_is_readable() -> None:
    line = TextFormatter().format(record(session_id="s-1", lat=1.0))
    assert "WARNING" in line and "something happened" in line and "session_id=s-1" in line
    assert "lat" not in line


def test_configure_logging_level_and_format(capsys: object) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("ERROR", "json")
        stream = io.StringIO()
        root.handlers[0].stream = stream  # type: ignore[attr-defined]
        logging.getLogger("locshare.x").warning("dropped by level")
        logging.getLogger("locshare.x").error("kept")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [entry["msg"] for entry in lines] == ["kept"]
        assert logging.getLogger("hypercorn.access").disabled
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
