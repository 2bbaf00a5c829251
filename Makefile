# The two commands a new user needs: `make demo` and `make test`.
# Both create .venv on first use and install what they need into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench docs install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy src

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build/docs

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.installed

# The benchmark suite: raw HTTP ceilings, hookdispatch and Celery, measured in one
# run (about 9 minutes on an idle 2-core machine); rewrites docs/benchmarks.md and its charts, docs/img/benchmarks-*.png.
# `$(BIN)/python -m benchmarks --quick` checks the harness in about 2 minutes.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@ $(VENV)/.installed

# The documentation site: README.md and docs/*.md (Sphinx, MyST, furo) into build/docs,
# rebuilt from scratch every time (-E -a) so that no warning hides in a cached page,
# and every warning is an error (-W). Open build/docs/index.html.
docs: $(VENV)/.installed-docs
	$(BIN)/sphinx-build -c docs -E -a -W --keep-going -q -b html . build/docs
	@echo "Built build/docs/index.html"
