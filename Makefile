# chatcap — the two README commands (`make demo`, `make test`) plus developer helpers.
# Every target bootstraps .venv itself on a machine with only Python 3.11 and make.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PROTO  := chatcap/protocol

.PHONY: demo test reliability lab lint fmt typecheck proto bench-codecs clean-venv

# The editable install: setuptools warns, in a screen of asterisks, that "folders in your
# working directory with the same name as your package may take precedence during imports".
# Here the working directory is the project and the tests import that very tree, so the
# warning (that one message alone) is filtered.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[venv] installing chatcap and its dependencies into $(VENV) (about a minute)"
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" \
	  $(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

## make demo — the main job; grows with each milestone (see README).
demo: $(STAMP)
	$(PY) -m bench demo

## make test — lint, types, then the test suite (benchmarks and slow fuzzing excluded).
test: $(STAMP) lint typecheck
	$(PY) -m pytest -q -m "not slow and not benchmark"

## make reliability — the full reliability and security suite (< 20 min) and its report.
reliability: $(STAMP)
	$(PY) -m bench reliability

## make lab — JupyterLab on notebooks/ at 127.0.0.1 (--allow-root only when run as root).
lab: $(STAMP)
	$(PY) -m bench notebooks --lab

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m bench notebooks --check

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## make proto — regenerate chat_pb2.py / chat_pb2.pyi from chat.proto (committed).
proto: $(STAMP)
	$(PY) -m chatcap.protocol.regen

bench-codecs: $(STAMP)
	$(PY) -m bench codecs

clean-venv:
	rm -rf $(VENV)
