"""The library reports what it does: the ``on_attempt`` hook, OpenTelemetry spans and
metrics (read back with the SDK's in-memory exporter and reader), and the structured
fields of its log lines."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from hookdispatch._reporting import decision_of
from hookdispatch.telemetry import OpenTelemetry

from conftest import FakeTime

URL = "http://127.0.0.1:9/hooks?token=s3cr3t-query"  # never sent: the transports are stubs


class Scripted:
    """Answers each request with the next status of ``statuses`` (the last one after)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[hd.Request] = []

    def send(self, request: hd.Request) -> hd.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return hd.Response(status_code=status, headers={}, body=b"")

    def close(self) -> None:
        pass


class AsyncScripted(Scripted):
    async def send(self, request: hd.Request) -> hd.Response:  # type: ignore[override]
        return Scripted.send(self, request)

    async def aclose(self) -> None:
        pass


def scripted(driver: str, *statuses: int) -> Scripted:
    return AsyncScripted(*statuses) if driver == "async" else Scripted(*statuses)


def inline(
    make_dispatcher: Callable[..., Any],
    fake_time: FakeTime,
    transport: Scripted,
    reports: list[hd.AttemptReport],
    **options: Any,
) -> Any:
    return make_dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        transport=transport,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        on_attempt=reports.append,
        **options,
    )


# The hook ----------------------------------------------------------------------------


def test_on_attempt_reports_every_attempt_and_the_decision(
    driver: str, make_dispatcher: Callable[..., Any], fake_time: FakeTime
) -> None:
    reports: list[hd.AttemptReport] = []
    hooks = inline(make_dispatcher, fake_time, scripted(driver, 503, 200), reports)
    endpoint = hooks.add_endpoint(URL, tenant="acct_42")
    event = hooks.dispatch("user.created", {"user_id": "u1"}, tenant="acct_42")
    [delivery] = hooks.deliveries(event_id=event.id)

    assert [r.decision for r in reports] == [
        hd.AttemptDecision.RETRY,
        hd.AttemptDecision.DELIVERED,
    ]
    first, second = reports
    for report, number in ((first, 1), (second, 2)):
        assert report.event_id == event.id
        assert report.event_type == "user.created"
        assert report.delivery_id == delivery.id
        assert report.endpoint_id == endpoint.id
        assert report.tenant == "acct_42"
        assert report.attempt == number
        assert report.duration >= 0
    assert (first.status_code, first.failure, first.error) == (
        503,
        hd.FailureKind.HTTP_STATUS,
        "HTTP 503",
    )
    assert first.next_attempt_at is not None
    assert not first.succeeded
    assert (second.status_code, second.failure, second.next_attempt_at) == (200, None, None)
    assert second.succeeded
    # Nothing of the endpoint's URL, secret or the payload is in a report.
    text = repr(reports)
    assert "token" not in text
    assert "127.0.0.1" not in text
    assert endpoint.secret not in text
    assert "u1" not in text


def test_on_attempt_reports_giving_up_and_disabling(
    driver: str, make_dispatcher: Callable[..., Any], fake_time: FakeTime
) -> None:
    reports: list[hd.AttemptReport] = []
    disabled: list[str] = []
    hooks = inline(
        make_dispatcher,
        fake_time,
        scripted(driver, 500, 410),
        reports,
        retry=hd.RetryPolicy(max_attempts=1),
        on_endpoint_disabled=lambda endpoint, reason: disabled.append(endpoint.id),
    )
    endpoint = hooks.add_endpoint(URL)
    hooks.dispatch("user.created", {})
    hooks.dispatch("user.created", {})
    assert [r.decision for r in reports] == [
        hd.AttemptDecision.GAVE_UP,
        hd.AttemptDecision.ENDPOINT_DISABLED,
    ]
    assert reports[1].status_code == 410
    assert disabled == [endpoint.id]


def test_on_attempt_in_background_mode(
    driver: str, make_dispatcher: Callable[..., Any], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hooks", method="POST").respond_with_data("ok")
    reports: list[hd.AttemptReport] = []
    hooks = make_dispatcher(storage=hd.MemoryStorage(), workers=2, on_attempt=reports.append)
    hooks.add_endpoint(httpserver.url_for("/hooks"))
    events = [hooks.dispatch("user.created", {"n": n}) for n in range(5)]
    assert hooks.drain(timeout=10)
    # drain() returns only once every success's report was handed over.
    assert sorted(r.event_id for r in reports) == sorted(e.id for e in events)
    assert {r.decision for r in reports} == {hd.AttemptDecision.DELIVERED}


def test_a_raising_hook_is_logged_and_delivery_goes_on(
    driver: str,
    make_dispatcher: Callable[..., Any],
    fake_time: FakeTime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(report: hd.AttemptReport) -> None:
        raise RuntimeError("the hook is broken")

    hooks = make_dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        transport=scripted(driver, 500, 200),
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        on_attempt=explode,
        on_endpoint_disabled=lambda endpoint, reason: explode(None),  # type: ignore[arg-type]
    )
    hooks.add_endpoint(URL)
    with caplog.at_level(logging.ERROR, logger="hookdispatch"):
        event = hooks.dispatch("user.created", {})
    [delivery] = hooks.deliveries(event_id=event.id)
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED
    raised = [r for r in caplog.records if "on_attempt hook raised" in r.getMessage()]
    assert len(raised) == 2
    assert raised[0].delivery_id == delivery.id  # type: ignore[attr-defined]
    assert raised[0].exc_info is not None


def test_hook_options_are_checked() -> None:
    with pytest.raises(hd.InvalidInputError, match="on_attempt"):
        hd.Dispatcher(storage=hd.MemoryStorage(), workers=0, on_attempt="print")  # type: ignore[arg-type]
    with pytest.raises(hd.InvalidInputError, match="telemetry"):
        hd.Dispatcher(storage=hd.MemoryStorage(), workers=0, telemetry=object())  # type: ignore[arg-type]


def test_a_lost_lease_is_its_own_decision() -> None:
    now = FakeTime().now
    endpoint = hd.Endpoint.create(URL, now=now)
    event = hd.Event.create("user.created", {}, now=now)
    delivery = hd.Delivery.create(event, endpoint, now=now)
    attempt = hd.Attempt(
        id="att_1",
        delivery_id=delivery.id,
        number=1,
        started_at=now,
        duration=0.1,
        status_code=200,
        failure=None,
        error=None,
        response_body=b"",
    )
    assert decision_of(attempt, delivery, held=False, disabled=None) == (
        hd.AttemptDecision.LEASE_LOST
    )
    assert decision_of(attempt, delivery, held=True, disabled=None) == (
        hd.AttemptDecision.DELIVERED
    )


# OpenTelemetry ------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def metrics() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def attempt_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]


def test_an_attempt_is_a_client_span_under_the_dispatching_span(
    fake_time: FakeTime, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    transport = Scripted(503, 200)
    hooks = hd.Dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        transport=transport,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        telemetry=OpenTelemetry(tracer_provider=provider),
    )
    endpoint = hooks.add_endpoint("http://127.0.0.1:8080/hooks?token=s3cr3t-query")
    tracer = provider.get_tracer("the application")
    with tracer.start_as_current_span("signup") as parent:
        event = hooks.dispatch("user.created", {})
    hooks.close()

    first, second = attempt_spans(exporter)
    for span in (first, second):
        assert span.name == "POST"
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.context.trace_id == parent.get_span_context().trace_id
        attributes = dict(span.attributes or {})
        assert attributes["http.request.method"] == "POST"
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == 8080
        assert attributes["url.scheme"] == "http"
        assert attributes["hookdispatch.event.id"] == event.id
        assert attributes["hookdispatch.endpoint.id"] == endpoint.id
        # Never the path, the query string or a secret.
        values = " ".join(str(value) for value in attributes.values())
        assert "token" not in values
        assert "/hooks" not in values
        assert endpoint.secret not in values
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "503"
    assert first.status.status_code is StatusCode.ERROR
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["http.request.resend_count"] == 1
    assert "error.type" not in second.attributes
    assert second.status.status_code is StatusCode.UNSET
    # No traceparent unless asked for.
    assert all("traceparent" not in request.headers for request in transport.requests)


def test_a_failure_without_an_answer_names_its_kind(
    fake_time: FakeTime, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    hooks = hd.Dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        retry=hd.RetryPolicy(max_attempts=1),
        telemetry=OpenTelemetry(tracer_provider=provider),
    )
    hooks.add_endpoint("http://127.0.0.1:9/hooks")  # nothing listens on port 9
    hooks.dispatch("user.created", {})
    hooks.close()
    [span] = attempt_spans(exporter)
    assert span.attributes is not None
    assert span.attributes["error.type"] == "connect"
    assert "http.response.status_code" not in span.attributes


def test_background_attempts_link_to_the_dispatching_span(
    httpserver: HTTPServer, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    httpserver.expect_request("/hooks", method="POST").respond_with_data("ok")
    tracer = provider.get_tracer("the application")
    with tracer.start_as_current_span("startup"):  # current while the workers start
        hooks = hd.Dispatcher(
            storage=hd.MemoryStorage(),
            workers=2,
            telemetry=OpenTelemetry(tracer_provider=provider),
        )
    hooks.add_endpoint(httpserver.url_for("/hooks"))
    with tracer.start_as_current_span("signup") as parent:
        hooks.dispatch("user.created", {})
    assert hooks.drain(timeout=10)
    hooks.close()
    [span] = attempt_spans(exporter)
    assert span.parent is None  # a root span: the worker is not inside dispatch()
    assert [link.context.span_id for link in span.links] == [parent.get_span_context().span_id]


def test_traceparent_is_propagated_when_asked(
    fake_time: FakeTime, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    transport = Scripted(200)
    hooks = hd.Dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        transport=transport,
        telemetry=OpenTelemetry(tracer_provider=provider, propagate=True),
    )
    hooks.add_endpoint(URL, headers={"Traceparent": "00-forged-by-the-endpoint-00"})
    hooks.dispatch("user.created", {})
    hooks.close()
    [span] = attempt_spans(exporter)
    [request] = transport.requests
    traceparent = [v for k, v in request.headers.items() if k.lower() == "traceparent"]
    context = span.context
    [value] = traceparent  # ours, not the endpoint's header
    assert value.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


def test_the_async_driver_traces_alike(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    transport = AsyncScripted(200)

    async def main() -> int:
        tracer = provider.get_tracer("the application")
        async with hd.AsyncDispatcher(
            storage=hd.MemoryStorage(),
            concurrency=0,
            transport=transport,
            telemetry=OpenTelemetry(tracer_provider=provider, propagate=True),
        ) as hooks:
            await hooks.add_endpoint(URL)
            await hooks.add_endpoint(URL.replace(":9/", ":10/"))
            with tracer.start_as_current_span("signup") as parent:
                await hooks.dispatch("user.created", {})
        return parent.get_span_context().span_id

    parent_id = asyncio.run(main())
    found = attempt_spans(exporter)
    assert len(found) == 2
    assert all(span.parent is not None and span.parent.span_id == parent_id for span in found)
    assert all("traceparent" in request.headers for request in transport.requests)


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Every data point by instrument name: (attributes, value or histogram count)."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = point.count  # type: ignore[union-attr]
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


def test_metrics_count_attempts_deliveries_and_disabled_endpoints(
    fake_time: FakeTime, metrics: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = metrics
    hooks = hd.Dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        transport=Scripted(503, 200, 500, 500, 410),
        retry=hd.RetryPolicy(max_attempts=2),
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        telemetry=OpenTelemetry(meter_provider=provider),
    )
    hooks.add_endpoint(URL)
    for _ in range(3):  # 503 then 200; 500 twice: failed; 410: disabled
        hooks.dispatch("user.created", {})
    hooks.close()
    found = points(reader)
    attempts = {
        (a["hookdispatch.decision"], a.get("error.type")): v
        for a, v in found["hookdispatch.attempts"]
    }
    assert attempts == {
        ("retry", "503"): 1,
        ("delivered", None): 1,
        ("retry", "500"): 1,
        ("gave_up", "500"): 1,
        ("endpoint_disabled", "410"): 1,
    }
    deliveries = {a["hookdispatch.outcome"]: v for a, v in found["hookdispatch.deliveries"]}
    assert deliveries == {"succeeded": 1, "failed": 1}
    assert found["hookdispatch.endpoints.disabled"] == [({"hookdispatch.reason": "gone"}, 1)]
    durations = {
        a.get("http.response.status_code"): v for a, v in found["hookdispatch.attempt.duration"]
    }
    assert durations == {503: 1, 200: 1, 500: 2, 410: 1}
    assert found["hookdispatch.attempts.active"] == [({}, 0)]


def test_without_the_extra_telemetry_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(hd.MissingDependencyError, match=re.escape("hookdispatch[otel]")):
        OpenTelemetry()


# Logging ------------------------------------------------------------------------------


def test_log_lines_carry_structured_fields(
    fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = hd.Dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        transport=Scripted(500, 500, 410),
        retry=hd.RetryPolicy(max_attempts=2),
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )
    endpoint = hooks.add_endpoint(URL, tenant="acct_42")
    with caplog.at_level(logging.DEBUG, logger="hookdispatch"):
        failed = hooks.dispatch("user.created", {}, tenant="acct_42")
        gone = hooks.dispatch("user.created", {}, tenant="acct_42")
    hooks.close()
    by_message = {
        pattern: [r for r in caplog.records if r.getMessage().startswith(pattern)]
        for pattern in ("attempt 1 of", "giving up on", "endpoint ")
    }
    for pattern, event in (("attempt 1 of", failed), ("giving up on", failed), ("endpoint ", gone)):
        record = by_message[pattern][0]
        [delivery] = hooks.deliveries(event_id=event.id)
        assert record.delivery_id == delivery.id  # type: ignore[attr-defined]
        assert record.endpoint_id == endpoint.id  # type: ignore[attr-defined]
        assert record.tenant == "acct_42"  # type: ignore[attr-defined]
        assert record.event_id == event.id  # type: ignore[attr-defined]
    retry = by_message["attempt 1 of"][0]
    assert (retry.attempt, retry.status_code) == (1, 500)  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_the_pending_gauge_reports_the_largest_backlogs(
    backend: str, tmp_path: Path, metrics: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, reader = metrics
    storage = hd.MemoryStorage() if backend == "memory" else hd.SQLiteStorage(tmp_path / "h.db")
    hooks = hd.Dispatcher(
        storage=storage, workers=0, telemetry=OpenTelemetry(meter_provider=provider)
    )
    busy, quiet = hooks.add_endpoint(URL), hooks.add_endpoint(URL)
    now = datetime.now(UTC)
    for endpoint, count in ((busy, 3), (quiet, 1)):
        for _ in range(count):  # stored pending, as a worker would find them
            event = hd.Event.create("user.created", {}, now=now)
            storage.add_event(event, [hd.Delivery.create(event, endpoint, now=now)])
    found = points(reader)["hookdispatch.deliveries.pending"]
    assert sorted((a["hookdispatch.endpoint.id"], v) for a, v in found) == sorted(
        [(busy.id, 3), (quiet.id, 1)]
    )
    hooks.close(timeout=0)
    storage.close()
