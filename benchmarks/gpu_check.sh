#!/usr/bin/env bash
# Issue 13's GPU checks in one call on a lent GPU machine, from the repository root: the CUDA tests
# (pytest -m cuda), then the GPU columns of the block's benchmark (block and ordinary head on the GPU,
# and on the CPU of the same machine, with 1-8 episode workers on its 16 cores: threads.AUTO_WORKERS)
# and of the estimator's (solver="torch" on the GPU against Clarabel and the CPU). Prepare the wheels
# first (bash benchmarks/gpu_wheels.sh), then, with the device tool:
# run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540).
# The log is also written to $OUT/gpu_check.log (or /tmp). DEVICE=cpu PYTHON=... runs the same steps
# on a CPU machine (the CUDA tests then skip): a dry run of the wheels and the commands.
set -uo pipefail
device="${DEVICE:-cuda}"
python="${PYTHON:-python3}"
log="${OUT:-/tmp}/gpu_check.log"
mkdir -p "$(dirname "$log")"
exec > >(tee "$log") 2>&1
site=/tmp/convexnorm-site
"$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    || { echo "gpu_check: the wheels in .whl/ did not install (bash benchmarks/gpu_wheels.sh prepares them)"; exit 2; }
export PYTHONPATH="$PWD:$site" PYTHONUNBUFFERED=1
"$python" - "$device" <<'PY'
import sys, torch, cvxpy, cvxpylayers, diffcp
device = torch.device(sys.argv[1])
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
print(f"{name}; torch {torch.__version__}, cvxpy {cvxpy.__version__}, cvxpylayers {cvxpylayers.__version__}, "
      f"diffcp {diffcp.__version__}, {torch.get_num_threads()} CPU threads")
PY
failed=0
step() {
    echo "== $*"
    timeout 240 "$@" || { echo "== failed ($?): $*"; failed=1; }
}
step "$python" -m pytest -q -m cuda tests
cd benchmarks
step "$python" bench_block_head.py --device "$device" --workers 1 2
[ "$device" = cpu ] || step "$python" bench_block_head.py --device cpu --head-threads 1 --sizes 64x8x64 \
    --workers 1 2 4 8
step "$python" bench_solvers.py --sizes 128 --ranks 16 --gates 128 --solvers clarabel torch --device "$device"
exit "$failed"
