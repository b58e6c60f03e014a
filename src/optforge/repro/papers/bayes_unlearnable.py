"""Reproduction ``bayes-unlearnable``: unlearnable examples by Bayes-error maximisation (BEO)
versus random noise and error-minimising noise on scikit-learn's digits.

Set-up: ``load_digits`` pixels / 16 ∈ [0, 1], a fixed stratified 70/30 split
(``repro.data.digits_split(test_size=0.3)``: seed 0, 1257 train, 540 test). The Bayes error is
estimated in raw input space with the leave-one-out kernel estimate at σ = 0.5 × the median
nearest-neighbour distance of the clean training set (fixed for every arm so values are
comparable). Each arm perturbs the *whole* training set with one method at budget ε (L∞), then
trains two learners on (a) the fully protected set and (b) a 50% mix (each index protected with
probability 0.5), and reports the clean-test accuracy. One experiment per seed draws the mix's
mask once and shares it with every arm. Learners: ``sklearn.linear_model.LogisticRegression``
(C = 10) and ``sklearn.neural_network.MLPClassifier`` (one hidden layer).

Arms:

* ``clean``: no perturbation; also the *clean-half* baseline (the learners trained only on the
  unprotected half of the 50% mix);
* ``random``: ``random_noise`` (uniform in the budget);
* ``error-min``: ``error_minimizing_noise`` (Huang et al., sample-wise min-min, torch MLP);
* ``beo-input``: ``BayesErrorPerturbation`` on raw pixels (sign PGA, α = ε/10);
* ``beo-feature``: ``BayesErrorPerturbation`` on the penultimate features of a torch MLP
  (``repro.models.mlp``) retrained from scratch on the current perturbed data every
  ``refresh_every`` steps (the authors' pipeline at digits scale; σ = 0.3 on max-abs-normalised
  features, their default); ``beo-feature(eps=0.3)`` the same at ε = 0.3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from optforge._core import seed_everything
from optforge.data.bayes_error import (
    BayesErrorPerturbation,
    bayes_error_estimate,
    error_minimizing_noise,
    median_nn_distance,
    mix_protected,
    random_noise,
)
from optforge.repro.cache import memoize
from optforge.repro.data import digits_split
from optforge.repro.models import mlp
from optforge.repro.registry import Claim, Reproduction, Results, register

__all__ = ["ARMS", "CLAIMS", "CONFIGS", "run"]

_BASE: dict[str, Any] = {
    "eps": 0.2,
    "sigma_scale": 0.5,
    "beo_steps": 50,
    "mix_ratio": 0.5,
    "logreg_c": 10.0,
    "mlp_hidden": 128,
    "mlp_max_iter": 200,
    # error-minimising noise (min-min)
    "em_pgd_steps": 20,
    "em_train_steps": 10,
    "em_max_rounds": 20,
    "em_stop_error": 0.01,
    # feature-space BEO
    "feat_steps": 20,
    "feat_refresh_every": 1,
    "feat_epochs": 30,
    "feat_sigma": 0.3,
    "feat_step_frac": 0.2,
    "eps_large": 0.3,
}

CONFIGS = {
    "smoke": {**_BASE, "beo_steps": 30, "learners": ()},
    "quick": {**_BASE, "learners": ("logreg", "mlp")},
    "full": {**_BASE, "beo_steps": 100, "feat_steps": 40, "learners": ("logreg", "mlp")},
}


ARMS = ("clean", "random", "error-min", "beo-input", "beo-feature", "beo-feature(eps=0.3)")


def run(
    config: Mapping[str, Any], seed: int, device: str, arms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The arms on one seed: the 50% mix's mask is drawn once and shared by every arm."""
    mask = _mask(seed, config)
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        seed_everything(seed)
        out[arm] = _ARM_RUNS[arm](config, seed, device, mask)
    return out


@memoize
def _sigma(scale: float) -> float:
    return scale * median_nn_distance(digits_split(test_size=0.3)[0])


def _ber(x: torch.Tensor, y: torch.Tensor, config: Mapping[str, Any]) -> float:
    with torch.no_grad():
        est = bayes_error_estimate(
            x.cpu(), y.cpu(), 10, _sigma(config["sigma_scale"]), normalize="none"
        )
    return float(est)


def _fit_score(name: str, x: torch.Tensor, y: torch.Tensor, seed: int, config) -> float:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    _, _, x_test, y_test = digits_split(test_size=0.3)
    if name == "logreg":
        model = LogisticRegression(C=config["logreg_c"], max_iter=2000)
    else:
        model = MLPClassifier(
            hidden_layer_sizes=(config["mlp_hidden"],),
            max_iter=config["mlp_max_iter"],
            random_state=seed,
        )
    from threadpoolctl import threadpool_limits  # scikit-learn dependency

    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x.cpu().numpy(), y.cpu().numpy())
    return float(model.score(x_test.numpy(), y_test.numpy()))


def _mask(seed: int, config: Mapping[str, Any]) -> torch.Tensor:
    x, _, _, _ = digits_split(test_size=0.3)
    gen = torch.Generator().manual_seed(3000 + seed)
    _, mask = mix_protected(x, x, config["mix_ratio"], generator=gen)
    return mask


def _evaluate(
    delta: torch.Tensor, mask: torch.Tensor, seed: int, config: Mapping[str, Any]
) -> dict[str, Any]:
    x, y, _, _ = digits_split(test_size=0.3)
    delta = delta.cpu()
    xp = x + delta
    xmix = torch.where(mask[:, None], xp, x)
    # the clean arm's mix is its protected set (δ = 0): the same deterministic estimate and fits
    same = torch.equal(xmix, xp)
    ber = _ber(xp, y, config)
    out: dict[str, Any] = {
        "ber": ber,
        "ber_mix": ber if same else _ber(xmix, y, config),
        "max_abs_delta": float(delta.abs().max()),
        "in_box": float(bool((xp >= 0).all() and (xp <= 1).all())),
        "protected_fraction": float(mask.float().mean()),
    }
    for learner in config["learners"]:
        acc = _fit_score(learner, xp, y, seed, config)
        out[f"acc_{learner}"] = acc
        out[f"acc_mix_{learner}"] = acc if same else _fit_score(learner, xmix, y, seed, config)
    return out


def _run_clean(
    config: Mapping[str, Any], seed: int, device: str, mask: torch.Tensor
) -> dict[str, Any]:
    x, y, _, _ = digits_split(test_size=0.3)
    out = _evaluate(torch.zeros_like(x), mask, seed, config)
    for learner in config["learners"]:
        out[f"acc_half_{learner}"] = _fit_score(learner, x[~mask], y[~mask], seed, config)
    return out


def _run_random(
    config: Mapping[str, Any], seed: int, device: str, mask: torch.Tensor
) -> dict[str, Any]:
    x, _, _, _ = digits_split(test_size=0.3)
    gen = torch.Generator(device=device).manual_seed(seed)
    delta = random_noise(x.to(device), config["eps"], generator=gen)
    return _evaluate(delta, mask, seed, config)


def _mlp(seed: int, device: str, hidden: int = 128, features: int = 64) -> nn.Sequential:
    torch.manual_seed(seed)  # harness-level trial code; library code never uses the global RNG
    return mlp([64, hidden, features, 10]).to(device)


def _run_error_min(
    config: Mapping[str, Any], seed: int, device: str, mask: torch.Tensor
) -> dict[str, Any]:
    x, y, _, _ = digits_split(test_size=0.3)
    model = _mlp(1000 + seed, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    delta = error_minimizing_noise(
        model,
        opt,
        x.to(device),
        y.to(device),
        config["eps"],
        pgd_steps=config["em_pgd_steps"],
        train_steps=config["em_train_steps"],
        max_rounds=config["em_max_rounds"],
        stop_error=config["em_stop_error"],
        generator=torch.Generator().manual_seed(seed),
    )
    return _evaluate(delta, mask, seed, config)


def _run_beo_input(
    config: Mapping[str, Any], seed: int, device: str, mask: torch.Tensor
) -> dict[str, Any]:
    x, y, _, _ = digits_split(test_size=0.3)
    beo = BayesErrorPerturbation(
        config["eps"],
        steps=config["beo_steps"],
        sigma=_sigma(config["sigma_scale"]),
        normalize="none",
    )
    delta = beo.fit(x.to(device), y.to(device))
    out = _evaluate(delta, mask, seed, config)
    out["step"] = [h["step"] for h in beo.history]
    out["ber_curve"] = [h["ber"] for h in beo.history]
    return out


def _retrainer(config: Mapping[str, Any], seed: int, device: str) -> Callable:
    counter = [0]

    def refresh(xp: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        counter[0] += 1
        model = _mlp(10_000 * seed + counter[0], device)
        # torch.optim.Adam(lr=1e-3, foreach=True)'s update, bit-identical, without the
        # optimizer's per-step bookkeeping (_ForeachAdam)
        opt = _ForeachAdam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed + counter[0])
        n = xp.shape[0]
        for _ in range(config["feat_epochs"]):
            for idx in torch.randperm(n, generator=gen).split(128):
                idx = idx.to(device)
                _set_cross_entropy_grads(model, xp[idx], y[idx])
                opt.step()
        model.eval().requires_grad_(False)
        return model[:-1]  # drop the head: penultimate features

    return refresh


class _ForeachAdam:
    """``torch.optim.Adam(params, lr, foreach=True).step()`` (defaults otherwise) as a bare loop.

    The same ``torch._foreach_*`` kernels as ``torch.optim.adam._multi_tensor_adam`` with a float
    lr, no weight decay, amsgrad or maximize, called with the same operands in the same order
    (bias corrections from the step count as a Python float, as ``_get_value(step)`` gives):
    the parameters are bit-identical to ``torch.optim.Adam``'s (``test_bayes_repro_grads``
    checks it). It skips the optimizer's per-step bookkeeping (hooks, ``_init_group``, grouping
    by device), which cost more than the update itself for this small MLP (issue #34).
    """

    def __init__(
        self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = list(params)
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.exp_avgs = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        self.exp_avg_sqs = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        params, exp_avgs, exp_avg_sqs = self.params, self.exp_avgs, self.exp_avg_sqs
        grads = [p.grad for p in params]
        self.steps += 1
        torch._foreach_lerp_(exp_avgs, grads, 1 - self.beta1)
        torch._foreach_mul_(exp_avg_sqs, self.beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - self.beta2)
        t = float(self.steps)
        bias_correction1 = 1 - self.beta1**t
        bias_correction2 = 1 - self.beta2**t
        n = len(params)
        step_size = [(self.lr / bias_correction1) * -1] * n
        bias_correction2_sqrt = [bias_correction2**0.5] * n
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)


def _set_cross_entropy_grads(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> None:
    """The gradients of ``CrossEntropyLoss()(model(x), y)`` into ``.grad``, back-propagated by hand.

    ``model`` is ``Linear → ReLU → … → Linear``. The ops are the ones autograd runs (same
    kernels, operands and order: the gradients are bit-identical, ``test_bayes_repro_grads``
    checks it) without the graph's per-op overhead, most of a step of this small MLP.
    """
    aten = torch.ops.aten
    linears = list(model)[::2]
    with torch.no_grad():
        inputs, h = [], x.detach()
        for i, layer in enumerate(linears):
            inputs.append(h)
            h = nn.functional.linear(h, layer.weight, layer.bias)
            if i < len(linears) - 1:
                h = torch.relu(h)
        logp = torch.log_softmax(h, 1)
        loss, total_weight = aten.nll_loss_forward(logp, y, None, 1, -100)  # mean reduction
        g = aten.nll_loss_backward(torch.ones_like(loss), logp, y, None, 1, -100, total_weight)
        g = aten._log_softmax_backward_data(g, logp, 1, logp.dtype)
        for i in range(len(linears) - 1, -1, -1):
            layer, a = linears[i], inputs[i]
            layer.weight.grad, layer.bias.grad = g.t().mm(a), g.sum(0)
            if i:
                g = aten.threshold_backward(g.mm(layer.weight), a, 0)  # ReLU's backward


def _run_beo_feature(
    config: Mapping[str, Any], seed: int, device: str, mask: torch.Tensor, eps_key: str = "eps"
) -> dict[str, Any]:
    x, y, _, _ = digits_split(test_size=0.3)
    eps = config[eps_key]
    beo = BayesErrorPerturbation(
        eps,
        step_size=config["feat_step_frac"] * eps,
        steps=config["feat_steps"],
        sigma=config["feat_sigma"],
        refresh_features=_retrainer(config, seed, device),
        refresh_every=config["feat_refresh_every"],
    )
    delta = beo.fit(x.to(device), y.to(device))
    out = _evaluate(delta, mask, seed, config)
    out["feature_ber_first"] = beo.history[0]["ber"]
    out["feature_ber_last"] = beo.history[-1]["ber"]
    out["step"] = [h["step"] for h in beo.history]
    out["feature_ber_curve"] = [h["ber"] for h in beo.history]
    return out


_ARM_RUNS = {
    "clean": _run_clean,
    "random": _run_random,
    "error-min": _run_error_min,
    "beo-input": _run_beo_input,
    "beo-feature": _run_beo_feature,
    "beo-feature(eps=0.3)": partial(_run_beo_feature, eps_key="eps_large"),
}


def _drop(method: str, learner: str, mix: bool) -> Callable[[Results], float]:
    """Clean-test accuracy drop of ``method`` vs the clean baseline (or the clean half)."""
    ref = f"acc_half_{learner}" if mix else f"acc_{learner}"
    key = f"acc_mix_{learner}" if mix else f"acc_{learner}"
    return lambda r: r.mean("clean", ref) - r.mean(method, key)


CLAIMS = [
    Claim(
        name="beo-raises-bayes-error-beyond-random",
        quantity="estimated Bayes error (fraction), BEO-input minus random noise, ε = 0.2",
        description=(
            "mean over seeds of BER̂(beo-input) − mean of BER̂(random), digits, L∞ budget 0.2"
        ),
        statement="BEO perturbations substantially increase the (estimated) Bayes error, far more "
        "than random noise at the same budget (mean BER̂ of beo-input minus random, ε = 0.2).",
        metric=lambda r: r.mean_gap("beo-input", "random", "ber"),
        op=">=",
        threshold=0.3,
    ),
    Claim(
        name="beo-ber-five-times-clean",
        quantity="estimated Bayes error, BEO-input / clean (ratio)",
        description="worst-seed BER̂ of beo-input divided by the mean clean BER̂",
        statement="... the estimate after BEO is at least 5× the clean estimate (worst seed).",
        metric=lambda r: r.min("beo-input", "ber") / r.mean("clean", "ber"),
        op=">=",
        threshold=5.0,
    ),
    Claim(
        name="budget-respected",
        quantity="budget violation: max |δ|∞ − 0.2, or share of pixels outside [0, 1]",
        description=(
            "larger of (worst max |δ|∞ over random and beo-input minus ε = 0.2) and (1 − worst in-"
            "box fraction)"
        ),
        statement="Every perturbation stays within the L∞ budget and the valid pixel range.",
        metric=lambda r: max(
            max(r.max(m, "max_abs_delta") for m in ("random", "beo-input")) - 0.2,
            1.0 - min(r.min(m, "in_box") for m in ("random", "beo-input")),
        ),
        op="<=",
        threshold=1e-6,
    ),
    Claim(
        name="ber-increase-survives-mixing",
        quantity="estimated Bayes error (fraction) of a 50% clean mix, BEO-input minus random",
        description=(
            "mean over seeds of BER̂ on the 50/50 clean/protected mix, beo-input minus random"
        ),
        statement="Because the Bayes error is concave in the data distribution, the increase "
        "survives mixing with clean data (50% mix: BER̂ of beo-input minus random).",
        metric=lambda r: r.mean_gap("beo-input", "random", "ber_mix"),
        op=">=",
        threshold=0.15,
    ),
    Claim(
        name="error-min-works-at-full-protection",
        quantity="clean-test accuracy drop (fraction), MLP, error-min, 100% protected",
        description=(
            "mean accuracy of an MLP trained on clean data minus mean accuracy of one trained on "
            "error-minimising data"
        ),
        statement="Error-minimising noise makes fully protected data unlearnable "
        "(MLP clean-test accuracy drop vs clean training, 100% protected).",
        metric=_drop("error-min", "mlp", mix=False),
        op=">=",
        threshold=0.05,
        scales=("quick", "full"),
    ),
    Claim(
        name="error-min-collapses-under-mixing",
        quantity="clean-test accuracy drop (fraction), MLP, error-min, 50% mix vs clean half",
        description=(
            "mean accuracy of an MLP on the clean half alone minus mean accuracy on the 50% error-"
            "min mix"
        ),
        statement="Prior methods collapse when mixed with clean data: at a 50% mix the MLP is at "
        "least as accurate as one trained on the clean half alone (within 0.02).",
        metric=_drop("error-min", "mlp", mix=True),
        op="<=",
        threshold=0.02,
        scales=("quick", "full"),
    ),
    Claim(
        name="beo-feature-lowers-accuracy-full-protection",
        quantity="clean-test accuracy drop (fraction), MLP, feature-space BEO, 100% protected",
        description=(
            "mean accuracy of an MLP trained on clean data minus mean accuracy on feature-space "
            "BEO data"
        ),
        statement="BEO lowers the clean-test accuracy of models trained on the protected data "
        "(feature-space BEO, MLP, 100% protected: drop ≥ 0.02).",
        metric=_drop("beo-feature", "mlp", mix=False),
        op=">=",
        threshold=0.02,
        scales=("quick", "full"),
    ),
    Claim(
        name="beo-feature-mix-below-clean-half-mlp",
        quantity=(
            "clean-test accuracy drop (fraction), MLP, feature-space BEO, 50% mix vs clean half"
        ),
        description=(
            "mean accuracy of an MLP on the clean half alone minus mean accuracy on the 50% "
            "feature-BEO mix"
        ),
        statement="With 50% clean + 50% protected data, accuracy falls below training on the clean "
        "half alone (paper: 69.68% vs 91.16% on CIFAR-10); feature-space BEO, MLP, drop > 0.01.",
        metric=_drop("beo-feature", "mlp", mix=True),
        op=">",
        threshold=0.01,
        scales=("quick", "full"),
    ),
    Claim(
        name="beo-feature-mix-below-clean-half-logreg",
        quantity=(
            "clean-test accuracy drop (fraction), logistic regression, feature-space BEO, 50% mix "
            "vs clean half"
        ),
        description=(
            "mean accuracy of logistic regression on the clean half alone minus mean accuracy on "
            "the 50% feature-BEO mix"
        ),
        statement="... the same for logistic regression (feature-space BEO, drop > 0.01).",
        metric=_drop("beo-feature", "logreg", mix=True),
        op=">",
        threshold=0.01,
        scales=("quick", "full"),
    ),
    Claim(
        name="beo-feature-eps0.3-lowers-accuracy-full-protection",
        quantity=(
            "clean-test accuracy drop (fraction), logistic regression, feature-space BEO ε = 0.3, "
            "100% protected"
        ),
        description=(
            "mean accuracy of logistic regression trained on clean data minus mean accuracy on "
            "feature-BEO (ε = 0.3) data"
        ),
        statement="BEO lowers the clean-test accuracy of models trained on the protected data "
        "(feature-space BEO at ε = 0.3, logistic regression, 100% protected: drop ≥ 0.05).",
        metric=_drop("beo-feature(eps=0.3)", "logreg", mix=False),
        op=">=",
        threshold=0.05,
        scales=("quick", "full"),
    ),
    Claim(
        name="beo-feature-eps0.3-mix-below-clean-half-logreg",
        quantity=(
            "clean-test accuracy drop (fraction), logistic regression, feature-space BEO ε = 0.3, "
            "50% mix vs clean half"
        ),
        description=(
            "mean accuracy of logistic regression on the clean half alone minus mean accuracy on "
            "the 50% feature-BEO (ε = 0.3) mix"
        ),
        statement="With 50% clean + 50% protected data, accuracy falls below training on the clean "
        "half alone (feature-space BEO at ε = 0.3, logistic regression, drop > 0.01).",
        metric=_drop("beo-feature(eps=0.3)", "logreg", mix=True),
        op=">",
        threshold=0.01,
        scales=("quick", "full"),
    ),
    Claim(
        name="beo-feature-eps0.3-mix-below-clean-half-mlp",
        quantity=(
            "clean-test accuracy drop (fraction), MLP, feature-space BEO ε = 0.3, 50% mix vs clean"
            " half"
        ),
        description=(
            "mean accuracy of an MLP on the clean half alone minus mean accuracy on the 50% "
            "feature-BEO (ε = 0.3) mix"
        ),
        statement="... the same for the MLP (feature-space BEO at ε = 0.3, drop > 0.01).",
        metric=_drop("beo-feature(eps=0.3)", "mlp", mix=True),
        op=">",
        threshold=0.01,
        scales=("quick", "full"),
    ),
    Claim(
        name="beo-input-mix-below-clean-half-mlp",
        quantity="clean-test accuracy drop (fraction), MLP, input-space BEO, 50% mix vs clean half",
        description=(
            "mean accuracy of an MLP on the clean half alone minus mean accuracy on the 50% input-"
            "BEO mix"
        ),
        statement="... the same for input-space BEO (MLP, drop > 0.01).",
        metric=_drop("beo-input", "mlp", mix=True),
        op=">",
        threshold=0.01,
        scales=("quick", "full"),
    ),
]

register(
    Reproduction(
        name="bayes-unlearnable",
        title="Towards Provably Unlearnable Examples via Bayes Error Optimisation",
        arxiv="2511.08191",
        spec="bayes_error_unlearnable.md",
        configs=CONFIGS,
        seeds={"smoke": 1, "quick": 3, "full": 5},
        seed_base=100,
        methods=list(ARMS),
        experiment=run,
        methods_by_scale={"smoke": ("clean", "random", "beo-input")},
        claims=CLAIMS,
        plot_x="step",
        plot_y=("ber_curve", "feature_ber_curve"),
        summary="BEO raises the estimated Bayes error of digits far more than random noise and "
        "the rise survives a 50% clean mix; downstream accuracy drops only slightly.",
    )
)
