r"""ReNO: reward-based initial-noise optimisation for one-step generators.

Paper: L. Eyring, S. Karthik, K. Roth, A. Dosovitskiy, Z. Akata, "ReNO: Enhancing One-step
Text-to-Image Models through Reward-based Noise Optimization", NeurIPS 2024, arXiv:2406.04312.
Reference code: ``ExplainableML/ReNO`` (``training/trainer.py``).

A frozen, differentiable one-step generator :math:`G` maps a noise tensor :math:`z` to an image.
ReNO treats :math:`z` as the free variable and does gradient **ascent** on a weighted sum of
differentiable rewards :math:`R_i` (higher is better), minus a penalty that keeps the noise on
the typical set of the Gaussian:

.. math::

    \max_z \; \sum_i \lambda_i R_i(G(z)) - \lambda_{\mathrm{reg}} K(z), \qquad
    K(z) = \tfrac12 \|z\|^2 - (d - 1) \log \|z\|,

where :math:`d` is the number of noise entries per sample (:func:`chi_norm_nll`). Each
iteration the gradient of the minimised loss :math:`L = -\sum_i \lambda_i R_i +
\lambda_{\mathrm{reg}} K` is clipped to norm ``grad_clip`` (per sample by default) and handed
to ``torch.optim.SGD`` with Nesterov momentum (:math:`b_k = \mu b_{k-1} + g_k`,
:math:`z_{k+1} = z_k - \eta (g_k + \mu b_k)`). ``n_iters`` forwards are evaluated
(``n_iters - 1`` updates) and the iterate with the highest weighted reward **without** the
regulariser, the initial noise included, is returned (ties keep the earlier iterate).

Choices: samples of a batch are independent problems (the loss is summed, clipping is per
sample; ``clip_mode="global"`` clips the whole tensor as the reference does); gradients are
taken with respect to ``z`` only; the generator is never reseeded (pass a deterministic
callable); L-BFGS is not offered (``optimizer`` takes any ``torch.optim`` factory); rewards are
reported without the reference's logging offsets.

Example::

    import torch
    from optforge.diffusion import reno

    generator = lambda z: torch.tanh(z)                 # any differentiable z -> x (frozen)
    target = torch.full((4, 16), 0.5)
    reward = lambda x: -((x - target) ** 2).flatten(1).sum(1)   # one score per sample
    z0 = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    result = reno(generator, [reward], [1.0], z0, n_iters=50)
    result.best_reward >= result.initial_reward          # True for every sample
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from optforge._core import check_choice, check_nonnegative, check_positive, check_positive_int
from optforge.diffusion.reno.regularizer import _acc, chi_norm_nll
from optforge.diffusion.rewards import ImageRewardFn

__all__ = ["GeneratorFn", "OptimizerSpec", "ReNO", "ReNOResult", "reno"]

GeneratorFn = Callable[[Tensor], Tensor]
"""A frozen differentiable generator ``z [B, ...] -> images [B, ...]``."""

OptimizerSpec = Literal["sgd", "adam"] | Callable[[list[Tensor]], torch.optim.Optimizer]
"""``"sgd"``, ``"adam"`` or a factory ``[z] -> torch.optim.Optimizer``."""

_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s epsilon, so both modes agree for B = 1


@dataclass
class ReNOResult:
    """What :func:`reno` / :meth:`ReNO.optimize` return (all tensors detached).

    Attributes:
        best_noise: the returned noise per sample, ``[B, ...]``.
        best_images: ``generator(best_noise)``, ``[B, ...]``.
        best_reward: weighted reward ``Σ λ_i R_i`` of the returned sample, ``[B]``.
        best_terms: each reward's unweighted value at the returned sample, name → ``[B]``.
        best_iteration: the iteration the returned sample comes from (0 = the initial noise).
        initial_noise: the starting noise ``z0``.
        initial_images: ``generator(z0)``.
        initial_reward: weighted reward of ``z0``, ``[B]``.
        history: per evaluated iteration, ``[T, B]``: ``reward`` (weighted, no regulariser),
            ``regularizer`` (``chi_norm_nll``), ``noise_norm`` and ``grad_norm`` (norm of the
            loss gradient before clipping; NaN at the last iteration, which takes no step).
        history_terms: per evaluated iteration, each reward's value, name → ``[T, B]``.
    """

    best_noise: Tensor
    best_images: Tensor
    best_reward: Tensor
    best_terms: dict[str, Tensor]
    best_iteration: Tensor
    initial_noise: Tensor
    initial_images: Tensor
    initial_reward: Tensor
    history: dict[str, Tensor] = field(default_factory=dict)
    history_terms: dict[str, Tensor] = field(default_factory=dict)


class ReNO:
    """Reward-based noise optimisation driver (batched, resumable).

    Args:
        generator: frozen differentiable map ``z [B, ...] -> x [B, ...]`` (an ``nn.Module`` in
            ``eval()`` mode or any callable). It must be deterministic in ``z``.
        rewards: one callable ``x -> scores [B]`` (higher is better), a sequence of them, or a
            mapping name → callable.
        weights: one non-negative weight per reward (sequence, or mapping with the rewards'
            names); ``None`` gives weight 1 to each.
        n_iters: number of generator+reward evaluations (``n_iters - 1`` updates). Paper: 50.
        lr: learning rate. Paper: 5.0 (10.0 for Hyper-SDXL).
        momentum: SGD momentum. Paper: 0.9.
        nesterov: Nesterov momentum. Paper: True.
        grad_clip: maximum L2 norm of the loss gradient (``None``: no clipping). Paper: 0.1.
        clip_mode: ``"per_sample"`` (each row of the gradient) or ``"global"`` (whole tensor,
            the reference's ``clip_grad_norm_``).
        reg_weight: weight of :func:`chi_norm_nll`. Paper: 0.01; 0 disables it.
        optimizer: ``"sgd"`` (``torch.optim.SGD``), ``"adam"`` (``torch.optim.Adam`` with
            ``eps=adam_eps``, as in the reference) or a factory ``[z] -> Optimizer``.
        adam_eps: Adam's epsilon. Reference: 1e-2.
    """

    def __init__(
        self,
        generator: GeneratorFn,
        rewards: ImageRewardFn | Sequence[ImageRewardFn] | Mapping[str, ImageRewardFn],
        weights: Sequence[float] | Mapping[str, float] | None = None,
        *,
        n_iters: int = 50,
        lr: float = 5.0,
        momentum: float = 0.9,
        nesterov: bool = True,
        grad_clip: float | None = 0.1,
        clip_mode: Literal["per_sample", "global"] = "per_sample",
        reg_weight: float = 0.01,
        optimizer: OptimizerSpec = "sgd",
        adam_eps: float = 1e-2,
    ) -> None:
        if not callable(generator):
            raise TypeError(f"generator must be callable, got {type(generator).__name__}")
        self.generator = generator
        self.names, self.reward_fns, self.weights = _normalise_rewards(rewards, weights)
        self.n_iters = check_positive_int("n_iters", n_iters)
        self.lr = check_positive("lr", lr)
        self.momentum = check_nonnegative("momentum", momentum)
        if nesterov and momentum == 0 and optimizer == "sgd":
            raise ValueError("nesterov=True requires momentum > 0")
        self.nesterov = bool(nesterov)
        if grad_clip is not None:
            check_positive("grad_clip", grad_clip)
        self.grad_clip = grad_clip
        check_choice("clip_mode", clip_mode, ("per_sample", "global"))
        self.clip_mode = clip_mode
        self.reg_weight = check_nonnegative("reg_weight", reg_weight)
        if not (optimizer in ("sgd", "adam") or callable(optimizer)):
            raise ValueError(f"optimizer must be 'sgd', 'adam' or a factory, got {optimizer!r}")
        self.optimizer_spec = optimizer
        self.adam_eps = check_positive("adam_eps", adam_eps)
        if isinstance(generator, nn.Module) and any(m.training for m in generator.modules()):
            warnings.warn(
                "generator has modules in training mode (dropout/BatchNorm make the objective "
                "random or couple samples); call generator.eval()",
                stacklevel=2,
            )
        self.z: Tensor | None = None
        self.k = 0

    # ---------------------------------------------------------------- public API
    def reset(self, z0: Tensor) -> None:
        """Start a new optimisation from ``z0`` (shape ``[B, ...]``, floating point)."""
        if not isinstance(z0, Tensor):
            raise TypeError(f"z0 must be a torch.Tensor, got {type(z0).__name__}")
        if not z0.is_floating_point():
            raise TypeError(f"z0 must be a floating-point tensor, got dtype {z0.dtype}")
        if z0.dim() < 2 or z0.shape[0] == 0:
            raise ValueError(
                "z0 must have shape [B, ...] with B >= 1 and a noise dimension; "
                f"got {tuple(z0.shape)}"
            )
        if not torch.isfinite(z0).all():
            raise ValueError("z0 contains non-finite values (NaN or inf)")
        if self.reg_weight > 0 and bool((z0.flatten(1).abs().sum(1) == 0).any()):
            raise ValueError("z0 has a sample with zero norm: the regulariser's log ‖z‖ is -inf")
        self.z = z0.detach().clone().requires_grad_(True)
        self.opt = self._make_optimizer(self.z)
        self.k = 0
        self._best: dict[str, Any] = {}
        self._initial: dict[str, Tensor] = {}
        self._hist: dict[str, list[Tensor]] = {
            k: [] for k in ("reward", "regularizer", "noise_norm", "grad_norm")
        }
        self._hist_terms: dict[str, list[Tensor]] = {n: [] for n in self.names}

    @property
    def done(self) -> bool:
        """Whether all ``n_iters`` evaluations have been made."""
        return self.z is not None and self.k >= self.n_iters

    def step(self) -> dict[str, Tensor]:
        """One iteration: evaluate ``G(z)`` and the rewards, update the best, step unless last.

        Returns:
            ``{"iteration", "reward", "terms", "noise_norm", "grad_norm"}`` for this iteration.
        """
        if self.z is None:
            raise RuntimeError("call reset(z0) (or optimize) before step()")
        if self.done:
            raise RuntimeError(f"all n_iters={self.n_iters} iterations have been run")
        z, k = self.z, self.k
        last = k == self.n_iters - 1
        with torch.enable_grad():
            x = self.generator(z)
            if not isinstance(x, Tensor):
                raise TypeError(f"generator must return a Tensor, got {type(x).__name__}")
            terms = self._evaluate(x, z.shape[0], k)
            total = sum(w * t for w, t in zip(self.weights, terms.values(), strict=True))
            if not isinstance(total, Tensor):  # no rewards cannot happen; keeps mypy happy
                raise RuntimeError("no rewards")
            reg = chi_norm_nll(z.detach())
            norm = torch.linalg.vector_norm(_acc(z.detach()).flatten(1), dim=1)
            self._track(k, z.detach(), x.detach(), total.detach(), terms)
            grad_norm = torch.full_like(norm, float("nan"))
            if not last:
                grad_norm = self._update(z, total, k)
        self._hist["reward"].append(_acc(total.detach()))
        self._hist["regularizer"].append(reg.detach())
        self._hist["noise_norm"].append(norm)
        self._hist["grad_norm"].append(grad_norm)
        for name, value in terms.items():
            self._hist_terms[name].append(_acc(value.detach()))
        self.k += 1
        return {
            "iteration": torch.tensor(k),
            "reward": total.detach(),
            "terms": {n: t.detach() for n, t in terms.items()},
            "noise_norm": norm,
            "grad_norm": grad_norm,
        }

    def result(self) -> ReNOResult:
        """The best-so-far result (valid after at least one :meth:`step`)."""
        if self.z is None or self.k == 0:
            raise RuntimeError("no iteration has been run yet")
        b = self._best
        return ReNOResult(
            best_noise=b["noise"].clone(),
            best_images=b["images"].clone(),
            best_reward=b["reward"].clone(),
            best_terms={n: t.clone() for n, t in b["terms"].items()},
            best_iteration=b["iteration"].clone(),
            initial_noise=self._initial["noise"],
            initial_images=self._initial["images"],
            initial_reward=self._initial["reward"],
            history={k: torch.stack(v) for k, v in self._hist.items()},
            history_terms={k: torch.stack(v) for k, v in self._hist_terms.items()},
        )

    def optimize(
        self, z0: Tensor, callback: Callable[[int, dict[str, Tensor]], bool | None] | None = None
    ) -> ReNOResult:
        """Run all iterations from ``z0``; ``callback(k, info)`` may return True to stop early."""
        self.reset(z0)
        while not self.done:
            info = self.step()
            if callback is not None and callback(int(info["iteration"]), info):
                break
        return self.result()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: noise, optimizer state, best trackers, history."""
        if self.z is None:
            raise RuntimeError("nothing to save: call reset(z0) first")
        return {
            "k": self.k,
            "z": self.z.detach().clone(),
            "optimizer": self.opt.state_dict(),
            "best": {
                k: ({n: t.clone() for n, t in v.items()} if isinstance(v, dict) else v.clone())
                for k, v in self._best.items()
            },
            "initial": {k: v.clone() for k, v in self._initial.items()},
            "history": {k: [t.clone() for t in v] for k, v in self._hist.items()},
            "history_terms": {k: [t.clone() for t in v] for k, v in self._hist_terms.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the reward names must match)."""
        if set(state["history_terms"]) != set(self.names):
            raise ValueError(
                f"state has rewards {sorted(state['history_terms'])}, this driver {self.names}"
            )
        self.z = state["z"].detach().clone().requires_grad_(True)
        self.opt = self._make_optimizer(self.z)
        self.opt.load_state_dict(state["optimizer"])
        self.k = int(state["k"])
        self._best = {
            k: ({n: t.clone() for n, t in v.items()} if isinstance(v, dict) else v.clone())
            for k, v in state["best"].items()
        }
        self._initial = {k: v.clone() for k, v in state["initial"].items()}
        self._hist = {k: [t.clone() for t in v] for k, v in state["history"].items()}
        self._hist_terms = {k: [t.clone() for t in v] for k, v in state["history_terms"].items()}

    # ---------------------------------------------------------------- internals
    def _make_optimizer(self, z: Tensor) -> torch.optim.Optimizer:
        if self.optimizer_spec == "sgd":
            return torch.optim.SGD([z], lr=self.lr, momentum=self.momentum, nesterov=self.nesterov)
        if self.optimizer_spec == "adam":
            return torch.optim.Adam([z], lr=self.lr, eps=self.adam_eps)
        opt = self.optimizer_spec([z])  # type: ignore[operator]
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optimizer factory must return a torch Optimizer, got {type(opt)}")
        return opt

    def _evaluate(self, x: Tensor, batch: int, k: int) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        for name, fn in zip(self.names, self.reward_fns, strict=True):
            value = fn(x)
            if not isinstance(value, Tensor) or value.shape != (batch,):
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"rewards[{name!r}] must return one score per sample, shape ({batch},); "
                    f"got {shape} (a batch mean is the usual mistake)"
                )
            if not torch.isfinite(value.detach()).all():
                raise ValueError(f"rewards[{name!r}] returned non-finite values at iteration {k}")
            terms[name] = value
        return terms

    def _track(self, k: int, z: Tensor, x: Tensor, total: Tensor, terms: dict[str, Tensor]) -> None:
        total = _acc(total)
        if k == 0:
            self._initial = {"noise": z.clone(), "images": x.clone(), "reward": total.clone()}
            self._best = {
                "noise": z.clone(),
                "images": x.clone(),
                "reward": total.clone(),
                "terms": {n: _acc(t.detach()).clone() for n, t in terms.items()},
                "iteration": torch.zeros(z.shape[0], dtype=torch.long, device=z.device),
            }
            return
        b = self._best
        better = total > b["reward"]  # strict: ties keep the earlier iterate
        bz = better.view(-1, *([1] * (z.dim() - 1)))
        bx = better.view(-1, *([1] * (x.dim() - 1)))
        b["noise"] = torch.where(bz, z, b["noise"])
        b["images"] = torch.where(bx, x, b["images"])
        b["reward"] = torch.where(better, total, b["reward"])
        for n, t in terms.items():
            b["terms"][n] = torch.where(better, _acc(t.detach()), b["terms"][n])
        b["iteration"] = torch.where(better, torch.full_like(b["iteration"], k), b["iteration"])

    def _update(self, z: Tensor, total: Tensor, k: int) -> Tensor:
        g = None
        if total.requires_grad:
            (g,) = torch.autograd.grad(-total.sum(), z, allow_unused=True)
        if g is None:
            raise ValueError(
                "the rewards do not depend on z: the generator output does not depend on its "
                "input noise (or the rewards ignore the image)"
            )
        if self.reg_weight > 0:
            zr = z.detach().requires_grad_(True)
            (g_reg,) = torch.autograd.grad(chi_norm_nll(zr, reduction="sum"), zr)
            g = g + self.reg_weight * g_reg.to(g.dtype)
        if not torch.isfinite(g).all():
            raise FloatingPointError(f"non-finite gradient of the ReNO loss at iteration {k}")
        gf = _acc(g)
        row_norm = torch.linalg.vector_norm(gf.flatten(1), dim=1)
        if self.grad_clip is not None:
            if self.clip_mode == "per_sample":
                coef = (self.grad_clip / (row_norm + _CLIP_EPS)).clamp(max=1.0)
                gf = gf * coef.view(-1, *([1] * (gf.dim() - 1)))
            else:
                coef = (self.grad_clip / (torch.linalg.vector_norm(gf) + _CLIP_EPS)).clamp(max=1.0)
                gf = gf * coef
        z.grad = gf.to(z.dtype)
        self.opt.step()
        z.grad = None
        return row_norm


def reno(
    generator: GeneratorFn,
    rewards: ImageRewardFn | Sequence[ImageRewardFn] | Mapping[str, ImageRewardFn],
    weights: Sequence[float] | Mapping[str, float] | None,
    z0: Tensor,
    *,
    callback: Callable[[int, dict[str, Tensor]], bool | None] | None = None,
    **options: Any,
) -> ReNOResult:
    """Optimise the initial noise ``z0`` of ``generator`` for the weighted ``rewards``.

    Shorthand for ``ReNO(generator, rewards, weights, **options).optimize(z0, callback)``; see
    :class:`ReNO` for the options (``n_iters``, ``lr``, ``momentum``, ``nesterov``,
    ``grad_clip``, ``clip_mode``, ``reg_weight``, ``optimizer``, ``adam_eps``).

    Args:
        generator: frozen differentiable ``z [B, ...] -> x``.
        rewards: callable(s) ``x -> [B]`` scores, higher is better.
        weights: one non-negative weight per reward (``None``: all 1).
        z0: initial noise ``[B, ...]`` (e.g. ``torch.randn``).
        callback: ``callback(k, info)``; returning True stops early.
        **options: keyword arguments of :class:`ReNO`.

    Returns:
        A :class:`ReNOResult` with the best iterate per sample and the trajectory.
    """
    return ReNO(generator, rewards, weights, **options).optimize(z0, callback)


def _normalise_rewards(
    rewards: ImageRewardFn | Sequence[ImageRewardFn] | Mapping[str, ImageRewardFn],
    weights: Sequence[float] | Mapping[str, float] | None,
) -> tuple[list[str], list[ImageRewardFn], list[float]]:
    if isinstance(rewards, Mapping):
        names = [str(k) for k in rewards]
        fns = list(rewards.values())
    elif callable(rewards):
        names, fns = ["reward_0"], [rewards]
    elif isinstance(rewards, Sequence) and not isinstance(rewards, str):
        fns = list(rewards)
        names = [f"reward_{i}" for i in range(len(fns))]
    else:
        raise TypeError("rewards must be a callable, a sequence or a mapping of callables")
    if not fns:
        raise ValueError("rewards must contain at least one reward callable")
    for name, fn in zip(names, fns, strict=True):
        if not callable(fn):
            raise TypeError(f"rewards[{name!r}] must be callable, got {type(fn).__name__}")
    if weights is None:
        w = [1.0] * len(fns)
    elif isinstance(weights, Mapping):
        if set(weights) != set(names):
            raise ValueError(f"weights keys {sorted(weights)} must equal the rewards' {names}")
        w = [weights[n] for n in names]
    else:
        w = list(weights)
        if len(w) != len(fns):
            raise ValueError(
                f"weights has {len(w)} entries but rewards has {len(fns)}: "
                "give one weight per reward"
            )
    for i, value in enumerate(w):
        check_nonnegative(f"weights[{i}]", value)
    return names, fns, [float(v) for v in w]
