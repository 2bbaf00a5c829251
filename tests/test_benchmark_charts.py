"""The benchmark page's charts: one per question, next to its table, readable.

Drawn from made-up results (the figures do not matter here, the drawing does): each
chart is no wider than the docs' text column, so it is shown at its own size, and no
text in it is smaller than 10 points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib (the test extra) draws charts")

from benchmarks import chart, profile, report  # noqa: E402
from benchmarks.harness import Run, Series  # noqa: E402
from benchmarks.results import Results, Row  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.text import Text  # noqa: E402


def series(value: float) -> Series:
    return Series([Run(value * 0.9, p99=value * 3), Run(value), Run(value * 1.1)])


def results() -> Results:
    # (The longest name a run has: the bars' labels take the room the title would.)
    names = [
        "raw httpx.Client, 8 threads",
        "AsyncDispatcher concurrency=64 (memory, AiohttpTransport)",
        "Celery + Redis",
    ]
    rows = [
        Row(name, kind, None, series(1000.0 * (n + 1)))
        for n, (name, kind) in enumerate(
            zip(names, ["ceiling", "hookdispatch", "peer"], strict=True)
        )
    ]
    return Results(
        machine={"date": "2026-12-07", "cpus": 2, "python": "3.11", "plan": {"delay": 0.1}},
        throughput=rows,
        latency=[Row("dispatch() (memory)", "hookdispatch", None, series(30.0))],
        queue=[
            Row("PgQueuer default worker: drain", "peer", None, series(3000.0)),
            Row(
                "Dispatcher workers=8 drain (PostgreSQL)",
                "hookdispatch",
                "PgQueuer default worker: drain",
                series(800.0),
            ),
        ],
        slow={
            n: [Row(f"Dispatcher workers={n} (memory)", "hookdispatch", None, series(n * 9.0))]
            for n in (8, 64, 256)
        },
        curve={"Dispatcher (threads)": {n: series(n * 100.0) for n in (1, 2, 4, 8)}},
        backlog_claim={n: series(300.0) for n in (1_000, 100_000)},
        backlog_rate={n: series(2000.0) for n in (1_000, 100_000)},
        backlog_pg_claim={n: series(900.0) for n in (1_000, 100_000)},
        backlog_pg_rate={n: series(800.0) for n in (1_000, 100_000)},
        profile={side: {"backends": {name: profiled() for name in BACKENDS}} for side in SIDES},
    )


BACKENDS = ("SQLite", "PostgreSQL")
SIDES = ("before", "after")


def profiled() -> dict[str, Any]:
    """A profile summary: µs per delivery of the functions the components name."""
    functions = dict.fromkeys(profile.functions(), 0.0)
    functions.update(
        {
            "_dispatcher.py:dispatch": 300.0,
            "_dispatcher.py:_send": 600.0,
            "_dispatching.py:_begin": 100.0,
            "_dispatching.py:_finish": 50.0,
            "_group_commit.py:GroupCommit.join": 250.0,
        }
    )
    return {"total_us": 1500.0, "functions": functions, "top": [], "rate": 400.0}


def test_one_readable_chart_per_question_next_to_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures: list[Any] = []
    save = matplotlib.figure.Figure.savefig

    def keep(figure: Any, *args: Any, **kwargs: Any) -> None:
        figures.append(figure)
        save(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    drawn = chart.draw(results(), tmp_path)
    assert set(drawn) == {
        "throughput",
        "latency",
        "queue",
        "slow",
        "curve",
        "backlog",
        "profile",
    }
    assert all((tmp_path / file).is_file() for file in drawn.values())
    for figure in figures:
        width, _ = figure.get_size_inches()
        assert width <= chart.WIDTH  # shown at its own size in the text column
        texts = [t for t in figure.findobj(Text) if t.get_text().strip() and t.get_visible()]
        assert texts
        small = {t.get_text(): t.get_fontsize() for t in texts if t.get_fontsize() < 10}
        assert small == {}, f"text under 10 pt in a chart: {small}"
        canvas = FigureCanvasAgg(figure)  # the figure's canvas went with plt.close()
        canvas.draw()
        renderer = canvas.get_renderer()
        box = figure.bbox
        # Titles, axis labels and legends (tick labels are placed by the layout, and
        # those of ticks outside the axes are made but never drawn).
        framed = [
            text
            for ax in figure.axes
            for text in (
                ax.title,
                ax.xaxis.label,
                ax.yaxis.label,
                *(ax.get_legend().get_texts() if ax.get_legend() else ()),
            )
            if text.get_text().strip()
        ]
        cut = [
            t.get_text()
            for t in framed
            if not (
                box.x0 - 1 <= (e := t.get_window_extent(renderer)).x0
                and e.x1 <= box.x1 + 1
                and box.y0 - 1 <= e.y0
                and e.y1 <= box.y1 + 1
            )
        ]
        assert cut == [], f"text cut off at the chart's edge: {cut}"
    plt.close("all")

    page = report.render(results(), images={k: f"img/{v}" for k, v in drawn.items()})
    for name, file in drawn.items():
        # Each chart follows its own table, not all at the top of the page.
        at = page.index(f"](img/{file})")
        heading = page.rindex("\n## ", 0, at)
        assert page.index("\n|", heading) < at, f"the {name} chart comes before its table"
    assert "benchmarks.png" not in page
