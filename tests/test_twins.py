"""Dispatcher and AsyncDispatcher are twins: the same API, the same defaults."""

from __future__ import annotations

import inspect

import pytest

import hookdispatch as hd

# Where the twins differ by design: how many attempts run at once, how they wait,
# which transports they take, and the async one's storage threads.
DRIVER_OPTIONS = {"workers", "concurrency", "sleep", "storage_threads", "transport"}
# The same step under the names each world expects.
RENAMED = {"close": "aclose", "__enter__": "__aenter__", "__exit__": "__aexit__"}


def public_methods(cls: type) -> set[str]:
    return {
        name
        for name, value in vars(cls).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def test_both_have_the_same_public_methods() -> None:
    sync = {RENAMED.get(name, name) for name in public_methods(hd.Dispatcher)}
    assert sync == public_methods(hd.AsyncDispatcher)


@pytest.mark.parametrize("name", sorted(public_methods(hd.Dispatcher) - {"storage"}))
def test_each_method_takes_the_same_parameters(name: str) -> None:
    sync = inspect.signature(getattr(hd.Dispatcher, name)).parameters
    twin = inspect.signature(getattr(hd.AsyncDispatcher, RENAMED.get(name, name))).parameters
    assert [(p.name, p.kind, p.default) for p in sync.values()] == [
        (p.name, p.kind, p.default) for p in twin.values()
    ]
    assert inspect.iscoroutinefunction(getattr(hd.AsyncDispatcher, RENAMED.get(name, name)))


def test_the_constructors_share_every_option_and_its_default() -> None:
    sync = inspect.signature(hd.Dispatcher).parameters
    twin = inspect.signature(hd.AsyncDispatcher).parameters
    shared = [name for name in sync if name not in DRIVER_OPTIONS]
    assert shared == [name for name in twin if name not in DRIVER_OPTIONS]
    for name in shared:
        assert sync[name].default == twin[name].default, name
        assert sync[name].annotation == twin[name].annotation, name
