"""Reproduction ``elr``: early-learning regularization prevents memorisation of noisy labels.

Set-up (quick/smoke): scikit-learn digits (1797 × 64), features ``/16``, stratified 70/30 split
per seed, then standardised with the train statistics
(``repro.data.digits_split(test_size=0.3, split_seed=seed, standardize=True)``: 1257 train / 540
clean test). Train labels get 40% noise from ``optforge.data``: symmetric
(``make_symmetric_noise``, new label uniform over the other 9 classes) or asymmetric
(``make_pair_noise`` with ``c → c+1 mod 10`` on 40% of each class). Model: MLP 64 → 256 → ReLU →
256 → ReLU → 10 (``repro.models.mlp``, PyTorch default init from ``torch.manual_seed(seed)``,
shared by every arm of a seed), ``torch.optim.Adam`` lr 1e-3, batch 64, no weight decay; the
epoch order comes from a generator seeded ``1000 + seed``. Metric: clean test accuracy at the
**last** epoch (memorisation is the point), the memorised fraction of the flipped labels, and
for ELR the precision/recall of ``ELRLoss.suspected_noisy`` against the flipped set.

Arms (per noise type ``sym`` / ``asym``): ``ce`` (``torch.nn.CrossEntropyLoss``), ``elr``
(``ELRLoss`` λ = 3, β = 0.7), ``gce`` (``GCELoss`` q = 0.7) and ``sce`` (``SCELoss`` α = 0.1,
β = 1, A = −4); no maintained package ships GCE/SCE, so they live in ``optforge.losses``.

Full scale (GPU): a synthetic 20-class Gaussian mixture (d = 500, 20k train / 5k test, class means
on a sphere of radius 4, unit within-class noise: Bayes accuracy ≈ 0.95), 60% symmetric and 40%
cyclic asymmetric noise, a 4-layer MLP of width 2048, SGD lr 0.02 momentum 0.9, 100 epochs, plus
an ``elr+`` arm (two networks, cross targets from the other network's EMA, mixup a = 1, EMA 0.997).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optforge.data import (
    cyclic_mapping,
    label_noise_metrics,
    make_pair_noise,
    make_symmetric_noise,
)
from optforge.losses import ELRLoss, ELRPlusLoss, GCELoss, ModelEMA, SCELoss, mixup_batch
from optforge.repro.data import digits_split
from optforge.repro.models import mlp
from optforge.repro.registry import Claim, Reproduction, register

__all__ = ["CLAIMS", "CONFIGS", "METHODS"]

_DIGITS = {
    "data": "digits",
    "sym_rate": 0.4,
    "asym_rate": 0.4,
    "width": 256,
    "depth": 2,
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.0,
    "batch_size": 64,
    "lam": 3.0,
    "beta": 0.7,
    "gce_q": 0.7,
    "sce_alpha": 0.1,
    "sce_beta": 1.0,
    "sce_log_clamp": -4.0,
    "mixup_alpha": 1.0,
    "ema_decay": 0.997,
    "ema_ramp_steps": 1000,
    "eval_every": 5,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {**_DIGITS, "epochs": 30},
    "quick": {**_DIGITS, "epochs": 60},
    "full": {
        **_DIGITS,
        "data": "gmm",
        "n_train": 20000,
        "n_test": 5000,
        "dim": 500,
        "num_classes": 20,
        "radius": 4.0,
        "sym_rate": 0.6,
        "asym_rate": 0.4,
        "width": 2048,
        "depth": 4,
        "optimizer": "sgd",
        "lr": 0.02,
        "momentum": 0.9,
        "batch_size": 128,
        "epochs": 100,
        "ema_ramp_steps": 5000,
    },
}


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def _gmm(config: Mapping[str, Any], seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(5000 + seed)
    c, d = config["num_classes"], config["dim"]
    means = torch.randn(c, d, generator=g)
    means = config["radius"] * means / means.norm(dim=1, keepdim=True)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, c, (n,), generator=g)
        return means[y] + torch.randn(n, d, generator=g), y

    x_tr, y_tr = draw(config["n_train"])
    x_te, y_te = draw(config["n_test"])
    return x_tr, y_tr, x_te, y_te, means


def _data(config: Mapping[str, Any], seed: int, noise: str) -> dict[str, Any]:
    if config["data"] == "digits":
        x_tr, y_tr, x_te, y_te = digits_split(test_size=0.3, split_seed=seed, standardize=True)
        c, bayes = 10, float("nan")
    else:
        x_tr, y_tr, x_te, y_te, means = _gmm(config, seed)
        c = config["num_classes"]
        # equal priors, isotropic unit covariance: the nearest mean is the Bayes classifier
        bayes = float((torch.cdist(x_te, means).argmin(1) == y_te).float().mean())
    if noise == "sym":
        noisy = make_symmetric_noise(y_tr, config["sym_rate"], c, generator=seed)
    else:
        noisy = make_pair_noise(y_tr, config["asym_rate"], cyclic_mapping(c), generator=seed)
    return {
        "x_train": x_tr,
        "y_clean": y_tr,
        "y_noisy": noisy.labels,
        "flipped": noisy.flipped,
        "x_test": x_te,
        "y_test": y_te,
        "num_classes": c,
        "bayes_acc": bayes,
    }


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------


def _mlp(config: Mapping[str, Any], in_dim: int, num_classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return mlp([in_dim] + [config["width"]] * config["depth"] + [num_classes])


def _optimizer(config: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    if config["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=config["lr"], fused=True)
    return torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])


def _batches(n: int, batch_size: int, generator: torch.Generator, device: str):
    order = torch.randperm(n, generator=generator).to(device)
    return order.split(batch_size)


@torch.no_grad()
def _accuracy(predict, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(x).argmax(1) == y).float().mean())


def _train(config: Mapping[str, Any], seed: int, device: str, loss: str, noise: str) -> dict:
    d = _data(config, seed, noise)
    x_tr, y_noisy = d["x_train"].to(device), d["y_noisy"].to(device)
    x_te, y_te = d["x_test"].to(device), d["y_test"].to(device)
    n, c = x_tr.shape[0], d["num_classes"]
    model = _mlp(config, x_tr.shape[1], c, seed).to(device)
    opt = _optimizer(config, model)
    criterion = _criterion(config, loss, n, c, device)
    order = torch.Generator().manual_seed(1000 + seed)
    curve: dict[str, list[float]] = {"epoch": [], "test_acc_curve": [], "noisy_fit_curve": []}
    for epoch in range(1, config["epochs"] + 1):
        model.train()
        for idx in _batches(n, config["batch_size"], order, device):
            logits = model(x_tr[idx])
            value = (
                criterion(logits, y_noisy[idx], idx)
                if loss == "elr"
                else criterion(logits, y_noisy[idx])
            )
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
        if epoch % config["eval_every"] == 0 or epoch == config["epochs"]:
            model.eval()
            curve["epoch"].append(float(epoch))
            curve["test_acc_curve"].append(_accuracy(model, x_te, y_te))
            curve["noisy_fit_curve"].append(_accuracy(model, x_tr, y_noisy))
    with torch.no_grad():
        pred = model(x_tr).argmax(1).cpu()
    out = _summary(d, curve, pred)
    if loss == "elr":
        out.update(_detection(criterion.suspected_noisy(y_noisy).cpu(), d["flipped"]))
    return out


def _criterion(config: Mapping[str, Any], loss: str, n: int, c: int, device: str) -> nn.Module:
    if loss == "elr":
        return ELRLoss(n, c, lam=config["lam"], beta=config["beta"]).to(device)
    if loss == "gce":
        return GCELoss(q=config["gce_q"])
    if loss == "sce":
        return SCELoss(config["sce_alpha"], config["sce_beta"], config["sce_log_clamp"])
    return nn.CrossEntropyLoss()


def _stacked_mlp(
    config: Mapping[str, Any], in_dim: int, num_classes: int, seeds: Sequence[int], device: str
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Each seed's ``_mlp`` (same init): the hidden layers as stacked leaves
    ``[(Wᵀ [S, in, out], b [S, out])]`` (row ``s`` = seed ``s``; weights stored transposed, so the
    forward multiplies by the same values as ``nn.Linear``'s ``weight.t()`` and autograd writes
    the weight gradient without a transposing copy) and the output layer as one ``(W, b)`` leaf
    pair per seed (kept apart: a stacked ``[S, 10]`` bias takes a different vector/scalar path in
    Adam than a lone ``[10]`` bias and rounds differently)."""
    models = [
        [m for m in _mlp(config, in_dim, num_classes, seed) if isinstance(m, nn.Linear)]
        for seed in seeds
    ]

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device).requires_grad_()

    hidden = [
        (
            leaf(torch.stack([m[k].weight.t() for m in models])),
            leaf(torch.stack([m[k].bias for m in models])),
        )
        for k in range(len(models[0]) - 1)
    ]
    output = [(leaf(m[-1].weight), leaf(m[-1].bias)) for m in models]
    return hidden, output


def _stacked_forward(
    hidden: Sequence[tuple[torch.Tensor, torch.Tensor]],
    output: Sequence[tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
) -> torch.Tensor:
    """``x [S, N, in]`` through every seed's MLP: each hidden layer as one ``baddbmm`` (the
    batched ``addmm`` that ``nn.Linear`` runs) + ReLU, the output layer as ``addmm`` per seed,
    as ``nn.Linear`` does. Logits ``[S, N, C]``."""
    for w, b in hidden:
        x = torch.relu(torch.baddbmm(b.unsqueeze(1), x, w))
    return torch.stack([torch.addmm(b, x[i], w.t()) for i, (w, b) in enumerate(output)])


def _exact_stacking(hidden: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether an elementwise optimizer step on the stacked hidden leaves equals the per-seed
    step bit for bit: every seed's row must start on a SIMD-vector boundary (a multiple of 64
    elements), so each element takes the same vector/scalar path as in its own tensor."""
    return all(t[0].numel() % 64 == 0 for layer in hidden for t in layer)


def _train_ensemble(
    config: Mapping[str, Any], seeds: Sequence[int], device: str, loss: str, noise: str
) -> dict[int, dict]:
    """``_train`` for several seeds as one vectorised ensemble.

    Every seed keeps its own data split, label noise, init (``_mlp`` from its seed), epoch order
    (generator ``1000 + seed``) and loss module (its own ELR target table); the seeds' MLPs are
    stacked and run with batched matmuls, the loss is the library's, called per seed on that
    seed's logits, and the optimizer (elementwise) steps the stacked leaves. The summed loss
    gives each seed exactly its own gradient, so a seed's metrics are those of ``_train``.
    """
    data = [_data(config, seed, noise) for seed in seeds]
    shapes = {tuple(d["x_train"].shape) for d in data}
    if len(shapes) != 1:  # the ensemble needs equal training-set sizes
        return {seed: _train(config, seed, device, loss, noise) for seed in seeds}
    x_tr = torch.stack([d["x_train"] for d in data]).to(device)
    y_noisy = torch.stack([d["y_noisy"] for d in data]).to(device)
    x_te = torch.stack([d["x_test"] for d in data]).to(device)
    y_te = torch.stack([d["y_test"] for d in data]).to(device)
    n, c = x_tr.shape[1], data[0]["num_classes"]
    hidden, output = _stacked_mlp(config, x_tr.shape[2], c, seeds, device)
    if not _exact_stacking(hidden):
        return {seed: _train(config, seed, device, loss, noise) for seed in seeds}
    params = [t for layer in [*hidden, *output] for t in layer]
    if config["optimizer"] == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=config["lr"], fused=True)
    else:
        opt = torch.optim.SGD(params, lr=config["lr"], momentum=config["momentum"])
    criteria = [_criterion(config, loss, n, c, device) for _ in seeds]
    orders = [torch.Generator().manual_seed(1000 + seed) for seed in seeds]
    rows = torch.arange(len(seeds), device=device)[:, None]
    curves: list[dict[str, list[float]]] = [
        {"epoch": [], "test_acc_curve": [], "noisy_fit_curve": []} for _ in seeds
    ]

    @torch.no_grad()
    def accuracy(x: torch.Tensor, y: torch.Tensor) -> list[float]:
        hit = (_stacked_forward(hidden, output, x).argmax(2) == y).float()
        return [float(h.mean()) for h in hit]

    for epoch in range(1, config["epochs"] + 1):
        batches = [_batches(n, config["batch_size"], order, device) for order in orders]
        for parts in zip(*batches, strict=True):
            idx = torch.stack(parts)
            logits = _stacked_forward(hidden, output, x_tr[rows, idx])
            y = y_noisy[rows, idx]
            terms = [
                criterion(logits[i], y[i], idx[i]) if loss == "elr" else criterion(logits[i], y[i])
                for i, criterion in enumerate(criteria)
            ]
            opt.zero_grad(set_to_none=True)
            torch.stack(terms).sum().backward()
            opt.step()
        if epoch % config["eval_every"] == 0 or epoch == config["epochs"]:
            test_acc, fit = accuracy(x_te, y_te), accuracy(x_tr, y_noisy)
            for i, curve in enumerate(curves):
                curve["epoch"].append(float(epoch))
                curve["test_acc_curve"].append(test_acc[i])
                curve["noisy_fit_curve"].append(fit[i])
    with torch.no_grad():
        preds = _stacked_forward(hidden, output, x_tr).argmax(2).cpu()
    out = {}
    for i, seed in enumerate(seeds):
        out[seed] = _summary(data[i], curves[i], preds[i])
        if loss == "elr":
            flagged = criteria[i].suspected_noisy(y_noisy[i]).cpu()
            out[seed].update(_detection(flagged, data[i]["flipped"]))
    return out


def _train_elr_plus(config: Mapping[str, Any], seed: int, device: str, noise: str) -> dict:
    """ELR+: two networks, each trained for an epoch in turn with cross targets from the
    other's EMA on the un-mixed batch, mixup and the ELR+ loss; prediction averages the two EMA
    softmaxes."""
    d = _data(config, seed, noise)
    x_tr, y_noisy = d["x_train"].to(device), d["y_noisy"].to(device)
    x_te, y_te = d["x_test"].to(device), d["y_test"].to(device)
    n, c = x_tr.shape[0], d["num_classes"]
    nets = [_mlp(config, x_tr.shape[1], c, seed + k * 7919).to(device) for k in range(2)]
    emas = [ModelEMA(net, config["ema_decay"], config["ema_ramp_steps"]) for net in nets]
    opts = [_optimizer(config, net) for net in nets]
    losses = [
        ELRPlusLoss(n, c, lam=config["lam"], beta=config["beta"]).to(device) for _ in range(2)
    ]
    orders = [torch.Generator().manual_seed(1000 + seed + 17 * k) for k in range(2)]
    mix_gen = torch.Generator().manual_seed(3000 + seed)
    one_hot = F.one_hot(y_noisy, c).float()
    steps = [0, 0]

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return sum(F.softmax(ema(x), dim=1) for ema in emas) / 2

    curve: dict[str, list[float]] = {"epoch": [], "test_acc_curve": [], "noisy_fit_curve": []}
    for epoch in range(1, config["epochs"] + 1):
        for k in range(2):
            net, teacher = nets[k], emas[1 - k]
            for idx in _batches(n, config["batch_size"], orders[k], device):
                with torch.no_grad():
                    teacher_logits = teacher(x_tr[idx])
                x_mix, y_mix, m, perm = mixup_batch(
                    x_tr[idx], one_hot[idx], config["mixup_alpha"], mix_gen
                )
                losses[k].update_targets(idx, teacher_logits, perm, m)
                value = losses[k](net(x_mix), y_mix, steps[k])
                opts[k].zero_grad(set_to_none=True)
                value.backward()
                opts[k].step()
                emas[k].update(net)
                steps[k] += 1
        if epoch % config["eval_every"] == 0 or epoch == config["epochs"]:
            curve["epoch"].append(float(epoch))
            curve["test_acc_curve"].append(_accuracy(predict, x_te, y_te))
            curve["noisy_fit_curve"].append(_accuracy(predict, x_tr, y_noisy))
    pred = predict(x_tr).argmax(1).cpu()
    return _summary(d, curve, pred)


def _summary(d: Mapping[str, Any], curve: Mapping[str, list[float]], pred: torch.Tensor) -> dict:
    stats = label_noise_metrics(pred, d["y_noisy"], d["y_clean"])
    return {
        "test_acc": curve["test_acc_curve"][-1],
        "best_test_acc": max(curve["test_acc_curve"]),
        "memorized": stats["memorized"],
        "corrected": stats["corrected"],
        "clean_fit": stats["clean_fit"],
        "noise_rate": stats["noise_rate"],
        "bayes_acc": d["bayes_acc"],
        **curve,
    }


def _detection(flagged: torch.Tensor, flipped: torch.Tensor) -> dict[str, float]:
    hits = float((flagged & flipped).sum())
    return {
        "detect_precision": hits / max(float(flagged.sum()), 1.0),
        "detect_recall": hits / max(float(flipped.sum()), 1.0),
    }


METHODS = {
    f"{loss}/{noise}": (
        partial(_train_elr_plus, noise=noise)
        if loss == "elr+"
        else partial(_train, loss=loss, noise=noise)
    )
    for noise in ("sym", "asym")
    for loss in ("elr", "ce", "gce", "sce", "elr+")
}


def _train_seeds(
    config: Mapping[str, Any], seeds: Sequence[int], device: str, arms: Sequence[str]
) -> dict[int, dict[str, dict]]:
    """The reproduction's ``batched`` run: each single-network arm's seeds as one ensemble
    (``_train_ensemble``, the same metrics as ``_train``); ELR+ (full scale) runs per seed."""
    out: dict[int, dict[str, dict]] = {seed: {} for seed in seeds}
    for arm in arms:
        loss, noise = arm.split("/")
        if loss == "elr+":
            results = {seed: METHODS[arm](config, seed, device) for seed in seeds}
        else:
            results = _train_ensemble(config, seeds, device, loss, noise)
        for seed, metrics in results.items():
            out[seed][arm] = metrics
    return out


CLAIMS = [
    Claim(
        name="elr-beats-ce-symmetric",
        quantity="clean-test accuracy gain (fraction), ELR − CE, 40% symmetric noise",
        description="mean over seeds of last-epoch test accuracy, ELR minus cross-entropy",
        statement="ELR prevents memorisation: with 40% symmetric noise its (last-epoch) test "
        "accuracy exceeds cross-entropy's by ≥ 0.15 on average.",
        metric=lambda r: r.mean_gap("elr/sym", "ce/sym", "test_acc"),
        op=">=",
        threshold={"quick": 0.15, "full": 0.15},
        scales=("quick", "full"),
    ),
    Claim(
        name="elr-beats-ce-asymmetric",
        quantity="clean-test accuracy gain (fraction), ELR − CE, 40% asymmetric noise",
        description="mean over seeds of last-epoch test accuracy, ELR minus cross-entropy",
        statement="... and by ≥ 0.12 with 40% asymmetric (c → c+1) noise.",
        metric=lambda r: r.mean_gap("elr/asym", "ce/asym", "test_acc"),
        op=">=",
        threshold=0.12,
        scales=("quick", "full"),
    ),
    Claim(
        name="elr-beats-ce-every-seed-symmetric",
        quantity="worst-seed clean-test accuracy gain (fraction), ELR − CE, symmetric noise",
        description="minimum over seeds of the paired last-epoch test-accuracy difference ELR − CE",
        statement="ELR beats CE on every seed (symmetric noise): min over seeds of the paired gap.",
        metric=lambda r: r.worst_gap("elr/sym", "ce/sym", "test_acc"),
        op=">",
        threshold=0.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="elr-beats-ce-every-seed-asymmetric",
        quantity="worst-seed clean-test accuracy gain (fraction), ELR − CE, asymmetric noise",
        description="minimum over seeds of the paired last-epoch test-accuracy difference ELR − CE",
        statement="ELR beats CE on every seed (asymmetric noise): min over seeds of the "
        "paired gap.",
        metric=lambda r: r.worst_gap("elr/asym", "ce/asym", "test_acc"),
        op=">",
        threshold=0.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="ce-memorises",
        quantity=(
            "share of flipped training labels predicted as their wrong label (fraction), CE, "
            "symmetric"
        ),
        description=(
            "mean over seeds of the memorised share of mislabelled training examples, cross-entropy"
        ),
        statement="Cross-entropy memorises the noisy labels: mean share of flipped training "
        "labels predicted as their wrong label ≥ 0.8 (symmetric).",
        metric=lambda r: r.mean("ce/sym", "memorized"),
        op=">=",
        threshold=0.8,
        scales=("quick",),
    ),
    Claim(
        name="elr-does-not-memorise",
        quantity=(
            "share of flipped training labels predicted as their wrong label (fraction), ELR, "
            "symmetric"
        ),
        description="mean over seeds of the memorised share of mislabelled training examples, ELR",
        statement="ELR does not: mean memorised share of flipped labels ≤ 0.3 (symmetric).",
        metric=lambda r: r.mean("elr/sym", "memorized"),
        op="<=",
        threshold=0.3,
        scales=("quick", "full"),
    ),
    Claim(
        name="elr-targets-detect-noise",
        quantity="precision of 'argmax ELR target ≠ label' as a mislabel detector (fraction)",
        description=(
            "mean over seeds of the detector's precision on the symmetric-noise training set"
        ),
        statement="argmax of the ELR targets ≠ given label flags mislabelled examples with "
        "precision ≥ 0.8 (symmetric; spec §7.14).",
        metric=lambda r: r.mean("elr/sym", "detect_precision"),
        op=">=",
        threshold=0.8,
        scales=("quick", "full"),
    ),
    Claim(
        name="gce-beats-ce-symmetric",
        quantity="clean-test accuracy gain (fraction), GCE − CE, 40% symmetric noise",
        description="mean over seeds of last-epoch test accuracy, GCE minus cross-entropy",
        statement="GCE also resists symmetric noise (spec §6 optional): mean gain over CE ≥ 0.1.",
        metric=lambda r: r.mean_gap("gce/sym", "ce/sym", "test_acc"),
        op=">=",
        threshold=0.1,
        scales=("quick", "full"),
    ),
    Claim(
        name="elr-plus-adds-over-elr",
        quantity="clean-test accuracy gain (fraction), ELR+ − ELR, symmetric noise",
        description="mean over seeds of last-epoch test accuracy, ELR+ minus ELR",
        statement="ELR+ (two networks, mixup, EMA) adds ≥ 1 point over ELR (weak claim, spec §6).",
        metric=lambda r: r.mean_gap("elr+/sym", "elr/sym", "test_acc"),
        op=">=",
        threshold=0.01,
        scales=("full",),
    ),
    Claim(
        name="smoke-elr-ahead-of-ce",
        quantity="worst-seed clean-test accuracy gain (fraction), ELR − CE after 30 epochs",
        description=(
            "minimum over seeds of the paired test-accuracy difference ELR − CE, symmetric 40% "
            "noise"
        ),
        statement="Mechanism: after 30 epochs ELR is ahead of CE on the clean test set by "
        "≥ 0.1 (symmetric 40% noise).",
        metric=lambda r: r.worst_gap("elr/sym", "ce/sym", "test_acc"),
        op=">=",
        threshold=0.1,
        scales=("smoke",),
    ),
    Claim(
        name="smoke-ce-fits-noise-more",
        quantity="memorised share of flipped labels (fraction), CE (worst seed) − ELR (worst seed)",
        description="lowest CE memorised share minus highest ELR memorised share over seeds",
        statement="Mechanism: after 30 epochs CE has memorised a larger share of the flipped "
        "labels than ELR (difference ≥ 0.4).",
        metric=lambda r: r.min("ce/sym", "memorized") - r.max("elr/sym", "memorized"),
        op=">=",
        threshold=0.4,
        scales=("smoke",),
    ),
]

_QUICK_ARMS = tuple(
    f"{loss}/{noise}" for noise in ("sym", "asym") for loss in ("elr", "ce", "gce", "sce")
)

register(
    Reproduction(
        name="elr",
        title="Early-Learning Regularization Prevents Memorization of Noisy Labels",
        arxiv="2007.00151",
        spec="elr.md",
        configs=CONFIGS,
        methods=METHODS,
        batched=_train_seeds,
        seed_batch=None,
        claims=CLAIMS,
        seeds={"smoke": 1, "quick": 5, "full": 3},
        seed_base=100,
        methods_by_scale={"smoke": ("elr/sym", "ce/sym"), "quick": _QUICK_ARMS},
        plot_x="epoch",
        plot_y=("test_acc_curve", "noisy_fit_curve"),
        summary="ELR (λ = 3, β = 0.7) vs cross-entropy, GCE and SCE on digits with 40% symmetric "
        "and asymmetric label noise, MLP 64-256-256-10, Adam; last-epoch clean test accuracy.",
    )
)
