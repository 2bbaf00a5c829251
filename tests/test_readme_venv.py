"""The README's quick start works as written for a new user: in a fresh virtual
environment, after `pip install` of this repository, against a local receiver."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from test_docs import EXAMPLE_URL, RUNNABLE, code_blocks

ROOT = Path(__file__).resolve().parent.parent

# The quick start posts to https://example.com/hooks, which the default target policy
# allows. The test swaps in a local receiver, http://127.0.0.1:PORT, which the default
# refuses (SSRF protection); so, exactly like tests/conftest.py does for the in-process
# doc examples, the process runs with the local policy. Nothing else is changed.
LOCAL_POLICY = (
    "import hookdispatch._targets as _targets\n_targets._default = _targets.TargetPolicy.local()\n"
)


@pytest.mark.slow  # pip installs the package and its dependencies: 20 to 60 s
@pytest.mark.timeout(240)
def test_readme_quick_start_in_a_fresh_venv(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request(re.compile(r"^/hooks"), method="POST").respond_with_data("ok")
    quick_start = next(
        source for info, _, source in code_blocks(ROOT / "README.md") if info == RUNNABLE
    )
    assert "hd.Dispatcher(" in quick_start
    assert EXAMPLE_URL in quick_start

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    work = tmp_path / "app"
    work.mkdir()
    script = work / "quick_start.py"
    script.write_text(
        LOCAL_POLICY + quick_start.replace(EXAMPLE_URL, httpserver.url_for("/hooks")),
        encoding="utf-8",
    )
    result = subprocess.run(
        [str(python), str(script)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the receiver verifies with whsec_" in result.stdout
    assert "succeeded [200]" in result.stdout
    assert len(httpserver.log) == 1
    assert (work / "webhooks.db").exists()
    # The package came from the fresh environment, not from this checkout.
    where = subprocess.run(
        [str(python), "-c", "import hookdispatch; print(hookdispatch.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv))
