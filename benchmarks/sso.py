"""Wall time per expensive-gradient call: SSO (m = 1, 5, 20) vs ``torch.optim.SGD`` / ``Adam``.

Same process, same batches: the R1 logistic-regression problem of the ``sso`` reproduction
(n = 4000, d = 100, batch 100) and the imitation MLP (4 → 32 → 1, 100 states). Prints the
time per outer step (the mean over ``steps`` consecutive steps) and its ratio to SGD's. Run:
``python benchmarks/sso.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from optforge.optim import SSO
from optforge.repro.timing import mean_time


def _step(make, forward, loss, params) -> Callable[[], None]:
    """One outer step of the optimizer ``make(params)`` in its natural call form."""
    opt = make(params)
    if isinstance(opt, SSO):
        return lambda: opt.step(forward=forward, target_loss=loss)

    def step() -> None:
        opt.zero_grad()
        loss(forward()).backward()
        opt.step()

    return step


def main(steps: int = 200) -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(100, 100, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (100,), generator=gen).to(torch.float64)
    w = torch.zeros(100, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    s = torch.randn(100, 4, generator=gen, dtype=torch.float64)
    a = torch.randn(100, 1, generator=gen, dtype=torch.float64)
    tasks = {
        "logreg": (lambda: x @ w, lambda z: F.binary_cross_entropy_with_logits(z, y), [w]),
        "il-mlp": (lambda: mlp(s), lambda z: 0.5 * ((z - a) ** 2).sum(1).mean(), mlp.parameters),
    }
    arms = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.03),
        "adam": lambda p: torch.optim.Adam(p, lr=0.01),
        **{
            f"sso-m{m}": (
                lambda p, m=m: SSO(p, target_lr=1.0, inner_steps=m, armijo_c=0.5, armijo_beta=0.5)
            )
            for m in (1, 5, 20)
        },
    }
    initial = {
        task: [p.detach().clone() for p in (ps() if callable(ps) else ps)]
        for task, (_, _, ps) in tasks.items()
    }
    for task, (forward, loss, params) in tasks.items():
        base = None
        for name, make in arms.items():
            plist = list(params() if callable(params) else params)
            with torch.no_grad():  # every arm starts from the same point
                for p, p0 in zip(plist, initial[task], strict=True):
                    p.copy_(p0)
            t = mean_time(_step(make, forward, loss, plist), steps)
            base = base or t
            print(f"{task:7s} {name:8s} {1e3 * t:8.3f} ms/oracle call   x{t / base:6.2f} vs sgd")


if __name__ == "__main__":
    main()
