"""Optional extras: aiohttp is needed only by AiohttpTransport, and its absence is
a clear MissingDependencyError naming the extra."""

from __future__ import annotations

import subprocess
import sys

import hookdispatch as hd


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_default_paths_never_import_aiohttp() -> None:
    result = _run(
        "import sys, hookdispatch as hd\n"
        "hd.AsyncDispatcher, hd.AsyncioTransport, hd.AsyncHttpxTransport, hd.Dispatcher\n"
        "assert 'aiohttp' not in sys.modules, 'aiohttp was imported'\n"
    )
    assert result.returncode == 0, result.stderr


def test_aiohttp_transport_without_aiohttp_names_the_extra() -> None:
    result = _run(
        "import sys\n"
        "sys.modules['aiohttp'] = None  # as if it were not installed\n"
        "import hookdispatch as hd\n"
        "try:\n"
        "    hd.AiohttpTransport\n"
        "except hd.MissingDependencyError as exc:\n"
        "    assert isinstance(exc, ImportError)\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'hookdispatch[aiohttp]'" in result.stdout


def test_missing_dependency_is_a_hookdispatch_error() -> None:
    assert issubclass(hd.MissingDependencyError, hd.HookDispatchError)
    assert issubclass(hd.MissingDependencyError, ImportError)
