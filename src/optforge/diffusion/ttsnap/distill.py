r"""Noise-aware reward distillation: copies of a reward model that score noisy estimates.

The noise-aware reward at level :math:`s` is a copy :math:`R_\phi` of the reward model trained
on trajectories to predict the frozen teacher's score of the *final* image from the step-:math:`s`
clean-image estimate :math:`\hat x_0^{(s)}` of the same trajectory,

.. math::

    \min_\phi\ \mathbb E\,\bigl(R_\phi(\hat x_0^{(s)}) - R(x_0)\bigr)^2 ,

visiting levels from nearly clean to noisiest (curriculum 14 → 0 for 20 steps), one fresh
AdamW and a linear 1.0 → 0.5 learning-rate decay per level, a snapshot saved after each level.
Paper: Q. Yu et al., "TTSnap: Test-Time Scaling of Diffusion Models via Noise-Aware Pruning",
2025, arXiv:2511.22242; reference code ``TerrysLearning/TTSnap``.

Choices: the optional Bradley-Terry pairwise and uncertainty-weighted terms of the reference
(off by default there) are not implemented; ``standardize=True`` (batch standardisation) is.

Example::

    import torch
    from torch import nn
    from optforge.diffusion.ttsnap import (DDIMSampler, NoiseAwareDistiller, NoiseAwareReward,
                                           TrajectoryDataset)

    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    sampler = DDIMSampler(lambda x, t, c: 0.5 * x, abar,
                          torch.linspace(999, 0, 20).round().long(), (16,))
    reward_model = nn.Sequential(nn.Linear(16, 1), nn.Flatten(0))
    data = TrajectoryDataset.generate(sampler, reward_model, 256, range(15),
                                      generator=torch.Generator().manual_seed(0))
    snapshots = NoiseAwareDistiller(reward_model, steps_per_level=10).fit(data, batch_size=64)
    noise_aware = NoiseAwareReward(reward_model, snapshots)   # forward(images, cond, step)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from optforge._core import (
    check_choice,
    check_finite,
    check_in_range,
    check_positive,
    check_positive_int,
)
from optforge.diffusion.ttsnap.samplers import SteppableSampler, _cond_of

__all__ = ["NoiseAwareDistiller", "NoiseAwareReward", "TrajectoryDataset"]


class TrajectoryDataset(torch.utils.data.Dataset):
    """Intermediate estimates of trajectories with the teacher's score of their final image.

    Args:
        estimates: ``[T, L, ...]`` decoded estimates at the ``L`` stored steps.
        targets: ``[T, ...]`` teacher outputs on the final image (regression targets).
        steps: The step index of each of the ``L`` stored estimates.
        cond: Optional ``[T, ...]`` conditioning handed to the model as ``model(x, cond)``.
    """

    def __init__(
        self,
        estimates: Tensor,
        targets: Tensor,
        steps: Sequence[int],
        cond: Tensor | None = None,
    ) -> None:
        steps = [int(s) for s in steps]
        if estimates.dim() < 2 or estimates.shape[1] != len(steps):
            raise ValueError(
                f"estimates must be [T, {len(steps)}, ...] for {len(steps)} steps, got "
                f"{tuple(estimates.shape)}"
            )
        if targets.shape[0] != estimates.shape[0] or (
            cond is not None and cond.shape[0] != estimates.shape[0]
        ):
            raise ValueError("estimates, targets and cond must have the same first dimension")
        check_finite("estimates", estimates)
        check_finite("targets", targets)
        self.estimates, self.targets, self.cond = estimates, targets, cond
        self.steps = steps
        self._pos = {s: i for i, s in enumerate(steps)}

    def __len__(self) -> int:
        return self.estimates.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Any]:
        c = None if self.cond is None else self.cond[i]
        return self.estimates[i], self.targets[i], c

    def at(self, step: int) -> Tensor:
        """``[T, ...]`` estimates at ``step``."""
        if step not in self._pos:
            raise ValueError(f"step {step} not stored; have {self.steps}")
        return self.estimates[:, self._pos[step]]

    @classmethod
    def generate(
        cls,
        sampler: SteppableSampler,
        teacher: Callable[..., Tensor],
        n: int,
        steps: Sequence[int],
        *,
        cond: Any = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> TrajectoryDataset:
        """Sample ``n`` trajectories, keep decoded estimates at ``steps``, label by the teacher.

        ``teacher(images)`` (or ``teacher(images, cond)`` when ``cond`` is given) is applied to
        the final decoded image of each trajectory.
        """
        n = check_positive_int("n", n)
        bs = n if batch_size is None else check_positive_int("batch_size", batch_size)
        wanted = set(int(s) for s in steps)
        est, tgt = [], []
        with torch.no_grad():
            for lo in range(0, n, bs):
                m = min(bs, n - lo)
                state = sampler.init(m, cond, generator)
                keep = []
                x0 = None
                for s in range(sampler.num_steps):
                    state, x0 = sampler.step(state, s)
                    if s in wanted:
                        keep.append(sampler.decode(x0))
                final = sampler.decode(x0)
                c = _cond_of(state, cond)
                tgt.append(teacher(final) if cond is None else teacher(final, c))
                est.append(torch.stack(keep, dim=1))
        return cls(torch.cat(est), torch.cat(tgt), sorted(wanted))


class NoiseAwareDistiller:
    """Self-distillation of a reward model into noise-aware copies, with a curriculum.

    Args:
        teacher: The frozen reward model (a copy is trained; the teacher is not modified).
        levels: Step levels visited in order (default 14, 13, …, 0).
        epochs_per_level: Epochs over the dataset per level (ignored if ``steps_per_level``).
        steps_per_level: Optional fixed number of optimizer steps per level.
        optimizer_factory: ``params -> torch.optim.Optimizer``, called afresh at each level.
        end_lr_scale: The learning rate decays linearly from 1.0× to this within a level.
        max_grad_norm: Gradient-norm clip (``None``: no clipping).
        standardize: Standardise predictions and targets over the batch before the MSE.
        snapshot_each_level: Keep a copy after every level (otherwise only the last model).
        seed: Seed of the batch shuffling.
    """

    def __init__(
        self,
        teacher: nn.Module,
        *,
        levels: Sequence[int] = tuple(range(14, -1, -1)),
        epochs_per_level: int = 1,
        steps_per_level: int | None = None,
        optimizer_factory: Callable[[Any], torch.optim.Optimizer] | None = None,
        end_lr_scale: float = 0.5,
        max_grad_norm: float | None = 5.0,
        standardize: bool = False,
        snapshot_each_level: bool = True,
        seed: int = 2000,
    ) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError("teacher must be an nn.Module")
        self.teacher = teacher
        self.levels = [int(s) for s in levels]
        if not self.levels:
            raise ValueError("levels must not be empty")
        self.epochs_per_level = check_positive_int("epochs_per_level", epochs_per_level)
        self.steps_per_level = (
            None
            if steps_per_level is None
            else check_positive_int("steps_per_level", steps_per_level)
        )
        self.optimizer_factory = optimizer_factory or (
            lambda p: torch.optim.AdamW(p, lr=3e-6, weight_decay=0.01)
        )
        self.end_lr_scale = check_in_range("end_lr_scale", end_lr_scale, 0.0, 1.0)
        self.max_grad_norm = (
            None if max_grad_norm is None else check_positive("max_grad_norm", max_grad_norm)
        )
        self.standardize = bool(standardize)
        self.snapshot_each_level = bool(snapshot_each_level)
        self.seed = int(seed)
        self.history: dict[int, list[float]] = {}
        self.optimizers: dict[int, torch.optim.Optimizer] = {}

    def fit(self, dataset: TrajectoryDataset, batch_size: int = 100) -> dict[int, nn.Module]:
        """Train level by level; return level → frozen snapshot (or ``{last: model}``)."""
        batch_size = check_positive_int("batch_size", batch_size)
        student = copy.deepcopy(self.teacher)
        student.train()
        for p in student.parameters():
            p.requires_grad_(True)
        g = torch.Generator().manual_seed(self.seed)
        snapshots: dict[int, nn.Module] = {}
        T = len(dataset)
        for level in self.levels:
            inputs = dataset.at(level)
            if self.steps_per_level is None:
                per_epoch = math.ceil(T / batch_size)
                total = per_epoch * self.epochs_per_level
            else:
                total = self.steps_per_level
            opt = self.optimizer_factory(student.parameters())
            end = self.end_lr_scale
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda i, total=total, end=end: 1.0 - (1.0 - end) * i / max(1, total)
            )
            losses: list[float] = []
            perm = torch.empty(0, dtype=torch.long)
            for _ in range(total):
                if perm.numel() < batch_size and not (perm.numel() and perm.numel() == T):
                    perm = torch.cat([perm, torch.randperm(T, generator=g)])
                idx, perm = perm[: min(batch_size, T)], perm[min(batch_size, T) :]
                idx = idx.to(inputs.device)
                # row gathers, as inputs[idx] (cheaper on the strided per-level view)
                x, y = inputs.index_select(0, idx), dataset.targets.index_select(0, idx)
                pred = student(x) if dataset.cond is None else student(x, dataset.cond[idx])
                if pred.shape != y.shape:
                    raise ValueError(
                        f"model output {tuple(pred.shape)} does not match targets {tuple(y.shape)}"
                    )
                if self.standardize:
                    pred = (pred - pred.mean(0)) / (pred.std(0) + 1e-6)
                    y = (y - y.mean(0)) / (y.std(0) + 1e-6)
                loss = torch.mean((pred - y) ** 2)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite distillation loss at level {level}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(student.parameters(), self.max_grad_norm)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
            self.history[level] = losses
            self.optimizers[level] = opt
            if self.snapshot_each_level:
                snapshots[level] = _frozen_copy(student)
        if not self.snapshot_each_level:
            snapshots[self.levels[-1]] = _frozen_copy(student)
        return snapshots


class NoiseAwareReward(nn.Module):
    """Routes a step index to its noise-aware snapshot (the teacher where none exists).

    ``forward(images, cond, step)`` computes ``head(model(images), cond)`` with ``model`` the
    snapshot for ``step`` (or, with ``route="last"``, the snapshot trained last for every
    step up to the highest level), falling back to the teacher for steps without one.

    Args:
        teacher: The original reward model.
        snapshots: Level → model, as returned by :meth:`NoiseAwareDistiller.fit`.
        head: Optional ``head(model_output, cond) -> [M]`` (default: the output itself).
        route: ``"per_level"`` (paper) or ``"last"`` (one model for all distilled levels).
    """

    def __init__(
        self,
        teacher: nn.Module,
        snapshots: Mapping[int, nn.Module],
        head: Callable[[Tensor, Any], Tensor] | None = None,
        route: Literal["per_level", "last"] = "per_level",
    ) -> None:
        super().__init__()
        check_choice("route", route, ("per_level", "last"))
        self.teacher = teacher
        self.snapshots = nn.ModuleDict({str(int(k)): v for k, v in snapshots.items()})
        self.levels = [int(k) for k in snapshots]
        self.head = head
        self.route = route

    def model_for(self, step: int) -> nn.Module:
        """The model used at ``step``."""
        if self.route == "last" and self.levels and step <= max(self.levels):
            return self.snapshots[str(self.levels[-1])]
        return self.snapshots[str(step)] if str(step) in self.snapshots else self.teacher  # noqa: SIM401

    def forward(self, images: Tensor, cond: Any, step: int) -> Tensor:
        out = self.model_for(int(step))(images)
        return out if self.head is None else self.head(out, cond)


def _frozen_copy(model: nn.Module) -> nn.Module:
    snap = copy.deepcopy(model).eval()
    for p in snap.parameters():
        p.requires_grad_(False)
    return snap
