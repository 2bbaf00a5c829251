"""Sphinx configuration: `make docs` builds README.md and docs/*.md (through MyST) into
build/docs, with every warning an error.

The source directory is the repository root (``sphinx-build -c docs . build/docs``), so
the links that work on GitHub work in the site too: docs/index.md's ``../README.md``,
README's ``docs/receiving.md``, and ``../examples/asgi_app.py`` (a download).

Why Sphinx, MyST and furo: the docstrings in src/ are reStructuredText with Sphinx
roles (``:class:``, ``:meth:``, ``literal``, ``::`` blocks), which autodoc renders as
written, with cross-references; MyST reads the guide's GitHub-flavoured Markdown
unchanged; sphinx-click renders the CLI reference from the click commands themselves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hookdispatch

project = "hookdispatch"
author = "the hookdispatch maintainers"
copyright = "hookdispatch contributors"  # noqa: A001 - the name Sphinx reads
release = version = hookdispatch.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx_click"]
source_suffix = {".md": "markdown"}
root_doc = "docs/index"
include_patterns = ["README.md", "docs/**"]
exclude_patterns = ["docs/_build"]

# Headings get anchors, as on GitHub: [storage](storage.md#leases) resolves.
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# Command lines stay as typed: "--on-error", not an en dash.
smartquotes = False

html_theme = "furo"
html_title = f"hookdispatch {release}"


def _redirect_to_the_index(app: Any, exception: Exception | None) -> None:
    """build/docs/index.html: the site's front door, pointing at docs/index.html."""
    if exception is None and app.builder.format == "html":
        target = "docs/index.html"
        Path(app.outdir, "index.html").write_text(
            f'<!doctype html><meta charset="utf-8"><title>hookdispatch</title>'
            f'<meta http-equiv="refresh" content="0; url={target}">'
            f'<a href="{target}">hookdispatch documentation</a>\n',
            encoding="utf-8",
        )


# Testing hooks of the dispatchers: injected time. Documented as such in their
# docstrings, left out of the signatures shown (they are not part of the stable API).
_TESTING_HOOKS = {"clock", "sleep"}
_WITH_TESTING_HOOKS = {"hookdispatch.Dispatcher", "hookdispatch.AsyncDispatcher"}


def _hide_testing_hooks(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, annotation: Any
) -> tuple[str | None, Any] | None:
    """Drop ``clock=...`` and ``sleep=...`` from the dispatchers' signatures."""
    if what != "class" or name not in _WITH_TESTING_HOOKS or not signature:
        return None
    kept = [part for part in _top_level(signature[1:-1]) if _name(part) not in _TESTING_HOOKS]
    return "(" + ", ".join(kept) + ")", annotation


def _top_level(parameters: str) -> list[str]:
    """A signature's parameters: split on the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(parameters):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(parameters[start:index].strip())
            start = index + 1
    parts.append(parameters[start:].strip())
    return parts


def _name(parameter: str) -> str:
    return re.split(r"[:=]", parameter, maxsplit=1)[0].strip()


def setup(app: Any) -> None:
    from pygments.lexers import PythonLexer

    # ```python-no-run marks fragments that tests/test_docs.py does not run (they need a
    # web framework); they are still Python, and highlighted as such.
    app.add_lexer("python-no-run", PythonLexer)
    app.connect("build-finished", _redirect_to_the_index)
    app.connect("autodoc-process-signature", _hide_testing_hooks)
