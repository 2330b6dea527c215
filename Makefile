# Each target bootstraps .venv on first use; later runs reuse it (idempotent).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test parity install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: it resolves to the CPU wheel on local disk, never a CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[legacy,test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

PARITY_OUT ?= out/parity

parity: $(STAMP)
	mkdir -p $(PARITY_OUT)
	$(VENV)/bin/qarac-parity --json $(PARITY_OUT)/report.json --markdown $(PARITY_OUT)/report.md --plot $(PARITY_OUT)/gradient_flow.png

clean:
	rm -rf $(VENV)
