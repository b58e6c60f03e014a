"""Reproduction ``ttsnap``: noise-aware pruning beats best-of-N at equal compute.

Set-up (everything trained locally, no download): scikit-learn's digits scaled to [-1, 1], split
A/B 50/50 (permutation seed 0; ``digits(pixels="symmetric", shuffle_seed=0)`` from
:mod:`optforge.repro.data`). A "prompt" is a requested pair of digits (left, right); the
generator is an *unconditional* ε-prediction DDPM (T = 1000, linear β 1e-4 → 0.02, MLP denoiser
with a sinusoidal time embedding) trained on random side-by-side pairs (8 × 16 images), so a
sample matches a given prompt with probability ≈ 1/100. Sampling: deterministic DDIM, S = 20
steps at ``linspace(999, 0, 20)``, x̂0 clipped to [-1, 1]
(:class:`optforge.diffusion.ttsnap.DDIMSampler`). The teacher reward is a digit classifier
(MLP 64 → 128 → 128 → 10 trained on split A): ``R(x, (a, b)) = clamp(log p(a | left), -20) +
clamp(log p(b | right), -20)``. Its noise-aware copy is distilled on separate trajectories
(targets: the teacher's clamped log-probabilities of the final image; curriculum 14 → 0, AdamW,
linear decay 1.0 → 0.5 per level, clip 5, a snapshot per level;
:class:`~optforge.diffusion.ttsnap.NoiseAwareDistiller`).

An evaluation pool of trajectories (disjoint seeds) is scored once per prompt and step; the
methods are then compared by the offline simulation of the reference code
(:func:`~optforge.diffusion.ttsnap.reward_budget_curve`): cost x = 1 per candidate step,
y = 0.1 per reward call (exact convention), schedule (2, 6, 11)/(0.4, 0.4, 0.5), common random
subsets for every method. Arms: ``ttsnap`` (noise-aware snapshots), ``best-of-n``,
``naive-pruning`` (same schedule, original reward on x̂0), ``ttsnap-last-snapshot`` (ablation:
the last snapshot for every level) and ``random-pruning`` (sanity floor). The ``ttsnap`` arm
also runs the online :func:`~optforge.diffusion.ttsnap.ttsnap_search` with the real sampler at
B = 1000 for every prompt and compares it with the simulation.

One experiment per seed trains the DDPM, the classifier and the student (seeded by ``seed``),
draws the pools and the Monte-Carlo subsets, and scores every arm from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optforge.diffusion.ttsnap import (
    CostModel,
    DDIMSampler,
    NoiseAwareDistiller,
    NoiseAwareReward,
    PruningSchedule,
    TrajectoryDataset,
    alignment_metrics,
    relative_area_gain,
    reward_budget_curve,
    simulate_ttsnap,
    ttsnap_search,
)
from optforge.repro.data import digits
from optforge.repro.models import mlp
from optforge.repro.registry import Claim, Reproduction, register

__all__ = ["ARMS", "CLAIMS", "CONFIGS", "PROMPTS", "run"]

PROMPTS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (1, 7), (3, 8), (5, 6), (9, 4), (2, 0))

_BASE: dict[str, Any] = {
    "hidden": 256,
    "ddpm_iters": 6000,
    "ddpm_batch": 256,
    "ddpm_lr": 1e-3,
    "clf_steps": 1500,
    "n_distill": 3000,
    "distill_steps": 150,
    "distill_lr": 1e-3,
    "distill_batch": 256,
    "n_pool": 3000,
    "num_steps": 20,
    "budgets": list(range(200, 3001, 100)),
    "repeats": 100,
    "step_cost": 1.0,
    "reward_cost": 0.1,
    "schedule_steps": [2, 6, 11],
    "schedule_keep": [0.4, 0.4, 0.5],
    "levels": list(range(14, -1, -1)),
    "tau_steps": [2, 6, 11],
    "online_budget": 1000.0,
    "online": True,
}

CONFIGS = {
    "smoke": {
        **_BASE,
        "hidden": 128,
        "ddpm_iters": 700,
        "ddpm_batch": 128,
        "clf_steps": 400,
        "n_distill": 600,
        "distill_steps": 40,
        "n_pool": 600,
        "budgets": list(range(200, 1201, 200)),
        "repeats": 20,
        "levels": [11, 6, 2],
        "online": True,
    },
    "quick": {**_BASE},
    "full": {**_BASE, "ddpm_iters": 30000, "hidden": 512, "n_pool": 5000, "n_distill": 5000},
}

ARMS = ("ttsnap", "best-of-n", "naive-pruning", "ttsnap-last-snapshot", "random-pruning")


def run(
    config: Mapping[str, Any], seed: int, device: str, arms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The arms on one seed: one DDPM, classifier, student and scored pool shared by every arm."""
    S = config["num_steps"]
    denoiser = _train_ddpm(config, seed, device)
    clf = _train_classifier(config, seed, device)
    timesteps = torch.linspace(999, 0, S).round().long()
    sampler = DDIMSampler(denoiser, _alphas_cumprod(device), timesteps, (128,), clip_x0=1.0)
    gen = torch.Generator(device=device)

    # Distillation set (seeds disjoint from the evaluation pool).
    gen.manual_seed(20_000 + seed)
    levels = list(config["levels"])
    dist_est, dist_final = _trajectories(sampler, clf, config["n_distill"], gen)
    with torch.no_grad():
        targets = clf(dist_final)
    dataset = TrajectoryDataset(dist_est[:, levels], targets, levels)
    distiller = NoiseAwareDistiller(
        clf,
        levels=levels,
        steps_per_level=config["distill_steps"],
        optimizer_factory=lambda p: torch.optim.AdamW(
            p, lr=config["distill_lr"], weight_decay=0.01, foreach=True
        ),
        end_lr_scale=0.5,
        max_grad_norm=5.0,
        seed=30_000 + seed,
    )
    snapshots = distiller.fit(dataset, batch_size=config["distill_batch"])
    del dist_est, dataset

    # Evaluation pool, scored once: log-probabilities per trajectory and step.
    gen.manual_seed(40_000 + seed)
    est, _ = _trajectories(sampler, clf, config["n_pool"], gen)
    M = est.shape[0]
    with torch.no_grad():
        teacher_lp = clf(est.reshape(-1, 128)).view(M, S, 2, 10)
        student_lp = teacher_lp.clone()
        last_lp = teacher_lp.clone()
        last = snapshots[levels[-1]]
        for s in levels:
            student_lp[:, s] = snapshots[s](est[:, s])
            last_lp[:, s] = last(est[:, s])
    a = torch.tensor([p[0] for p in PROMPTS], device=device)
    b = torch.tensor([p[1] for p in PROMPTS], device=device)

    def per_prompt(lp: torch.Tensor) -> torch.Tensor:  # [M, S, 2, 10] -> [P, M, S]
        return (lp[:, :, 0, a] + lp[:, :, 1, b]).permute(2, 0, 1).contiguous()

    teacher_r = per_prompt(teacher_lp)
    final = teacher_r[:, :, S - 1].contiguous()
    inter = {
        "ttsnap": per_prompt(student_lp),
        "naive-pruning": teacher_r,
        "ttsnap-last-snapshot": per_prompt(last_lp),
    }
    gen.manual_seed(50_000 + seed)
    inter["random-pruning"] = torch.rand(teacher_r.shape, generator=gen, device=device)

    # Offline simulation with common random subsets.
    schedule = PruningSchedule(tuple(config["schedule_steps"]), tuple(config["schedule_keep"]))
    cost = CostModel(config["step_cost"], config["reward_cost"])
    budgets = [float(v) for v in config["budgets"]]
    gen.manual_seed(60_000 + seed)
    order = torch.rand(len(PROMPTS), config["repeats"], M, generator=gen, device=device).argsort(-1)
    curves = {"best-of-n": reward_budget_curve(None, final, None, budgets, cost, S, order=order)}
    for name, table in inter.items():
        curves[name] = reward_budget_curve(table, final, schedule, budgets, cost, S, order=order)

    n_bon = cost.num_candidates(config["online_budget"], None, S)
    n_tts = cost.num_candidates(config["online_budget"], schedule, S)
    out: dict[str, dict[str, Any]] = {}
    for name, curve in curves.items():
        n = n_bon if name == "best-of-n" else n_tts
        out[name] = {
            "area_gain": relative_area_gain(budgets, curve, curves["best-of-n"]),
            "reward_at_min_budget": float(curve[0]),
            "reward_at_max_budget": float(curve[-1]),
            "seeds_at_online_budget": float(n),
        }
        if name != "random-pruning":  # the sanity floor would squash the plot's scale
            out[name]["budget"] = budgets
            out[name]["reward"] = [float(v) for v in curve]
            out[name]["reward_minus_bon"] = [float(v) for v in curve - curves["best-of-n"]]
    out["best-of-n"]["classifier_accuracy"] = _classifier_accuracy(clf, device)

    # Alignment (Kendall tau) between intermediate scores and the final teacher reward.
    ttsnap = out["ttsnap"]
    diffs = []
    for s in config["tau_steps"]:
        tau_t = alignment_metrics(teacher_r[:, :, s], final)["kendall"]
        tau_n = alignment_metrics(inter["ttsnap"][:, :, s], final)["kendall"]
        ttsnap[f"kendall_teacher_s{s}"] = tau_t
        ttsnap[f"kendall_noise_aware_s{s}"] = tau_n
        diffs.append(tau_n - tau_t)
    ttsnap["min_kendall_gain"] = min(diffs)
    ttsnap["first_checkpoint_kendall_gain"] = diffs[0]
    ttsnap["seed_ratio_vs_bon"] = n_tts / n_bon

    if config["online"] and "ttsnap" in arms:
        ttsnap.update(
            _online_check(
                config, seed, device, sampler, clf, snapshots, schedule, cost, inter, final, order
            )
        )
    return {arm: out[arm] for arm in arms}


# --------------------------------------------------------------------------------------------
# Data and models
# --------------------------------------------------------------------------------------------


def _pairs(images: torch.Tensor, idx_left: torch.Tensor, idx_right: torch.Tensor) -> torch.Tensor:
    """Side-by-side 8 × 16 images, flattened to 128."""
    left = images.index_select(0, idx_left).view(-1, 8, 8)  # a row gather, as images[idx]
    right = images.index_select(0, idx_right).view(-1, 8, 8)
    return torch.cat([left, right], dim=2).reshape(-1, 128)


class _Denoiser(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.freqs = nn.Buffer(torch.exp(-math.log(10000.0) * torch.arange(16) / 16))
        self.inp = nn.Linear(128, hidden)
        self.temb = nn.Linear(32, hidden)
        self.body = nn.Sequential(
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 128),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        arg = t.float()[:, None] * self.freqs[None]
        emb = torch.cat([arg.sin(), arg.cos()], dim=1)
        return self.body(self.inp(x) + self.temb(emb))


class _PairClassifier(nn.Module):
    """8 × 16 image → ``[B, 2, 10]`` clamped log-probabilities of the left and right digit."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp([64, 128, 128, 10])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img = x.reshape(-1, 8, 16)
        halves = torch.stack([img[:, :, :8], img[:, :, 8:]], dim=1).reshape(-1, 64)
        logp = torch.log_softmax(self.net(halves), dim=-1).clamp_min(-20.0)
        return logp.view(-1, 2, 10)


def _prompt_head(out: torch.Tensor, cond: tuple[int, int]) -> torch.Tensor:
    a, b = cond
    return out[:, 0, a] + out[:, 1, b]


def _alphas_cumprod(device: str) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).float().to(device)


def _train_ddpm(config: Mapping[str, Any], seed: int, device: str) -> _Denoiser:
    images = digits(pixels="symmetric", shuffle_seed=0)[0].to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # parameter init only
        model = _Denoiser(config["hidden"]).to(device)
    abar = _alphas_cumprod(device)
    # a.sqrt() and (1 - a).sqrt() of a = abar[t], looked up: elementwise, so the same values
    sqrt_a, sqrt_1ma = abar.sqrt()[:, None], (1 - abar).sqrt()[:, None]
    bs, n = config["ddpm_batch"], len(images)
    trainer = _DDPMTrainer(model, bs)
    for lr in _cosine_lrs(config["ddpm_lr"], config["ddpm_iters"]):
        idx = torch.randint(0, n, (2, bs), generator=g, device=device)
        x0 = _pairs(images, idx[0], idx[1])
        t = torch.randint(0, 1000, (bs,), generator=g, device=device)
        eps = torch.randn(x0.shape, generator=g, device=device)
        trainer.step(x0.mul_(sqrt_a[t]).add_(sqrt_1ma[t] * eps), t, eps, lr)
    return trainer.finish().eval().requires_grad_(False)


def _cosine_lrs(lr: float, iters: int) -> list[float]:
    """The learning rate of each of ``iters`` steps under ``CosineAnnealingLR(T_max=iters)``."""
    holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(holder, T_max=iters)
    holder.step()  # no gradient, so a no-op; the scheduler warns unless a step precedes its own
    lrs = []
    for _ in range(iters):
        lrs.append(holder.param_groups[0]["lr"])
        sched.step()
    return lrs


class _DDPMTrainer:
    """Adam on ``mean((model(x, t) - eps)²)`` with the gradients back-propagated by hand.

    Bit-identical to autograd + ``torch.optim.Adam(foreach=True)`` (defaults, the learning rate
    given per step), which ``test_ttsnap_repro_grads`` checks; it is only cheaper:

    * the backward runs the ops autograd runs for this MLP (the same kernels, operands and order)
      without building a graph; ``2/N`` is exact as N = B·128 is a power of two;
    * every activation, gradient and Adam buffer is allocated once and written with ``out=``
      (the same kernels as the allocating calls);
    * parameters, gradients and Adam moments live in flat buffers, so Adam's update is 7 ops on
      one tensor instead of 7 per parameter: the same in-place ops and scalars as the foreach
      loop. An elementwise kernel gives an element the same value whichever tensor holds it as
      long as no element falls into a scalar tail loop, i.e. every parameter's size is a multiple
      of the SIMD block (64 floats covers AVX-512's 2 × 16); otherwise Adam runs per parameter.
    """

    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, model: _Denoiser, batch: int) -> None:
        self.model = model
        # linear layers: input, time embedding, then the body's four
        self.linears = [model.inp, model.temb, *(model.body[i] for i in (1, 3, 5, 7))]
        self.params = [p for lin in self.linears for p in (lin.weight, lin.bias)]
        sizes = [p.numel() for p in self.params]
        flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        # parameters, gradients, exp_avg, exp_avg_sq, Adam's denominator
        bufs = [flat, *(torch.zeros_like(flat) for _ in range(3)), torch.empty_like(flat)]
        self.views, grads = (
            [v.view_as(p) for v, p in zip(buf.split(sizes), self.params, strict=True)]
            for buf in bufs[:2]
        )
        self.w, self.b = self.views[0::2], self.views[1::2]
        self.gw, self.gb = grads[0::2], grads[1::2]
        if all(s % 64 == 0 for s in sizes):
            self.adam = [tuple(bufs)]
        else:
            self.adam = list(zip(*(buf.split(sizes) for buf in bufs), strict=True))
        self.k = 0
        hidden = model.inp.out_features
        self.pre = [flat.new_empty(batch, hidden) for _ in range(4)]  # pre-activations
        self.act = [flat.new_empty(batch, hidden) for _ in range(4)]  # silu(pre), then grads
        self.temb_out = flat.new_empty(batch, hidden)
        self.out = flat.new_empty(batch, self.linears[-1].out_features)

    def step(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, lr: float) -> None:
        self._grads(x, t, eps)
        self._adam(lr)

    def _grads(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> None:
        w, b, gw, gb, pre, act = self.w, self.b, self.gw, self.gb, self.pre, self.act
        arg = t.float()[:, None] * self.model.freqs[None]
        emb = torch.cat([arg.sin(), arg.cos()], dim=1)
        # linear(x) + linear(emb); F.linear on a 2-D input with a bias is addmm(b, x, W.t())
        torch.addmm(b[0], x, w[0].t(), out=pre[0])
        pre[0].add_(torch.addmm(b[1], emb, w[1].t(), out=self.temb_out))
        outs = [*pre[1:], self.out]
        for i in range(4):
            torch.ops.aten.silu.out(pre[i], out=act[i])
            torch.addmm(b[2 + i], act[i], w[2 + i].t(), out=outs[i])
        # d mean(diff²) / d out = 2 diff / N: mean's 1/N times pow's 2·diff in autograd, both
        # exact (N = B·128 a power of two)
        g = self.out.sub_(eps).mul_(2.0 / self.out.numel())
        for i in reversed(range(4)):
            torch.mm(g.t(), act[i], out=gw[2 + i])
            torch.sum(g, 0, out=gb[2 + i])
            # the input's gradient overwrites the activation, which is no longer needed
            torch.mm(g, w[2 + i], out=act[i])
            g = torch.ops.aten.silu_backward.grad_input(act[i], pre[i], grad_input=act[i])
        torch.mm(g.t(), x, out=gw[0])
        torch.sum(g, 0, out=gb[0])
        torch.mm(g.t(), emb, out=gw[1])
        gb[1].copy_(gb[0])  # the same sum

    def _adam(self, lr: float) -> None:
        """``torch.optim.Adam``'s foreach update (CPU, no amsgrad/weight decay), op for op."""
        beta1, beta2 = self.betas
        self.k += 1
        bias_correction1 = 1 - beta1 ** float(self.k)
        bias_correction2 = 1 - beta2 ** float(self.k)
        step_size = (lr / bias_correction1) * -1
        bias_correction2_sqrt = bias_correction2**0.5
        for param, grad, exp_avg, exp_avg_sq, denom in self.adam:
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2)
            exp_avg_sq.addcmul_(grad, grad, value=1 - beta2)
            torch.sqrt(exp_avg_sq, out=denom)
            denom.div_(bias_correction2_sqrt)
            denom.add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=step_size)

    def finish(self) -> _Denoiser:
        """The model with the trained parameters copied in."""
        with torch.no_grad():
            for p, v in zip(self.params, self.views, strict=True):
                p.copy_(v)
        return self.model


def _train_classifier(config: Mapping[str, Any], seed: int, device: str) -> _PairClassifier:
    x, y = digits(pixels="symmetric", shuffle_seed=0)
    half = len(x) // 2
    xa, ya = x[:half].to(device), y[:half].to(device)
    g = torch.Generator(device=device).manual_seed(10_000 + seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(10_000 + seed)
        clf = _PairClassifier().to(device)
    opt = torch.optim.Adam(clf.net.parameters(), lr=1e-3, foreach=True)
    for _ in range(config["clf_steps"]):
        idx = torch.randint(0, half, (128,), generator=g, device=device)
        xb = xa[idx] + 0.1 * torch.randn(xa[idx].shape, generator=g, device=device)
        loss = nn.functional.cross_entropy(clf.net(xb), ya[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return clf.eval().requires_grad_(False)


def _classifier_accuracy(clf: _PairClassifier, device: str) -> float:
    x, y = digits(pixels="symmetric", shuffle_seed=0)
    half = len(x) // 2
    with torch.no_grad():
        pred = clf.net(x[half:].to(device)).argmax(1).cpu()
    return float((pred == y[half:]).float().mean())


def _trajectories(
    sampler: DDIMSampler, clf: _PairClassifier, n: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step estimates ``[n, S, 128]`` and final images ``[n, 128]``."""
    ds = TrajectoryDataset.generate(
        sampler, clf, n, range(sampler.num_steps), generator=g, batch_size=1000
    )
    return ds.estimates, ds.estimates[:, -1]


def _online_check(
    config: Mapping[str, Any],
    seed: int,
    device: str,
    sampler: DDIMSampler,
    clf: _PairClassifier,
    snapshots: Mapping[int, nn.Module],
    schedule: PruningSchedule,
    cost: CostModel,
    inter: Mapping[str, torch.Tensor],
    final: torch.Tensor,
    order: torch.Tensor,
) -> dict[str, float]:
    """Online search at one budget for every prompt vs the offline simulation's distribution."""
    budget = float(config["online_budget"])
    reward = NoiseAwareReward(clf, snapshots, head=_prompt_head)
    gen = torch.Generator(device=device).manual_seed(70_000 + seed)
    spent, rewards = [], []
    for prompt in PROMPTS:
        res = ttsnap_search(
            sampler,
            lambda x, c: _prompt_head(clf(x), c),
            reward,
            schedule,
            budget=budget,
            cost=cost,
            cond=prompt,
            generator=gen,
        )
        spent.append(res.cost_spent)
        rewards.append(float(res.reward))
    n = cost.num_candidates(budget, schedule, sampler.num_steps)
    sim = simulate_ttsnap(inter["ttsnap"], final, schedule, n, order=order)  # [P, repeats]
    sim_mean = float(sim.mean())
    se = float(sim.var(dim=1).sum().sqrt()) / len(PROMPTS)  # s.e. of a mean over the prompts
    online_mean = float(np.mean(rewards))
    return {
        "online_max_cost_over_budget": max(spent) / budget,
        "online_reward": online_mean,
        "sim_reward_at_online_budget": sim_mean,
        "online_vs_sim_z": abs(online_mean - sim_mean) / max(se, 1e-12),
    }


CLAIMS = [
    Claim(
        name="ttsnap-beats-best-of-n",
        quantity="relative area gain over best-of-N of the reward-vs-budget curve (%)",
        description="worst seed: smallest area gain of TTSnap over best-of-N at equal compute",
        statement=(
            "TTSnap improves the reward-vs-budget curve over best-of-N at equal compute: "
            "worst seed's relative area gain in % (direction of the paper's claim)"
        ),
        metric=lambda r: r.min("ttsnap", "area_gain"),
        op=">",
        threshold=0.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="ttsnap-area-gain-size",
        quantity="relative area gain over best-of-N of the reward-vs-budget curve (%)",
        description="mean over seeds of TTSnap's area gain over best-of-N",
        statement=(
            "> 16% improvement over existing methods on the budget-aware metric (spec "
            "§6 criterion for the toy: mean area gain over best-of-N >= 8%)"
        ),
        metric=lambda r: r.mean("ttsnap", "area_gain"),
        op=">=",
        threshold=8.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="noise-aware-beats-naive-pruning",
        quantity="area gain (percentage points), TTSnap − naive pruning",
        description=(
            "worst seed: smallest paired difference of area gains, noise-aware reward minus the "
            "original reward"
        ),
        statement=(
            "Noise-aware fine-tuning is what makes pruning pay off: area gain of TTSnap "
            "minus pruning with the original reward, worst seed, percentage points"
        ),
        metric=lambda r: r.worst_gap("ttsnap", "naive-pruning", "area_gain"),
        op=">",
        threshold=0.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="noise-aware-margin-size",
        quantity="area gain (percentage points), TTSnap − naive pruning",
        description="mean over seeds of the paired difference of area gains",
        statement=(
            "... by a clear margin (spec §6 criterion: TTSnap minus naive pruning >= 8 "
            "percentage points; mean over seeds)"
        ),
        metric=lambda r: float(np.mean(r.paired("ttsnap", "naive-pruning", "area_gain"))),
        op=">=",
        threshold=8.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="noise-aware-reward-aligns-better",
        quantity=(
            "Kendall τ gain (noise-aware − clean reward vs final reward), min over steps 2/6/11"
        ),
        description=(
            "mean over seeds of the smallest gain in rank correlation with the final reward"
        ),
        statement=(
            "The noise-aware reward ranks intermediate estimates closer to the final "
            "reward: min over steps 2/6/11 of the Kendall tau gain (mean over seeds)"
        ),
        metric=lambda r: r.mean("ttsnap", "min_kendall_gain"),
        op=">",
        threshold=0.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="noise-aware-aligns-at-first-checkpoint",
        quantity="Kendall τ gain at step 2 (noise-aware − clean reward vs final reward)",
        description="worst seed: smallest gain in rank correlation at the first checkpoint",
        statement=(
            "Clean-domain rewards rank early, blurry estimates almost randomly; the "
            "noise-aware copy does better: Kendall tau gain at step 2 (worst seed)"
        ),
        metric=lambda r: r.min("ttsnap", "first_checkpoint_kendall_gain"),
        op=">",
        threshold=0.0,
    ),
    Claim(
        name="more-seeds-at-equal-budget",
        quantity="seeds evaluated at B = 1000, TTSnap / best-of-N (ratio)",
        description="worst seed: smallest ratio of initial noises evaluated at equal budget",
        statement="At B = 1000, TTSnap evaluates at least 3x as many seeds as best-of-N",
        metric=lambda r: r.min("ttsnap", "seed_ratio_vs_bon"),
        op=">=",
        threshold=3.0,
    ),
    Claim(
        name="online-search-within-budget",
        quantity="online search cost / budget B (ratio)",
        description="worst seed: largest spent cost divided by the budget",
        statement="The online search never spends more than its budget (max cost / B)",
        metric=lambda r: r.max("ttsnap", "online_max_cost_over_budget"),
        op="<=",
        threshold=1.0,
    ),
    Claim(
        name="online-matches-simulation",
        quantity="|z| of online vs simulated mean final reward at B = 1000 (standard errors)",
        description=(
            "worst seed: largest |z|-score between the online sampler and the offline simulation"
        ),
        statement=(
            "The online sampler's mean final reward at B = 1000 matches the offline "
            "simulation within Monte-Carlo error (worst seed |z|)"
        ),
        metric=lambda r: r.max("ttsnap", "online_vs_sim_z"),
        op="<=",
        threshold=3.0,
        scales=("quick", "full"),
    ),
]

register(
    Reproduction(
        name="ttsnap",
        title="TTSnap: Test-Time Scaling of Diffusion Models via Noise-Aware Pruning",
        arxiv="2511.22242",
        spec="ttsnap.md",
        configs=CONFIGS,
        seeds={"smoke": 1, "quick": 3, "full": 5},
        seed_base=100,
        methods=list(ARMS),
        experiment=run,
        methods_by_scale={"smoke": ("ttsnap", "best-of-n", "naive-pruning")},
        plot_x="budget",
        plot_y=("reward", "reward_minus_bon"),
        summary=(
            "Tiny two-digit DDPM on scikit-learn digits, classifier reward and its distilled "
            "noise-aware copy: reward-vs-budget of TTSnap, best-of-N and naive pruning "
            "(offline simulation of the reference code) plus an online search check."
        ),
        claims=CLAIMS,
    )
)
