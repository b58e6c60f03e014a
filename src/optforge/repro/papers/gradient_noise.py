"""Reproduction ``gradient-noise``: annealed gradient noise rescues a deep, narrow ReLU network
from a poor initialisation.

Set-up: scikit-learn's digits (1797 × 64, scaled to [0, 1] and mean-centred;
``repro.data.digits_split(n_train=1400, center=True)``: fixed permutation seed 0, 1400 train /
397 test), an MLP 64 → 20 × 50 ReLU → 10 (``repro.models.mlp``), every weight drawn from
N(0, init_std²) with zero biases (the paper's "simple init"), minibatch SGD (batch 128 with
replacement, lr 0.1, global-norm clip 10, noise after clipping, γ = 0.55). Each seed draws the
init from ``seed``, the noise from ``1000 + seed`` and the batches from ``2000 + seed``; every arm
of a seed starts from the same weights. The seeds of an arm train as one vectorised ensemble
(:func:`train_ensemble`: weights stacked per seed, batched matmuls), which keeps those per-seed
streams: each seed's trajectory is the single-model one (:func:`_train`, the same clipping,
noise and base step per seed): bit-identical on the CPU it was checked on (every metric of the
quick run), in general equal up to float reduction order.

Arms: ``sgd`` (no noise), ``sgd+noise`` (η = ``eta``), ``sgd+noise(eta=0.01)`` (dose response,
full scale only), ``adam`` and ``adam+noise`` (``torch.optim.Adam``, lr 1e-3, same init, η =
``eta_adam``), and ``sgd(kaiming)`` (a good init without noise, the reference of what the network
can reach). η is tuned per optimizer on calibration seeds 0–2 over the paper's grid
{0.01, 0.3, 1} plus the spec's 0.03 (:data:`ETA_GRID`, by mean final train accuracy); the claims
run on held-out seeds from 100. The Adam and Kaiming arms run ``adam_steps`` / ``kaiming_steps``
(shorter at quick scale: both train within a few hundred steps).

Besides the final train/test metrics every arm records its *escape*: the first evaluated step at
which train accuracy exceeds 0.5 (``steps + eval_every`` if never) and the train accuracy at
``mid_step`` (1,500): the moment the network leaves the chance plateau, which a snapshot at the
end of the run does not measure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from optforge._core import make_generator
from optforge.optim import NoisyOptimizer
from optforge.optim.gradient_noise import add_gradient_noise_, annealed_noise_std
from optforge.repro.data import digits_split
from optforge.repro.models import mlp
from optforge.repro.registry import Claim, Reproduction, Results, register

__all__ = ["CLAIMS", "CONFIGS", "ETA_GRID", "METHODS", "train_ensemble"]

_BASE = {
    "depth": 20,
    "width": 50,
    "init_std": 0.12,
    "lr": 0.1,
    "adam_lr": 1e-3,
    "batch_size": 128,
    "clip": 10.0,
    "eta": 0.03,  # SGD's η, tuned on calibration seeds 0–2 over ETA_GRID
    "eta_adam": 0.01,  # Adam's η, tuned on calibration seeds 0–2 over ETA_GRID
    "eta_low": 0.01,
    "gamma": 0.55,
    "eval_every": 100,
    "escape_acc": 0.5,
    "mid_step": 1500,
    "n_train": 1400,
}

#: The η grid each optimizer is tuned on: the paper's {0.01, 0.3, 1} plus the spec's 0.03.
ETA_GRID = (0.01, 0.03, 0.3, 1.0)

CONFIGS = {
    "smoke": {**_BASE, "steps": 1000, "adam_steps": 1000, "kaiming_steps": 1000},
    "quick": {**_BASE, "steps": 3000, "adam_steps": 500, "kaiming_steps": 1000},
    "full": {**_BASE, "steps": 3000, "adam_steps": 3000, "kaiming_steps": 3000},
}


def _train(
    config: Mapping[str, Any],
    seed: int,
    device: str,
    *,
    optimizer: str,
    eta_key: str | None,
    init: str = "poor",
) -> dict[str, Any]:
    """Train the deep MLP with ``optimizer`` and noise η = ``config[eta_key]`` (none if None)."""
    eta, steps_key, (x_train, y_train, x_test, y_test) = _setup(
        config, device, optimizer=optimizer, eta_key=eta_key, init=init
    )
    model = _mlp(config, seed, init).to(device)
    if optimizer == "sgd":
        base: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    else:
        base = torch.optim.Adam(model.parameters(), lr=config["adam_lr"])
    opt = NoisyOptimizer(
        base, eta=eta, gamma=config["gamma"], seed=1000 + seed, max_grad_norm=config["clip"]
    )
    batches = torch.Generator().manual_seed(2000 + seed)
    loss_fn = nn.CrossEntropyLoss()
    steps, curve_steps, curve_loss, curve_acc = config[steps_key], [], [], []

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            logits = model(x_train)
            return float(loss_fn(logits, y_train)), float(
                (logits.argmax(1) == y_train).float().mean()
            )

    for step in range(steps + 1):
        if step % config["eval_every"] == 0 or step == steps:
            loss, acc = evaluate()
            curve_steps.append(step)
            curve_loss.append(loss)
            curve_acc.append(acc)
        if step == steps:
            break
        idx = torch.randint(len(x_train), (config["batch_size"],), generator=batches).to(device)
        opt.zero_grad()
        loss_fn(model(x_train[idx]), y_train[idx]).backward()
        opt.step()
    with torch.no_grad():
        test_acc = float((model(x_test).argmax(1) == y_test).float().mean())
    return _metrics(config, steps, curve_steps, curve_loss, curve_acc, test_acc)


def _metrics(
    config: Mapping[str, Any],
    steps: int,
    curve_steps: list[int],
    curve_loss: list[float],
    curve_acc: list[float],
    test_acc: float,
) -> dict[str, Any]:
    """One seed's record from its train curves and test accuracy."""
    escaped = [s for s, a in zip(curve_steps, curve_acc, strict=True) if a > config["escape_acc"]]
    mid = [a for s, a in zip(curve_steps, curve_acc, strict=True) if s == config["mid_step"]]
    return {
        "escape_step": float(escaped[0] if escaped else steps + config["eval_every"]),
        "train_acc_mid": mid[0] if mid else float("nan"),
        "final_train_loss": curve_loss[-1],
        "final_train_acc": curve_acc[-1],
        "test_acc": test_acc,
        "initial_train_loss": curve_loss[0],
        "success": float(curve_acc[-1] > 0.5),
        "step": curve_steps,
        "train_loss": curve_loss,
        "train_acc": curve_acc,
    }


def _setup(
    config: Mapping[str, Any], device: str, *, optimizer: str, eta_key: str | None, init: str
) -> tuple[float, str, tuple[Tensor, ...]]:
    """An arm's η, the config key of its step count, and digits (train x, y, test x, y) on
    ``device``; turns on denormal flushing (as every arm runs)."""
    torch.set_flush_denormal(True)
    eta = 0.0 if eta_key is None else config[eta_key]
    steps_key = "kaiming_steps" if init == "kaiming" else "steps"
    steps_key = "adam_steps" if optimizer == "adam" else steps_key
    data = digits_split(n_train=config["n_train"], center=True)
    return eta, steps_key, tuple(t.to(device) for t in data)


def _mlp(config: Mapping[str, Any], seed: int, init: str) -> nn.Sequential:
    """The deep MLP, re-initialised from ``seed``: the poor N(0, init_std²) init or Kaiming."""
    model = mlp([64] + [config["width"]] * config["depth"] + [10])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                if init == "poor":
                    layer.weight.normal_(0.0, config["init_std"], generator=generator)
                else:  # Kaiming-normal for ReLU
                    std = (2.0 / layer.in_features) ** 0.5
                    layer.weight.normal_(0.0, std, generator=generator)
                layer.bias.zero_()
    return model


def train_ensemble(
    config: Mapping[str, Any],
    seeds: Sequence[int],
    device: str,
    *,
    optimizer: str,
    eta_key: str | None,
    init: str = "poor",
) -> dict[int, dict[str, Any]]:
    """:func:`_train` for several seeds at once, as one stacked ensemble: seed → metrics.

    The parameters are one leaf ``theta`` of shape ``[S, P]`` whose row ``i`` holds seed
    ``seeds[i]``'s model in ``model.parameters()`` order, initialised from that seed's
    :func:`_mlp`; the forward pass runs the S MLPs as batched matmuls on per-seed batches, each
    drawn from the seed's own generator ``2000 + seed``. The loss is the sum over seeds of each
    seed's mean cross-entropy, so row ``i`` of the gradient is the single model's gradient
    (backpropagated by hand with autograd's own ops). Then, as
    :class:`~optforge.optim.NoisyOptimizer` does per model: per-seed global-norm clipping to
    ``clip`` (the norm of the per-tensor norms, as ``clip_grad_norm_`` takes it), noise of std
    ``sqrt(η / (1 + t)^γ)`` drawn by
    :func:`~optforge.optim.gradient_noise.add_gradient_noise_` from the seed's generator
    ``1000 + seed`` (one flat draw of P numbers: the same numbers as the single model's draw),
    and one SGD/Adam step on ``theta`` (elementwise, so per seed).
    """
    eta, steps_key, (x_train, y_train, x_test, y_test) = _setup(
        config, device, optimizer=optimizer, eta_key=eta_key, init=init
    )
    models = [_mlp(config, seed, init) for seed in seeds]
    shapes = [p.shape for p in models[0].parameters()]
    sizes = [shape.numel() for shape in shapes]
    with torch.no_grad():
        rows = [nn.utils.parameters_to_vector(m.parameters()) for m in models]
        theta = torch.stack(rows).to(device).requires_grad_()
        theta.grad = torch.zeros_like(theta)  # every entry rewritten by each backward()
    n_seeds = len(seeds)

    def layers(flat: Tensor) -> list[Tensor]:
        """Weights ``[S, out, in]`` and biases ``[S, out]`` of ``flat`` (``[S, P]``), as views."""
        chunks = flat.split(sizes, dim=1)
        return [c.view(n_seeds, *shape) for c, shape in zip(chunks, shapes, strict=True)]

    @torch.no_grad()
    def forward(x: Tensor, inputs: list[Tensor] | None = None) -> Tensor:
        """Logits ``[S, B, 10]`` of ``x`` (``[S, B, 64]``); ``inputs`` collects each layer's."""
        params, h = layers(theta), x
        for k in range(0, len(params), 2):
            if inputs is not None:
                inputs.append(h)
            h = torch.baddbmm(params[k + 1].unsqueeze(1), h, params[k].transpose(1, 2))
            if k + 2 < len(params):
                h = torch.relu_(h)  # in place: the pre-activation is not needed
        return h

    def mean_ce(logits: Tensor, y: Tensor) -> Tensor:  # per-seed mean cross-entropy, [S]
        per_example = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        return per_example.view(y.shape).mean(1)

    def backward(x: Tensor, y: Tensor) -> None:
        """``theta.grad`` ← the gradient of Σ_seeds mean cross-entropy on ``(x, y)``.

        Backpropagation by hand with the ops autograd's formulas for ``baddbmm`` and ``relu``
        use (so bit-identical to ``loss.backward()`` through the graph, tested), without
        recording a graph or concatenating per-layer gradients: ~20% less time per step. The
        weight gradient is ``g^T a`` in the weight's layout rather than autograd's transposed
        ``(a^T g)^T``: the same numbers on the CPU checked (every metric of the quick run),
        ~10% less time per step with the in-place ReLU of :func:`forward`.
        """
        inputs: list[Tensor] = []
        logits = forward(x, inputs).requires_grad_()
        mean_ce(logits, y).sum().backward()
        g = logits.grad
        with torch.no_grad():
            params, grads = layers(theta), layers(theta.grad)
            for k in range(len(params) - 2, -1, -2):
                a = inputs[k // 2]
                grads[k + 1].copy_(g.sum(1))
                # g^T a: [S, out, in] as the weight is laid out (the transposed product
                # (a^T g)^T autograd forms gives the same numbers here but was ~20% slower, tested)
                grads[k].copy_(torch.bmm(g.transpose(1, 2), a))
                if k:  # through the layer, then the ReLU whose output ``a`` was
                    g = torch.ops.aten.threshold_backward(g.bmm(params[k]), a, 0)

    if optimizer == "sgd":
        base: torch.optim.Optimizer = torch.optim.SGD([theta], lr=config["lr"])
    else:
        base = torch.optim.Adam([theta], lr=config["adam_lr"])
    noise_streams = [make_generator(1000 + seed, device) for seed in seeds]
    batch_streams = [torch.Generator().manual_seed(2000 + seed) for seed in seeds]
    steps, curve_steps, curve_loss, curve_acc = config[steps_key], [], [], []
    x_all = x_train.expand(n_seeds, *x_train.shape)

    def evaluate() -> None:
        with torch.no_grad():
            logits = forward(x_all)
            # per seed, as nn.CrossEntropyLoss reduces (bit-identical to the single model)
            curve_loss.append([float(F.cross_entropy(row, y_train)) for row in logits])
            curve_acc.append((logits.argmax(2) == y_train).float().mean(1).tolist())

    for step in range(steps + 1):
        if step % config["eval_every"] == 0 or step == steps:
            evaluate()
            curve_steps.append(step)
        if step == steps:
            break
        idx = torch.stack(
            [
                torch.randint(len(x_train), (config["batch_size"],), generator=g)
                for g in batch_streams
            ]
        ).to(device)
        backward(x_train[idx], y_train[idx])
        with torch.no_grad():
            grad = theta.grad
            # per-seed global norm as clip_grad_norm_ takes it: the norm of the per-tensor norms
            per_tensor = [torch.linalg.vector_norm(g, dim=1) for g in grad.split(sizes, dim=1)]
            norms = torch.linalg.vector_norm(torch.stack(per_tensor, dim=1), dim=1)
            if not bool(torch.isfinite(norms).all()):
                raise RuntimeError(f"non-finite gradient norm at step {step}: {norms.tolist()}")
            grad.mul_(torch.clamp(config["clip"] / (norms + 1e-6), max=1.0).unsqueeze(1))
            std = (annealed_noise_std(step, eta, config["gamma"]) ** 2) ** 0.5  # NoisyOptimizer's
            for i, generator in enumerate(noise_streams):
                add_gradient_noise_([grad[i]], std, generator)
        base.step()
    with torch.no_grad():
        logits = forward(x_test.expand(n_seeds, *x_test.shape))
        test_acc = (logits.argmax(2) == y_test).float().mean(1).tolist()
    return {
        seed: _metrics(
            config,
            steps,
            curve_steps,
            [loss[i] for loss in curve_loss],
            [acc[i] for acc in curve_acc],
            test_acc[i],
        )
        for i, seed in enumerate(seeds)
    }


_ARMS: dict[str, dict[str, Any]] = {
    "sgd+noise": {"optimizer": "sgd", "eta_key": "eta"},
    "sgd": {"optimizer": "sgd", "eta_key": None},
    "sgd+noise(eta=0.01)": {"optimizer": "sgd", "eta_key": "eta_low"},
    "adam+noise": {"optimizer": "adam", "eta_key": "eta_adam"},
    "adam": {"optimizer": "adam", "eta_key": None},
    "sgd(kaiming)": {"optimizer": "sgd", "eta_key": None, "init": "kaiming"},
}

#: One model per seed (the reference the ensemble is tested against).
METHODS = {name: partial(_train, **arm) for name, arm in _ARMS.items()}


def _train_seeds(
    config: Mapping[str, Any], seeds: Sequence[int], device: str, arms: Sequence[str]
) -> dict[int, dict[str, dict[str, Any]]]:
    """The reproduction's ``batched`` run: each arm's seeds as one ensemble."""
    out: dict[int, dict[str, dict[str, Any]]] = {seed: {} for seed in seeds}
    for arm in arms:
        for seed, metrics in train_ensemble(config, seeds, device, **_ARMS[arm]).items():
            out[seed][arm] = metrics
    return out


def _stalls_where_noise_escapes(r: Results) -> float:
    """Fraction of seeds: at ``mid_step`` plain SGD is on the plateau and the noise arm is not."""
    sgd, noise = r.values("sgd", "train_acc_mid"), r.values("sgd+noise", "train_acc_mid")
    return float(np.mean((sgd <= 0.5) & (noise > 0.5)))


CLAIMS = [
    Claim(
        name="noise-arm-succeeds",
        statement="With annealed noise a 20-layer ReLU MLP trains from a poor init "
        "(≥ 4/5 seeds reach train accuracy > 0.5).",
        metric=lambda r: r.mean("sgd+noise", "success"),
        op=">=",
        threshold=0.8,
        scales=("quick", "full"),
        description="fraction of seeds with final train acc > 0.5, sgd+noise",
    ),
    Claim(
        name="noise-arm-test-accuracy",
        statement="... and generalises: mean test accuracy of the noise arm ≥ 0.85.",
        metric=lambda r: r.mean("sgd+noise", "test_acc"),
        op=">=",
        threshold=0.85,
        scales=("quick", "full"),
        description="mean test accuracy of sgd+noise after 3000 steps",
    ),
    Claim(
        name="plain-sgd-often-fails",
        statement="Without noise, training from the same poor init often fails: at step 1,500 "
        "plain SGD is still on the chance plateau (train accuracy ≤ 0.5) while the noise arm "
        "from the same init has left it, on ≥ 2/5 of the seeds.",
        metric=_stalls_where_noise_escapes,
        op=">=",
        threshold=0.4,
        scales=("quick", "full"),
        description="fraction of seeds (paired) with train acc at step 1500 <= 0.5 for sgd and "
        "> 0.5 for sgd+noise",
    ),
    Claim(
        name="noise-escapes-earlier",
        statement="Noise helps escape the plateau early: paired per seed, the noise arm's train "
        "accuracy first exceeds 0.5 earlier than plain SGD's.",
        metric=lambda r: float(np.mean(r.paired("sgd", "sgd+noise", "escape_step"))),
        op=">",
        threshold=0.0,
        scales=("quick", "full"),
        description="mean over seeds of escape_step(sgd) − escape_step(sgd+noise), in steps; "
        "escape_step = first evaluated step with train acc > 0.5 (steps + eval_every if never)",
    ),
    Claim(
        name="noise-lowers-train-loss",
        statement="Mean final train loss with noise is lower than without by more than 0.5.",
        metric=lambda r: r.mean_gap("sgd", "sgd+noise", "final_train_loss"),
        op=">",
        threshold=0.5,
        scales=("quick", "full"),
        description="mean final train loss, sgd minus sgd+noise (nats)",
    ),
    Claim(
        name="good-init-needs-no-noise",
        statement="With a good (Kaiming) init plain SGD trains (mean train accuracy ≥ 0.95).",
        metric=lambda r: r.mean("sgd(kaiming)", "final_train_acc"),
        op=">=",
        threshold=0.95,
        scales=("quick", "full"),
        description="mean final train accuracy of SGD from a Kaiming init",
    ),
    Claim(
        name="noise-does-not-hurt-adam",
        statement="Noise is complementary to Adam (the paper adds it to Adam-trained models): "
        "with η tuned for Adam on the paper's grid, adam+noise trains at least as well as adam.",
        metric=lambda r: r.mean_gap("adam+noise", "adam", "final_train_acc"),
        op=">=",
        threshold=0.0,
        scales=("quick", "full"),
        description="mean final train accuracy, adam+noise (η = eta_adam) minus adam",
    ),
    Claim(
        name="smoke-noise-arm-leaves-plateau",
        statement="Mechanism: within 1000 steps the noisy arm's train loss falls below "
        "ln(10) − 0.1 (it leaves the chance-level plateau where plain SGD stays).",
        metric=lambda r: r.max("sgd+noise", "final_train_loss"),
        op="<",
        threshold=float(np.log(10.0) - 0.1),
        scales=("smoke",),
        description="worst-seed final train loss of sgd+noise after 1000 steps (nats)",
    ),
    Claim(
        name="smoke-kaiming-learns",
        statement="Harness sanity: the Kaiming reference reaches train accuracy ≥ 0.8 in a "
        "short run.",
        metric=lambda r: r.min("sgd(kaiming)", "final_train_acc"),
        op=">=",
        threshold=0.8,
        scales=("smoke",),
        description="worst-seed final train accuracy of SGD from a Kaiming init",
    ),
]

register(
    Reproduction(
        name="gradient-noise",
        title="Adding Gradient Noise Improves Learning for Very Deep Networks",
        arxiv="1511.06807",
        spec="gradient_noise.md",
        configs=CONFIGS,
        methods=METHODS,
        batched=_train_seeds,
        seed_batch=None,  # every seed of an arm in one ensemble (20 × 52k parameters at full)
        claims=CLAIMS,
        seeds={"smoke": 1, "quick": 10, "full": 20},
        seed_base=100,
        methods_by_scale={
            "smoke": ("sgd+noise", "sgd(kaiming)"),
            "quick": ("sgd+noise", "sgd", "adam+noise", "adam", "sgd(kaiming)"),
        },
        plot_x="step",
        plot_y=("train_loss", "train_acc"),
        summary="Annealed Gaussian gradient noise (η tuned per optimizer, γ = 0.55) vs none, "
        "SGD and Adam, 20×50 ReLU MLP from a poor init on digits.",
    )
)
