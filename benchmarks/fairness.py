"""Fairness: does one tenant's burst hold back another tenant's events?

    python -m benchmarks.fairness [--quick] [--backlog N] [--events N] [--before SRC]

The noisy neighbour, on each backend (memory, SQLite, and PostgreSQL when a server
answers), with a ``Dispatcher(workers=8)`` delivering to the benchmarks' receiver
(its own process, loopback). Tenant A dispatches 20,000 deliveries
(``dispatch_many``: 5,000 events to its 4 endpoints); right after, tenant B
dispatches 100 events to its one endpoint. Measured from B's dispatch: when B's
last delivery succeeded, and when A's last did. The expectation (the fairness
issue): B's finish long before A's, since claims serve the tenants with due work
in turn (``Storage.claim``).

For comparison, in the same run and on the same code: the same events with B's
endpoint in tenant A's account (**one tenant**: one queue, earliest due first,
which is how every claim chose before the tenants took turns; B's 100 are due
after A's 20,000). ``--before SRC`` adds the scenario on another checkout's
``src`` (the code before the change: ``git worktree add /tmp/fair-old HEAD``,
then ``--before /tmp/fair-old/src``). Each measurement runs in a fresh process,
with hookdispatch imported from the ``src`` measured, and stops after a time limit
(60 s; a figure beyond it is shown as ``> 60``). ``--async`` adds
``AsyncDispatcher(concurrency=64)`` on the memory backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hookdispatch as hd  # in a measuring process, from the src it measures

from .harness import SENDER_CORE, log, pin
from .receiver import Receiver
from .storages import postgres_database, temporary_folder

ROOT = Path(__file__).resolve().parent.parent

ENDPOINTS_A = 4
BATCH = 1000  # events per dispatch_many() call of tenant A


@dataclass(frozen=True)
class Scenario:
    backlog: int = 20_000  # tenant A's deliveries
    events: int = 100  # tenant B's events (one delivery each)
    workers: int = 8
    concurrency: int = 64
    limit: float = 60.0  # seconds after B's dispatch


QUICK = Scenario(backlog=2_000, events=20, limit=20.0)


@dataclass
class Finish:
    """One measurement; times in seconds from B's dispatch (None: not by the limit)."""

    b_last: float | None
    a_last: float | None
    a_pending: int  # A's deliveries not yet done when B dispatched
    dispatch_a: float  # seconds tenant A's dispatch_many calls took

    @property
    def ratio(self) -> float | None:
        if self.b_last is None or self.a_last is None:
            return None
        return self.a_last / max(self.b_last, 1e-9)


# The measurement itself, in a child process ------------------------------------------


class _Finished:
    """When each tenant's deliveries succeeded, from the transport's side."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = {"a": [], "b": []}

    def record(self, url: str, status: int | None) -> None:
        if status is not None and 200 <= status < 300:
            with self.lock:
                self.times["b" if url.endswith("/b") else "a"].append(time.perf_counter())


class _Recording:
    """A transport that notes every success, then hands back the inner one's outcome."""

    def __init__(self, inner: Any, finished: _Finished) -> None:
        self.inner, self.finished = inner, finished

    def send(self, request: Any) -> Any:
        outcome = self.inner.send(request)
        self.finished.record(request.url, getattr(outcome, "status_code", None))
        return outcome

    def close(self) -> None:
        self.inner.close()


class _AsyncRecording:
    """``_Recording`` for an async transport."""

    def __init__(self, inner: Any, finished: _Finished) -> None:
        self.inner, self.finished = inner, finished

    async def send(self, request: Any) -> Any:
        outcome = await self.inner.send(request)
        self.finished.record(request.url, getattr(outcome, "status_code", None))
        return outcome

    async def aclose(self) -> None:
        await self.inner.aclose()


def _open(spec: str) -> Any:
    kind, _, where = spec.partition(":")
    if kind == "memory":
        return hd.MemoryStorage()
    if kind == "sqlite":
        return hd.SQLiteStorage(where)
    return hd.PostgresStorage(where, schema=f"fair_{secrets.token_hex(4)}", max_connections=12)


def _items(count: int, event_type: str) -> list[tuple[str, dict[str, object]]]:
    return [(event_type, {"n": n, "plan": "Pro"}) for n in range(count)]


def _setup(hooks: Any, url: str, *, one_tenant: bool) -> str:
    """Tenant A's endpoints and B's (in A's account when ``one_tenant``): B's tenant."""
    base = url.rsplit("/", 1)[0]
    for number in range(ENDPOINTS_A):
        hooks.add_endpoint(f"{base}/a{number}", events=["order.created"], tenant="acct_a")
    tenant_b = "acct_a" if one_tenant else "acct_b"
    hooks.add_endpoint(f"{base}/b", events=["invoice.paid"], tenant=tenant_b)
    return tenant_b


def _result(finished: _Finished, scenario: Scenario, began: float, a_before: int, a_took: float):
    with finished.lock:
        a, b = sorted(finished.times["a"]), sorted(finished.times["b"])
    return Finish(
        b_last=b[scenario.events - 1] - began if len(b) >= scenario.events else None,
        a_last=a[scenario.backlog - 1] - began if len(a) >= scenario.backlog else None,
        a_pending=scenario.backlog - a_before,
        dispatch_a=a_took,
    )


def _done(finished: _Finished, scenario: Scenario) -> bool:
    with finished.lock:
        return (
            len(finished.times["a"]) >= scenario.backlog
            and len(finished.times["b"]) >= scenario.events
        )


def run_threads(spec: str, url: str, scenario: Scenario, *, one_tenant: bool) -> Finish:
    """The scenario on ``Dispatcher(workers=N)``: runs in the measured process."""
    storage = _open(spec)
    finished = _Finished()
    local = hd.TargetPolicy.local()
    transport = _Recording(hd.SocketTransport(targets=local), finished)
    hooks = hd.Dispatcher(
        storage=storage, workers=scenario.workers, transport=transport, targets=local
    )
    try:
        tenant_b = _setup(hooks, url, one_tenant=one_tenant)
        started = time.perf_counter()
        for _ in range(scenario.backlog // ENDPOINTS_A // BATCH):
            hooks.dispatch_many(_items(BATCH, "order.created"), tenant="acct_a")
        if rest := scenario.backlog // ENDPOINTS_A % BATCH:
            hooks.dispatch_many(_items(rest, "order.created"), tenant="acct_a")
        began = time.perf_counter()
        with finished.lock:
            a_before = len(finished.times["a"])
        hooks.dispatch_many(_items(scenario.events, "invoice.paid"), tenant=tenant_b)
        while not _done(finished, scenario) and time.perf_counter() - began < scenario.limit:
            time.sleep(0.005)
        return _result(finished, scenario, began, a_before, began - started)
    finally:
        hooks.close(timeout=0)
        transport.close()
        storage.close()


async def _run_async(spec: str, url: str, scenario: Scenario, *, one_tenant: bool) -> Finish:
    storage = _open(spec)
    finished = _Finished()
    local = hd.TargetPolicy.local()
    transport = _AsyncRecording(hd.AsyncioTransport(targets=local), finished)
    hooks = hd.AsyncDispatcher(
        storage=storage, concurrency=scenario.concurrency, transport=transport, targets=local
    )
    try:
        await hooks.__aenter__()
        base = url.rsplit("/", 1)[0]
        for number in range(ENDPOINTS_A):
            await hooks.add_endpoint(f"{base}/a{number}", events=["order.created"], tenant="acct_a")
        tenant_b = "acct_a" if one_tenant else "acct_b"
        await hooks.add_endpoint(f"{base}/b", events=["invoice.paid"], tenant=tenant_b)
        started = time.perf_counter()
        for _ in range(scenario.backlog // ENDPOINTS_A // BATCH):
            await hooks.dispatch_many(_items(BATCH, "order.created"), tenant="acct_a")
        if rest := scenario.backlog // ENDPOINTS_A % BATCH:
            await hooks.dispatch_many(_items(rest, "order.created"), tenant="acct_a")
        began = time.perf_counter()
        a_before = len(finished.times["a"])
        await hooks.dispatch_many(_items(scenario.events, "invoice.paid"), tenant=tenant_b)
        while not _done(finished, scenario) and time.perf_counter() - began < scenario.limit:
            await asyncio.sleep(0.005)
        return _result(finished, scenario, began, a_before, began - started)
    finally:
        await hooks.aclose(timeout=0)
        await transport.aclose()
        storage.close()


def run_async(spec: str, url: str, scenario: Scenario, *, one_tenant: bool) -> Finish:
    """The scenario on ``AsyncDispatcher(concurrency=N)``: runs in the measured process."""
    return asyncio.run(_run_async(spec, url, scenario, one_tenant=one_tenant))


_CHILD = """
import json, logging, sys
from benchmarks import fairness
logging.getLogger("hookdispatch").setLevel(logging.ERROR)  # a cut run closes with work pending
args = json.loads(sys.argv[1])
run = fairness.run_async if args.pop("driver") == "async" else fairness.run_threads
scenario = fairness.Scenario(**args.pop("scenario"))
print(json.dumps(fairness.asdict(run(args.pop("spec"), args.pop("url"), scenario, **args))))
"""


def measure(
    src: Path, spec: str, url: str, scenario: Scenario, *, one_tenant: bool, driver: str
) -> Finish:
    """One measurement in a fresh process importing hookdispatch from ``src``."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    args = {
        "spec": spec,
        "url": url,
        "scenario": asdict(scenario),
        "one_tenant": one_tenant,
        "driver": driver,
    }
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=scenario.limit + 300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the measurement failed:\n{result.stderr[-3000:]}")
    return Finish(**json.loads(result.stdout.strip().splitlines()[-1]))


# The section: every backend, the variants side by side --------------------------------

IN_TURN = "tenants in turn"
ONE_TENANT = "one tenant: one queue, earliest due first"

# (label, src: None for this checkout's, one tenant, driver)
Variant = tuple[str, Path | None, bool, str]


def variants(before: Path | None, *, with_async: bool) -> list[Variant]:
    found: list[Variant] = [
        (IN_TURN, None, False, "threads"),
        (ONE_TENANT, None, True, "threads"),
    ]
    if before is not None:
        found.append((f"before: {before}", before, False, "threads"))
    if with_async:
        found.append(("AsyncDispatcher, tenants in turn", None, False, "async"))
    return found


def section(
    receiver: Receiver,
    folder: Path,
    postgres_dsn: str | None,
    scenario: Scenario,
    *,
    before: Path | None = None,
    with_async: bool = False,
    backends: set[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """backend -> one row per variant: its label and the :class:`Finish` fields."""
    specs = {"memory": "memory", "SQLite": "sqlite"}
    if postgres_dsn is not None:
        specs["PostgreSQL"] = f"postgres:{postgres_dsn}"
    if backends is not None:
        specs = {name: spec for name, spec in specs.items() if name in backends}
    found: dict[str, list[dict[str, Any]]] = {}
    for backend, kind in specs.items():
        for label, src, one_tenant, driver in variants(before, with_async=with_async):
            if driver == "async" and backend != "memory":
                continue
            spec = (
                f"sqlite:{folder / f'fair-{secrets.token_hex(4)}.db'}" if kind == "sqlite" else kind
            )
            log(f"  fairness, {backend}: {label}")
            try:
                finish = measure(
                    src or ROOT / "src",
                    spec,
                    receiver.url,
                    scenario,
                    one_tenant=one_tenant,
                    driver=driver,
                )
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log(f"    FAILED: {exc}")
                continue
            b_last = _seconds(finish.b_last, scenario.limit)
            a_last = _seconds(finish.a_last, scenario.limit)
            log(f"    B's last {b_last}, A's last {a_last}")
            found.setdefault(backend, []).append({"label": label, **asdict(finish)})
    return found


def _seconds(value: float | None, limit: float) -> str:
    return f"> {limit:.0f} s" if value is None else f"{value:.2f} s"


def table(rows: dict[str, list[dict[str, Any]]], *, limit: float) -> list[str]:
    """The Markdown table of :func:`section`'s rows (``limit``: the scenario's)."""
    lines = [
        "| storage | claims | B's last delivery | A's last delivery | A's / B's |"
        " A pending at B's dispatch |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for backend, found in rows.items():
        for row in found:
            finish = Finish(**{key: value for key, value in row.items() if key != "label"})
            ratio = finish.ratio
            lines.append(
                f"| {backend} | {row['label']} | {_seconds(finish.b_last, limit)}"
                f" | {_seconds(finish.a_last, limit)}"
                f" | {'' if ratio is None else f'{ratio:.1f}×'} | {finish.a_pending:,} |"  # noqa: RUF001
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 and 20, 20 s limit")
    parser.add_argument("--backlog", type=int, help="tenant A's deliveries (20,000)")
    parser.add_argument("--events", type=int, help="tenant B's events (100)")
    parser.add_argument("--before", type=Path, help="the src folder of the code before")
    parser.add_argument("--async", dest="with_async", action="store_true")
    parser.add_argument("--backends", help="comma-separated: memory,SQLite,PostgreSQL")
    options = parser.parse_args()
    scenario = QUICK if options.quick else Scenario()
    if options.backlog:
        scenario = Scenario(**{**asdict(scenario), "backlog": options.backlog})
    if options.events:
        scenario = Scenario(**{**asdict(scenario), "events": options.events})
    pin(os.getpid(), SENDER_CORE)  # the measuring processes inherit it
    with Receiver() as receiver, temporary_folder() as folder, postgres_database() as pg:
        rows = section(
            receiver,
            folder,
            None if pg is None else pg[0],
            scenario,
            before=options.before and options.before.resolve(),
            with_async=options.with_async,
            backends=None if options.backends is None else set(options.backends.split(",")),
        )
    print(
        f"Tenant A: {scenario.backlog:,} deliveries; tenant B: {scenario.events} events a moment"
        f" later; Dispatcher(workers={scenario.workers}); times from B's dispatch"
    )
    print("\n".join(table(rows, limit=scenario.limit)))


if __name__ == "__main__":
    main()
