#!/bin/bash
# The prepared GPU-session check (docs/gpu.md): kernel tests on CUDA, the kernel benchmark against torch SDPA,
# `mmaccel bench` on random-llava-1.5-7b (kernels, balanced) and on shapes-image, and a profile of the kernels
# preset's generate. Run from the repository root; results land in $OUT (default /tmp/gpu-check).
#
# mmaccel needs transformers >=5.24,<6. Where the GPU machine has an older one and no network, carry wheels in .whl/
# (ignored by git): transformers 5.25.0, kernels 0.19.1, tomlkit, huggingface_hub 2.4.0, httpx2, httpcore2,
# truststore, fetched with `pip download --no-deps --only-binary=:all: --python-version 3.12 ...`; they are
# installed into /tmp/site only when the machine's transformers is too old.
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"; LOG=$OUT/run.log
step() { echo "=== $(date +%T) $*" | tee -a "$LOG"; }
step start
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
supported() { python3 -c "from mmaccel.compat import require_supported_transformers as r; r()" >>"$LOG" 2>&1; }
if ! supported && ls .whl/*.whl >/dev/null 2>&1; then
  step "transformers too old here: installing the carried wheels into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__,
'transformers', transformers.__version__)" 2>&1 | tee -a "$LOG"
step "kernel tests on CUDA"
timeout 200 python3 -m pytest -q -p no:cacheprovider -n 8 tests/kernels 2>&1 | tail -15 | tee -a "$LOG"
step "kernel benchmark"
timeout 200 python3 -m mmaccel.kernels.benchmark --json "$OUT/kernels.json" 2>&1 | grep -v "Warning\|scaled_dot" \
  | tee -a "$LOG"
bench() { timeout 150 python3 -m mmaccel bench --device cuda --no-progress "$@" 2>&1 | grep -v "Warn\|warn" \
  | tee -a "$LOG"; }
for preset in kernels balanced; do
  step "bench random-llava-1.5-7b $preset"
  bench --model random-llava-1.5-7b --preset "$preset" --samples 2 --repeats 3 --max-new-tokens 64 \
    --json "$OUT/bench_7b_$preset.json"
done
step "bench shapes-image"
bench --json "$OUT/bench_shapes_image.json"
step "profile random-llava-1.5-7b kernels"
timeout 120 python3 scripts/profile_generate.py --model random-llava-1.5-7b --preset kernels --rows 25 \
  >"$OUT/profile_7b_kernels.txt" 2>&1
grep "^===" "$OUT/profile_7b_kernels.txt" | tee -a "$LOG"
step done
