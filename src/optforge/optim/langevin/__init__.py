r"""Langevin dynamics (Euclidean or on the sphere) with iterate averaging.

Paper: "Improved high-dimensional estimation with Langevin dynamics and stochastic weight
averaging", ICLR 2026 (OpenReview ``GYXUD3hGTh``), arXiv:2603.06028. Anonymous submission; no
official code.

The paper shows that for planted-direction problems (tensor PCA, single-index models with
information exponent :math:`k^*`) the **time average** of Langevin iterates recovers the hidden
direction with :math:`n \gtrsim d^{k^*/2}` samples, where the last iterate (and online SGD) needs
:math:`d^{k^*-1}`: the injected noise spreads the iterates over a cap, and averaging over that
cloud does what explicit landscape smoothing (Damian et al., 2023) would do.

One file per idea:

* :mod:`.dynamics` — :class:`Langevin`, the ``torch.optim`` sampler
  ``θ ← θ − h∇L + sqrt(2h/β)·ξ`` (optionally projected on a sphere), and
  :func:`langevin_noise_std`;
* :mod:`.averaging` — :class:`IterateAverager`, the equal-weight running mean after a burn-in
  (``torch.optim.swa_utils``);
* :mod:`.recover` — :func:`langevin_recover`, the whole recipe on a planted problem.

Example::

    theta = torch.randn(50); theta /= theta.norm()
    theta.requires_grad_(True)
    opt = Langevin([theta], lr=0.05, beta=60.0, sphere="group", seed=0)
    avg = IterateAverager([theta], start_step=1000)
    for _ in range(2000):
        theta.grad = problem.grad(theta.detach())
        opt.step()
        avg.update()
    theta_bar = avg.average(normalize=True)[0]
"""

from optforge.optim.langevin.averaging import IterateAverager
from optforge.optim.langevin.dynamics import Langevin, Retraction, Sphere, langevin_noise_std
from optforge.optim.langevin.recover import PlantedProblem, langevin_recover

__all__ = [
    "IterateAverager",
    "Langevin",
    "PlantedProblem",
    "Retraction",
    "Sphere",
    "langevin_noise_std",
    "langevin_recover",
]
