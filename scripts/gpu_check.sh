#!/usr/bin/env bash
# The GPU check, at most about 8 minutes on one GPU: environment, the CUDA tests, step times in
# fp32 and bf16 (and bf16 channels-last), the runtime estimate of the paper DAG, and a
# PneumoniaMNIST CSI + DIA slice at a reduced budget in both precisions. Everything goes to one
# folder (default results/gpu_check/), summary.txt first; README "Time and disk" is filled from it.
#
#   bash scripts/gpu_check.sh [OUT]
#   PNEUMONIAMNIST_NPZ=path/to/pneumoniamnist.npz bash scripts/gpu_check.sh   # no download
#
# Without a CUDA GPU it says so in one line and exits 0. Each part has its own time limit; a
# part that fails or runs out of time is reported as such and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
PY=.venv/bin/python
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is false); nothing to check"
    exit 0
fi
OUT="${1:-results/gpu_check}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

part() { # part NAME SECONDS COMMAND...: run one part under a time limit, log its status
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    local status="ok"
    [ $rc -eq 124 ] && status="stopped at its ${limit} s limit"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="failed (exit $rc)"
    echo "$name: $status in $((SECONDS - start)) s (log: $OUT/$name.txt)" | tee -a "$SUMMARY"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PY" - <<'EOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
print(f"cuDNN {torch.backends.cudnn.version()}, device {torch.cuda.get_device_name()}")
print(f"bf16 supported: {torch.cuda.is_bf16_supported()}, CPU threads {torch.get_num_threads()}")
EOF
} >"$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt" >>"$SUMMARY"

part cuda_tests 120 "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider
part step_times 90 "$PY" scripts/bench_step.py --precision fp32 bf16 --steps 10
part step_times_nhwc 60 "$PY" scripts/bench_step.py --precision bf16 --channels-last --steps 10
part estimate 120 "$PY" scripts/estimate_runtime.py --device cuda --reps 1
"$PY" scripts/gpu_slice_config.py "$OUT" >>"$SUMMARY" 2>&1
for precision in fp32 bf16; do
    configs=("$OUT/slice.yaml")
    [ "$precision" = bf16 ] && configs+=(config/bf16.yaml)
    part "slice_$precision" 150 .venv/bin/snakemake -d "$OUT/slice_$precision" \
        --configfile "${configs[@]}" --replace-workflow-config --cores 4 \
        --resources gpu=1 --rerun-incomplete results/tables/table1_main.csv
done
"$PY" scripts/gpu_slice_config.py --report "$OUT" >>"$SUMMARY" 2>&1
grep -E "ms/step|^total" "$OUT/step_times.txt" "$OUT/step_times_nhwc.txt" "$OUT/estimate.txt" \
    >>"$SUMMARY"
echo "gpu_check: summary in $SUMMARY"
cat "$SUMMARY"
