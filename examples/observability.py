"""The spans and metrics of a short run, printed as text (docs/observability.md shows them).

A local receiver answers 503 to the first request and 200 after; one event is
dispatched inside an application span, on an inline Dispatcher with the OpenTelemetry
SDK's in-memory exporter and reader. Needs ``pip install 'hookdispatch[otel]'
opentelemetry-sdk``. Run it by path: ``python examples/observability.py``.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hookdispatch as hd
from hookdispatch.telemetry import OpenTelemetry


class Flaky(BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = [503, 200]
    traceparents: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        self.traceparents.append(self.headers.get("traceparent"))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    reports: list[hd.AttemptReport] = []
    hooks = hd.Dispatcher(
        storage=hd.MemoryStorage(),
        workers=0,
        retry=hd.RetryPolicy(initial_wait=0.1, jitter=0),
        targets=hd.TargetPolicy.local(),
        on_attempt=reports.append,
        telemetry=OpenTelemetry(
            tracer_provider=tracer_provider, meter_provider=meter_provider, propagate=True
        ),
    )
    port = server.server_address[1]
    hooks.add_endpoint(f"http://127.0.0.1:{port}/hooks?token=not-in-any-span", id="ep_billing")
    with tracer_provider.get_tracer("app").start_as_current_span("POST /signup"):
        hooks.dispatch("user.created", {"user_id": "user_78451"}, id="evt_signup_78451")
    hooks.close()
    server.shutdown()

    print("# on_attempt reports")
    for report in reports:
        print(
            f"attempt {report.attempt} of {report.delivery_id}: {report.decision.value},"
            f" HTTP {report.status_code}, {report.duration * 1000:.1f} ms"
        )
    print("\n# traceparent headers the receiver got")
    for traceparent in Flaky.traceparents:
        print(traceparent)
    print("\n# spans")
    for span in exporter.get_finished_spans():
        parent = f"{span.parent.span_id:016x}" if span.parent else "-"
        print(
            f"{span.name} kind={span.kind.name} span={span.context.span_id:016x}"
            f" parent={parent} status={span.status.status_code.name}"
        )
        for key, value in sorted((span.attributes or {}).items()):
            print(f"    {key} = {value!r}")
    print("\n# metrics")
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    shown = f"count={point.count}" if value is None else f"value={value}"  # type: ignore[union-attr]
                    attributes = dict(point.attributes or {})
                    print(f"{metric.name} ({metric.unit}) {attributes} {shown}")


if __name__ == "__main__":
    main()
