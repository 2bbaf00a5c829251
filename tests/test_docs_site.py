"""The documentation site stays complete: every page is in the navigation, the API
reference names every public name, and the CLI reference is generated, not written."""

from __future__ import annotations

import re
from pathlib import Path

import hookdispatch as hd

DOCS = Path(__file__).resolve().parent.parent / "docs"
TOCTREE = re.compile(r"^```\{toctree\}\n(.*?)^```", re.MULTILINE | re.DOTALL)


def toctree_entries() -> set[str]:
    entries = set()
    for block in TOCTREE.findall((DOCS / "index.md").read_text(encoding="utf-8")):
        for line in block.splitlines():
            if line.strip() and not line.startswith(":"):
                target = re.search(r"<(.+)>$", line)
                entries.add(target.group(1) if target else line.strip())
    return entries


def test_every_page_is_in_the_navigation() -> None:
    pages = {path.stem for path in DOCS.glob("*.md")} - {"index"}
    assert pages <= toctree_entries()
    assert "/README" in toctree_entries()


def test_the_api_reference_names_every_public_name() -> None:
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = set(
        re.findall(r"^\.\. auto(?:class|function|data):: hookdispatch\.(\w+)", api, re.M)
    )
    assert set(hd.__all__) - {"__version__"} <= documented


def test_the_cli_reference_is_generated_from_the_commands() -> None:
    cli = (DOCS / "cli.md").read_text(encoding="utf-8")
    directive = ".. click:: hookdispatch.cli._app:cli\n   :prog: hookdispatch\n   :nested: full\n"
    assert f"```{{eval-rst}}\n{directive}```" in cli
