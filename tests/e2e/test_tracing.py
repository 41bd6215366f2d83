"""One trace from the webhook request to the store write, and from an agent's reply to the
Cloud API: the services as processes exporting OTLP to a collector the test runs.

A W3C ``traceparent`` sent by the caller is the parent of webhook-ingest's request span;
inbox-api's consumer span is the child of that span (through the AMQP headers) and the
ledger entry keeps the trace id. A reply's request span is the parent of the sender's
consumer span, whose Cloud API call carries the trace on to the sandbox. The log lines
written inside those spans carry the trace id.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from inbox_common.broker.topology import Names
from inbox_common.local.ports import free_port
from inbox_common.local.processes import ServiceProcess, wait_http
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import MESSAGES, WEBHOOK_EVENTS
from inbox_common.whatsapp.signature import SIGNATURE_HEADER, sign
from inbox_sandbox import payloads
from inbox_testkit import backends
from inbox_testkit.agent import reaches, writes_in
from inbox_testkit.polling import wait_until
from inbox_testkit.sandbox import SECRET, Sandbox, run_sandbox, sandbox_number
from inbox_testkit.tenants import ACME_NUMBER, Tokens

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CUSTOMER = "6281234567890"
TOKEN = f"EAAG-secret-{ACME_NUMBER}"  # the testkit channel's token
# Spans are exported every 100 ms (the SDK's default is 5 s).
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


@dataclass
class Collector:
    """An OTLP/HTTP receiver: every span the services export, decoded."""

    url: str = ""
    spans: list[Span] = field(default_factory=list)

    def of_trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if s.trace_id == trace_id]

    async def receive(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Span(
                            service=service,
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={
                                a.key: a.value.string_value or a.value.int_value
                                for a in span.attributes
                            },
                        )
                    )
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    collected = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", collected.receive)
    async with TestServer(app, host="127.0.0.1") as server:
        collected.url = str(server.make_url("")).rstrip("/")
        yield collected


@dataclass
class Traced:
    ingest: str
    api: aiohttp.ClientSession
    cloud: Sandbox
    logs: list[dict[str, Any]]


@pytest.fixture
async def traced(
    collector: Collector,
    amqp_url: str,
    mongo_url: str,
    mongo_db_name: str,
    amqp_namespace: backends.AmqpNamespace,
    db: Database,
    channel: Document,
) -> AsyncIterator[Traced]:
    """webhook-ingest, inbox-api and the sandbox as processes, exporting to ``collector``."""
    amqp_namespace.track_topology()
    ingest_port, api_port = free_port(), free_port()
    ingest = f"http://127.0.0.1:{ingest_port}/webhooks/whatsapp"
    logs: list[dict[str, Any]] = []

    def keep(name: str, line: str) -> None:
        try:
            logs.append({"service": name, **orjson.loads(line)})
        except orjson.JSONDecodeError:
            logs.append({"service": name, "line": line})

    async with run_sandbox(
        ingest,
        [sandbox_number(ACME_NUMBER, TOKEN)],
        sandbox_status_delays_ms="20,40,60",
        otel_exporter_otlp_endpoint=collector.url,
        **FAST_EXPORT,
    ) as cloud:
        env = {
            **os.environ,
            **FAST_EXPORT,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "RABBITMQ_URL": amqp_url,
            "MONGODB_URL": mongo_url,
            "MONGODB_DB": mongo_db_name,
            "AMQP_NAMESPACE": amqp_namespace.name,
            "WHATSAPP_WEBHOOK_SECRET": SECRET,
            "WHATSAPP_WEBHOOK_VERIFY_TOKEN": "trace-verify",
            "WHATSAPP_API_BASE_URL": cloud.url,
            "WEBHOOK_INGEST_PORT": str(ingest_port),
            "INBOX_API_PORT": str(api_port),
            "HTTP_HOST": "127.0.0.1",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "DEBUG",
        }
        children = [
            ServiceProcess(name, [sys.executable, "-m", module], env=env, sink=keep)
            for name, module in (("webhook-ingest", "inbox_ingest"), ("inbox-api", "inbox_api"))
        ]
        try:
            for child, port in zip(children, (ingest_port, api_port), strict=True):
                await child.start()
                await wait_http(f"http://127.0.0.1:{port}/api/health", timeout=30, process=child)
            async with aiohttp.ClientSession(f"http://127.0.0.1:{api_port}") as api:
                yield Traced(ingest, api, cloud, logs)
        finally:
            for child in children:
                await child.stop()


def traceparent() -> tuple[str, str, str]:
    """A caller's trace context: (header value, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def spans_of(collector: Collector, trace_id: str, *names: str) -> dict[str, Span]:
    """The spans of ``trace_id`` named ``names``, once all were exported."""
    found: dict[str, Span] = {}

    async def all_there() -> bool:
        found.update({s.name: s for s in collector.of_trace(trace_id) if s.name in names})
        return set(names) <= set(found)

    try:
        await wait_until(all_there, f"the spans {names} of trace {trace_id}", timeout=15)
    except AssertionError:
        seen = sorted({(s.service, s.name) for s in collector.of_trace(trace_id)})
        raise AssertionError(f"trace {trace_id} has only {seen}") from None
    return found


async def test_a_webhook_and_a_reply_are_each_one_trace_across_the_services(
    traced: Traced, collector: Collector, db: Database, names: Names, tokens: Tokens
) -> None:
    # One stack for both (three processes start in a few seconds each).
    await a_webhook_is_one_trace_from_the_request_to_the_store(traced, collector, db, names, tokens)
    await a_reply_is_one_trace_from_the_agent_to_the_cloud_api(traced, collector, db, tokens)


async def a_webhook_is_one_trace_from_the_request_to_the_store(
    traced: Traced, collector: Collector, db: Database, names: Names, tokens: Tokens
) -> None:
    header, trace_id, caller_span = traceparent()
    body = orjson.dumps(payloads.text_webhook(ACME_NUMBER, CUSTOMER, "Budi", "traced hello"))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            traced.ingest,
            data=body,
            headers={
                SIGNATURE_HEADER: sign(SECRET.encode(), body),
                "Content-Type": "application/json",
                "traceparent": header,
            },
        ) as answer,
    ):
        assert answer.status == 200

    entry: list[Document] = []

    async def recorded() -> bool:
        entry[:] = [e for e in [await db[WEBHOOK_EVENTS].find_one({"status": "processed"})] if e]
        return bool(entry)

    await wait_until(recorded, "the webhook's ledger entry")
    assert entry[0]["trace_id"] == trace_id
    # The webhook logs show it: from a failed body to its trace.
    logs = await traced.api.get(
        "/api/admin/webhook-logs", headers={"Authorization": f"Bearer {tokens.superadmin}"}
    )
    assert [item["trace_id"] for item in (await logs.json())["items"]] == [trace_id]

    request_span = "POST /webhooks/whatsapp"
    consumer_span = f"{names.webhooks_queue} process"
    spans = await spans_of(collector, trace_id, request_span, consumer_span)
    received, applied = spans[request_span], spans[consumer_span]
    assert (received.service, received.parent_id) == ("webhook-ingest", caller_span)
    assert received.attributes["http.response.status_code"] == 200
    assert (applied.service, applied.parent_id) == ("inbox-api", received.span_id)
    assert applied.attributes["inbox.outcome"] == "acked"


async def a_reply_is_one_trace_from_the_agent_to_the_cloud_api(
    traced: Traced, collector: Collector, db: Database, tokens: Tokens
) -> None:
    conversation = await writes_in(
        traced.api, traced.cloud, tokens.acme_agent, ACME_NUMBER, CUSTOMER, "Halo"
    )
    header, trace_id, caller_span = traceparent()
    answer = await traced.api.post(
        f"/api/conversations/{conversation}/messages",
        json={"type": "text", "text": {"body": "traced reply"}},
        headers={
            "Authorization": f"Bearer {tokens.acme_agent}",
            "Idempotency-Key": "traced-1",
            "traceparent": header,
        },
    )
    assert answer.status == 202, await answer.text()
    message = await answer.json()
    await reaches(traced.api, tokens.acme_agent, conversation, message["id"], send_state="accepted")
    stored = await db[MESSAGES].find_one({"idempotency_key": {"$regex": "traced-1$"}})
    assert stored is not None
    assert stored["trace_id"] == trace_id

    request_span = "POST /api/conversations/{id}/messages"
    cloud_call = "POST /{version}/{node}/messages"
    spans = await spans_of(collector, trace_id, request_span, cloud_call)
    requested, called = spans[request_span], spans[cloud_call]
    assert (requested.service, requested.parent_id) == ("inbox-api", caller_span)
    assert requested.attributes["http.response.status_code"] == 202
    # The sender's consumer span sits between the request and the call.
    consumed = await exported(
        collector,
        trace_id,
        f"the parent of {called.span_id}",
        lambda s: s.span_id == called.parent_id,
    )
    assert (consumed.service, consumed.parent_id) == ("inbox-api", requested.span_id)
    assert consumed.name.endswith(" process")
    assert called.attributes["http.response.status_code"] == 200
    # The sandbox took the trace from the request's headers, as any traced server would.
    served = await exported(
        collector,
        trace_id,
        f"a span under {called.span_id}",
        lambda s: s.parent_id == called.span_id,
    )
    assert served.service == "whatsapp-sandbox"

    # The sender's log line about the send carries the trace id.
    async def logged() -> bool:
        return any(
            line.get("event") == "cloud_api.sent" and line.get("trace_id") == trace_id
            for line in traced.logs
        )

    await wait_until(logged, "the send's log line with the trace id")


async def exported(
    collector: Collector, trace_id: str, what: str, wanted: Callable[[Span], bool]
) -> Span:
    """The first span of ``trace_id`` that is ``wanted``, once exported (spans of one trace
    may come in different export batches)."""
    found: list[Span] = []

    async def there() -> bool:
        found[:] = [s for s in collector.of_trace(trace_id) if wanted(s)]
        return bool(found)

    await wait_until(there, f"{what} in trace {trace_id}", timeout=15)
    return found[0]
