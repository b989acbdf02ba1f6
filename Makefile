# Two entry points (see README): `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
# The CPU build on machines without a GPU resolves from this exact pin; override for another build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.gaussquant-installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/gaussquant demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/gaussquant bench search

clean:
	rm -rf $(VENV) build src/*.egg-info
