"""Thread-pool mode: no head-of-line blocking, draining, restarts, crash recovery."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import hookdispatch as hd
from pg_fixtures import new_schema, postgres_admin_dsn, postgres_dsn  # noqa: F401 - fixtures

from drivers import DRIVERS
from receivers import never_answer, raw_server, wait_for


def test_dead_endpoint_does_not_block_healthy_one(
    httpserver: HTTPServer, tmp_path: Path, make_dispatcher
) -> None:
    httpserver.expect_request("/healthy").respond_with_data("")
    with raw_server(never_answer) as dead:
        storage = hd.SQLiteStorage(tmp_path / "hooks.db")
        hooks = make_dispatcher(
            storage=storage,
            workers=2,
            timeout=1.0,
            lease=5.0,
            retry=hd.RetryPolicy(initial_wait=60.0, jitter=0.0),
        )
        dead_ep = hooks.add_endpoint(dead.url)
        healthy = hooks.add_endpoint(httpserver.url_for("/healthy"))

        began = time.monotonic()
        events = [hooks.dispatch("user.created", {"n": n}) for n in range(20)]

        def healthy_done() -> bool:
            done = hooks.deliveries(endpoint_id=healthy.id, status="succeeded")
            return len(done) == len(events)

        assert wait_for(healthy_done, timeout=30)
        # 20 timeouts of 1 s each on 2 workers would take 10 s if the dead endpoint's
        # attempts came first; its retries wait in storage instead of in a thread.
        assert time.monotonic() - began < 5
        dead_deliveries = hooks.deliveries(endpoint_id=dead_ep.id)
        assert all(d.status is hd.DeliveryStatus.PENDING for d in dead_deliveries)
        retried_later = [d for d in dead_deliveries if d.attempt_count >= 1]
        assert all(d.next_attempt_at is not None for d in retried_later)
        assert len(httpserver.log) == 20


def test_retries_are_scheduled_not_slept(httpserver: HTTPServer, make_dispatcher) -> None:
    """A failing endpoint's retry is a stored time; the worker is free meanwhile."""
    httpserver.expect_request("/bad").respond_with_data("", status=500)
    httpserver.expect_request("/good").respond_with_data("")
    hooks = make_dispatcher(
        storage=hd.MemoryStorage(),
        workers=1,
        retry=hd.RetryPolicy(initial_wait=3600.0, max_wait=3600.0, jitter=0.0),
    )
    bad = hooks.add_endpoint(httpserver.url_for("/bad"), events=["bad"])
    hooks.add_endpoint(httpserver.url_for("/good"), events=["good"])

    hooks.dispatch("bad", {})
    assert wait_for(lambda: hooks.deliveries(endpoint_id=bad.id)[0].attempt_count == 1)
    good = hooks.dispatch("good", {})

    assert hooks.drain(timeout=5)
    [delivery] = hooks.deliveries(event_id=good.id)
    assert delivery.status is hd.DeliveryStatus.SUCCEEDED
    [waiting] = hooks.deliveries(endpoint_id=bad.id)
    assert waiting.status is hd.DeliveryStatus.PENDING
    assert waiting.next_attempt_at is not None
    assert (waiting.next_attempt_at - waiting.updated_at).total_seconds() == pytest.approx(3600)


def test_close_drains_due_work_and_keeps_retries(
    httpserver: HTTPServer, tmp_path: Path, driver: str
) -> None:
    httpserver.expect_request("/ok").respond_with_data("")
    httpserver.expect_request("/down").respond_with_data("", status=503)
    path = tmp_path / "hooks.db"
    storage = hd.SQLiteStorage(path)
    with DRIVERS[driver](
        storage=storage, workers=4, retry=hd.RetryPolicy(initial_wait=3600.0)
    ) as hooks:
        hooks.add_endpoint(httpserver.url_for("/ok"), events=["user.created"])
        hooks.add_endpoint(httpserver.url_for("/down"), events=["user.created"])
        for n in range(50):
            hooks.dispatch("user.created", {"n": n})
    # Leaving the block delivered everything due; the retries wait in the file.
    assert len(storage.list_deliveries(status=hd.DeliveryStatus.SUCCEEDED)) == 50
    pending = storage.list_deliveries(status=hd.DeliveryStatus.PENDING)
    assert len(pending) == 50
    # The first 503s put the endpoint in backoff: its other deliveries were moved to
    # the retry time without an attempt of their own (endpoint-wide backoff).
    assert {d.attempt_count for d in pending} <= {0, 1}
    assert any(d.attempt_count == 1 for d in pending)
    now = datetime.now(UTC)
    assert all(d.next_attempt_at is not None and d.next_attempt_at > now for d in pending)
    storage.close()
    with pytest.raises(hd.DispatcherClosedError):
        hooks.dispatch("user.created", {})


def test_restarted_dispatcher_picks_up_pending_deliveries(
    httpserver: HTTPServer, tmp_path: Path, driver: str
) -> None:
    receiver_up = False

    def handler(request: Request) -> Response:
        return Response("", status=200 if receiver_up else 503)

    httpserver.expect_request("/hook").respond_with_handler(handler)
    path = tmp_path / "hooks.db"
    policy = hd.RetryPolicy(initial_wait=0.3, jitter=0.0)

    # First life: the receiver is down; every delivery is left waiting for a retry.
    storage = hd.SQLiteStorage(path)
    with DRIVERS[driver](storage=storage, workers=2, retry=policy) as first:
        first.add_endpoint(httpserver.url_for("/hook"))
        events = [first.dispatch("user.created", {"n": n}) for n in range(5)]
    storage.close()

    # Second life on the same file, the receiver back up.
    receiver_up = True
    storage = hd.SQLiteStorage(path)
    with DRIVERS[driver](storage=storage, workers=2, retry=policy) as second:
        pending = second.deliveries(status="pending")
        assert {d.event_id for d in pending} == {e.id for e in events}
        assert wait_for(lambda: len(second.deliveries(status="succeeded")) == 5)
        # Some failed before the restart (others were deferred by the endpoint's
        # backoff without an attempt of their own); all succeeded after it.
        assert any(d.attempt_count >= 2 for d in second.deliveries())
    storage.close()


# How a child process opens the store of the test: argv[1:4] is what
# Durable.argv gives (kind, file or DSN, schema).
OPEN_STORE = """
import sys
import hookdispatch as hd

STORE = hd.SQLiteStorage if sys.argv[1] == "SQLite" else hd.PostgresStorage

def open_store(store=STORE):
    if sys.argv[1] == "SQLite":
        return store(sys.argv[2])
    return store(sys.argv[2], schema=sys.argv[3])
"""


@dataclass(frozen=True)
class Durable:
    """A durable store for a crash test: a SQLite file, or a PostgreSQL schema."""

    kind: str
    target: str  # the file, or the DSN
    schema: str = ""

    @property
    def argv(self) -> list[str]:
        return [self.kind, self.target, self.schema]

    def open(self) -> hd.Storage:
        if self.kind == "SQLite":
            return hd.SQLiteStorage(self.target)
        return hd.PostgresStorage(self.target, schema=self.schema)


@pytest.fixture(params=["SQLite", "PostgreSQL"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Durable:
    """Each durable store: SQLite, and PostgreSQL where a server answers (a skip
    saying so where none does; a failure under CI=true)."""
    if request.param == "SQLite":
        return Durable("SQLite", str(tmp_path / "hooks.db"))
    return Durable("PostgreSQL", request.getfixturevalue("postgres_dsn"), new_schema())


CHILDREN = {
    "sync": OPEN_STORE
    + """
url = sys.argv[4]
hooks = hd.Dispatcher(
    storage=open_store(),
    workers=4,
    timeout=1.0,
    lease=2.0,
    targets=hd.TargetPolicy.local(),
)
if not hooks.endpoints():
    hooks.add_endpoint(url)
n = 0
while True:
    event = hooks.dispatch("user.created", {"n": n})
    print(event.id, flush=True)
    n += 1
""",
    "async": OPEN_STORE
    + """
import asyncio

async def main(url):
    storage = open_store()
    async with hd.AsyncDispatcher(
        storage=storage, concurrency=4, timeout=1.0, lease=2.0, targets=hd.TargetPolicy.local()
    ) as hooks:
        if not await hooks.endpoints():
            await hooks.add_endpoint(url)
        n = 0
        while True:
            event = await hooks.dispatch("user.created", {"n": n})
            print(event.id, flush=True)
            n += 1

asyncio.run(main(sys.argv[4]))
""",
}


@pytest.mark.slow
def test_sigkill_mid_run_loses_no_accepted_event(
    httpserver: HTTPServer, durable: Durable, driver: str
) -> None:
    httpserver.expect_request("/hook").respond_with_data("")
    durable.open().close()  # create the schema before the child starts
    child = subprocess.Popen(
        [sys.executable, "-c", CHILDREN[driver], *durable.argv, httpserver.url_for("/hook")],
        stdout=subprocess.PIPE,
        text=True,
    )
    accepted: list[str] = []
    assert child.stdout is not None
    while len(accepted) < 300:
        line = child.stdout.readline()
        assert line, "the child stopped before it dispatched 300 events"
        accepted.append(line.strip())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before_restart = len(httpserver.log)
    accepted += [line.strip() for line in child.stdout.read().splitlines() if line.strip()]

    storage = durable.open()
    with DRIVERS[driver](storage=storage, workers=4, timeout=1.0, lease=2.0) as hooks:
        # Deliveries the child held under a lease become due when the lease ends.
        def all_delivered() -> bool:
            hooks.drain(timeout=1)
            received = {entry[0].headers["webhook-id"] for entry in httpserver.log}
            return set(accepted) <= received

        assert wait_for(all_delivered, timeout=30)
    received = [entry[0].headers["webhook-id"] for entry in httpserver.log]
    duplicates = len(received) - len(set(received))
    print(
        f"accepted {len(accepted)} events; {before_restart} received before the kill,"
        f" {len(received)} in all, {duplicates} duplicates"
    )
    storage.close()


@pytest.mark.slow
def test_ten_sigkills_at_random_moments_lose_nothing(
    httpserver: HTTPServer, durable: Durable, tmp_path: Path
) -> None:
    """2,000 events delivered by a child that is SIGKILLed 10 times and restarted."""
    httpserver.expect_request("/hook").respond_with_data("")
    storage = durable.open()
    now = datetime.now(UTC)
    endpoint = hd.Endpoint.create(httpserver.url_for("/hook"), now=now)
    storage.add_endpoint(endpoint)
    events = [hd.Event.create("user.created", {"n": n}, now=now) for n in range(2000)]
    storage.add_events(
        [(event, [hd.Delivery.create(event, endpoint, now=now)]) for event in events]
    )
    storage.close()
    worker = OPEN_STORE + textwrap.dedent(
        """
        import time

        class GroupNotingStorage(STORE):
            def complete_many(self, completions, **options):
                result = super().complete_many(completions, **options)
                if len(completions) > 1:  # a group commit of several successes
                    with open(sys.argv[4], "a") as noted:
                        noted.write(f"{len(completions)}\\n")
                return result

        storage = open_store(GroupNotingStorage)
        local = hd.TargetPolicy.local()
        with hd.Dispatcher(
            storage=storage, workers=8, timeout=1.0, lease=2.0, targets=local
        ) as hooks:
            print("started", flush=True)
            while True:
                time.sleep(0.05)
        """
    )
    groups = tmp_path / "groups"  # the children note each group commit of 2 or more
    rng = random.Random(2024)
    for _ in range(10):
        child = subprocess.Popen(
            [sys.executable, "-c", worker, *durable.argv, str(groups)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started"
        time.sleep(rng.uniform(0.05, 0.8))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    kills_received = len(httpserver.log)

    storage = durable.open()
    with hd.Dispatcher(storage=storage, workers=8, timeout=1.0, lease=2.0) as last:

        def everything_delivered() -> bool:
            last.drain(timeout=1)
            return len(storage.list_deliveries(status=hd.DeliveryStatus.SUCCEEDED)) == len(events)

        assert wait_for(everything_delivered, timeout=60)
    storage.close()
    received = [entry[0].headers["webhook-id"] for entry in httpserver.log]
    assert set(received) == {event.id for event in events}
    duplicates = len(received) - len(set(received))
    grouped = [int(n) for n in groups.read_text().split()] if groups.exists() else []
    print(
        f"\n{durable.kind}, 10 SIGKILLs: {kills_received} requests before the last start,"
        f" {len(received)} in all for {len(events)} events, {duplicates} duplicates;"
        f" {len(grouped)} group commits of 2 or more before the kills"
    )
    assert grouped, "the killed workers stored successes in groups (the batched path)"


class GatedReceiver:
    """Holds every request until the test lets one through; counts those held."""

    def __init__(self) -> None:
        self.permits = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.held = 0

    def __call__(self, conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return  # the client gave up
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))  # fmt: skip
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        with self.lock:
            self.held += 1
        while not self.permits.acquire(timeout=0.05):
            if stop.is_set():
                return
        with self.lock:
            self.held -= 1
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_a_first_success_lets_the_endpoint_fill_every_slot_at_once(make_dispatcher) -> None:
    """Unproven, an endpoint holds at most half the workers. Its first success lifts
    that at once: the other slots are filled then, not at the next poll."""
    receiver = GatedReceiver()
    with raw_server(receiver) as server:
        hooks = make_dispatcher(
            storage=hd.MemoryStorage(), workers=4, poll_interval=60.0, timeout=30.0
        )
        hooks.add_endpoint(server.url)
        for n in range(2):  # one at a time: the held-back check runs at each claim
            hooks.dispatch("user.created", {"n": n})
            assert wait_for(lambda n=n: receiver.held == n + 1)
        for n in range(2, 12):
            hooks.dispatch("user.created", {"n": n})
        time.sleep(0.3)
        assert receiver.held == 2, "an unproven endpoint gets half the workers"
        receiver.permits.release()  # one succeeds: the endpoint is proven
        assert wait_for(lambda: receiver.held == 4, timeout=5), (
            f"{receiver.held} in flight after the first success; expected every slot"
        )
        receiver.permits.release(20)
        assert hooks.drain(timeout=10)
    assert len(hooks.deliveries(status="succeeded")) == 12
