"""WTA-CRS: saved activation bytes and step time, vs ``nn.Linear`` and ``torch.utils.checkpoint``.

Rows ``wta/<variant>`` (``checkpoint``, ``wta-0.3``, ``wta-0.1``, ``wta-0.3+checkpoint``): a
residual MLP of 3 blocks ``x + fc2(relu(fc1(x)))`` (hidden ``4·width``) whose linears are
WTA-CRS layers keeping that fraction of rows (``optforge.nn.convert_model``: the linears plus
1-bit ReLU masks), wrapped in non-reentrant checkpointing, or both. ``ratio`` is autograd's saved
bytes (``optforge.nn.saved_tensor_bytes``, parameters excluded: exact and machine independent)
over ``nn.Linear``'s; ``time_ratio`` the forward + backward time (interleaved medians) over
``nn.Linear``'s; ``*_vs_checkpoint`` the same against checkpointing. Contention-free companions
of the time: ``ops_ratio``, the top-level aten operators of one step over ``nn.Linear``'s
(``optforge.nn.aten_op_counts``), and ``host_syncs``, the operators that read a device value
back to the host (``optforge.nn.host_sync_ops``; 0 expected).

Rows ``wta/layer-<variant>`` (``wta-0.3``, ``crs-0.3``): issue #28's per-layer figures at the
bench's size, one ``width → 4·width`` layer on ``batch`` rows (input not requiring grad, loss
``sum()``, counted after one warm-up step as ``benchmarks/wta_crs.py`` counts the 1024 → 4096
layer): ``ops`` and ``ops_ratio`` (top-level aten operators, goal ≤ 2), ``host_syncs``, saved
bytes ``ratio`` and ``time_ratio`` over a lone ``nn.Linear`` (the GPU goal: ≤ 1.2 on a GPU alone).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from optforge.repro.bench.registry import BenchEntry, register_bench
from optforge.repro.registry import Claim
from optforge.repro.timing import time_interleaved

__all__ = ["wta_crs"]

_VARIANTS = ("linear", "checkpoint", "wta-0.3", "wta-0.1", "wta-0.3+checkpoint")


def wta_crs(device: str, width: int, batch: int, repeats: int) -> dict[str, dict]:
    """The ``wta/<variant>`` rows at ``width`` on a batch of ``batch`` rows."""
    from optforge.nn import aten_op_counts, convert_model, host_sync_ops, saved_tensor_bytes

    def build(variant: str) -> nn.Module:
        torch.manual_seed(0)
        net = _ResidualMLP(width, depth=3, checkpoint=variant.endswith("checkpoint"))
        if variant.startswith("wta"):
            convert_model(net, float(variant.split("+")[0].split("-")[1]), include=None)
        return net.to(device)

    nets = {v: build(v) for v in _VARIANTS}
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(0)).to(device)
    saved = {
        v: float(saved_tensor_bytes(lambda net=net: net(x), exclude=net.parameters()))
        for v, net in nets.items()
    }

    def step(net: nn.Module) -> Callable[[], None]:
        def run() -> None:
            net.zero_grad(set_to_none=True)
            net(x).backward()

        return run

    steps = {v: step(n) for v, n in nets.items()}
    ops = {v: sum(aten_op_counts(s).values()) for v, s in steps.items()}
    syncs = {v: len(host_sync_ops(s)) for v, s in steps.items()}
    median = time_interleaved(steps, device, repeats)
    return _lone_layer(device, width, batch, repeats) | {
        f"wta/{v}": {
            "ratio": saved[v] / saved["linear"],
            "time_ratio": median[v] / median["linear"],
            "ratio_vs_checkpoint": saved[v] / saved["checkpoint"],
            "time_ratio_vs_checkpoint": median[v] / median["checkpoint"],
            "ops_ratio": ops[v] / ops["linear"],
            "host_syncs": float(syncs[v]),
            "saved_mb": saved[v] / 2**20,
            "ms": 1e3 * median[v],
        }
        for v in _VARIANTS
        if v != "linear"
    }


def _lone_layer(device: str, width: int, batch: int, repeats: int) -> dict[str, dict]:
    """``wta/layer-<variant>``: one ``width → 4·width`` layer, forward + ``sum().backward()``."""
    from optforge.nn import WTACRSLinear, aten_op_counts, host_sync_ops, saved_tensor_bytes

    torch.manual_seed(0)
    layers: dict[str, nn.Module] = {
        "linear": nn.Linear(width, 4 * width),
        "wta-0.3": WTACRSLinear(width, 4 * width, ratio=0.3),
        "crs-0.3": WTACRSLinear(width, 4 * width, ratio=0.3, method="crs"),
    }
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(1)).to(device)

    def step(layer: nn.Module) -> Callable[[], None]:
        def run() -> None:
            layer.zero_grad(set_to_none=True)
            layer(x).sum().backward()

        return run

    steps = {v: step(layer.to(device)) for v, layer in layers.items()}
    for run in steps.values():
        run()  # warm the sampler's constant tables, as the counts of the issue did
    ops = {v: sum(aten_op_counts(s).values()) for v, s in steps.items()}
    syncs = {v: len(host_sync_ops(s)) for v, s in steps.items()}
    saved = {
        v: float(saved_tensor_bytes(lambda m=m: m(x).sum(), exclude=m.parameters()))
        for v, m in layers.items()
    }
    median = time_interleaved(steps, device, repeats)
    return {
        f"wta/layer-{v}": {
            "ratio": saved[v] / saved["linear"],
            "time_ratio": median[v] / median["linear"],
            "ops": float(ops[v]),
            "ops_ratio": ops[v] / ops["linear"],
            "host_syncs": float(syncs[v]),
            "ms": 1e3 * median[v],
        }
        for v in layers
        if v != "linear"
    }


class _ResidualMLP(nn.Module):
    def __init__(self, width: int, depth: int, checkpoint: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width))
            for _ in range(depth)
        )
        self.checkpoint = checkpoint

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            if self.checkpoint:
                x = x + torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = x + block(x)
        return x.pow(2).mean()


def _run(config: Mapping[str, Any], device: str, scale: str, repeats: int) -> dict[str, dict]:
    return wta_crs(device, config["width"], config["batch"], repeats)


register_bench(
    BenchEntry(
        name="wta",
        title="saved activation bytes and step time of WTA-CRS layers / nn.Linear, checkpoint",
        run=_run,
        configs={"quick": {"width": 128, "batch": 512}, "full": {"width": 256, "batch": 2048}},
        claims=[
            Claim(
                name="wta-saves-activation-memory",
                statement="WTA-CRS (keep 30% of rows) saves fewer activation bytes than nn.Linear.",
                metric=lambda r: r.mean("wta/wta-0.3", "ratio"),
                op="<",
                threshold=1.0,
            ),
        ],
        order=20,
    )
)
