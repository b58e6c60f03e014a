#!/usr/bin/env bash
# The GPU checks of issue #20 in one script, for a lent H100/H200 (<= 5 minutes of wall time).
#
# Runs in parallel, each job under its own `timeout`:
#   * `optforge bench --device cuda` (the performance suite; ratios vs Adam, nn.Linear, ...);
#   * `optforge reproduce gradient-noise --scale full --device cuda --executor processes
#     --workers 10`;
#   * the other `full` scales that honour --device cuda and fit the time box.
# Each job writes its own results store (no concurrent SQLite writers); at the end every record
# is rendered into one report and everything is packed into "$OUT/results.tar.gz" (plus a
# one-screen "$OUT/summary.txt").
#
# Usage (from the repository root; the package need not be installed):
#   OUT=/some/dir bash benchmarks/gpu_checks.sh
#   SMOKE=1 OUT=/tmp/x bash benchmarks/gpu_checks.sh   # tiny CPU rehearsal: --scale smoke
#
# Environment: OUT (output folder, default ./gpu-out), SMOKE=1 (CPU rehearsal), PYTHON (default
# python3), LIMIT (seconds per job, default 250), FULL_JOBS / QUICK_JOBS (space-separated names).
set -u

OUT=${OUT:-./gpu-out}
PYTHON=${PYTHON:-python3}
LIMIT=${LIMIT:-250}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg PYTHONWARNINGS=ignore PYTHONUNBUFFERED=1

if [ "${SMOKE:-0}" = "1" ]; then
    SCALE=smoke DEVICE=cpu WORKERS=2 BENCH_FLAGS="--quick"
else
    SCALE=full DEVICE=cuda WORKERS=6 BENCH_FLAGS=""
fi

WORK="$OUT/work"
mkdir -p "$WORK/logs" "$WORK/stores"
START=$(date +%s)
CLI=("$PYTHON" -m optforge.cli)  # an array: `timeout` cannot run a shell function

{
    echo "started $(date -u +%FT%TZ) scale=$SCALE device=$DEVICE limit=${LIMIT}s"
    "$PYTHON" -c 'import torch, sys; print("python", sys.version.split()[0], "torch",
torch.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
    nproc
} > "$WORK/environment.txt" 2>&1

# job NAME COMMAND...: runs in the background with a timeout, log and exit status per job.
job() {
    local name=$1
    shift
    (
        timeout -k 10 "$LIMIT" "$@" > "$WORK/logs/$name.log" 2>&1
        echo $? > "$WORK/logs/$name.rc"
    ) &
}

job bench "${CLI[@]}" bench --device "$DEVICE" $BENCH_FLAGS --out "$WORK/stores/bench" --json
job gradient-noise "${CLI[@]}" reproduce gradient-noise --scale "$SCALE" --device "$DEVICE" \
    --executor processes --workers "$WORKERS" --out "$WORK/stores/gradient-noise"
# Full scales that take --device (one seed each, to fit the time box), and the quick scale on the
# device for the reproductions whose full scale is too long for one lease (the --device path).
FULL_JOBS=${FULL_JOBS:-"wta-crs sven sso gns altmin-completion meco elr reno gamp-rie"}
QUICK_JOBS=${QUICK_JOBS:-"adadagrad oblr-po loku bayes-unlearnable ttsnap"}
QUICK_SCALE=quick
[ "${SMOKE:-0}" = "1" ] && QUICK_SCALE=smoke
for name in $FULL_JOBS; do
    job "$name" "${CLI[@]}" reproduce "$name" --scale "$SCALE" --seeds 1 --device "$DEVICE" \
        --out "$WORK/stores/$name"
done
for name in $QUICK_JOBS; do
    job "$name-$QUICK_SCALE" "${CLI[@]}" reproduce "$name" --scale "$QUICK_SCALE" --seeds 1 \
        --device "$DEVICE" --out "$WORK/stores/$name"
done
wait

# One report over every store, and a summary of exit statuses (124/137: hit the time limit).
"$PYTHON" - "$WORK" > "$WORK/summary.txt" 2>&1 <<'EOF'
import sys
from pathlib import Path

from optforge.repro import RunStore
from optforge.repro.report import render_report

work = Path(sys.argv[1])
records = []
for store in sorted((work / "stores").iterdir()):
    records += RunStore(store).latest()
if records:
    render_report(records, work / "report")
print("job                 exit  note")
for rc_file in sorted((work / "logs").glob("*.rc")):
    rc = rc_file.read_text().strip()
    note = {"0": "all claims held", "1": "some claim FAILED", "2": "error (see log)",
            "124": "TIMED OUT", "137": "killed (time/memory)"}.get(rc, "")
    print(f"{rc_file.stem:<20}{rc:<6}{note}")
print()
for r in records:
    held = sum(c["held"] for c in r["claims"])
    print(f"{r['name']:<20}{r['scale']:<6} claims {held}/{len(r['claims'])} "
          f"wall {r['run_info']['wall_time_s']:.1f}s on {r['run_info']['device_name']}")
    if r["name"] == "bench":
        for row, per_seed in r["metrics"].items():
            ratio = per_seed["0"].get("ratio")
            print(f"    {row:<34} ratio {'n/a' if ratio is None else format(ratio, '.3g')}")
EOF
echo "total wall $(( $(date +%s) - START )) s" >> "$WORK/summary.txt"
cp "$WORK/summary.txt" "$OUT/summary.txt"
tar -czf "$OUT/results.tar.gz" -C "$OUT" work && rm -rf "$WORK"
cat "$OUT/summary.txt"
