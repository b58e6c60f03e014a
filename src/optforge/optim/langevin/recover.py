r"""The recipe on a planted problem: :func:`langevin_recover` (spherical Langevin + averaging).

Runs :class:`.Langevin` on the unit sphere and returns the normalised average of the iterates
after a burn-in (:class:`.IterateAverager`) as the estimate of the planted direction
:math:`\theta^*`, with the overlaps :math:`|\langle\hat\theta, \theta^*\rangle|` of the averaged
and the last iterate. Defaults (h = 0.05, β = 60, T = 2000, burn-in T/2) were validated on tensor
PCA with k = 3, d = 50, n = 700.

Example::

    problem = tensor_pca(d=50, k=3, n=700, seed=0)
    out = langevin_recover(problem, beta=60.0, lr=0.05, steps=2000, seed=1)
    out["overlap_avg"], out["overlap_last"]
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, Protocol

import torch
from torch import Tensor

from optforge._core import (
    check_nonnegative_int,
    check_positive_int,
    check_seed,
    check_tensor,
    make_generator,
)
from optforge.optim.langevin.averaging import IterateAverager
from optforge.optim.langevin.dynamics import Langevin, Retraction, _checked_norm

__all__ = ["PlantedProblem", "langevin_recover"]


class PlantedProblem(Protocol):
    """What :func:`langevin_recover` needs: a gradient, a dimension and (for the overlap) θ*."""

    theta_star: Tensor

    def grad(self, theta: Tensor) -> Tensor: ...


def langevin_recover(
    problem: PlantedProblem,
    *,
    beta: float = 60.0,
    lr: float = 0.05,
    steps: int = 2000,
    burn_in: float | int = 0.5,
    cycles: int = 1,
    seed: int | None = 0,
    init: Tensor | None = None,
    retraction: Retraction = "normalize",
    trace_every: int = 0,
) -> dict[str, Any]:
    """Spherical Langevin on ``problem`` with the averaged iterate as the estimator.

    ``steps`` are split into ``cycles`` equal cycles; in each, the iterates after the burn-in are
    averaged, and the next cycle restarts from the normalised average (cyclic SWA, an extension
    for even ``k``; ``cycles=1`` is the paper's plain averaging).

    Args:
        problem: has ``grad(theta) -> Tensor`` and ``theta_star`` (a unit vector).
        beta: inverse temperature (``inf`` gives Riemannian gradient descent).
        lr: step size ``h``.
        steps: total number of steps.
        burn_in: fraction of each cycle in ``[0, 1)`` or a number of steps ``< steps // cycles``.
        cycles: number of averaging cycles.
        seed: seed of the generator used for the uniform initialisation and the noise.
        init: initial vector (default: uniform on the sphere from the seeded generator).
        retraction: ``"normalize"`` or ``"expmap"``.
        trace_every: record the overlaps every that many steps (0: no trace).

    Returns:
        ``dict(last, avg, overlap_last, overlap_avg, trace)``; ``trace`` has ``step``,
        ``overlap_last`` and ``overlap_avg`` lists (``overlap_avg`` is NaN before averaging).
    """
    steps = check_positive_int("steps", steps)
    cycles = check_positive_int("cycles", cycles)
    if steps // cycles < 1:
        raise ValueError(f"steps ({steps}) must be >= cycles ({cycles})")
    cycle_len = steps // cycles
    start = _burn_in_steps(burn_in, cycle_len)
    check_nonnegative_int("trace_every", trace_every)
    check_seed("seed", seed)
    if not callable(getattr(problem, "grad", None)) or not isinstance(
        getattr(problem, "theta_star", None), Tensor
    ):
        raise TypeError("problem must have a grad(theta) method and a theta_star tensor")
    theta_star = problem.theta_star
    if init is not None:
        check_tensor("init", init, shape=tuple(theta_star.shape))
    generator = make_generator(seed, theta_star.device)
    if init is None:
        init = torch.randn(
            theta_star.shape, generator=generator, device=theta_star.device, dtype=theta_star.dtype
        )
    theta = init.detach().clone().to(theta_star)
    theta /= _checked_norm([theta], "init")
    theta.requires_grad_(True)
    opt = Langevin(
        [theta], lr=lr, beta=beta, sphere="group", retraction=retraction, generator=generator
    )
    averager = IterateAverager([theta], start_step=start)
    trace: dict[str, list[float]] = {"step": [], "overlap_last": [], "overlap_avg": []}
    avg = theta.detach().clone()
    t = 0
    for cycle in range(cycles):
        averager.reset()
        for _ in range(cycle_len):
            theta.grad = problem.grad(theta.detach())
            opt.step()
            averager.update()
            t += 1
            if trace_every and t % trace_every == 0:
                trace["step"].append(float(t))
                trace["overlap_last"].append(_overlap(theta.detach(), theta_star))
                trace["overlap_avg"].append(
                    _overlap(averager.average()[0], theta_star)
                    if averager.n_averaged
                    else float("nan")
                )
        avg = averager.average(normalize=True)[0].to(theta_star.dtype)
        if cycle + 1 < cycles:
            with torch.no_grad():
                theta.copy_(avg)
    last = theta.detach().clone()
    return {
        "last": last,
        "avg": avg,
        "overlap_last": _overlap(last, theta_star),
        "overlap_avg": _overlap(avg, theta_star),
        "trace": trace,
    }


# --------------------------------------------------------------------------- private helpers


def _burn_in_steps(burn_in: float | int, cycle_len: int) -> int:
    if isinstance(burn_in, bool) or not isinstance(burn_in, Real):
        raise ValueError(f"burn_in must be a fraction in [0, 1) or an int, got {burn_in!r}")
    if isinstance(burn_in, Integral):
        if not 0 <= burn_in < cycle_len:
            raise ValueError(f"burn_in must be in [0, {cycle_len}) steps, got {burn_in}")
        return int(burn_in)
    if not 0.0 <= burn_in < 1.0:
        raise ValueError(f"burn_in as a fraction must be in [0, 1), got {burn_in}")
    return int(burn_in * cycle_len)


def _overlap(theta: Tensor, theta_star: Tensor) -> float:
    theta = theta.detach().double()
    return float((theta @ theta_star.double()).abs() / torch.linalg.vector_norm(theta))
