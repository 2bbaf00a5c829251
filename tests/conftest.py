"""Shared fixtures: injected time, storages, and dispatchers that are always closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import hookdispatch as hd


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
def make_dispatcher() -> Iterator[Callable[..., hd.Dispatcher]]:
    """Build dispatchers that are closed (without waiting for retries) after the test."""
    made: list[hd.Dispatcher] = []

    def make(**options: Any) -> hd.Dispatcher:
        dispatcher = hd.Dispatcher(**options)
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close(timeout=0)
