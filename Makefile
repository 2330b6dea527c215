# Each target bootstraps its venv on first use; later runs reuse it (idempotent).
#   .venv         the port + the legacy Keras original (transformers 4.57.x, TensorFlow): make test, make parity
#   .venv-modern  the port alone on the current transformers 5.x line, no TensorFlow: make test-modern
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODERN := .venv-modern
MODERN_PY := $(MODERN)/bin/python
MODERN_STAMP := $(MODERN)/.installed
LEGACY_EXTRAS := legacy,keras3,test
MODERN_EXTRAS := modern,test
# pytest-xdist workers of `make test` and `make test-modern`: one pytest process leaves one of this
# machine's two cores idle (most tests run on one thread). tests/conftest.py marks the tests with
# xdist groups for --dist loadgroup (the legacy recording made on one worker; the `test` extra keeps
# pytest below 9, where pytest-xdist 3.8 applies no group).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadgroup

.PHONY: test test-modern test-rounding test-portability parity reference install install-modern clean

# The project's own (editable) build writes its metadata into the tree: two venvs bootstrapped at
# once (`make -j2 install test-modern`, as .ci/run does) take turns for that step alone.
BUILD_LOCK := $(if $(shell command -v flock),flock .build.lock,)

# $(1): venv directory, $(2): extras
define bootstrap
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	# torch first and pinned: it resolves to the CPU wheel on local disk, never a CUDA build.
	$(1)/bin/python -m pip install --quiet "torch==2.13.0"
	$(1)/bin/python scripts/requirements.py $(2) > $(1)/requirements.txt
	$(1)/bin/python -m pip install --quiet -r $(1)/requirements.txt
	$(BUILD_LOCK) $(1)/bin/python -m pip install --quiet --no-deps -e .
	touch $(1)/.installed
endef

$(STAMP): pyproject.toml
	$(call bootstrap,$(VENV),$(LEGACY_EXTRAS))

$(MODERN_STAMP): pyproject.toml
	$(call bootstrap,$(MODERN),$(MODERN_EXTRAS))

install: $(STAMP)

install-modern: $(MODERN_STAMP)

# Keras 3 runs in a pytest process of its own: importing it in-process reconfigures TensorFlow's
# logging, and the legacy tests read `fit`'s "Gradients do not exist" warning from that log.
test: $(STAMP)
	$(PY) -m pytest -q $(XDIST) --ignore=tests/keras3
	$(PY) -m pytest -q tests/keras3

# The shipped bundle checked, and recorded again, under capped instruction sets and thread counts
# (parity.portability): one fresh process per setting, three at a time; a setting that reads back as the machine as it
# is (checked and recorded by `make test`) or as an earlier setting is not run twice.
test-portability: $(STAMP)
	$(PY) -m pytest -q -m portability tests/legacy/test_portability.py

# The port's own tests on transformers 5.x, and the port checked against the shipped reference
# bundle; TensorFlow must be absent there. Tests marked `line_independent` (signals, run locks,
# atomic checkpoint writes, argument errors: nothing a transformers line can change) run in
# `make test` only.
test-modern: $(MODERN_STAMP)
	! $(MODERN_PY) -c "import tensorflow" 2>/dev/null
	$(MODERN_PY) -m pytest -q $(XDIST) -m "not portability and not line_independent"
	$(MODERN)/bin/qarac-parity check $(REFERENCE) --quiet

# The port-only suite once more under settings that change float32 rounding on any x86 machine (MKL's
# compatible code path, torch's scalar kernels, oneDNN capped, one thread): a test that holds one CPU's
# rounding to a bound below that rounding's own scale fails here on the developer's machine, not on
# another CPU in CI. scripts/rounding_readback.py says which kernels the settings moved (and stops the
# pass when none did). The embedded tiny model is built first as is: torch's normal sampler has its own
# AVX2 kernel, so a model built under the scalar kernels would hold other weights (hence its digest test
# is not run here; it is run by `make test` and `make test-modern`). Inductor gets its own cache: its
# precompiled header built for one capability does not compile for another.
ROUNDING_SETTINGS := MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 OMP_NUM_THREADS=1
ROUNDING_HOME := .pytest_cache/rounding
test-rounding: $(MODERN_STAMP)
	$(MODERN_PY) scripts/rounding_readback.py $(ROUNDING_SETTINGS)
	QARAC_HOME=$(ROUNDING_HOME)/qarac_home $(MODERN_PY) -c "from qarac.presets import tiny_model_dir; tiny_model_dir()"
	env $(ROUNDING_SETTINGS) QARAC_HOME=$(ROUNDING_HOME)/qarac_home TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/$(ROUNDING_HOME)/inductor \
		$(MODERN_PY) -m pytest -q $(XDIST) -m "not portability and not line_independent" \
		--deselect tests/test_packaging.py::test_tiny_checkpoint_is_the_same_on_every_transformers_line

PARITY_OUT ?= out/parity
# The embedded tiny model's reference bundle, shipped in the repo; `make reference` records it again.
REFERENCE := reference/tiny
REFERENCE_STEPS := 3

reference: $(STAMP)
	$(VENV)/bin/qarac-parity record --out $(REFERENCE) --train-steps $(REFERENCE_STEPS) --overwrite

parity: $(STAMP)
	mkdir -p $(PARITY_OUT)
	$(VENV)/bin/qarac-parity --json $(PARITY_OUT)/report.json --markdown $(PARITY_OUT)/report.md --plot $(PARITY_OUT)/gradient_flow.png

clean:
	rm -rf $(VENV) $(MODERN)
