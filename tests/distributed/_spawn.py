"""Start one script as ``world`` gloo processes on this machine and collect what each rank saved.

Each rank runs ``python <script> <out>`` with the usual ``torchrun`` variables (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` on a free local port), one torch
thread, and saves its results to ``<out>/rank<r>.pt``; a failing rank fails the caller with the
tail of its log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(script: Path, out: Path, world: int = 2, timeout: float = 300) -> list[Any]:
    """Every rank's saved results, in rank order."""
    env = {
        **os.environ,
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(out)],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(world)
    ]
    logs = [p.communicate(timeout=timeout)[0].decode(errors="replace") for p in procs]
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank}/{world} failed:\n{logs[rank][-4000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def rank_main(out_dir: str, run: Callable[[], Any]) -> None:
    """The body of a rank: join the gloo group, ``run()``, save its results for
    :func:`run_ranks` (a traceback goes to ``<out>/rank<r>.err``), leave the group."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        results = run()
        dist.barrier()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    except Exception:
        (Path(out_dir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()
