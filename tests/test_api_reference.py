"""The API reference shows contracts, not internals: every public field of Delivery and
Attempt has its docstring and is listed, and the dispatchers' testing hooks (injected
clock and sleep) are left out of the signatures shown."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import attrs
import pytest

import hookdispatch as hd

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "src" / "hookdispatch" / "_models.py"
API = ROOT / "docs" / "api.md"


def documented_fields(class_name: str) -> set[str]:
    """The fields of ``class_name`` in _models.py followed by a docstring."""
    tree = ast.parse(MODELS.read_text(encoding="utf-8"))
    [node] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    found = set()
    for statement, following in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            found.add(statement.target.id)
    return found


@pytest.mark.parametrize("cls", [hd.Delivery, hd.Attempt, hd.AttemptReport], ids=repr)
def test_every_field_has_its_contract(cls: type) -> None:
    fields = {field.name for field in attrs.fields(cls)}
    if cls is hd.AttemptReport:
        source = ROOT / "src" / "hookdispatch" / "_reporting.py"
        tree = ast.parse(source.read_text(encoding="utf-8"))
        [node] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
        pairs = zip(node.body, node.body[1:], strict=False)
        documented = {
            s.target.id
            for s, f in pairs
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            and isinstance(f, ast.Expr) and isinstance(f.value, ast.Constant)
        }  # fmt: skip
    else:
        documented = documented_fields(cls.__name__)
    assert fields <= documented, fields - documented


@pytest.mark.parametrize("cls", [hd.Delivery, hd.Attempt], ids=repr)
def test_the_reference_lists_every_field(cls: type) -> None:
    api = API.read_text(encoding="utf-8")
    match = re.search(
        rf"^\.\. autoclass:: hookdispatch\.{cls.__name__}\n   :members: (.*?)\n\n", api, re.M | re.S
    )
    assert match is not None
    listed = {name.strip() for name in match.group(1).split(",")}
    assert {field.name for field in attrs.fields(cls)} <= listed


def test_the_testing_hooks_are_left_out_of_the_signatures() -> None:
    spec = importlib.util.spec_from_file_location("docs_conf", ROOT / "docs" / "conf.py")
    assert spec is not None
    assert spec.loader is not None
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    signature = (
        "(*, storage: Storage, timeout: float = DEFAULT_TIMEOUT,"
        " clock: Callable[[], datetime] = utc_now, sleep: Callable[[float], None] = time.sleep,"
        " on_endpoint_disabled: Callable[[Endpoint, str], None] | None = None)"
    )
    shown, _ = conf._hide_testing_hooks(
        None, "class", "hookdispatch.Dispatcher", hd.Dispatcher, None, signature, None
    )
    assert shown == (
        "(*, storage: Storage, timeout: float = DEFAULT_TIMEOUT,"
        " on_endpoint_disabled: Callable[[Endpoint, str], None] | None = None)"
    )
    # ... and documented as testing hooks, not left unexplained.
    assert "Testing hooks" in (hd.Dispatcher.__doc__ or "")


def test_the_index_lists_each_page_once_and_no_build_notes() -> None:
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([\w-]+)\.md\)", index)
    assert len(links) == len(set(links)), [link for link in links if links.count(link) > 1]
    blocks = re.findall(r"^```\{toctree\}\n(.*?)^```", index, re.M | re.S)
    assert blocks
    assert all(":hidden:" in block for block in blocks)
    assert "make docs" not in index
    assert "Sphinx" not in index
