"""OpenTelemetry for the dispatchers: a span per attempt, and delivery metrics.

``pip install 'hookdispatch[otel]'`` brings the OpenTelemetry API; your application
brings the SDK and its exporters, as with any instrumented library::

    from hookdispatch.telemetry import OpenTelemetry

    hooks = hd.Dispatcher(storage=storage, telemetry=OpenTelemetry())

Only the OpenTelemetry API is used (never the SDK): without a configured SDK every
span and measurement is a no-op. See ``docs/observability.md`` for what each span and
instrument holds.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from attrs import evolve

from ._core import GONE, Claim, Request
from ._models import Attempt, Delivery
from ._reporting import AttemptDecision, AttemptReport
from ._urls import parse_url
from .exceptions import HookDispatchError, MissingDependencyError
from .storage import Storage

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, SpanContext, TracerProvider

__all__ = ["PENDING_ENDPOINTS", "OpenTelemetry"]

logger = logging.getLogger("hookdispatch")

PENDING_ENDPOINTS = 20
"""Endpoints the pending gauge reports, those with the most pending deliveries: a
bounded number of series, however many endpoints there are."""

_SCOPE = "hookdispatch"
_REMEMBERED_EVENTS = 10_000
# Seconds: OpenTelemetry's advice for HTTP client durations, up to our 5 s default
# deadline and a little past it.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


def _version() -> str:
    from . import __version__  # noqa: PLC0415 - the package imports this module's users

    return __version__


class OpenTelemetry:
    """Traces and metrics for a dispatcher: pass it as ``telemetry=``.

    * ``tracer_provider`` and ``meter_provider``: where spans and measurements go;
      the global ones (``opentelemetry.trace.set_tracer_provider``, ...) by default.
    * ``propagate``: send a W3C ``traceparent`` header (and ``tracestate``, when
      the span has one) with every attempt, so a receiver that traces can continue
      the trace. Off by default: it tells every receiver your trace ids. Baggage is
      never sent.

    Each attempt is a CLIENT span named ``POST``, with the HTTP client semantic
    conventions' ``http.request.method``, ``server.address``, ``server.port``,
    ``url.scheme``, ``http.response.status_code``, ``error.type`` and
    ``http.request.resend_count``, and hookdispatch's ids (``hookdispatch.*``);
    never the URL's path or query, a header or a secret. Inline, the span is a
    child of the span current when the event was dispatched; in background mode
    it is a root span linked to that span, as long as this process dispatched the
    event (the link is kept in memory for the last 10,000 events, nothing is
    stored). Raises MissingDependencyError without ``hookdispatch[otel]``.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagate: bool = False,
    ) -> None:
        try:
            from opentelemetry import metrics, trace  # noqa: PLC0415 - an optional extra
            from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
                TraceContextTextMapPropagator,
            )
        except ImportError:
            raise MissingDependencyError(
                "OpenTelemetry needs the opentelemetry-api package:"
                " pip install 'hookdispatch[otel]'"
            ) from None
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator() if propagate else None
        self._tracer = trace.get_tracer(_SCOPE, _version(), tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, _version(), meter_provider=meter_provider)
        self._attempts = meter.create_counter(
            "hookdispatch.attempts",
            unit="{attempt}",
            description="Attempts recorded, by the decision taken after each.",
        )
        self._deliveries = meter.create_counter(
            "hookdispatch.deliveries",
            unit="{delivery}",
            description="Deliveries finished, by outcome: succeeded or failed.",
        )
        self._duration = meter.create_histogram(
            "hookdispatch.attempt.duration",
            unit="s",
            description="Duration of each attempt: connect, send, wait and read.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._disabled = meter.create_counter(
            "hookdispatch.endpoints.disabled",
            unit="{endpoint}",
            description="Endpoints disabled automatically, by reason: gone or failures.",
        )
        self._active = meter.create_up_down_counter(
            "hookdispatch.attempts.active",
            unit="{attempt}",
            description="Attempts in flight in this process.",
        )
        self._lock = threading.Lock()
        self._dispatched: collections.OrderedDict[str, SpanContext] = collections.OrderedDict()
        self._metrics = metrics
        self._meter = meter
        self._storages: dict[int, Storage] = {}  # watched for the pending gauge

    def _watch(self, storage: Storage) -> None:
        """Report ``storage``'s backlog as ``hookdispatch.deliveries.pending``: the
        :data:`PENDING_ENDPOINTS` endpoints with the most pending deliveries, one
        series each, read at each collection (``Storage.pending_by_endpoint``)."""
        with self._lock:
            first = not self._storages
            self._storages[id(storage)] = storage
        if first:
            self._meter.create_observable_gauge(
                "hookdispatch.deliveries.pending",
                callbacks=[self._pending],
                unit="{delivery}",
                description=(
                    f"Pending deliveries of the {PENDING_ENDPOINTS} endpoints with the most,"
                    " by endpoint: the backlog, read from the storage at each collection."
                ),
            )

    def _pending(self, options: Any) -> Iterable[Any]:
        """The gauge's callback: read at each collection, on the collector's thread."""
        with self._lock:
            storages = list(self._storages.values())
        observations = []
        for storage in storages:
            try:
                backlog = storage.pending_by_endpoint(limit=PENDING_ENDPOINTS)
            except Exception:
                logger.exception("reading the pending deliveries for the gauge failed")
                continue
            observations += [
                self._metrics.Observation(count, {"hookdispatch.endpoint.id": endpoint_id})
                for endpoint_id, count in backlog
            ]
        return observations

    def __repr__(self) -> str:
        return f"OpenTelemetry(propagate={self._propagator is not None})"

    # What the drivers call ------------------------------------------------------------

    def _remember(self, event_ids: Iterable[str]) -> None:
        """After a dispatch: the span current now is the one these events link to."""
        context = self._trace.get_current_span().get_span_context()
        if not context.is_valid:
            return
        with self._lock:
            for event_id in event_ids:
                self._dispatched[event_id] = context
                self._dispatched.move_to_end(event_id)
            while len(self._dispatched) > _REMEMBERED_EVENTS:
                self._dispatched.popitem(last=False)

    def _start(self, claim: Claim, request: Request, *, inline: bool) -> tuple[Request, Span]:
        """Start an attempt's span; the request to send (with ``traceparent`` when
        propagating)."""
        from opentelemetry.context import Context  # noqa: PLC0415 - an optional extra
        from opentelemetry.trace import Link, SpanKind  # noqa: PLC0415

        with self._lock:
            dispatched = self._dispatched.get(claim.delivery.event_id)
        # Inline, the attempt runs inside dispatch(): its span is the parent. In
        # background mode whatever is current in a worker is unrelated: a root span,
        # linked to the dispatching span when this process remembers it.
        parent: Context | None = None if inline else Context()
        current = self._trace.get_current_span(parent).get_span_context()
        links = []
        if dispatched is not None and dispatched != current:
            links.append(Link(dispatched))
        number = claim.delivery.attempt_count + 1
        attributes: dict[str, Any] = {
            "http.request.method": "POST",
            "hookdispatch.event.id": claim.delivery.event_id,
            "hookdispatch.event.type": claim.event_type,
            "hookdispatch.delivery.id": claim.delivery.id,
            "hookdispatch.endpoint.id": claim.endpoint.id,
            "hookdispatch.tenant": claim.delivery.tenant,
            "hookdispatch.attempt": number,
        }
        if number > 1:
            attributes["http.request.resend_count"] = number - 1
        try:
            target = parse_url(request.url)
        except HookDispatchError:
            pass  # refused before sending: the span says why at its end
        else:
            attributes["server.address"] = target.host
            attributes["server.port"] = target.port
            attributes["url.scheme"] = target.scheme
        span = self._tracer.start_span(
            "POST",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            links=links,
        )
        self._active.add(1)
        if self._propagator is not None and span.get_span_context().is_valid:
            headers = dict(request.headers)
            for name in ("traceparent", "tracestate"):  # ours replace the endpoint's
                for key in [key for key in headers if key.lower() == name]:
                    del headers[key]
            self._propagator.inject(headers, context=self._trace.set_span_in_context(span))
            request = evolve(request, headers=headers)
        return request, span

    def _end(self, span: Span, attempt: Attempt, delivery: Delivery) -> None:
        """End an attempt's span with its outcome."""
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        self._active.add(-1)
        if attempt.status_code is not None:
            span.set_attribute("http.response.status_code", attempt.status_code)
        span.set_attribute("hookdispatch.delivery.status", delivery.status.value)
        error = _error_type(attempt)
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, attempt.error))
        span.end()

    def _recorded(self, report: AttemptReport) -> None:
        """Count a recorded attempt."""
        attributes: dict[str, Any] = {"hookdispatch.decision": report.decision.value}
        error = _error_type(report)
        if error is not None:
            attributes["error.type"] = error
        self._attempts.add(1, attributes)
        durations: dict[str, Any] = {} if error is None else {"error.type": error}
        if report.status_code is not None:
            durations["http.response.status_code"] = report.status_code
        self._duration.record(report.duration, durations)
        if report.decision is AttemptDecision.DELIVERED:
            self._deliveries.add(1, {"hookdispatch.outcome": "succeeded"})
        elif report.decision is AttemptDecision.GAVE_UP or (
            # A 410 leaves the delivery pending until the endpoint is enabled again;
            # the disable_after-th failure in a row failed its delivery.
            report.decision is AttemptDecision.ENDPOINT_DISABLED and report.status_code != GONE
        ):
            self._deliveries.add(1, {"hookdispatch.outcome": "failed"})

    def _endpoint_disabled(self, report: AttemptReport) -> None:
        """Count an endpoint that recording ``report``'s attempt disabled."""
        reason = "gone" if report.status_code == GONE else "failures"
        self._disabled.add(1, {"hookdispatch.reason": reason})


def _error_type(attempt: Attempt | AttemptReport) -> str | None:
    """``error.type``: the HTTP status as text for an answer that is not 2xx, else the
    failure kind (``timeout``, ``connect``, ...); None on success."""
    if attempt.failure is None:
        return None
    if attempt.status_code is not None:
        return str(attempt.status_code)
    return attempt.failure.value
