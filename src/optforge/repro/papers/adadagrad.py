"""Reproduction ``adadagrad``: adaptive batch sizes for AdaGrad / AdaGrad-Norm reach the accuracy
of small constant batches with far fewer optimizer steps.

Set-up: scikit-learn's digits (1797 × 64, features / 16;
``repro.data.digits_split(n_train=1437)``: fixed permutation seed 0, 1437 train / 360 test),
multinomial logistic regression (650 parameters, zero init) and a small MLP 64-128-10
(``repro.models.mlp``, tanh; init from ``seed``). Every arm gets the same **sample** budget
(``epochs`` × 1437 examples); batches are drawn epoch by epoch without replacement.

Arms:

* ``adadagrad`` — :class:`optforge.optim.AdAdaGrad` (torch's Adagrad update, lr 0.3), norm test
  η = 1.0, b0 = 2, b_max = 1437, batches from :class:`optforge.data.AdaptiveBatchSampler`;
  ``adadagrad(eta=2)`` the same with η = 2 (schedule monotone in η);
* ``adadagrad-norm`` — :class:`optforge.optim.AdAdaGradNorm` (scalar AdaGrad-Norm, lr 3.0), same
  test;
* ``adagrad(b=B)`` — ``torch.optim.Adagrad`` (lr 0.3) with a constant batch ``B`` ∈ {2, 16, 128,
  1437} from ``torch.utils.data.BatchSampler(RandomSampler)``, the baselines a user would pick;
* ``mlp/...`` — the MLP with AdAdaGrad (lr 0.05, η = 1) vs ``torch.optim.Adagrad`` (lr 0.05) at
  b ∈ {16, 1437}.

Choice: η = 1.0 (the official code uses 0.1): on this small, noisy data set η ≤ 0.5 jumps to
the full batch within a couple of steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, RandomSampler

from optforge.data import AdaptiveBatchSampler
from optforge.optim import AdAdaGrad, AdAdaGradNorm
from optforge.repro.data import digits_split
from optforge.repro.models import mlp
from optforge.repro.registry import Claim, Reproduction, Results, register

__all__ = ["CLAIMS", "CONFIGS", "METHODS", "N_TRAIN"]

N_TRAIN = 1437

_BASE: dict[str, Any] = {
    "epochs": 50,
    "log_every": N_TRAIN,
    "lr": 0.3,
    "norm_lr": 3.0,
    "mlp_lr": 0.05,
    "eta": 1.0,
    "eta_high": 2.0,
    "b0": 2,
    "b_max": N_TRAIN,
    "chunk_size": 512,
}

CONFIGS = {
    "smoke": {**_BASE, "epochs": 6},
    "quick": dict(_BASE),
    "full": {**_BASE, "epochs": 100},
}


def _train(
    config: Mapping[str, Any],
    seed: int,
    device: str,
    *,
    kind: str,
    optimizer: str,
    lr_key: str,
    eta_key: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Train ``kind`` ("logreg" or "mlp") with lr ``config[lr_key]`` on the sample budget:
    ``optimizer`` "adadagrad"/"adadagrad-norm" (test η = ``config[eta_key]``) or "adagrad" at
    the constant ``batch_size``."""
    lr = config[lr_key]
    eta = None if eta_key is None else config[eta_key]
    x_train, y_train, x_test, y_test = (t.to(device) for t in digits_split(n_train=N_TRAIN))
    model = _model(kind, seed).to(device)
    budget = int(config["epochs"]) * N_TRAIN
    adaptive = optimizer in ("adadagrad", "adadagrad-norm")
    sampler: AdaptiveBatchSampler | None = None
    if adaptive:
        cls = AdAdaGrad if optimizer == "adadagrad" else AdAdaGradNorm
        opt: torch.optim.Optimizer = cls(
            model.parameters(),
            lr=lr,
            eta=eta,
            initial_batch_size=config["b0"],
            max_batch_size=config["b_max"],
        )
        sampler = AdaptiveBatchSampler(N_TRAIN, config["b0"], seed=1000 + seed, infinite=True)
        batches: Iterator[list[int]] = iter(sampler)
    else:
        opt = torch.optim.Adagrad(model.parameters(), lr=lr)
        batches = _constant_batches(int(batch_size), seed)  # type: ignore[arg-type]

    def train_loss() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(model(x_train), y_train))

    seen, steps, next_log = 0, 0, 0
    log_x: list[float] = []
    log_loss: list[float] = []
    log_b: list[float] = []
    log_steps: list[float] = []
    sizes: list[int] = []
    current_b = config["b0"] if adaptive else int(batch_size)  # type: ignore[arg-type]
    while True:
        if seen >= next_log:
            log_x.append(float(next_log))
            log_loss.append(train_loss())
            log_b.append(float(current_b))
            log_steps.append(float(steps))
            next_log += config["log_every"]
        if seen >= budget:
            break
        idx_list = next(batches)[: budget - seen]
        idx = torch.tensor(idx_list, device=device)
        xb, yb = x_train[idx], y_train[idx]
        opt.zero_grad()
        if adaptive:
            opt.backward(model, F.cross_entropy, xb, yb, chunk_size=config["chunk_size"])  # type: ignore[attr-defined]
        else:
            F.cross_entropy(model(xb), yb).backward()
        opt.step()
        steps += 1
        seen += len(idx_list)
        sizes.append(len(idx_list))
        if adaptive:
            current_b = opt.batch_size  # type: ignore[attr-defined]
            sampler.set_batch_size(current_b)  # type: ignore[union-attr]
    with torch.no_grad():
        test_acc = float((model(x_test).argmax(1) == y_test).float().mean())
    return _run_metrics(test_acc, log_loss, steps, seen, log_x, log_b, log_steps)


def _run_metrics(
    test_acc: float,
    train_loss: list[float],
    steps: int,
    seen: int,
    samples_seen: list[Any],
    batch_size: list[Any],
    optimizer_steps: list[Any],
) -> dict[str, Any]:
    """One run's metrics from its logs (the per-seed run and each seed of an ensemble)."""
    trace = [float(b) for b in batch_size]
    return {
        "test_acc": test_acc,
        "final_train_loss": train_loss[-1],
        "steps": float(steps),
        "samples": float(seen),
        "initial_batch_size": trace[0],
        "final_batch_size": trace[-1],
        "batch_size_at_half": trace[len(trace) // 2],
        "monotone": float(trace == sorted(trace)),
        "samples_seen": samples_seen,
        "train_loss": train_loss,
        "batch_size": batch_size,
        "optimizer_steps": optimizer_steps,
    }


def _train_constant_ensemble(
    config: Mapping[str, Any],
    seeds: Sequence[int],
    device: str,
    *,
    kind: str,
    lr_key: str,
    batch_size: int,
) -> dict[int, dict[str, Any]]:
    """The ``adagrad(b=B)`` arm (``optimizer="adagrad"`` of :func:`_train`) for several seeds as
    one stacked model: each seed keeps its own init (:func:`_model`), its own batch stream
    (:func:`_constant_batches`) and its own ``torch.optim.Adagrad`` state.

    The seeds' weights and biases are stacked leaves ``[S, out, in]`` and ``[S, out]`` (one
    ``baddbmm`` per layer on the seeds' batches ``[S, B, in]``; every seed's batch has the same
    size, as the constant batches cut each epoch the same way). The loss is the sum over seeds
    of each seed's mean cross-entropy, so each seed's gradient is its own. One
    ``torch.optim.Adagrad`` (lr ``config[lr_key]``) steps all leaves; its update is elementwise,
    so every seed's trajectory is :func:`_train`'s (``tests/repro/test_adadagrad_ensemble.py``
    checks the metrics bit for bit; the full quick run was checked the same way)."""
    lr = config[lr_key]
    x_train, y_train, x_test, y_test = (t.to(device) for t in digits_split(n_train=N_TRAIN))
    models = [_model(kind, seed).to(device) for seed in seeds]
    layers = [[m for m in model.modules() if isinstance(m, nn.Linear)] for model in models]
    n_layers = len(layers[0])
    weights = [
        torch.stack([layer[j].weight.detach() for layer in layers]).requires_grad_()
        for j in range(n_layers)
    ]
    biases = [
        torch.stack([layer[j].bias.detach() for layer in layers]).requires_grad_()
        for j in range(n_layers)
    ]
    opt = torch.optim.Adagrad([*weights, *biases], lr=lr)
    streams = [_constant_batches(batch_size, seed) for seed in seeds]
    n_seeds = len(seeds)
    budget = int(config["epochs"]) * N_TRAIN

    def forward(x: Tensor) -> Tensor:
        # x [S, B, in] -> logits [S, B, out]; tanh between layers as in mlp(activation=Tanh)
        for j in range(n_layers):
            if j:
                x = torch.tanh(x)
            x = torch.baddbmm(biases[j].unsqueeze(1), x, weights[j].transpose(1, 2))
        return x

    def seed_forward(i: int, x: Tensor) -> Tensor:
        for j in range(n_layers):
            if j:
                x = torch.tanh(x)
            x = F.linear(x, weights[j][i], biases[j][i])
        return x

    def train_losses() -> list[float]:
        with torch.no_grad():
            return [
                float(F.cross_entropy(seed_forward(i, x_train), y_train)) for i in range(n_seeds)
            ]

    seen, steps, next_log = 0, 0, 0
    log_x: list[float] = []
    log_loss: list[list[float]] = []
    log_steps: list[float] = []
    while True:
        if seen >= next_log:
            log_x.append(float(next_log))
            log_loss.append(train_losses())
            log_steps.append(float(steps))
            next_log += config["log_every"]
        if seen >= budget:
            break
        idx_lists = [next(stream)[: budget - seen] for stream in streams]
        idx = torch.tensor(idx_lists, device=device)  # [S, B]: one batch size for every seed
        logits = forward(x_train[idx])
        losses = F.cross_entropy(
            logits.flatten(0, 1), y_train[idx].flatten(), reduction="none"
        ).view(n_seeds, -1)
        opt.zero_grad()
        losses.mean(1).sum().backward()
        opt.step()
        steps += 1
        seen += len(idx_lists[0])
    out: dict[int, dict[str, Any]] = {}
    with torch.no_grad():
        for i, seed in enumerate(seeds):
            test_acc = float((seed_forward(i, x_test).argmax(1) == y_test).float().mean())
            out[seed] = _run_metrics(
                test_acc,
                [row[i] for row in log_loss],
                steps,
                seen,
                list(log_x),
                [float(batch_size)] * len(log_x),
                list(log_steps),
            )
    return out


def _train_seeds(
    config: Mapping[str, Any], seeds: Sequence[int], device: str, arms: Sequence[str]
) -> dict[int, dict[str, dict[str, Any]]]:
    """The reproduction's ``batched`` run: the constant-batch Adagrad arms as one stacked model
    per arm (:func:`_train_constant_ensemble`); the adaptive arms (their batch sizes differ per
    seed) run :func:`_train` seed by seed."""
    out: dict[int, dict[str, dict[str, Any]]] = {seed: {} for seed in seeds}
    for arm in arms:
        ensemble = _ENSEMBLES.get(arm)
        if ensemble is None:
            for seed in seeds:
                out[seed][arm] = METHODS[arm](config, seed, device)
        else:
            for seed, metrics in ensemble(config, seeds, device).items():
                out[seed][arm] = metrics
    return out


def _model(kind: str, seed: int) -> nn.Module:
    if kind == "logreg":
        model = nn.Linear(64, 10)
        nn.init.zeros_(model.weight)
        nn.init.zeros_(model.bias)
        return model
    gen = torch.Generator().manual_seed(seed)
    model = mlp([64, 128, 10], activation=nn.Tanh)
    with torch.no_grad():
        for layer in (model[0], model[2]):
            bound = layer.in_features**-0.5
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.zero_()
    return model


def _constant_batches(batch_size: int, seed: int) -> Iterator[list[int]]:
    gen = torch.Generator().manual_seed(1000 + seed)
    while True:
        yield from BatchSampler(RandomSampler(range(N_TRAIN), generator=gen), batch_size, False)


_LOGREG = partial(_train, kind="logreg")
_MLP = partial(_train, kind="mlp", lr_key="mlp_lr")

METHODS = {
    "adadagrad": partial(_LOGREG, optimizer="adadagrad", eta_key="eta", lr_key="lr"),
    "adadagrad(eta=2)": partial(_LOGREG, optimizer="adadagrad", eta_key="eta_high", lr_key="lr"),
    "adadagrad-norm": partial(_LOGREG, optimizer="adadagrad-norm", eta_key="eta", lr_key="norm_lr"),
    **{
        f"adagrad(b={b})": partial(_LOGREG, optimizer="adagrad", batch_size=b, lr_key="lr")
        for b in (2, 16, 128, N_TRAIN)
    },
    "mlp/adadagrad": partial(_MLP, optimizer="adadagrad", eta_key="eta"),
    "mlp/adagrad(b=16)": partial(_MLP, optimizer="adagrad", batch_size=16),
    "mlp/adagrad(b=1437)": partial(_MLP, optimizer="adagrad", batch_size=N_TRAIN),
}
_CONSTANT = [f"adagrad(b={b})" for b in (2, 16, 128, N_TRAIN)]
_ENSEMBLES = {
    **{
        f"adagrad(b={b})": partial(
            _train_constant_ensemble, kind="logreg", lr_key="lr", batch_size=b
        )
        for b in (2, 16, 128, N_TRAIN)
    },
    **{
        f"mlp/adagrad(b={b})": partial(
            _train_constant_ensemble, kind="mlp", lr_key="mlp_lr", batch_size=b
        )
        for b in (16, N_TRAIN)
    },
}


def _best_constant(r: Results) -> float:
    return max(r.mean(m, "test_acc") for m in _CONSTANT)


CLAIMS = [
    Claim(
        name="batch-size-ramps-up",
        statement="The batch size starts tiny and grows monotonically during training.",
        description="min over seeds of AdAdaGrad's final batch size (trace non-decreasing, "
        "starting at b0 = 2, is checked by the next claim)",
        metric=lambda r: r.min("adadagrad", "final_batch_size"),
        op=">=",
        threshold={"smoke": 50.0, "quick": 500.0, "full": 500.0},
    ),
    Claim(
        name="batch-trace-monotone",
        statement="Adaptive batch size schemes progressively increase the batch size.",
        description="fraction of seeds whose AdAdaGrad and AdAdaGrad-Norm batch traces start at "
        "2 and never decrease",
        metric=lambda r: min(
            r.fraction(m, "monotone", lambda v: v == 1.0)
            * r.fraction(m, "initial_batch_size", lambda v: v == 2.0)
            for m in ("adadagrad", "adadagrad-norm")
        ),
        op=">=",
        threshold=1.0,
    ),
    Claim(
        name="far-fewer-steps",
        statement="The adaptive schemes need far fewer optimizer steps than a small constant "
        "batch for the same number of samples.",
        description="mean steps(AdAdaGrad) / mean steps(Adagrad, b = 2)",
        metric=lambda r: r.mean("adadagrad", "steps") / r.mean("adagrad(b=2)", "steps"),
        op="<=",
        threshold={"smoke": 0.1, "quick": 1 / 50, "full": 1 / 50},
    ),
    Claim(
        name="accuracy-near-best-constant",
        statement="Adaptive batch sizes generalize comparably to small constant batches.",
        description="mean test accuracy of AdAdaGrad minus the best constant-batch Adagrad's",
        metric=lambda r: r.mean("adadagrad", "test_acc") - _best_constant(r),
        op=">=",
        threshold=-0.03,
        scales=("quick", "full"),
    ),
    Claim(
        name="accuracy-vs-full-batch",
        statement="... and better than (here: not worse than) training with a large batch.",
        description="mean test accuracy of AdAdaGrad minus full-batch Adagrad's (b = 1437)",
        metric=lambda r: r.mean_gap("adadagrad", "adagrad(b=1437)", "test_acc"),
        op=">=",
        threshold=-0.01,
        scales=("quick", "full"),
    ),
    Claim(
        name="schedule-monotone-in-eta",
        statement="A looser test (larger η) keeps the batch smaller.",
        description="fraction of seeds with final b(η = 2) < final b(η = 1)",
        metric=lambda r: r.fraction_paired(
            "adadagrad(eta=2)", "adadagrad", "final_batch_size", lambda v: v < 0
        ),
        op=">=",
        threshold=1.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="adadagrad-norm-works",
        statement="AdAdaGrad-Norm (the variant the theory covers) ramps up with few steps and "
        "trains.",
        description="min over seeds of AdAdaGrad-Norm's test accuracy (its final batch >= 500 "
        "and steps <= 1/50 of b = 2 are in the record)",
        metric=lambda r: (
            r.min("adadagrad-norm", "test_acc")
            if r.min("adadagrad-norm", "final_batch_size") >= 500
            and r.mean("adadagrad-norm", "steps") <= r.mean("adagrad(b=2)", "steps") / 50
            else 0.0
        ),
        op=">=",
        threshold=0.90,
        scales=("quick", "full"),
    ),
    Claim(
        name="mlp-accuracy-near-small-batch",
        statement="The same holds beyond the convex case (small MLP).",
        description="mean test accuracy of AdAdaGrad on the MLP minus Adagrad b = 16's",
        metric=lambda r: r.mean_gap("mlp/adadagrad", "mlp/adagrad(b=16)", "test_acc"),
        op=">=",
        threshold=-0.03,
        scales=("quick", "full"),
    ),
    Claim(
        name="mlp-fewer-steps",
        statement="... with far fewer optimizer steps than the small constant batch.",
        description="mean steps of AdAdaGrad on the MLP / Adagrad b = 16's",
        metric=lambda r: r.mean("mlp/adadagrad", "steps") / r.mean("mlp/adagrad(b=16)", "steps"),
        op="<=",
        threshold=0.1,
        scales=("quick", "full"),
    ),
]

register(
    Reproduction(
        name="adadagrad",
        title="AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods",
        arxiv="2402.11215",
        spec="adadagrad.md",
        configs=CONFIGS,
        seeds={"smoke": 1, "quick": 5, "full": 10},
        seed_base=100,
        methods=METHODS,
        batched=_train_seeds,
        seed_batch=None,
        claims=CLAIMS,
        plot_x="samples_seen",
        plot_y=("batch_size", "train_loss"),
        plot_logy=True,
        summary="Norm-test adaptive batch sizes with AdaGrad / AdaGrad-Norm on digits vs "
        "torch.optim.Adagrad at constant batch sizes, equal sample budget.",
    )
)
