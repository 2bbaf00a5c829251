"""The backend in docs/custom-storage.md passes the conformance suite, as the page says.

The code is read from the page itself, so the page and the test cannot drift apart.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

import hookdispatch as hd
from hookdispatch.testing import StorageConformance

PAGE = Path(__file__).resolve().parent.parent / "docs" / "custom-storage.md"
EXAMPLE_URL = "https://example.com/hooks"


def example_source() -> str:
    """The ```python block of the page that defines DictStorage."""
    blocks = re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(encoding="utf-8"), re.S | re.M)
    [source] = [block for block in blocks if "class DictStorage(hd.Storage)" in block]
    return source


def load_example() -> types.ModuleType:
    module = types.ModuleType("dict_storage")
    module.__file__ = str(PAGE)
    exec(compile(example_source(), str(PAGE), "exec"), module.__dict__)
    return module


dict_storage = load_example()


class TestDictStorage(StorageConformance):
    """Exactly what the page tells a backend author to write."""

    def make_storage(self) -> hd.Storage:
        storage = dict_storage.DictStorage()
        assert isinstance(storage, hd.Storage)
        return storage


def test_the_example_runs_as_a_script(
    httpserver: HTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    httpserver.expect_request("/hooks", method="POST").respond_with_data("ok")
    source = example_source().replace(EXAMPLE_URL, httpserver.url_for("/hooks"))
    exec(compile(source, str(PAGE), "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.strip() == "succeeded 1"
    assert len(httpserver.log) == 1
