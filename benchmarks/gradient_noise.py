"""Step-time overhead of annealed gradient noise, as ratios against the plain optimizer.

Measures, in one process on the same model and gradients:

* ``torch.optim.Adam(foreach=True)``: the baseline step;
* ``NoisyOptimizer(Adam(foreach=True))``: one flat ``randn`` per (device, dtype), then
  ``_foreach_add_``;
* a naive per-parameter loop (``p.grad.add_(torch.randn_like(p.grad) * std)``), for reference.

Run: ``python benchmarks/gradient_noise.py [--device cuda] [--width 1024] [--depth 8]``.
Prints one JSON object with the median step times and the ratios.

``--ensemble N`` instead times the ``gradient-noise`` reproduction's training (its quick config,
``--steps`` steps, no evaluation) per seed and step, in CPU time: N seeds one model at a time (the
per-seed reference) against the same N seeds as one stacked ensemble, for every quick arm.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from optforge.optim import NoisyOptimizer
from optforge.repro.timing import time_interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ensemble", type=int, default=0, help="seeds (0: the step benchmark)")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ensemble:
        print(json.dumps(ensemble_vs_single(args.ensemble, args.steps, args.device), indent=1))
        return
    torch.manual_seed(0)
    layers = [torch.nn.Linear(args.width, args.width) for _ in range(args.depth)]
    model = torch.nn.Sequential(*layers).to(args.device)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    n_params = sum(p.numel() for p in params)

    adam = torch.optim.Adam(params, lr=1e-4, foreach=True)
    noisy = NoisyOptimizer(torch.optim.Adam(params, lr=1e-4, foreach=True), eta=0.01, seed=0)
    generator = torch.Generator(device=args.device).manual_seed(0)
    naive_base = torch.optim.Adam(params, lr=1e-4, foreach=True)

    def naive_step() -> None:
        with torch.no_grad():
            for p in params:
                p.grad.add_(torch.randn(p.shape, generator=generator, device=p.device), alpha=0.1)
        naive_base.step()

    medians = time_interleaved(
        {"adam": adam.step, "noisy": noisy.step, "naive": naive_step}, args.device, args.repeats
    )
    t_adam, t_noisy, t_naive = medians["adam"], medians["noisy"], medians["naive"]
    print(
        json.dumps(
            {
                "device": args.device,
                "threads": args.threads,
                "n_params": n_params,
                "n_tensors": len(params),
                "adam_foreach_ms": 1e3 * t_adam,
                "noisy_adam_ms": 1e3 * t_noisy,
                "naive_loop_noisy_adam_ms": 1e3 * t_naive,
                "ratio_noisy_vs_adam": t_noisy / t_adam,
                "ratio_naive_vs_adam": t_naive / t_adam,
            },
            indent=1,
        )
    )


def ensemble_vs_single(n_seeds: int, steps: int, device: str) -> dict[str, object]:
    """CPU ms per seed and step of the gradient-noise training: one model per seed vs one
    ensemble (the difference of a ``steps + 20``- and a 20-step run, so set-up is excluded)."""
    from optforge.repro.papers import gradient_noise as gn

    seeds = list(range(100, 100 + n_seeds))
    out: dict[str, object] = {"device": device, "seeds": n_seeds, "steps": steps}

    def cpu_ms(arm: str, ensemble: bool, n: int) -> float:
        keys = ("steps", "adam_steps", "kaiming_steps")
        config = {**gn.CONFIGS["quick"], **dict.fromkeys(keys, n), "eval_every": 10**9}
        start = time.process_time()
        if ensemble:
            gn.train_ensemble(config, seeds, device, **gn._ARMS[arm])
        else:
            for seed in seeds:
                gn.METHODS[arm](config, seed, device)
        return 1e3 * (time.process_time() - start)

    try:
        for arm in ("sgd+noise", "sgd", "adam+noise", "adam", "sgd(kaiming)"):
            per_step = [
                (cpu_ms(arm, ensemble, 20 + steps) - cpu_ms(arm, ensemble, 20)) / (steps * n_seeds)
                for ensemble in (False, True)
            ]
            out[arm] = {
                "single_ms_per_seed_step": per_step[0],
                "ensemble_ms_per_seed_step": per_step[1],
                "speedup": per_step[0] / per_step[1],
            }
    finally:
        torch.set_flush_denormal(False)
    return out


if __name__ == "__main__":
    main()
