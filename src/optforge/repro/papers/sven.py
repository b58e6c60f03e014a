"""Reproduction ``sven``: Sven vs Adam, SGD and L-BFGS on small regressions.

Tasks (both generated in code, targets standardised with the training mean/std):

* ``toy``: the official notebook's 1-D function f(x) = exp(−10x²)·sin(2x), x ~ U[−1, 1]
  (train and validation drawn independently), MLP 1 → 16 → 16 → 16 → 1 with GELU (593 params).
* ``friedman``: scikit-learn's ``make_friedman1`` (10 features, 5 informative, noise 0.1;
  features centred to [−0.5, 0.5]), MLP 10 → 32 → 32 → 1 with GELU (1 441 params).

Per seed, the data, the initial weights and the shuffling are drawn from the seed; one experiment
per seed draws each task's data once and trains every arm from the same initial weights.
Methods, at an equal budget of epochs and the same mini-batches:

* ``sven``: :class:`optforge.optim.Sven`, lr 0.1, k = B/2, rtol 1e-3, κ = 2, Gram-eigh solver
  in float64, per-example loss Σ_out (pred − y)².
* ``adam``: ``torch.optim.Adam`` with ``nn.MSELoss()``, the best of the lr grid {1e-3, 3e-3, 1e-2}
  by final validation MSE, per seed and task (so Adam is tuned on the validation set; Sven is not).
* ``sgd``: ``torch.optim.SGD`` (momentum 0.9), best of the lr grid {0.01, 0.03, 0.1}.
* ``lbfgs``: ``torch.optim.LBFGS`` full batch, ``line_search_fn="strong_wolfe"``, history 50,
  ``lbfgs_iters`` iterations — reported, not asserted.

Metrics: final validation MSE per task, validation MSE per epoch (``val_mse``,
``friedman_val_mse``), cumulative training wall time per epoch (``wall_s``, ``friedman_wall_s``;
evaluation excluded) and total training time. L-BFGS logs its curves against function evaluations
(one evaluation = one pass over the training set) under ``lbfgs_*`` keys.

Equal wall time (when both ``sven`` and ``adam`` run): ``equal_wall_s`` is the shorter of the two
arms' total training times, and ``equal_wall_val_mse`` each arm's validation MSE after the last
epoch it completed within that time (``friedman_`` prefix for Friedman #1). These are recorded, not
asserted: the spec forbids asserting wall-time wins on a CPU, and the paper gives no number.
Since Sven's Gram path (one backward + a B × B ``eigh`` per step, :mod:`optforge.optim.sven.gram`)
this reproduction's Sven runs on it (its MLPs are ``nn.Linear`` + GELU).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from optforge._core import seed_everything
from optforge.optim.sven import Sven
from optforge.repro.models import mlp
from optforge.repro.registry import Claim, Reproduction, register

__all__ = ["ARMS", "CLAIMS", "CONFIGS", "run"]

_BASE: dict[str, Any] = {
    "batch_size": 64,
    "sven_lr": 0.1,
    "sven_k": 32,
    "sven_rtol": 1e-3,
    "adam_lrs": [1e-3, 3e-3, 1e-2],
    "sgd_lrs": [0.01, 0.03, 0.1],
    "lbfgs_history": 50,
    "lbfgs_chunk": 25,
    "friedman_noise": 0.1,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {
        **_BASE,
        "n_train": 512,
        "n_val": 256,
        "epochs": 16,
        "adam_lrs": [1e-2],
        "sgd_lrs": [0.03],
        "lbfgs_iters": 50,
        "tasks": ["toy"],
    },
    "quick": {
        **_BASE,
        "n_train": 1024,
        "n_val": 1000,
        "epochs": 20,
        "lbfgs_iters": 500,
        "tasks": ["toy", "friedman"],
    },
    "full": {  # the official notebook's setting (GPU)
        **_BASE,
        "n_train": 10_000,
        "n_val": 10_000,
        "epochs": 100,
        "batch_size": 128,
        "sven_k": 64,
        "lbfgs_iters": 500,
        "lbfgs_chunk": 50,
        "tasks": ["toy", "friedman"],
    },
}

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
ARMS = ("sven", "adam", "sgd", "lbfgs")


def run(
    config: Mapping[str, Any], seed: int, device: str, arms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The arms on one seed: each task's data is drawn once and shared by every arm."""
    data = {task: _task_data(task, config, seed, device) for task in config["tasks"]}
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        seed_everything(seed)
        out[arm] = _ARM_RUNS[arm](config, data, seed, device)
    if "sven" in out and "adam" in out:
        for task in config["tasks"]:
            _equal_wall_time(out["sven"], out["adam"], _prefix(task))
    return out


def _equal_wall_time(sven: dict[str, Any], adam: dict[str, Any], p: str) -> None:
    """Each arm's val MSE after its last epoch within the shorter of the two training times."""
    budget = min(sven[f"{p}train_time_s"], adam[f"{p}train_time_s"])
    for metrics in (sven, adam):
        wall, val = metrics[f"{p}wall_s"], metrics[f"{p}val_mse"]
        done = max(i for i, t in enumerate(wall) if t <= budget)
        metrics[f"{p}equal_wall_s"] = float(budget)
        metrics[f"{p}equal_wall_val_mse"] = float(val[done])


def _task_data(task: str, config: Mapping[str, Any], seed: int, device: str) -> Data:
    rng = np.random.default_rng(seed)
    n_train, n_val = config["n_train"], config["n_val"]
    if task == "toy":
        x = rng.uniform(-1.0, 1.0, size=(n_train + n_val, 1))
        y = np.exp(-10.0 * x**2) * np.sin(2.0 * x)
    elif task == "friedman":
        from sklearn.datasets import make_friedman1

        x, y = make_friedman1(
            n_samples=n_train + n_val,
            n_features=10,
            noise=config["friedman_noise"],
            random_state=int(rng.integers(2**31)),
        )
        x, y = x - 0.5, y[:, None]
    else:
        raise ValueError(f"unknown task {task!r}")
    mean, std = y[:n_train].mean(), y[:n_train].std()
    y = (y - mean) / std

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32, device=device)

    return t(x[:n_train]), t(y[:n_train]), t(x[n_train:]), t(y[n_train:])


def _model(task: str, seed: int, device: str) -> nn.Module:
    sizes = [1, 16, 16, 16, 1] if task == "toy" else [10, 32, 32, 1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(10_000 + seed)
        return mlp(sizes, activation=nn.GELU).to(device)


def _batches(n: int, batch_size: int, epochs: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(20_000 + seed)
    return [torch.randperm(n, generator=generator) for _ in range(epochs)]


def _val_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


def _train_minibatch(
    task: str,
    config: Mapping[str, Any],
    data: Data,
    seed: int,
    device: str,
    make_step: Callable[[nn.Module], Callable[[torch.Tensor, torch.Tensor], Any]],
) -> dict[str, list[float]]:
    """Train a fresh model epoch by epoch; return val MSE and cumulative wall time per epoch."""
    x, y, xv, yv = data
    model = _model(task, seed, device)
    step = make_step(model)
    bs = config["batch_size"]
    curve, wall, elapsed = [_val_mse(model, xv, yv)], [0.0], 0.0
    for perm in _batches(len(x), bs, config["epochs"], seed):
        perm = perm.to(device)
        start = time.perf_counter()
        for i in range(0, len(x) - bs + 1, bs):  # drop the last incomplete batch
            idx = perm[i : i + bs]
            step(x[idx], y[idx])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - start
        curve.append(_val_mse(model, xv, yv))
        wall.append(elapsed)
    return {"val": curve, "wall": wall}


def _sven_step(config: Mapping[str, Any]):
    loss_fn = nn.MSELoss(reduction="none")

    def make(model: nn.Module):
        optimizer = Sven(
            model.parameters(), lr=config["sven_lr"], k=config["sven_k"], rtol=config["sven_rtol"]
        )
        return lambda xb, yb: optimizer.step(model=model, loss_fn=loss_fn, inputs=xb, targets=yb)

    return make


def _first_order_step(cls: type[torch.optim.Optimizer], lr: float, **kwargs: Any):
    loss_fn = nn.MSELoss()

    def make(model: nn.Module):
        optimizer = cls(model.parameters(), lr=lr, **kwargs)

        def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            optimizer.step()

        return step

    return make


def _pack(prefix: str, out: Mapping[str, list[float]]) -> dict[str, Any]:
    val, wall = out["val"], out["wall"]
    return {
        f"{prefix}val_mse": val,
        f"{prefix}wall_s": wall,
        f"{prefix}final_val_mse": val[-1],
        f"{prefix}train_time_s": wall[-1],
    }


def _prefix(task: str) -> str:
    return "" if task == "toy" else f"{task}_"


def _run_grid(config, data, seed, device, lrs, cls, **kwargs) -> dict[str, Any]:
    metrics: dict[str, Any] = {"epoch": list(range(config["epochs"] + 1))}
    for task in config["tasks"]:
        runs = {
            lr: _train_minibatch(
                task, config, data[task], seed, device, _first_order_step(cls, lr, **kwargs)
            )
            for lr in lrs
        }
        best = min(runs, key=lambda lr: runs[lr]["val"][-1])
        metrics.update(_pack(_prefix(task), runs[best]))
        metrics[f"{_prefix(task)}best_lr"] = float(best)
        # wall time of the whole grid (what tuning Adam costs), for the report
        metrics[f"{_prefix(task)}grid_train_time_s"] = float(
            sum(r["wall"][-1] for r in runs.values())
        )
    return metrics


def _run_sven(
    config: Mapping[str, Any], data: Mapping[str, Data], seed: int, device: str
) -> dict[str, Any]:
    metrics: dict[str, Any] = {"epoch": list(range(config["epochs"] + 1))}
    for task in config["tasks"]:
        out = _train_minibatch(task, config, data[task], seed, device, _sven_step(config))
        metrics.update(_pack(_prefix(task), out))
    return metrics


def _run_adam(
    config: Mapping[str, Any], data: Mapping[str, Data], seed: int, device: str
) -> dict[str, Any]:
    return _run_grid(config, data, seed, device, config["adam_lrs"], torch.optim.Adam)


def _run_sgd(
    config: Mapping[str, Any], data: Mapping[str, Data], seed: int, device: str
) -> dict[str, Any]:
    return _run_grid(config, data, seed, device, config["sgd_lrs"], torch.optim.SGD, momentum=0.9)


def _run_lbfgs(
    config: Mapping[str, Any], data: Mapping[str, Data], seed: int, device: str
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    loss_fn = nn.MSELoss()
    for task in config["tasks"]:
        x, y, xv, yv = data[task]
        model = _model(task, seed, device)
        optimizer = torch.optim.LBFGS(
            model.parameters(),
            lr=1.0,
            max_iter=config["lbfgs_chunk"],
            history_size=config["lbfgs_history"],
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
        )

        def closure(model=model, optimizer=optimizer, x=x, y=y) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        evals, curve, wall, elapsed = [0], [_val_mse(model, xv, yv)], [0.0], 0.0
        for _ in range(config["lbfgs_iters"] // config["lbfgs_chunk"]):
            start = time.perf_counter()
            optimizer.step(closure)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed += time.perf_counter() - start
            state = optimizer.state[next(iter(optimizer.state))]
            evals.append(int(state["func_evals"]))
            curve.append(_val_mse(model, xv, yv))
            wall.append(elapsed)
        p = _prefix(task)
        metrics[f"{p}lbfgs_evals"] = [float(e) for e in evals]
        metrics[f"{p}lbfgs_val_mse"] = curve
        metrics[f"{p}lbfgs_wall_s"] = wall
        metrics[f"{p}final_val_mse"] = curve[-1]
        metrics[f"{p}train_time_s"] = wall[-1]
    return metrics


_ARM_RUNS = {"sven": _run_sven, "adam": _run_adam, "sgd": _run_sgd, "lbfgs": _run_lbfgs}

_ABSTRACT = (
    "On regression tasks Sven converges faster and to a lower final loss than first-order "
    "methods including Adam (abstract, arXiv:2604.01279)."
)

CLAIMS = [
    Claim(
        name="sven-below-best-adam-toy",
        statement=_ABSTRACT,
        description="1-D toy: max over seeds of Sven val MSE / best-of-grid Adam val MSE at "
        "equal epochs (< 1 means Sven is below Adam on every seed)",
        metric=lambda r: r.worst_ratio("sven", "adam", "final_val_mse"),
        op="<",
        threshold=1.0,
        scales=("smoke", "quick", "full"),
    ),
    Claim(
        name="sven-below-best-adam-friedman",
        statement=_ABSTRACT,
        description="Friedman #1 (scikit-learn): max over seeds of Sven / best Adam val MSE",
        metric=lambda r: r.worst_ratio("sven", "adam", "friedman_final_val_mse"),
        op="<",
        threshold=1.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="sven-gain-over-adam-toy",
        statement=_ABSTRACT,
        description="1-D toy: median over seeds of best Adam val MSE / Sven val MSE "
        "(spec §6 criterion 1)",
        metric=lambda r: r.median_ratio("adam", "sven", "final_val_mse"),
        op=">=",
        threshold=3.0,
        scales=("quick", "full"),
    ),
    Claim(
        name="sven-fits-toy",
        statement="Sven actually fits the notebook's 1-D function (spec §6 criterion 2).",
        description="max over seeds of Sven's final validation MSE on the toy (initial ≈ 1)",
        metric=lambda r: r.max("sven", "final_val_mse"),
        op="<",
        threshold=1e-3,
    ),
]

register(
    Reproduction(
        name="sven",
        title="Sven: Singular Value Descent as a Computationally Efficient Natural Gradient Method",
        arxiv="2604.01279",
        spec="sven.md",
        configs=CONFIGS,
        seeds={"smoke": 1, "quick": 3, "full": 3},
        seed_base=100,
        methods=list(ARMS),
        experiment=run,
        claims=CLAIMS,
        plot_x="epoch",
        plot_y=("val_mse", "friedman_val_mse"),
        plot_logy=True,
        summary="Sven (truncated pseudoinverse of the per-example Jacobian) vs best-of-grid Adam, "
        "SGD and L-BFGS on a 1-D toy and Friedman #1; validation MSE vs epochs and wall time.",
    )
)
