"""Benchmark: where sketched (robust) AltMin beats exact AltMin — the crossover in k and |Ω| —
and time to a target error against exact AltMin and SoftImpute.

Subcommands (all in one process, ratios of arms measured side by side):

``crossover``
    Time of one sweep (a V- and a U-half-step; median of interleaved rounds; CPU time of the
    process by default, ``--clock wall`` for :func:`optforge.repro.timing.time_interleaved`'s
    wall time, always wall time on CUDA) of the optimised exact solver and of the
    sketch solver (CountSketch s = 4k, q PCG steps), (1) versus k at fixed n and p, and (2)
    versus |Ω| = p·n² at fixed k and p (n varies), plus the counted flops. Writes a JSON record
    (``--json``) with the machine, versions and every measurement.
``backends``
    One sweep of each solver with each backend (``auto``, ``dense``, ``sparse`` and ``padded``,
    the implementation before issue #27: padded (n, d_max, k) gathers, independent per-column
    sketches, QR preconditioner) at ``--n``, ``--p`` for each of ``--ks``: before/after times.
``plot``
    Draws the crossover figure of the docs page from that JSON (``--json`` → ``--png``).
``goal``
    Time to relative error 1e-6 (``--target``) of exact and sketch (q = 2) AltMin on an
    incoherent n × n problem at p = 4k·ln(n)/n for each ``--ks`` (the issue's goal: k = 64,
    n ≥ 5000), with the former padded exact solver at k = 16; JSON to stdout or ``--json``.
``table``
    The former table: time to ``--target`` of exact vs robust AltMin and to ``--soft-target``
    of robust AltMin vs SoftImpute (the same target for both), at ``--sizes``.

Run::

    .venv/bin/python benchmarks/altmin.py crossover --json docs/methods/img/altmin-crossover.json
    .venv/bin/python benchmarks/altmin.py plot --json docs/methods/img/altmin-crossover.json \\
        --png docs/methods/img/altmin-crossover.png
    .venv/bin/python benchmarks/altmin.py backends --n 1000 --p 0.5 --ks 16 64
    .venv/bin/python benchmarks/altmin.py goal --n 5000 --ks 16 64
    .venv/bin/python benchmarks/altmin.py table --device cuda --sizes 4000 16000 --rank 32 --no-soft
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time

import torch

from optforge.matrix.altmin import ExactNormalEquations, SketchPreconditionedCG
from optforge.problems import make_incoherent_lowrank
from optforge.repro.bench import altmin_time_to_target, soft_impute_time_to_target
from optforge.repro.timing import time_interleaved


def _pattern(n: int, p: float, seed: int, device: str, dtype: torch.dtype):
    """A Bernoulli(p) pattern of an n × n matrix with random values (timing only)."""
    g = torch.Generator(device=device).manual_seed(seed)
    rows, cols = (torch.rand(n, n, generator=g, device=device) < p).nonzero().unbind(1)
    return rows, cols, torch.randn(rows.numel(), generator=g, device=device, dtype=dtype)


def _cpu_interleaved(steps, repeats: int) -> dict[str, float]:
    """Median **CPU** seconds (``time.process_time``) per call, in interleaved rounds as
    :func:`optforge.repro.timing.time_interleaved` does for wall time. On a machine shared with
    other jobs the process's CPU time does not count the time it waits for a core, so it is far
    less noisy than wall time for single-threaded runs (cache and memory-bandwidth contention
    still show)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.process_time()
            step()
            times[name].append(time.process_time() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _sweep_times(
    n, k, rows, cols, vals, q, repeats, device, backends=("auto",), clock="cpu"
) -> dict[str, float]:
    """Median time of one sweep and counted flops of both solvers (interleaved rounds; CPU
    time on a CPU unless ``clock="wall"``); keys ``exact_s``/``sketch_s`` for the ``"auto"``
    backend, ``exact[B]_s`` for another."""
    g = torch.Generator(device=device).manual_seed(1)
    u0 = torch.linalg.qr(torch.randn(n, k, generator=g, device=device, dtype=vals.dtype)).Q
    solvers = {}
    for b in backends:
        tag = "" if b == "auto" else f"[{b}]"
        solvers[f"exact{tag}"] = ExactNormalEquations(backend=b)
        solvers[f"sketch{tag}"] = SketchPreconditionedCG(max_iter=q, generator=g, backend=b)
    flops: dict[str, float] = {}

    def sweep(solver):
        def run():
            v = torch.linalg.qr(solver(u0, rows, cols, vals, n)).Q
            f = solver.last_flops
            solver(v, cols, rows, vals, n)
            return f + solver.last_flops

        return run

    steps = {name: sweep(s) for name, s in solvers.items()}
    for name, step in steps.items():
        flops[name] = step()  # builds the solver's patterns (once per fit, not timed)
    if device.startswith("cuda") or clock == "wall":
        seconds = time_interleaved(steps, device, repeats=repeats, warmup=0)
    else:
        seconds = _cpu_interleaved(steps, repeats)
    out = {f"{name}_s": t for name, t in seconds.items()}
    if "exact" in seconds:
        out["ratio"] = seconds["sketch"] / seconds["exact"]
    out.update({f"{name}_flops": f for name, f in flops.items() if "[" not in name})
    return out


def _lowrank(n: int, k: int, p: float, device: str):
    """``make_incoherent_lowrank(n, n, k, p=p, generator=seed 0)``, the same draws, but with the
    observed values computed a block of entries at a time: its one-shot
    ``(U*[rows] · s* · V*[cols]).sum(1)`` holds three |Ω| × k temporaries (17 GB at n = 5000,
    k = 64), more than this shared machine has."""
    gen = torch.Generator(device=device).manual_seed(0)
    u_star = torch.linalg.qr(torch.randn(n, k, generator=gen, device=device, dtype=torch.float64)).Q
    v_star = torch.linalg.qr(torch.randn(n, k, generator=gen, device=device, dtype=torch.float64)).Q
    s_star = torch.linspace(1.0, 2.0, k, dtype=torch.float64, device=device) * math.sqrt(n * n / k)
    block, found = max(1, 2**24 // n), []
    for r0 in range(0, n, block):
        mask = torch.rand(min(n, r0 + block) - r0, n, generator=gen, device=device) < p
        found.append(mask.nonzero() + torch.tensor([r0, 0], device=device))
    rows, cols = (t.contiguous() for t in torch.cat(found).unbind(1))
    step = 2**20
    vals = torch.cat(
        [
            (u_star[rows[a : a + step]] * s_star * v_star[cols[a : a + step]]).sum(1)
            for a in range(0, rows.numel(), step)
        ]
    )
    return u_star, s_star, v_star, rows, cols, vals


def _machine(args) -> dict:
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "command": " ".join(sys.argv),
    }


def crossover(args) -> dict:
    dtype = getattr(torch, args.dtype)
    out = {**_machine(args), "clock": args.clock, "q": args.q, "repeats": args.repeats}
    out.update(vs_k=[], vs_omega=[])
    rows, cols, vals = _pattern(args.n, args.p, 0, args.device, dtype)
    for k in args.ks:
        row = {"n": args.n, "p": args.p, "k": k, "n_obs": vals.numel()}
        row.update(
            _sweep_times(
                args.n, k, rows, cols, vals, args.q, args.repeats, args.device, clock=args.clock
            )
        )
        out["vs_k"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    for k in args.omega_ks:
        for n in args.omega_ns:
            rows, cols, vals = _pattern(n, args.p, 0, args.device, dtype)
            row = {"n": n, "p": args.p, "k": k, "n_obs": vals.numel()}
            row.update(
                _sweep_times(
                    n, k, rows, cols, vals, args.q, args.repeats, args.device, clock=args.clock
                )
            )
            out["vs_omega"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return out


def backends(args) -> dict:
    """One sweep of each solver with each backend (``padded`` is the implementation before
    issue #27), per k, interleaved: before/after figures."""
    dtype = getattr(torch, args.dtype)
    out = {**_machine(args), "clock": args.clock, "q": args.q, "repeats": args.repeats}
    out["rows"] = []
    rows, cols, vals = _pattern(args.n, args.p, 0, args.device, dtype)
    for k in args.ks:
        row = {"n": args.n, "p": args.p, "k": k, "n_obs": vals.numel()}
        row.update(
            _sweep_times(
                args.n,
                k,
                rows,
                cols,
                vals,
                args.q,
                args.repeats,
                args.device,
                args.backends,
                args.clock,
            )
        )
        out["rows"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return out


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.json) as fh:
        data = json.load(fh)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    ks = [r["k"] for r in data["vs_k"]]
    ax.loglog(ks, [r["exact_s"] for r in data["vs_k"]], "o-", label="exact (optimised)")
    ax.loglog(ks, [r["sketch_s"] for r in data["vs_k"]], "s-", label=f"sketch (q={data['q']})")
    first = data["vs_k"][0]
    ax.set_title(f"one sweep vs k (n = {first['n']}, p = {first['p']})")
    ax.set_xlabel("rank k")
    ax.set_ylabel(f"{data.get('clock', 'wall')} seconds per sweep (median)")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax = axes[1]
    for i, k in enumerate(sorted({r["k"] for r in data["vs_omega"]})):
        pts = [r for r in data["vs_omega"] if r["k"] == k]
        omega = [r["n_obs"] for r in pts]
        color = f"C{i + 2}"
        ax.loglog(omega, [r["exact_s"] for r in pts], "o-", color=color, label=f"exact, k = {k}")
        ax.loglog(omega, [r["sketch_s"] for r in pts], "s--", color=color, label=f"sketch, k = {k}")
    p = data["vs_omega"][0]["p"] if data["vs_omega"] else math.nan
    ax.set_title(f"one sweep vs |Ω| (p = {p}, n varies)")
    ax.set_xlabel("|Ω| (observed entries)")
    ax.set_ylabel(f"{data.get('clock', 'wall')} seconds per sweep (median)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"robust (sketched) vs exact AltMin, {data['device']}, {data['threads']} thread(s), "
        f"{data['dtype']}, {data['created'][:10]}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)


def goal(args) -> dict:
    out = {**_machine(args), "target": args.target, "rows": []}
    for k in args.ks:
        n = args.n
        p = min(1.0, 4 * k * math.log(n) / n)
        problem = _lowrank(n, k, p, args.device)
        arms = {
            "exact": ExactNormalEquations(),
            "sketch": SketchPreconditionedCG(
                max_iter=2, generator=torch.Generator(device=args.device).manual_seed(2)
            ),
        }
        if k == 16 and args.padded:
            arms["padded-exact"] = ExactNormalEquations(backend="padded")
        row: dict = {"n": n, "k": k, "p": p, "n_obs": problem[3].numel()}
        for name, solver in arms.items():
            hit = altmin_time_to_target(problem, solver, args.target, args.device, 30)
            row[f"{name}_s"], row[f"{name}_sweeps"] = hit.seconds, hit.iterations
        row["ratio_sketch_exact"] = row["sketch_s"] / row["exact_s"]
        out["rows"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return out


def table(args) -> None:
    dtype = getattr(torch, args.dtype)
    k = args.rank
    print(f"device={args.device} dtype={args.dtype} threads={args.threads} k={k}")
    print(
        "n     |Omega|   exact_s  robust_s  soft_s  robust_s(soft target)  "
        "exact/robust  soft/robust"
    )
    for n in args.sizes:
        p = min(1.0, 4 * k * math.log(n) / n)
        problem = make_incoherent_lowrank(
            n,
            n,
            k,
            p=p,
            generator=torch.Generator(device=args.device).manual_seed(0),
            dtype=dtype,
            device=args.device,
        )
        altmin_time_to_target(problem, ExactNormalEquations(), 1.0, args.device, 1)  # warm-up

        def robust():
            g = torch.Generator(device=args.device).manual_seed(2)
            return SketchPreconditionedCG(max_iter=2, generator=g)

        t_exact = altmin_time_to_target(
            problem, ExactNormalEquations(), args.target, args.device, args.max_sweeps
        ).seconds
        t_rob = altmin_time_to_target(
            problem, robust(), args.target, args.device, args.max_sweeps
        ).seconds
        t_rob_soft = altmin_time_to_target(
            problem, robust(), args.soft_target, args.device, args.max_sweeps
        ).seconds
        t_soft = (
            math.nan
            if args.no_soft
            else soft_impute_time_to_target(problem, args.soft_target).seconds
        )
        print(
            f"{n:<5} {problem[3].numel():<9} {t_exact:<8.3f} {t_rob:<9.3f} {t_soft:<7.3f} "
            f"{t_rob_soft:<22.3f} {t_exact / t_rob:<13.2f} {t_soft / t_rob_soft:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("crossover", "backends", "plot", "goal", "table"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="crossover/goal: write here; plot: read from here")
    parser.add_argument("--png", default="altmin-crossover.png")
    # crossover
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8, 16, 24, 32, 48, 64, 96])
    parser.add_argument("--omega-ks", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--omega-ns", type=int, nargs="+", default=[1000, 2000, 3000, 4000, 5000])
    parser.add_argument("--q", type=int, default=3)
    parser.add_argument(
        "--backends", nargs="+", default=["auto", "dense", "sparse", "padded"], help="backends"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="crossover/backends timer"
    )
    # goal / table
    parser.add_argument("--target", type=float, default=1e-6)
    parser.add_argument("--no-padded", dest="padded", action="store_false")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--soft-target", type=float, default=1e-2)
    parser.add_argument("--max-sweeps", type=int, default=30)
    parser.add_argument("--no-soft", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "plot":
        plot(args)
        return
    if args.command == "table":
        table(args)
        return
    record = {"crossover": crossover, "backends": backends, "goal": goal}[args.command](args)
    text = json.dumps(record, indent=1)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
