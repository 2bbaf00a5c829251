"""The benchmark page's profile: a durable delivery's CPU time split into components.

Made-up profiler figures (the numbers do not matter, the arithmetic and the
wording do): both versions' function names map into the same components, no time
counts twice, the harness stays out of the total, and the page shows before and
after side by side, "not measured" where one is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the benchmarks import aiohttp (the test extra)")

from benchmarks import profile, report
from benchmarks.results import Results

SRC = "/work/src/hookdispatch"

# µs per delivery, inclusive, as yappi names them in each version.
AFTER = {
    f"{SRC}/_dispatcher.py": {
        "Dispatcher.dispatch": 300.0,
        "Dispatcher._send": 500.0,
        "Dispatcher._idle": 5.0,
        "Dispatcher.drain": 2.0,
        "Dispatcher.add_endpoint": 1.0,
    },
    f"{SRC}/_dispatching.py": {
        "Dispatcher._begin": 100.0,  # Driver._begin, named by its object's class
        "Dispatcher._finish": 50.0,
        "Dispatcher._claim_for_pump": 15.0,
        "Dispatcher._settle": 180.0,  # inside GroupCommit.join: not counted again
    },
    f"{SRC}/_group_commit.py": {"GroupCommit.join": 200.0},
    f"{SRC}/storage/_sqlite.py": {"SQLiteStorage.complete_many": 170.0},
}
BEFORE = {
    f"{SRC}/_dispatcher.py": {
        "Dispatcher.dispatch": 280.0,
        "Dispatcher._send": 520.0,
        "Dispatcher._record": 10.0,  # a failed attempt
        "Dispatcher._idle": 5.0,
        "Dispatcher.drain": 2.0,
    },
    f"{SRC}/_dispatching.py": {
        "Dispatcher._begin": 100.0,
        "Dispatcher._finish": 60.0,
        "Dispatcher._record_and_claim": 300.0,
        "Dispatcher._claim_for_pump": 100.0,
    },
    f"{SRC}/_operations.py": {"record_success_and_claim": 290.0},  # inside it
    f"{SRC}/storage/_sqlite.py": {"SQLiteStorage.complete_and_claim": 280.0},
}


def rows(functions: dict[str, dict[str, float]]) -> list[tuple[str, str, float]]:
    return [(module, name, us) for module, names in functions.items() for name, us in names.items()]


def test_both_versions_map_into_the_same_components_without_counting_twice() -> None:
    after = profile.split(profile.inclusive(rows(AFTER), profile.functions()), 1300.0)
    before = profile.split(profile.inclusive(rows(BEFORE), profile.functions()), 1500.0)
    names = [c.name for c in profile.COMPONENTS] + [profile.OTHER]
    assert list(after) == list(before) == names
    assert sum(after.values()) == pytest.approx(1300.0)
    assert sum(before.values()) == pytest.approx(1500.0)

    assert after["dispatch(): storing the event"] == 300.0
    assert after["preparing and signing"] == 100.0
    assert after["sending (transport)"] == 350.0  # _send less _begin and _finish
    assert after["concluding the attempt"] == 50.0
    # The group commit: join only (its _settle and complete_many are inside it).
    assert after["recording, claiming the next"] == 200.0
    assert after["the pump's claims"] == 20.0
    assert after["drain(): the caller waiting"] == 2.0
    assert after[profile.OTHER] == pytest.approx(1300.0 - 1022.0)

    # Before: one worker at a time, and a failed attempt's own record.
    assert before["recording, claiming the next"] == 310.0
    assert before["sending (transport)"] == 360.0
    assert before["the pump's claims"] == 105.0


def test_functions_are_matched_by_file_and_the_end_of_their_name() -> None:
    assert profile.matches("_dispatching.py:_begin", f"{SRC}/_dispatching.py", "Dispatcher._begin")
    assert profile.matches("_dispatcher.py:_record", f"{SRC}/_dispatcher.py", "Dispatcher._record")
    assert not profile.matches(
        "_dispatcher.py:_record", f"{SRC}/_dispatching.py", "Dispatcher._record_and_claim"
    )
    assert not profile.matches("_dispatcher.py:_record", f"{SRC}/_dispatcher.py", "X._recorder")
    assert not profile.matches(
        "_dispatcher.py:_send", f"{SRC}/_async_dispatcher.py", "AsyncDispatcher._send"
    )
    found = profile.inclusive(
        [("/a/_group_commit.py", "GroupCommit.join", 1.0), ("/b/_group_commit.py", "join", 2.0)],
        ["_group_commit.py:GroupCommit.join", "_dispatching.py:_record_and_claim"],
    )
    assert found == {
        "_group_commit.py:GroupCommit.join": 1.0,
        "_dispatching.py:_record_and_claim": 0,
    }


def stat(module: str, name: str, ttot: float, tsub: float) -> Any:
    return SimpleNamespace(module=module, name=name, ttot=ttot, tsub=tsub)


def test_a_summary_leaves_the_harness_out_and_names_the_busiest_functions() -> None:
    stats = [
        stat(f"{SRC}/_dispatcher.py", "Dispatcher.dispatch", 0.3, 0.1),
        stat("builtins", "<method 'execute' of 'sqlite3.Connection' objects>", 0.2, 0.2),
        stat("builtins", "isinstance", 0.05, 0.05),
        stat("/repo/benchmarks/hookdispatch_runs.py", "_succeeded", 0.1, 0.1),
        stat(f"{SRC}/storage/_sqlite.py", "SQLiteStorage._write", 0.15, 0.15),
    ]
    found = profile.summarize(stats, 1000)  # seconds in all, for 1,000 deliveries
    assert found["harness_us"] == pytest.approx(100.0)
    assert found["total_us"] == pytest.approx(500.0)  # 600 µs of own time, less the harness
    assert found["components"]["dispatch(): storing the event"] == pytest.approx(300.0)
    assert found["top"][0] == ["sqlite3.Connection.execute()", pytest.approx(200.0)]
    assert found["top"][1][0] == "SQLiteStorage._write (hookdispatch/storage/_sqlite.py)"
    assert ["isinstance()", pytest.approx(50.0)] in found["top"]
    json.dumps(found)  # plain data, for --json


def summary(functions: dict[str, dict[str, float]], total: float, rate: float) -> dict[str, Any]:
    times = profile.inclusive(rows(functions), profile.functions())
    return {
        "deliveries": 3000,
        "total_us": total,
        "harness_us": 40.0,
        "components": profile.split(times, total),
        "functions": times,
        "top": [
            ["sqlite3.Connection.execute()", 300.0],
            ["new_id (hookdispatch/_models.py)", 30.0],
        ],
        "rate": rate,
        "cut": False,
    }


def results() -> Results:
    before_meta = {
        "date": "2026-12-07",
        "count": 3000,
        "workers": 8,
        "profiler": "yappi 1.7.6, CPU clock",
        "commit": "9c077d7",
        "command": "python -m benchmarks.profile --summary --src /tmp/before_16/src"
        " --json benchmarks/data/profile-before-9c077d7.json",
        "load": [1.0, 2.0],
    }
    return Results(
        machine={"date": "2026-12-07", "plan": {"workers": 8}},
        profile={
            "before": {
                "meta": before_meta,
                "backends": {
                    "SQLite": summary(BEFORE, 1500.0, 400.0),
                    "PostgreSQL": summary(BEFORE, 5000.0, 120.0),
                },
            },
            "after": {
                "meta": {**before_meta, "commit": None, "count": 500},
                "backends": {"SQLite": summary(AFTER, 1300.0, 450.0)},
            },
        },
    )


def test_the_page_shows_each_component_before_and_after() -> None:
    page = report.render(results(), images={"profile": "img/benchmarks-profile.png"})
    assert "## Where a durable delivery's CPU time goes (profile)" in page
    assert "**compare the shares**" in page
    assert "commit `9c077d7`" in page
    assert "on 2026-12-07 by `python -m benchmarks.profile --summary --src" in page
    assert "`benchmarks/data/profile-before-9c077d7.json`" in page
    assert "### SQLite" in page
    assert "### PostgreSQL" in page
    assert "| recording, claiming the next | 310 | 20.7% | 200 | 15.4% |" in page
    assert "| sending (transport) | 360 | 24.0% | 350 | 26.9% |" in page
    assert "| **total** | 1,500 | 100.0% | 1,300 | 100.0% |" in page
    # PostgreSQL was not profiled in this run: its after column says so.
    assert "| recording, claiming the next | 310 | 6.2% | not measured |  |" in page
    # The busiest functions side by side, the library's files named short.
    assert (
        "| 2 | `new_id (_models.py)` | 30.0 | 2.0% | `new_id (_models.py)` | 30.0 | 2.3% |" in page
    )
    # Which functions make each component, both versions' names.
    assert "`Driver._record_and_claim`" in page
    assert "`GroupCommit.join`" in page
    at = page.index("](img/benchmarks-profile.png)")
    assert page.index("### PostgreSQL") < at < page.index("What each component is made of")


def test_without_a_before_or_an_after_the_page_says_not_measured() -> None:
    found = results()
    del found.profile["before"]
    page = report.render(found, images={})
    assert "*Before*: not measured" in page
    assert "| dispatch(): storing the event | not measured |  | 300 | 23.1% |" in page
    found.profile = {"before": results().profile["before"]}
    page = report.render(found, images={})
    assert "*After*: not measured in this run." in page
    assert "| **total** | 1,500 | 100.0% | not measured |  |" in page


def test_the_profile_survives_a_json_round_trip(tmp_path: Path) -> None:
    found = results()
    path = tmp_path / "results.json"
    found.save(path)
    loaded = Results.load(path)
    assert loaded.profile == found.profile
    assert report.render(loaded, images={}) == report.render(found, images={})


def test_the_stored_before_is_the_profile_of_9c077d7_with_both_backends() -> None:
    stored = json.loads(profile.BEFORE.read_text())
    meta = stored["meta"]
    assert meta["commit"] == "9c077d7"
    assert meta["date"] == "2026-12-07"
    assert meta["command"].startswith("python -m benchmarks.profile --summary --src ")
    assert set(stored["backends"]) == {"SQLite", "PostgreSQL"}
    for backend in stored["backends"].values():
        parts = profile.split(backend["functions"], backend["total_us"])
        assert parts == pytest.approx(backend["components"])
        # The old names: one worker at a time, no group commit.
        assert backend["functions"]["_dispatching.py:_record_and_claim"] > 0
        assert backend["functions"]["_group_commit.py:GroupCommit.join"] == 0
    page = report.render(Results(profile={"before": stored}), images={})
    assert "| **total** |" in page
