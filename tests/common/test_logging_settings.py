"""Logging never leaks secrets; settings fail at start naming the variable."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from inbox_common import tracing
from inbox_common.logging import bind_message_context, configure_logging, get_logger
from inbox_common.settings import BrokerSettings, MongoSettings, load_settings, redact_url


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_json_logs_carry_bound_ids_and_redact_secrets(restore_logging: None) -> None:
    raw = io.BytesIO()
    configure_logging(
        "INFO", "json", stream=io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    )
    try:
        structlog.contextvars.clear_contextvars()
        bind_message_context(request_id="req-1", wamid="wamid.X", sha256=None)
        get_logger("test").info(
            "something.happened",
            access_token="EAAG-very-secret",
            authorization="Bearer wai_abc",
            url="amqp://guest:hunter2@broker:5672/",
            count=3,
        )
    finally:
        structlog.contextvars.clear_contextvars()
    line = orjson.loads(raw.getvalue().splitlines()[-1])
    assert line["event"] == "something.happened"
    assert line["request_id"] == "req-1"
    assert line["wamid"] == "wamid.X"
    assert "sha256" not in line
    assert line["count"] == 3
    text = raw.getvalue().decode()
    for secret in ("EAAG-very-secret", "wai_abc", "hunter2"):
        assert secret not in text
    assert line["url"] == "amqp://guest:***@broker:5672/"


def test_log_lines_inside_a_span_carry_its_trace_and_span_ids(restore_logging: None) -> None:
    raw = io.BytesIO()
    configure_logging(
        "INFO", "json", stream=io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    )
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with tracing.span("work", parent=tracing.context_of(f"00-{trace_id}-{span_id}-01")):
        get_logger("test").info("inside")
    get_logger("test").info("outside")
    inside, outside = (orjson.loads(line) for line in raw.getvalue().splitlines()[-2:])
    assert inside["trace_id"] == trace_id
    assert len(inside["span_id"]) == 16
    assert "trace_id" not in outside


def test_redact_url_hides_only_the_password() -> None:
    assert (
        redact_url("mongodb://app:pw@db1,db2/?replicaSet=rs")
        == "mongodb://app:***@db1,db2/?replicaSet=rs"
    )
    assert redact_url("amqp://127.0.0.1:5672/") == "amqp://127.0.0.1:5672/"


def test_bad_values_name_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Both(BrokerSettings, MongoSettings):
        pass

    monkeypatch.setenv("RABBITMQ_URL", "http://not-amqp")
    monkeypatch.setenv("AMQP_NAMESPACE", "has space")
    monkeypatch.setenv("MONGODB_DB", "ok_name")
    with pytest.raises(SystemExit):
        load_settings(Both)
    err = capsys.readouterr().err
    assert "RABBITMQ_URL" in err
    assert "amqp://" in err
    assert "AMQP_NAMESPACE" in err
    assert "MONGODB_DB" not in err


def test_library_records_with_an_exception_render_as_json(restore_logging: None) -> None:
    raw = io.BytesIO()
    configure_logging(
        "INFO", "json", stream=io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    )
    try:
        raise ConnectionError("connection reset")
    except ConnectionError:
        # What aiormq logs when the broker goes away: a type as an argument, and exc_info.
        logging.getLogger("aiormq.connection").warning("lost: %r", type, exc_info=True)
    line = orjson.loads(raw.getvalue().splitlines()[-1])
    assert line["logger"] == "aiormq.connection"
    assert "ConnectionError: connection reset" in line["exception"]
