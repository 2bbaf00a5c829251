"""Shared fixtures: injected time, storages, and dispatchers that are always closed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import hookdispatch as hd
import hookdispatch._targets

from drivers import DRIVERS


@pytest.fixture(autouse=True)
def local_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests send to receivers on 127.0.0.1 over http: the local target policy.

    The default policy refuses both (SSRF protection); tests of that default pass
    ``targets=hd.TargetPolicy()`` explicitly.
    """
    monkeypatch.setattr(hookdispatch._targets, "_default", hd.TargetPolicy.local())


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    """pytest-httpserver listens on 127.0.0.1 (not "localhost"), on a free port."""
    return ("127.0.0.1", 0)


class FakeTime:
    """An injected clock and sleep: sleeping advances the clock, instantly."""

    def __init__(self) -> None:
        self.now = datetime(2024, 6, 30, 15, 41, 23, tzinfo=UTC)
        self.sleeps: list[float] = []

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[hd.Storage]:
    """Each storage backend we ship, fresh for every test."""
    store: hd.Storage
    if request.param == "memory":
        store = hd.MemoryStorage()
    else:
        store = hd.SQLiteStorage(tmp_path / "hooks.db")
    yield store
    store.close()


@pytest.fixture
def fast_receiver() -> Iterator[str]:
    """The benchmarks' receiver, in its own process: answers 200 at once, keep-alive.

    Use it where an in-process server would compete with the code under test for
    the GIL. Yields the URL to post to.
    """
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.receiver"], cwd=root, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    port = int(process.stdout.readline().split()[1])
    yield f"http://127.0.0.1:{port}/hook"
    process.kill()
    process.wait()


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> str:
    """Each driver: "sync" (Dispatcher) and "async" (AsyncDispatcher behind a sync facade)."""
    return str(request.param)


@pytest.fixture
def make_dispatcher(driver: str) -> Iterator[Callable[..., Any]]:
    """Build dispatchers of the test's driver; closed (without waiting) after the test.

    Takes the Dispatcher options (``workers``, a sync ``sleep``); for the async driver
    they are translated. The result has the Dispatcher API either way.
    """
    made: list[Any] = []

    def make(**options: Any) -> Any:
        dispatcher = DRIVERS[driver](**options)
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close(timeout=0)
