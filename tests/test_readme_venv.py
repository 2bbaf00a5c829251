"""The README's quick start works as written for a new user: in a fresh virtual
environment, after `pip install 'hookdispatch[cli]'` of this repository, against the
`hookdispatch listen` the README starts in the step before, with no network."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_docs import EXAMPLE_URL, LISTEN_COMMAND, LISTEN_URL, RUNNABLE, code_blocks

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # pip installs the package and its dependencies: 20 to 60 s
@pytest.mark.timeout(240)
def test_readme_quick_start_in_a_fresh_venv(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = next(
        source for info, _, source in code_blocks(ROOT / "README.md") if info == RUNNABLE
    )
    assert "hd.Dispatcher(" in quick_start
    assert LISTEN_URL in quick_start
    assert EXAMPLE_URL not in quick_start
    listen = LISTEN_COMMAND.search(readme)
    assert listen is not None

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            f"{ROOT}[cli]",
        ],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    work = tmp_path / "app"
    work.mkdir()
    args = shlex.split(listen.group(1))
    receiver = subprocess.Popen(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().startswith(f"Listening on {LISTEN_URL}")
        script = work / "quick_start.py"
        script.write_text(quick_start, encoding="utf-8")  # as written: nothing swapped
        result = subprocess.run(
            [str(python), str(script)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        receiver.terminate()
        received, _ = receiver.communicate(timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the receiver verifies with whsec_" in result.stdout
    assert "succeeded [200]" in result.stdout
    assert "POST /hooks user.created" in received
    assert (work / "webhooks.db").exists()
    # The package came from the fresh environment, not from this checkout.
    where = subprocess.run(
        [str(python), "-c", "import hookdispatch; print(hookdispatch.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv))
