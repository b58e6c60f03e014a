"""Benchmark: cost of gradient-regularized Newton (GNS) with different Hessians and solvers.

The problem of the official code's README: ``f(x) = ¼‖Ax − b‖⁴`` with ``A ∈ R^{100×200}`` random,
``B = AᵀA + 1e-8·I``, ``x0 = 1``, ``f* = 0``; iterations, function+gradient evaluations and
seconds to ``f ≤ 1e-10`` for the Fisher-term approximation (rank one, Sherman–Morrison solve),
the exact Hessian (Cholesky), the GNS gradient method in metric ``B`` (H ≡ 0) and
``torch.optim.LBFGS`` (strong Wolfe). Times are ratios to the GNS gradient method measured in the
same process (one thread, float64). Also the per-trial solve time of Cholesky vs CG vs
Sherman–Morrison on a dense ``d = 1000`` rank-one system.

Run: ``.venv/bin/python benchmarks/regularized_newton.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse

import torch

from optforge.optim import gns_minimize, regularized_newton_step
from optforge.optim.hessian_approx import FisherTerm, RankOne
from optforge.repro.timing import best_time, mean_time

DT = torch.float64


def _problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(100, 200, generator=gen, dtype=DT)
    b = torch.randn(100, generator=gen, dtype=DT)

    def u(x):
        return A @ x - b

    def f(x):
        return torch.linalg.vector_norm(u(x)) ** 4 / 4

    B = A.T @ A + 1e-8 * torch.eye(200, dtype=DT)
    return f, u, B, torch.ones(200, dtype=DT)


def _lbfgs(f, x0, tol, maxiter=2000):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=1, max_eval=25, history_size=20,
                            tolerance_grad=1e-15, tolerance_change=1e-30,
                            line_search_fn="strong_wolfe")  # fmt: skip
    calls = [0]

    def closure():
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        calls[0] += 1
        return loss

    for k in range(1, maxiter + 1):
        opt.step(closure)
        if float(f(x.detach())) <= tol:
            return k, calls[0]
    return float("inf"), calls[0]


def main(repeats: int = 3) -> None:
    torch.set_num_threads(1)
    f, u, B, x0 = _problem()
    tol = 1e-10
    arms = {
        "gns-gd-B (H=0)": {"hessian": "zero", "metric": B},
        "gns-fisher (SM)": {"hessian": FisherTerm(u, 4), "metric": B},
        "gns-exact (Cholesky)": {"hessian": "exact", "metric": B},
    }
    rows = {}
    for name, kw in arms.items():  # the fastest of `repeats` runs; counts from the last one
        best, res = best_time(
            lambda kw=kw: gns_minimize(f, x0, ftol=tol, f_star=0.0, maxiter=5000, **kw), repeats
        )
        rows[name] = (res.nit, res.nfev, best, res.status)
    best, (its, evals) = best_time(lambda: _lbfgs(f, x0, tol), repeats)
    rows["torch.optim.LBFGS"] = (its, evals, best, "ftol" if its != float("inf") else "maxiter")
    base = rows["gns-gd-B (H=0)"][2]
    print(f"{'arm':24s} {'iters':>6s} {'f/g evals':>9s} {'seconds':>8s} {'time ratio':>10s}")
    for name, (its, evals, sec, status) in rows.items():
        print(f"{name:24s} {its:>6} {evals:>9} {sec:8.3f} {sec / base:10.2f}  {status}")

    d = 1000
    gen = torch.Generator().manual_seed(1)
    vec, g = torch.randn(d, generator=gen, dtype=DT), torch.randn(d, generator=gen, dtype=DT)
    rank_one = RankOne(vec, torch.tensor(3.0, dtype=DT))
    dense = rank_one.dense()
    timings = {}
    for name, (hess, solver) in {
        "cholesky": (dense, "cholesky"),
        "cg": (dense, "cg"),
        "sherman_morrison": (rank_one, "sherman_morrison"),
    }.items():
        timings[name] = mean_time(
            lambda hess=hess, solver=solver: regularized_newton_step(hess, g, 0.5, solver=solver), 5
        )
    print(f"\nper-trial solve, d = {d}, rank-one H, B = I (ratio to Cholesky):")
    for name, sec in timings.items():
        print(f"  {name:18s} {sec * 1e3:8.2f} ms  {sec / timings['cholesky']:6.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    main(parser.parse_args().repeats)
