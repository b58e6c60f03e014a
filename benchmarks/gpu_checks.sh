#!/usr/bin/env bash
# The GPU checks (issues #33 and #28) in one script, for a lent H100/H200: ONE JOB ON THE CARD AT A
# TIME, in order of value, each under its own time limit, results packed as they come.
#
# Jobs, one after another (a job that would start with less than MIN_LEFT seconds of the overall
# BUDGET left is skipped and listed as such):
#   1. `optforge bench --device cuda` (alone, first: its figures are cost ratios);
#   2. the CUDA tests of WTA-CRS (`torch.cuda.set_sync_debug_mode("error")`: no host sync);
#   3. `benchmarks/wta_crs.py --device cuda` (WTA-CRS memory–time frontier, step-time ratios);
#   4. `benchmarks/wta_crs_compile.py --device cuda` (compiled WTA-CRS: unbiased gradient, CUDA
#      kernels and step time against a compiled nn.Linear);
#   5. the full scale, one seed, of FULL_JOBS; then the quick scale, one seed, of QUICK_JOBS.
# Every reproduction runs in one process (`--workers 1`): several processes on one card are
# time-sliced and make every figure contended. After each job its log, exit status and results store
# are copied under "$OUT/jobs/<job>/" and "$OUT/summary.txt" is rewritten, so a run cut short loses
# only the job in flight. Everything is also packed into "$OUT/results.tar.gz" at the end.
#
# Usage (from the repository root; the package need not be installed):
#   OUT=/some/dir bash benchmarks/gpu_checks.sh
#   SMOKE=1 OUT=/tmp/x bash benchmarks/gpu_checks.sh   # CPU rehearsal: --scale smoke, tiny sizes
#
# Environment: OUT (output folder, default ./gpu-out), SMOKE=1 (CPU rehearsal), PYTHON (default
# python3), BUDGET (seconds for the whole script, default 540), LIMIT (seconds per job, default
# 240), MIN_LEFT (default 30), FULL_JOBS / QUICK_JOBS (space-separated names, in order).
set -u

OUT=${OUT:-./gpu-out}
PYTHON=${PYTHON:-python3}
BUDGET=${BUDGET:-540}
LIMIT=${LIMIT:-240}
MIN_LEFT=${MIN_LEFT:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg PYTHONWARNINGS=ignore PYTHONUNBUFFERED=1

if [ "${SMOKE:-0}" = "1" ]; then
    SCALE=smoke QUICK_SCALE=smoke DEVICE=cpu BENCH_FLAGS="--quick"
    FRONTIER_FLAGS="--models relu-mlp --width 32 --depth 1 --batch 2 --seq 8 --repeats 1 --layer-rows 64 --layer-width 16"
    COMPILE_FLAGS="--steps 20 --configs wta-0.25 --layer-rows 64 --layer-width 16 --repeats 1 --llama-width 0"
else
    SCALE=full QUICK_SCALE=quick DEVICE=cuda BENCH_FLAGS="" FRONTIER_FLAGS="" COMPILE_FLAGS=""
fi
FULL_JOBS=${FULL_JOBS:-"wta-crs sven gradient-noise elr adadagrad gamp-rie meco sso gns"}
QUICK_JOBS=${QUICK_JOBS:-"oblr-po loku directional-dfo ttsnap bayes-unlearnable"}

mkdir -p "$OUT/jobs"
START=$(date +%s)
JOBS_SEEN=0
CLI=("$PYTHON" -m optforge.cli)  # an array: `timeout` cannot run a shell function

{
    echo "started $(date -u +%FT%TZ) scale=$SCALE device=$DEVICE budget=${BUDGET}s limit=${LIMIT}s"
    "$PYTHON" -c 'import torch, sys; print("python", sys.version.split()[0], "torch",
torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    echo "cpus $(nproc --all)"
} > "$OUT/environment.txt" 2>&1

summarize() {
    "$PYTHON" - "$OUT" > "$OUT/summary.txt.tmp" 2>&1 <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
notes = {"0": "ok / all claims held", "1": "some claim FAILED", "2": "error (see log)",
         "124": "TIMED OUT", "137": "killed (time/memory)", "skipped": "not started: budget"}
print((out / "environment.txt").read_text().strip())
print(f"{'job':<28}{'exit':<9}{'seconds':<9}note")
for job in sorted((out / "jobs").iterdir(), key=lambda p: int((p / "index").read_text())):
    rc = (job / "rc").read_text().strip() if (job / "rc").exists() else "running"
    secs = (job / "seconds").read_text().strip() if (job / "seconds").exists() else ""
    print(f"{job.name:<28}{rc:<9}{secs:<9}{notes.get(rc, '')}")
    for record_file in sorted(job.glob("store/records/*/*.json")):
        record = json.loads(record_file.read_text())
        held = sum(bool(c["held"]) for c in record["claims"])
        info = record["run_info"]
        print(f"    {record['name']} {record['scale']}: claims {held}/{len(record['claims'])}, "
              f"wall {info['wall_time_s']:.1f} s on {info['device_name']}")
        if record["name"] == "bench":
            for row, per_seed in record["metrics"].items():
                ratio = per_seed["0"].get("ratio")
                print(f"        {row:<34} ratio {'n/a' if ratio is None else format(ratio, '.3g')}")
EOF
    mv "$OUT/summary.txt.tmp" "$OUT/summary.txt"
}

# job NAME COMMAND...: runs alone under `timeout`; its log, exit status, time and store
# ("$OUT/jobs/NAME/store", passed to the command as $STORE) land under "$OUT/jobs/NAME".
job() {
    local name=$1
    shift
    local dir="$OUT/jobs/$name" left=$(( BUDGET - ($(date +%s) - START) ))
    mkdir -p "$dir"
    JOBS_SEEN=$(( JOBS_SEEN + 1 ))
    echo "$JOBS_SEEN" > "$dir/index"
    if [ "$left" -lt "$MIN_LEFT" ]; then
        echo skipped > "$dir/rc"
        summarize
        return
    fi
    local limit=$(( left < LIMIT ? left : LIMIT )) began
    began=$(date +%s)
    STORE="$dir/store" timeout -k 10 "$limit" "$@" > "$dir/log.txt" 2>&1
    echo $? > "$dir/rc"
    echo $(( $(date +%s) - began )) > "$dir/seconds"
    summarize
}

job bench "${CLI[@]}" bench --device "$DEVICE" $BENCH_FLAGS --out "$OUT/jobs/bench/store" --json
if [ "$DEVICE" = cuda ]; then
    job wta-crs-cuda-tests "$PYTHON" -m pytest -q -p no:cacheprovider \
        "$ROOT/tests/nn/wta_crs/test_wta_measure.py" -k cuda
fi
job wta-crs-frontier "$PYTHON" "$ROOT/benchmarks/wta_crs.py" --device "$DEVICE" $FRONTIER_FLAGS \
    --json "$OUT/jobs/wta-crs-frontier/wta-crs-frontier.json" \
    --plot "$OUT/jobs/wta-crs-frontier/wta-crs-frontier.png" --note "gpu_checks.sh, alone on the card"
job wta-crs-compile "$PYTHON" "$ROOT/benchmarks/wta_crs_compile.py" --device "$DEVICE" $COMPILE_FLAGS \
    --json "$OUT/jobs/wta-crs-compile/wta-crs-compile.json" --note "gpu_checks.sh, alone on the card"
for name in $FULL_JOBS; do
    job "$name-$SCALE" "${CLI[@]}" reproduce "$name" --scale "$SCALE" --seeds 1 \
        --device "$DEVICE" --workers 1 --out "$OUT/jobs/$name-$SCALE/store"
done
for name in $QUICK_JOBS; do
    job "$name-$QUICK_SCALE" "${CLI[@]}" reproduce "$name" --scale "$QUICK_SCALE" --seeds 1 \
        --device "$DEVICE" --workers 1 --out "$OUT/jobs/$name-$QUICK_SCALE/store"
done

echo "total wall $(( $(date +%s) - START )) s" >> "$OUT/summary.txt"
tar -czf "$OUT/results.tar.gz" -C "$OUT" jobs environment.txt summary.txt
cat "$OUT/summary.txt"
