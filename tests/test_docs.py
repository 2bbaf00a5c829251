"""The documentation runs: every ```python block in README.md and docs/*.md, and the demo.

Each block is executed on its own (fresh globals) in a fresh temporary working directory,
so SQLite files it creates land there. The quick starts (README, getting started) post
to ``http://127.0.0.1:8000/``, where the page tells the reader to start ``hookdispatch
listen``: for those blocks the test starts that command, as the page writes it, and the
block runs unchanged. In the other pages the literal URL ``https://example.com/hooks``
is replaced by a local pytest-httpserver that answers 200 to every POST under
``/hooks``. Blocks fenced as ```python-no-run are fragments (a web framework's handler,
say) and are only checked for being fenced on purpose.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE_URL = "https://example.com/hooks"
FENCE = re.compile(r"^```(\S*)\s*$")
RUNNABLE, NOT_RUNNABLE = "python", "python-no-run"


def code_blocks(path: Path) -> list[tuple[str, int, str]]:
    """Every fenced block of ``path``: (info string, first line number, source)."""
    blocks: list[tuple[str, int, str]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    info: str | None = None
    start, body = 0, []
    for number, line in enumerate(lines, start=1):
        fence = FENCE.match(line)
        if info is None and line.startswith("```"):
            info, start, body = (fence.group(1) if fence else line[3:].strip()), number + 1, []
        elif info is not None and fence and not fence.group(1):
            blocks.append((info, start, "\n".join(body) + "\n"))
            info = None
        elif info is not None:
            body.append(line)
    assert info is None, f"{path.name}: the code block opened before line {start} is not closed"
    return blocks


def runnable_blocks() -> list[pytest.ParameterSet]:
    params = []
    for path in DOC_FILES:
        runnable = [(line, src) for info, line, src in code_blocks(path) if info == RUNNABLE]
        name = path.relative_to(ROOT).as_posix()
        for index, (line, source) in enumerate(runnable, start=1):
            params.append(pytest.param(name, line, source, id=f"{name}:{index}"))
    return params


@pytest.fixture
def hooks_url(httpserver: HTTPServer) -> str:
    """A local receiver that accepts every POST under /hooks."""
    httpserver.expect_request(re.compile(r"^/hooks"), method="POST").respond_with_data("ok")
    return httpserver.url_for("/hooks")


LISTEN_URL = "http://127.0.0.1:8000/"
LISTEN_COMMAND = re.compile(r"^(?:\$ )?(hookdispatch listen [^#\n]*)", re.M)
QUICK_STARTS = {"README.md", "docs/getting-started.md"}


@contextlib.contextmanager
def listening_as_the_page_says(name: str) -> Iterator[None]:
    """Run the ``hookdispatch listen ...`` command the page tells the reader to start."""
    command = LISTEN_COMMAND.search((ROOT / name).read_text(encoding="utf-8"))
    assert command is not None, f"{name} posts to {LISTEN_URL} but starts no listener"
    args = shlex.split(command.group(1))
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / args[0]), *args[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith(f"Listening on {LISTEN_URL}"), first + process.stderr.read()
        yield
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    # The quick start's webhooks arrived, and none was refused for its signature.
    assert "answered 200" in out, out
    assert "answered 401" not in out, out


@pytest.mark.parametrize(("name", "line", "source"), runnable_blocks())
def test_code_block_runs(
    name: str,
    line: int,
    source: str,
    hooks_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    quick_start = LISTEN_URL in source
    # A quick start must work offline, as written: no example.com to swap.
    assert EXAMPLE_URL not in source or name not in QUICK_STARTS, name
    if quick_start:
        receiver: contextlib.AbstractContextManager[None] = listening_as_the_page_says(name)
    else:
        source = source.replace(EXAMPLE_URL, hooks_url)
        receiver = contextlib.nullcontext()
    code = compile(source, f"{name}, block at line {line}", "exec")
    with receiver:
        try:
            exec(code, {"__name__": "__doc_example__"})
        except Exception:
            pytest.fail(
                f"the python block of {name} starting at line {line} failed:\n"
                + traceback.format_exc(),
                pytrace=False,
            )


# Pages without examples of their own: the index, generated references, the changelog,
# and measurements.
NO_EXAMPLES = {"index.md", "cli.md", "api.md", "changelog.md", "benchmarks.md"}


def test_docs_have_runnable_blocks() -> None:
    assert len(runnable_blocks()) >= 10
    for path in DOC_FILES:
        assert any(info == RUNNABLE for info, _, _ in code_blocks(path)) or path.name in NO_EXAMPLES


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_python_blocks_are_marked_runnable_or_not(path: Path) -> None:
    """A ```py or ```python3 block would silently escape the tests above."""
    for info, line, _ in code_blocks(path):
        if info.lower().startswith("py"):
            assert info in (RUNNABLE, NOT_RUNNABLE), (
                f"{path.name}:{line}: fence the block as ```{RUNNABLE} (it runs in the tests)"
                f" or ```{NOT_RUNNABLE} (a fragment that cannot run alone), not ```{info}"
            )


DEMO = ROOT / "examples" / "demo.py"
EVENT_TYPES = ("user.created", "user.subscription.updated", "user.deleted", "invoice.paid")


@pytest.mark.slow  # about 2.5 s: a fresh interpreter, then retries 0.2 s and 0.4 s apart
def test_demo_runs_and_everything_is_delivered(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},  # its SQLite file lands here
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for event_type in EVENT_TYPES:
        assert event_type in result.stdout
    assert "8 deliveries: 8 succeeded" in result.stdout
    assert "both signatures verified on every request" in result.stdout
    assert "\033[" not in result.stdout  # no colour when the output is not a terminal
    assert list(tmp_path.glob("hookdispatch-demo-*/webhooks.db"))


def test_demo_uses_only_runtime_dependencies() -> None:
    """`make demo` installs hookdispatch's runtime dependencies only: no pytest etc."""
    allowed = set(sys.stdlib_module_names) | {"hookdispatch", "httpx", "tenacity", "attrs"}
    allowed |= {"sqlite_utils", "__future__"}
    tree = ast.parse(DEMO.read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= allowed, imported - allowed
