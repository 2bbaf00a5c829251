"""Profile one benchmark candidate, all threads, CPU time: where a missed target goes.

    python -m benchmarks.profile pool-memory [--count 6000] [--top 25]

Runs the candidate exactly as the suite does (same receiver, same pinning) with the
profiler on for the measured window only, and prints the functions with the most
CPU time of their own, then the most CPU time including callees. Uses yappi
(``pip install yappi``: every thread, CPU clock) when installed, else cProfile (the
calling thread only, which misses the workers).

    python -m benchmarks.profile --summary [--count 3000] [--json FILE] [--src SRC]

The benchmark page's profile section: ``Dispatcher(workers=8)`` on SQLite and on
PostgreSQL (when a server answers) delivering ``--count`` POSTs to the instant
receiver, as ``hookdispatch_runs.thread_pool`` does, under yappi; the CPU time per
delivery split into components (:data:`COMPONENTS`, from the inclusive times of the
functions each names) and the functions with the most time of their own. ``--src``
runs it in a fresh process on the hookdispatch of another checkout's ``src`` (the
harness stays this checkout's, as in ``benchmarks.ab``): how the page's *before*
was made, ``--json`` saving it::

    git worktree add /tmp/before_16 9c077d7
    python -m benchmarks.profile --summary --src /tmp/before_16/src \\
        --json benchmarks/data/profile-before-9c077d7.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from . import harness, hookdispatch_runs, storages
from .harness import SENDER_CORE, Run, log, pin
from .receiver import Receiver

SITE = re.compile(r".*/(site-packages|python3\.\d+|src)/")
ROOT = Path(__file__).resolve().parent.parent
BEFORE = ROOT / "benchmarks" / "data" / "profile-before-9c077d7.json"
"""The page's *before*: the profile of commit 9c077d7 (before issue 16's group commit)."""
WORKERS = 8
LIMIT = 120.0  # seconds: a profiled run stops by then
TOP = 10  # functions by own time on the page
TOP_KEPT = 25  # ... and in the summary


def candidates(url: str, folder: Path, count: int) -> dict[str, Callable[[], Run]]:
    from . import ceilings, latency  # aiohttp, httpx, Celery: not needed by the summary

    memory, sqlite = storages.memory(), storages.sqlite(folder)
    return {
        "raw-httpx-8": lambda: ceilings.httpx_threads(url, count, 8, 120),
        "raw-aiohttp-64": lambda: ceilings.aiohttp_raw(url, count, 64, 120),
        "pool-memory": lambda: hookdispatch_runs.thread_pool(url, memory, count, 8, 120),
        "pool-sqlite": lambda: hookdispatch_runs.thread_pool(url, sqlite, count, 8, 120),
        "async-memory": lambda: hookdispatch_runs.async_pool(url, memory, count, 64, 120),
        "async-sqlite": lambda: hookdispatch_runs.async_pool(url, sqlite, count, 64, 120),
        "async-256": lambda: hookdispatch_runs.async_pool(url, memory, count, 256, 120),
        "raw-aiohttp-256": lambda: ceilings.aiohttp_raw(url, count, 256, 120),
        "dispatch-memory": lambda: latency.dispatch_latency(url, memory, count, 120, wait=True),
        "dispatch-sqlite": lambda: latency.dispatch_latency(url, sqlite, count, 120, wait=True),
    }


def short(path: str) -> str:
    return SITE.sub("", path).replace(str(Path.cwd()) + "/", "")


def with_yappi(measure: Callable[[], Run], top: int) -> tuple[Run, str]:
    import yappi

    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)
    run = measure()
    yappi.stop()
    stats = yappi.get_func_stats()
    total = sum(stat.tsub for stat in stats) or 1.0
    lines = [f"total CPU {total:.2f} s (all threads)", "-- own time"]
    for stat in sorted(stats, key=lambda s: s.tsub, reverse=True)[:top]:
        where = f"{short(stat.module)}:{stat.lineno} {stat.name}"
        lines.append(f"{stat.tsub / total:6.1%} {stat.tsub:7.3f}s {stat.ncall:>9} {where}")
    lines.append("-- including callees")
    for stat in sorted(stats, key=lambda s: s.ttot, reverse=True)[: top * 2]:
        where = f"{short(stat.module)}:{stat.lineno} {stat.name}"
        lines.append(f"{stat.ttot / total:6.1%} {stat.ttot:7.3f}s {stat.ncall:>9} {where}")
    yappi.clear_stats()
    return run, "\n".join(lines)


def with_cprofile(measure: Callable[[], Run], top: int) -> tuple[Run, str]:
    profiler = cProfile.Profile()
    run = profiler.runcall(measure)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return run, "(cProfile: the calling thread only)\n" + out.getvalue()


# The summary: components of a durable delivery's CPU time ----------------------------


@dataclass(frozen=True)
class Component:
    """A share of the CPU time: the inclusive time of the functions ``plus``, less
    that of ``minus`` (functions they call that are components of their own);
    ``what`` says so on the page.

    A function is ``"file:name"``: the file's base name and the function's name, or
    the end of its qualified name (yappi names a method by its object's class:
    ``Driver._begin`` runs as ``Dispatcher._begin``). The functions of one
    component never call each other, nor those of another, so no time counts twice.
    """

    name: str
    plus: tuple[str, ...]
    minus: tuple[str, ...] = ()
    what: str = ""


COMPONENTS = (
    Component(
        "dispatch(): storing the event",
        ("_dispatcher.py:dispatch",),
        what="`Dispatcher.dispatch` and all it calls, on the caller's thread: the event"
        " validated, encoded and stored with its delivery (and, in a version that does"
        " so, its deliveries leased to free workers in the same storage call)",
    ),
    Component(
        "preparing and signing",
        ("_dispatching.py:_begin",),
        what="`Driver._begin`: the request built and signed (`prepare`)",
    ),
    Component(
        "sending (transport)",
        ("_dispatcher.py:_send",),
        ("_dispatching.py:_begin", "_dispatching.py:_finish"),
        what="`Dispatcher._send` less `_begin` and `_finish`: the target check and"
        " `SocketTransport.send` (the POST and its response on a kept-alive connection)",
    ),
    Component(
        "concluding the attempt",
        ("_dispatching.py:_finish",),
        what="`Driver._finish`: the attempt's record and the delivery's next state"
        " (`conclude`), logged",
    ),
    Component(
        "recording, claiming the next",
        (
            # after: the group commit (a waiting worker stores the group in
            # GroupCommit.wait, which runs Driver._settle, which calls
            # Storage.complete_many; GroupCommit.join, in versions before
            # workers handed tickets in without waiting: never both in one version)
            "_group_commit.py:GroupCommit.wait",
            "_group_commit.py:GroupCommit.join",
            # before the group commit: one worker at a time (record_success_and_claim:
            # SQLiteStorage.complete_and_claim, or complete() then claim())
            "_dispatching.py:_record_and_claim",
            # both: a failed attempt, recorded on its own (none against this receiver)
            "_dispatcher.py:_record",
        ),
        what="after: `GroupCommit.wait` (the group commit, stored by a waiting worker:"
        " `Driver._settle`, one `Storage.complete_many` for the group; `GroupCommit.join`"
        " in earlier versions); before: `Driver._record_and_claim`"
        " (`record_success_and_claim`: `SQLiteStorage.complete_and_claim`, on"
        " PostgreSQL `complete()` then `claim()`); both: `Dispatcher._record` (a failed"
        " attempt: none here)",
    ),
    Component(
        "the pump's claims",
        ("_dispatching.py:_claim_for_pump", "_dispatcher.py:_idle"),
        what="`Driver._claim_for_pump` (`Storage.claim` for the free worker slots) and"
        " `Dispatcher._idle` (`next_due_at` when nothing was due)",
    ),
    Component(
        "drain(): the caller waiting",
        ("_dispatcher.py:drain",),
        what="`Dispatcher.drain`: the benchmark's caller waiting for the last delivery",
    ),
)
OTHER = "other"
OTHER_WHAT = (
    "the rest: the workers' loop and slot bookkeeping (`Dispatcher._work`'s own time),"
    " locks, the thread pool, psycopg's pool threads, garbage collection"
)
HARNESS = (
    # Setting up and checking a run, not delivering: left out of the total.
    "storages.py:make",
    "hookdispatch_runs.py:_succeeded",
    "_dispatcher.py:Dispatcher.__init__",
    "_dispatcher.py:add_endpoint",
    "_sqlite.py:SQLiteStorage.close",
    "_postgres.py:PostgresStorage.close",
)


def functions() -> list[str]:
    """Every function a component or the harness names."""
    keys = [key for c in COMPONENTS for key in (*c.plus, *c.minus)] + list(HARNESS)
    return list(dict.fromkeys(keys))


def matches(key: str, module: str, name: str) -> bool:
    """Whether yappi's function ``name`` of file ``module`` is the function ``key``."""
    file, _, function = key.partition(":")
    return Path(module).name == file and (name == function or name.endswith("." + function))


def inclusive(stats: Iterable[tuple[str, str, float]], keys: Iterable[str]) -> dict[str, float]:
    """The inclusive time of each function of ``keys``: ``stats`` holds (module,
    name, inclusive time) of every function profiled; 0 for a function not there."""
    found = dict.fromkeys(keys, 0.0)
    for module, name, total in stats:
        for key in found:
            if matches(key, module, name):
                found[key] += total
    return found


def split(times: Mapping[str, float], total: float) -> dict[str, float]:
    """The components of ``total`` from the inclusive ``times`` of the functions they
    name (a function missing counts 0: the other version's names), :data:`OTHER`
    the rest; in the units given."""
    parts = {
        c.name: sum(times.get(key, 0.0) for key in c.plus)
        - sum(times.get(key, 0.0) for key in c.minus)
        for c in COMPONENTS
    }
    parts[OTHER] = total - sum(parts.values())
    return parts


_METHOD = re.compile(r"<method '(\w+)' of '([\w.]+)' objects>")


def label(module: str, name: str) -> str:
    """A profiled function as the page names it: ``name (file)``, a builtin ``name()``."""
    found = _METHOD.fullmatch(name)
    if found:  # "<method 'execute' of 'sqlite3.Connection' objects>"
        return f"{found[2]}.{found[1]}()"
    if module in ("builtins", ""):
        return name if name.startswith("<") else f"{name}()"
    return f"{name} ({short(module)})"


def summarize(stats: list[Any], delivered: int) -> dict[str, Any]:
    """µs per delivery: the total, its components, the harness left out of it, the
    functions the components name, and the :data:`TOP_KEPT` functions by time of
    their own. ``stats``: yappi's function stats of the run."""
    per = 1e6 / max(delivered, 1)
    times = inclusive(((s.module, s.name, s.ttot * per) for s in stats), functions())
    harness = sum(times[key] for key in HARNESS)
    total = sum(s.tsub for s in stats) * per - harness
    top = sorted(stats, key=lambda s: s.tsub, reverse=True)[:TOP_KEPT]
    return {
        "deliveries": delivered,
        "total_us": total,
        "harness_us": harness,
        "components": split(times, total),
        "functions": times,
        "top": [[label(s.module, s.name), s.tsub * per] for s in top],
    }


def profile_run(url: str, make: storages.StorageFactory, count: int) -> dict[str, Any]:
    """One ``thread_pool`` run (``count`` POSTs, 8 workers) under yappi: its summary."""
    import yappi

    yappi.clear_stats()
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)
    try:
        run = hookdispatch_runs.thread_pool(url, make, count, WORKERS, LIMIT)
    finally:
        yappi.stop()
    found = summarize(list(yappi.get_func_stats()), count)
    yappi.clear_stats()
    found.update(rate=run.value, cut=run.cut)
    return found


def section(url: str, makers: Mapping[str, storages.StorageFactory], count: int) -> dict[str, Any]:
    """The page's profile of this process's hookdispatch: ``{"meta", "backends"}``."""
    import hookdispatch

    load = os.getloadavg()[0]
    backends = {}
    for name, make in makers.items():
        try:
            backends[name] = profile_run(url, make, count)
        except Exception as exc:  # one broken backend must not sink the whole run
            harness.failed[f"profile ({name})"] = f"{type(exc).__name__}: {exc}"
            log(f"  profile, {name} FAILED, left out: {harness.failed[f'profile ({name})']}")
            continue
        total = backends[name]["total_us"]
        log(f"  profile, {name}: {total:,.0f} µs per delivery under yappi")
    return {
        "meta": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "count": count,
            "workers": WORKERS,
            "profiler": f"yappi {metadata.version('yappi')}, CPU clock",
            "hookdispatch": str(Path(hookdispatch.__file__).resolve().parent.parent),
            "python": platform.python_version(),
            "load": [load, os.getloadavg()[0]],  # 1-minute load average, before and after
            "machine": machine_text(),
        },
        "backends": backends,
    }


def machine_text() -> str:
    """Which machine measured: CPUs, their model, the kernel (a stored *before* may
    come from another machine than the run that shows it beside its *after*)."""
    model = harness.cpu_model() or platform.processor()
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}"


def measure_here(count: int) -> dict[str, Any]:
    """The profile section with its own receiver, SQLite folder and PostgreSQL database."""
    with (
        Receiver() as receiver,
        storages.temporary_folder() as folder,
        storages.postgres_database() as postgres,
    ):
        makers = {"SQLite": storages.sqlite(folder)}
        if postgres is not None:
            makers["PostgreSQL"] = storages.postgres_storage(postgres[0])
        return section(receiver.url, makers, count)


def measure_src(src: Path, count: int) -> dict[str, Any]:
    """:func:`measure_here` in a fresh process importing hookdispatch from ``src``."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile", "--summary", "--count", str(count), "--pipe"],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=LIMIT * 3 + 120,
    )
    if result.returncode:
        raise RuntimeError(f"profiling {src} failed:\n{result.stderr}")
    found: dict[str, Any] = json.loads(result.stdout.split(_MARK, 1)[1])
    if not found["meta"]["hookdispatch"].startswith(str(src)):
        raise RuntimeError(f"the child imported {found['meta']['hookdispatch']}, not {src}")
    commit = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    found["meta"]["commit"] = commit or None
    return found


_MARK = "\n--- summary json ---\n"


def text(found: Mapping[str, Any]) -> str:
    """The console version of a summary."""
    lines = []
    for name, backend in found["backends"].items():
        total = backend["total_us"]
        lines.append(
            f"{name}: {total:,.0f} µs per delivery under yappi"
            f" ({backend['rate']:,.0f} deliveries/s profiled)"
        )
        for component, value in backend["components"].items():
            lines.append(f"  {value:8,.1f} µs {value / total:6.1%}  {component}")
        lines.append("  top by own time:")
        for where, value in backend["top"][:TOP]:
            lines.append(f"  {value:8,.1f} µs {value / total:6.1%}  {where}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("candidate", nargs="?")
    parser.add_argument("--count", type=int, help="POSTs (6000; --summary: 3000)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--delay", type=float, default=0.0, help="receiver answer delay, s")
    parser.add_argument(
        "--summary", action="store_true", help="the page's profile section, SQLite and PostgreSQL"
    )
    parser.add_argument("--json", type=Path, help="--summary: save it to this file")
    parser.add_argument(
        "--src", type=Path, help="--summary: profile the hookdispatch of this src folder"
    )
    parser.add_argument("--pipe", action="store_true", help=argparse.SUPPRESS)  # for --src
    options = parser.parse_args()
    pin(os.getpid(), SENDER_CORE)
    if options.summary:
        count = options.count or 3000
        if options.src is not None:
            found = measure_src(options.src.resolve(), count)
            command = ["python", "-m", "benchmarks.profile", *sys.argv[1:]]
            found["meta"]["command"] = shlex.join(command)
        else:
            found = measure_here(count)
        print(text(found))
        if options.json:
            options.json.parent.mkdir(parents=True, exist_ok=True)
            options.json.write_text(json.dumps(found, indent=1) + "\n")
        if options.pipe:
            print(_MARK + json.dumps(found))
        return
    if options.candidate is None:
        parser.error("name a candidate, or --summary")
    with Receiver(options.delay) as receiver, storages.temporary_folder() as folder:
        found_candidates = candidates(receiver.url, folder, options.count or 6000)
        if options.candidate not in found_candidates:
            parser.error(f"candidate must be one of {', '.join(found_candidates)}")
        try:
            import yappi  # noqa: F401

            profile = with_yappi
        except ImportError:
            profile = with_cprofile
        run, output = profile(found_candidates[options.candidate], options.top)
    print(f"{options.candidate}: {run}")
    print(output)


if __name__ == "__main__":
    main()
