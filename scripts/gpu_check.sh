#!/usr/bin/env bash
# The GPU check (issue 24) as one command: Qwen2.5-VL-7B and Qwen3-VL-8B built from their published
# configurations with random bf16 weights; vanilla, uniform-scale, visionzip, fastv and resadapt-budget at
# budgets 1.0, 0.25 and 0.1, at 32 and 128 frames of a generated 720p video; every stage timed, peak
# GPU memory, prefill MFU, tokens against the model-free arithmetic, the planner's share, and the
# share of wall time outside the model with and without prefetch (docs/gpu-bench.md).
#
# Needs no network: python3 with CUDA torch and transformers >= 5.17 (tested on CPU with 5.17 and 5.23),
# click, pyyaml, numpy, pillow, tqdm, and a video library (decord or PyAV, else OpenCV). Wheels put in
# .whl/ are installed first (for a machine that lacks something). New measurements stop starting after
# GPU_CHECK_DEADLINE seconds (default 450), so the whole script ends within 10 minutes on one H100.
#
# Writes docs/gpu-bench-<gpu name>-<date>.json and the note beside it (.md), both after every group
# so that a killed run keeps what it measured, and, when $OUT is set (the device machine's return
# folder), copies them and the log there.
# Extra arguments go to `resadapt-eval bench gpu` (e.g. --gpu-backbones qwen3-vl-8b to rerun one).
# GPU_CHECK_CPU=1 lets the script itself run on a CPU (with --gpu-tiny ...: a smoke test of the script).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=/tmp/gpu-check-site
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
"$PY" - <<'PYEOF'
import importlib.util as u, torch, transformers
import os
assert torch.cuda.is_available() or os.environ.get("GPU_CHECK_CPU") == "1", "no CUDA device here: the GPU check runs on a GPU machine (the CPU part is tests/test_bench_gpu.py)"
video = [m for m in ("decord", "av", "cv2") if u.find_spec(m)]
assert video, "no video library (decord, av or cv2): carry one as a wheel in .whl/"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, "
      f"video: {', '.join(video)}, flash-attn: {bool(u.find_spec('flash_attn'))}", flush=True)
PYEOF
LOG=/tmp/gpu-check.log
start=$(date +%s)
"$PY" -m resadapt_eval bench gpu --gpu-deadline "${GPU_CHECK_DEADLINE:-450}" \
  --json /tmp/gpu-check-bench.json "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
echo "gpu check: exit $status after $(( $(date +%s) - start )) s"
report=$(ls -t docs/gpu-bench-*.json 2>/dev/null | head -n 1 || true)
if [ -n "${OUT:-}" ]; then
  cp "$LOG" "$OUT/"
  if [ -n "$report" ]; then cp "$report" "${report%.json}.md" "$OUT/"; fi
fi
exit "$status"
