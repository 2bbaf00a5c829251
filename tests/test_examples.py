"""Every example the docs show runs as documented: by path, from a folder outside the
package (nothing imports ``examples`` as a package, which an install does not have)."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from receivers import unused_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


def test_no_page_imports_examples_as_a_package() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        assert "from examples" not in text, page.name
        assert "examples.asgi_app:" not in text, page.name


@pytest.mark.slow  # a fresh interpreter
def test_the_observability_capture_runs_by_path(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "observability.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "attempt 1 of dlv_" in out
    assert ": retry, HTTP 503" in out
    assert "POST kind=CLIENT" in out
    assert "http.response.status_code = 503" in out
    assert re.search(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0\d$", out, re.M)  # traceparent
    assert "hookdispatch.deliveries ({delivery}) {'hookdispatch.outcome': 'succeeded'}" in out
    assert "not-in-any-span" not in out  # the endpoint's query string


def test_the_fastapi_block_runs_with_the_example_saved_next_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/asgi.md's FastAPI module, as written, beside a copy of asgi_app.py."""
    page = (ROOT / "docs" / "asgi.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```python-no-run\n(import contextlib.*?)```", page, re.S)
    shutil.copy(EXAMPLES / "asgi_app.py", tmp_path / "asgi_app.py")
    (tmp_path / "yourmodule.py").write_text(block, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEBHOOK_URL", "http://127.0.0.1:9/hooks")
    monkeypatch.setenv("HOOKDISPATCH_ALLOW_LOCAL", "1")
    yourmodule = importlib.import_module("yourmodule")
    with TestClient(yourmodule.app) as client:
        answer = client.post("/signup", json={"email": "ada@example.com"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["event_id"].startswith("evt_")
    sys.modules.pop("yourmodule", None)
    sys.modules.pop("asgi_app", None)


@pytest.mark.slow  # uvicorn in a process of its own
def test_the_asgi_example_starts_as_documented(tmp_path: Path) -> None:
    """`uvicorn --app-dir examples asgi_app:app` from the repository root."""
    port = unused_port()
    process = subprocess.Popen(
        [str(BIN / "uvicorn"), "--app-dir", "examples", "asgi_app:app", "--port", str(port)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "WEBHOOK_URL": "https://example.com/hooks",
            "HOOKDISPATCH_DB": str(tmp_path / "webhooks.db"),
        },
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "Application startup complete" in line or not line:
                break
        assert any("Application startup complete" in line for line in lines), "".join(lines)
    finally:
        process.terminate()
        process.wait(timeout=20)
