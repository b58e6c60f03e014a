"""Unlearnable examples by Bayes-error maximisation (BEO), with its baselines.

Paper: Ruihan Zhang, Jun Sun, Ee-Peng Lim, Peixin Zhang, *Towards Provably Unlearnable Examples
via Bayes Error Optimisation*, arXiv:2511.08191 (AAAI 2026).

* :mod:`~optforge.data.bayes_error.estimate` — the differentiable kernel estimate of the Bayes
  error (:func:`bayes_error_estimate`, :func:`kernel_posterior`, :func:`median_nn_distance`);
* :mod:`~optforge.data.bayes_error.perturbation` — BEO, projected gradient ascent on it
  (:class:`BayesErrorPerturbation`);
* :mod:`~optforge.data.bayes_error.budget` — the ℓ∞/ℓ2 budget and box
  (:func:`project_perturbation`);
* :mod:`~optforge.data.bayes_error.baselines` — random noise, error-minimising noise and partial
  protection (:func:`random_noise`, :func:`error_minimizing_noise`, :func:`mix_protected`).

Example::

    >>> import torch
    >>> from optforge.data import BayesErrorPerturbation, bayes_error_estimate
    >>> x = torch.rand(200, 8); y = torch.randint(0, 3, (200,))
    >>> delta = BayesErrorPerturbation(eps=0.1, steps=10, sigma="median_nn").fit(x, y)
    >>> bool(bayes_error_estimate(x + delta, y) >= 0)
    True
"""

from optforge.data.bayes_error.baselines import error_minimizing_noise, mix_protected, random_noise
from optforge.data.bayes_error.budget import project_perturbation
from optforge.data.bayes_error.estimate import (
    bayes_error_estimate,
    kernel_posterior,
    median_nn_distance,
)
from optforge.data.bayes_error.perturbation import BayesErrorPerturbation

__all__ = [
    "BayesErrorPerturbation",
    "bayes_error_estimate",
    "error_minimizing_noise",
    "kernel_posterior",
    "median_nn_distance",
    "mix_protected",
    "project_perturbation",
    "random_noise",
]
