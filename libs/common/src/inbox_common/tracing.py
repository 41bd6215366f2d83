"""Traces: a W3C ``traceparent`` from the webhook request to the store write and the send.

The context travels in the ``traceparent`` HTTP header, in the AMQP headers of every message
a service publishes (a webhook body carries its own, also inside a micro-batch), and in the
``traceparent`` header of the Cloud API requests. Every log line written while a span is
current carries its ``trace_id`` and ``span_id``.

Ids are made and propagated whether or not spans are exported. Export (OTLP over HTTP) is
off by default and on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the collector's base URL,
``/v1/traces`` is appended) or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL) is set;
the exporter's other standard variables (``OTEL_EXPORTER_OTLP_HEADERS``, ``…_TIMEOUT``,
``…_COMPRESSION``, ``…_CERTIFICATE``) and the sampler's (``OTEL_TRACES_SAMPLER``, default
``parentbased_always_on``) apply as the OpenTelemetry SDK defines them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# version-trace_id-parent_id-flags, as W3C Trace Context writes it.
TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)

_PROPAGATOR = TraceContextTextMapPropagator()
HeadersT = TypeVar("HeadersT", bound=MutableMapping[str, Any])
_TRACER_NAME = "inbox"
_provider: Any = None  # the SDK's TracerProvider, once configured


def configure_tracing(
    service: str, *, endpoint: str = "", traces_endpoint: str = "", version: str = ""
) -> bool:
    """Install this process's tracer provider; True when spans are exported.

    Without an endpoint the provider samples nothing: ids are still made and propagated (a
    trace that enters with a ``traceparent`` keeps its id through this service), at the cost
    of a few microseconds per span.
    """
    global _provider
    # The SDK is imported here, by the daemons only: the one-shot commands start faster.
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    resource = Resource.create({SERVICE_NAME: service, SERVICE_VERSION: version or "unknown"})
    url = traces_endpoint or (f"{endpoint.rstrip('/')}/v1/traces" if endpoint else "")
    if url:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    else:
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    trace.set_tracer_provider(provider)
    _provider = provider
    return bool(url)


def shutdown_tracing() -> None:
    """Export what is buffered and stop (a service's last step)."""
    if _provider is not None:
        _provider.shutdown()


# The API's proxy: it finds the provider configure_tracing() installs, whenever that happens
# (a tracer fetched per span would cost as much as the span).
_TRACER = trace.get_tracer(_TRACER_NAME)


def tracer() -> trace.Tracer:
    return _TRACER


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


def context_from(carrier: Mapping[str, Any] | None) -> Context:
    """The context a ``traceparent`` (and ``tracestate``) in ``carrier`` names; an empty
    context (a new trace) when there is none or it is malformed. AMQP headers may hold bytes."""
    if not carrier:
        return Context()
    fields = {
        key: text
        for key in (TRACEPARENT, TRACESTATE)
        if (text := _text(carrier.get(key))) is not None
    }
    if TRACEPARENT not in fields:
        return Context()
    return _PROPAGATOR.extract(fields, context=Context())


def new_trace() -> Context:
    """The parent of a span that starts a trace of its own (a batch of several traces' items
    links them instead)."""
    return Context()


def context_of(traceparent: str) -> Context:
    """The context of one ``traceparent`` value (empty when there is none)."""
    return context_from({TRACEPARENT: traceparent} if traceparent else None)


def inject(headers: HeadersT) -> HeadersT:
    """Add the current span's ``traceparent`` to ``headers`` (unless one is there already)."""
    if TRACEPARENT not in headers and trace.get_current_span().get_span_context().is_valid:
        _PROPAGATOR.inject(headers)
    return headers


def current_traceparent() -> str:
    """The current span's ``traceparent`` ('' outside any span)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get(TRACEPARENT, "")


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), None outside any span."""
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


def trace_id_of(traceparent: str) -> str | None:
    """The trace id (32 hex digits) in a ``traceparent`` value, if it is well formed."""
    if traceparent and _TRACEPARENT.match(traceparent):
        trace_id = traceparent[3:35]
        return trace_id if trace_id != "0" * 32 else None
    return None


def links_to(traceparents: Sequence[str]) -> list[Link]:
    """Links to the spans the ``traceparents`` name (a batch's span links its members)."""
    links = []
    for value in traceparents:
        span_context = trace.get_current_span(context_of(value)).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
    return links


def span(
    name: str,
    *,
    parent: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    links: Sequence[Link] = (),
) -> AbstractContextManager[Span]:
    """A current span named ``name``: a child of ``parent`` when given (an empty context
    starts a new trace), of the current span otherwise."""
    return _TRACER.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes, links=links
    )


def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ``trace_id`` and ``span_id`` on the line."""
    span_context: SpanContext = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event.setdefault("trace_id", trace.format_trace_id(span_context.trace_id))
        event.setdefault("span_id", trace.format_span_id(span_context.span_id))
    return event


__all__ = [
    "TRACEPARENT",
    "SpanKind",
    "StatusCode",
    "add_trace_ids",
    "configure_tracing",
    "context_from",
    "context_of",
    "current_trace_id",
    "current_traceparent",
    "inject",
    "links_to",
    "new_trace",
    "shutdown_tracing",
    "span",
    "trace_id_of",
    "tracer",
]
