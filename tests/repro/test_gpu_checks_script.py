"""``benchmarks/gpu_checks.sh`` (the GPU checks, one job on the card at a time): with no budget
left every job is listed as not started, the summary and the archive are still written, and the
jobs come in the order of value (the performance suite first)."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_checks_skips_jobs_past_the_budget_and_still_packs(tmp_path):
    env = {
        **os.environ,
        "SMOKE": "1",
        "OUT": str(tmp_path),
        "BUDGET": "1",
        "FULL_JOBS": "sven",
        "QUICK_JOBS": "gns",
        "PYTHON": sys.executable,
    }
    subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_checks.sh")],
        env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    summary = (tmp_path / "summary.txt").read_text()
    jobs = [line.split()[0] for line in summary.splitlines() if "not started: budget" in line]
    assert jobs == ["bench", "wta-crs-frontier", "wta-crs-compile", "sven-smoke", "gns-smoke"]
    with tarfile.open(tmp_path / "results.tar.gz") as archive:
        assert "summary.txt" in archive.getnames()
