"""WTA-CRS under ``torch.compile`` (inductor): is the compiled weight gradient unbiased, and what
does compilation do to a converted layer's kernels and step time?

* **Bias.** For each layer configuration, the Monte-Carlo mean of ``∇W`` over ``--steps``
  training steps of one fixed batch (64 rows, 8 → 4, random row norms) is compared with the exact
  gradient, entry by entry, as z-scores ``(mean − exact) / standard error`` (32 entries; for
  independent unbiased draws ``max |z|`` over 32 entries exceeds 4 with probability ≈ 0.002).
  Backends: ``eager`` and ``inductor`` (``torch.compile``'s default), each in its own seeded run.
* **Layer.** One ``width → 4·width`` layer on ``rows`` rows (default the issue's 1024 → 4096,
  N = 8192): ``nn.Linear``, WTA-CRS@0.3 and CRS@0.3, eager and compiled (``fullgraph=True``).
  Per variant: the operations one forward + ``sum().backward()`` issues — eager: the top-level
  aten operators (``optforge.nn.aten_op_counts``); compiled: the top-level aten operators outside
  the compiled graphs plus every kernel and operator the graphs call (inductor's generated C++
  kernels, profiled with ``torch._inductor.config.cpp.enable_kernel_profile``, and the aten/custom
  operators they call, such as ``sort`` or ``mm``) — and the step time, median of interleaved
  rounds (``optforge.repro.timing``), as a ratio to the same mode's ``nn.Linear``.
* **Llama.** The frontier benchmark's tiny Llama (``optforge.repro.llm.tiny_llama``: vocab 256,
  hidden ``--llama-width``, MLP 688·width/256, ``--llama-depth`` blocks, 4 heads; batch
  8 × 128 tokens, LM loss), unconverted and with every attention/MLP linear converted at 0.3
  (``convert_model``, with and without ``recompute=True``), eager and compiled: operations per
  training step as above, the operations a converted linear adds to the step
  (``(converted − unconverted) / converted linears``, same mode) and the step-time ratio.

With ``--device cuda`` everything runs on the GPU and the operation count of every variant is
the number of CUDA kernels (and memory copies/sets) the profiler sees, eager and compiled alike
(not run here: no GPU was lent; ``benchmarks/gpu_checks.sh`` runs it). Run alone on an idle
machine::

    python benchmarks/wta_crs_compile.py --json docs/methods/img/wta-crs-compile.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from optforge.nn import WTACRSLinear, aten_op_counts
from optforge.repro.timing import time_interleaved

#: Layer configurations of the bias check (keyword arguments of ``WTACRSLinear``).
CONFIGS: dict[str, dict[str, Any]] = {
    "wta-0.25": {"ratio": 0.25},
    "wta-0.6": {"ratio": 0.6},
    "crs-0.5": {"ratio": 0.5, "method": "crs"},
    "fixed-winners-0.5": {"ratio": 0.5, "det_ratio": 0.25},
}


def bias_check(
    config: dict[str, Any], backend: str, steps: int, seed: int, device: str = "cpu"
) -> dict[str, Any]:
    """z-scores of the Monte-Carlo mean of ``∇W`` against the exact gradient (see the module)."""
    torch.manual_seed(seed)
    x = (torch.randn(64, 8) * torch.rand(64, 1) * 3).to(device)
    g = torch.randn(64, 4).to(device)
    layer = WTACRSLinear(8, 4, bias=False, device=device, **config)
    exact = (g.t() @ x).double()
    step = layer if backend == "eager" else torch.compile(layer, backend=backend, fullgraph=True)
    draws = torch.empty(steps, 4, 8, dtype=torch.float64)
    for s in range(steps):
        layer.zero_grad(set_to_none=True)
        (step(x) * g).sum().backward()
        draws[s] = layer.weight.grad.cpu()
    z = (draws.mean(0) - exact.cpu()) / (draws.std(0) / steps**0.5)
    torch._dynamo.reset()
    return {
        "max_abs_z": float(z.abs().max()),
        "mean_abs_z": float(z.abs().mean()),
        "entries": z.numel(),
        "steps": steps,
    }


def compiled_op_counts(fn: Callable[[], Any]) -> Counter[str]:
    """The operations one call issues: top-level aten operators outside compiled graphs plus the
    direct children (generated kernels, aten and custom operators) of every inductor graph call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    counts: Counter[str] = Counter()
    for event in prof.events():
        parent = event.cpu_parent
        in_graph = parent is not None and parent.name.startswith("## Call CompiledFxGraph")
        top_level = event.name.startswith("aten::") and (
            parent is None or not parent.name.startswith(("aten::", "## Call CompiledFxGraph"))
        )
        if in_graph or (top_level and not _inside_graph(event)):
            counts[re.sub(r"^graph_\d+_", "", event.name)] += 1  # graph_<n>_: compile order
    return counts


def cuda_kernel_count(fn: Callable[[], Any]) -> int:
    """CUDA kernels (and memory copies/sets) one call launches, from the profiler's GPU events."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for event in prof.events() if event.device_type == DeviceType.CUDA)


def _inside_graph(event: Any) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("## Call CompiledFxGraph"):
            return True
        parent = parent.cpu_parent
    return False


def measure_layer(rows: int, width: int, repeats: int, device: str = "cpu") -> dict[str, Any]:
    """Operations and step-time ratios of eager and compiled layers (see the module)."""
    import torch._inductor.config as inductor_config

    inductor_config.cpp.enable_kernel_profile = True
    x = torch.randn(rows, width, device=device)
    layers = {
        "linear": lambda: nn.Linear(width, 4 * width, device=device),
        "wta-0.3": lambda: WTACRSLinear(width, 4 * width, ratio=0.3, device=device),
        "crs-0.3": lambda: WTACRSLinear(width, 4 * width, ratio=0.3, method="crs", device=device),
    }
    steps: dict[str, Callable[[], None]] = {}
    ops: dict[str, dict[str, int]] = {}
    for name, make in layers.items():
        for mode in ("eager", "compiled"):
            layer = make()
            call = layer if mode == "eager" else torch.compile(layer, fullgraph=True)

            def run(layer: nn.Module = layer, call: Callable = call) -> None:
                layer.zero_grad(set_to_none=True)
                call(x).sum().backward()

            run()
            run()
            if device.startswith("cuda"):
                counts = Counter({"cuda_kernels": cuda_kernel_count(run)})
            elif mode == "eager":
                counts = aten_op_counts(run)
            else:
                counts = compiled_op_counts(run)
            ops[f"{name}/{mode}"] = dict(sorted(counts.items()))
            steps[f"{name}/{mode}"] = run
    medians = time_interleaved(steps, device, repeats, warmup=2)
    out: dict[str, Any] = {}
    for key, seconds in medians.items():
        name, mode = key.split("/")
        out[key] = {
            "ops": sum(ops[key].values()),
            "ops_by_name": ops[key],
            "step_s": seconds,
            "time_ratio": seconds / medians[f"linear/{mode}"],
        }
    for key, row in out.items():
        row["ops_ratio"] = row["ops"] / out[f"linear/{key.split('/')[1]}"]["ops"]
    torch._dynamo.reset()
    return out


def measure_llama(width: int, depth: int, repeats: int, device: str = "cpu") -> dict[str, Any]:
    """Operations and step-time ratios of a tiny Llama, eager and compiled (see the module)."""
    from optforge.nn import ALL_TARGETS, convert_model
    from optforge.repro.llm import tiny_llama

    ids = torch.randint(256, (8, 128), generator=torch.Generator().manual_seed(0)).to(device)
    steps: dict[str, Callable[[], None]] = {}
    ops: dict[str, int] = {}
    converted = 0
    for variant in ("linear", "wta-0.3", "wta-0.3+recompute"):
        for mode in ("eager", "compiled"):
            model = tiny_llama(
                seed=0,
                device=device,
                vocab_size=256,
                hidden_size=width,
                intermediate_size=688 * width // 256,
                num_hidden_layers=depth,
                num_attention_heads=4,
                num_key_value_heads=4,
                max_position_embeddings=128,
            ).train()
            if variant != "linear":
                convert_model(model, 0.3, include=ALL_TARGETS, recompute="recompute" in variant)
                converted = sum(isinstance(m, WTACRSLinear) for m in model.modules())
            call = model if mode == "eager" else torch.compile(model, fullgraph=True)

            def run(model: nn.Module = model, call: Callable = call) -> None:
                model.zero_grad(set_to_none=True)
                call(input_ids=ids, labels=ids).loss.backward()

            run()
            run()
            if device.startswith("cuda"):
                ops[f"{variant}/{mode}"] = cuda_kernel_count(run)
            else:
                counts = aten_op_counts(run) if mode == "eager" else compiled_op_counts(run)
                ops[f"{variant}/{mode}"] = sum(counts.values())
            steps[f"{variant}/{mode}"] = run
    medians = time_interleaved(steps, device, repeats, warmup=2)
    out: dict[str, Any] = {"converted_linears": converted}
    for key, seconds in medians.items():
        variant, mode = key.split("/")
        base = f"linear/{mode}"
        out[key] = {
            "ops": ops[key],
            "ops_ratio": ops[key] / ops[base],
            "extra_ops_per_converted_linear": (ops[key] - ops[base]) / converted,
            "step_s": seconds,
            "time_ratio": seconds / medians[base],
        }
    torch._dynamo.reset()
    return out


def table(record: dict[str, Any]) -> str:
    """The docs page's two markdown tables from a record."""
    bias = [
        f"| {key.replace('/', ' | ')} | {r['steps']} | {r['max_abs_z']:.2f} | "
        f"{r['mean_abs_z']:.2f} |"
        for key, r in record["bias"].items()
    ]
    layer = [
        f"| {key.replace('/', ' | ')} | {r['ops']} | {r['ops_ratio']:.2f} | {r['time_ratio']:.2f} |"
        for key, r in record["layer"].items()
    ]
    return "\n".join(
        [
            "| layer | backend | steps | max \\|z\\| (32 entries) | mean \\|z\\| |",
            "|---|---|---|---|---|",
            *bias,
            "",
            "| layer | mode | operations | / nn.Linear | step time / nn.Linear (same mode) |",
            "|---|---|---|---|---|",
            *layer,
            *_llama_rows(record),
        ]
    )


def _llama_rows(record: dict[str, Any]) -> list[str]:
    llama = record.get("llama")
    if not llama:
        return []
    rows = [
        f"| {key.replace('/', ' | ')} | {r['ops']} | {r['ops_ratio']:.2f} | "
        f"{r['extra_ops_per_converted_linear']:.1f} | {r['time_ratio']:.2f} |"
        for key, r in llama.items()
        if key != "converted_linears"
    ]
    return [
        "",
        f"| tiny Llama ({llama['converted_linears']} linears converted) | mode | operations "
        "| / unconverted | added per converted linear | step time / unconverted |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="steps per bias check")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="bias-check layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layer-rows", type=int, default=8192)
    parser.add_argument("--layer-width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds of the layer")
    parser.add_argument("--llama-width", type=int, default=256, help="0: no Llama section")
    parser.add_argument("--llama-depth", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the record here")
    parser.add_argument("--note", default="", help="free text stored in the record")
    parser.add_argument("--table", help="only print the markdown tables of this record")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as f:
            print(table(json.load(f)))
        return
    torch.set_num_threads(args.threads)
    record: dict[str, Any] = {
        "benchmark": "wta-crs-compile",
        "date": datetime.date.today().isoformat(),
        "device_name": torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else f"CPU {platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s)",
        "torch": torch.__version__,
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "table")},
        "bias": {
            f"{name}/{backend}": bias_check(config, backend, args.steps, args.seed, args.device)
            for name, config in CONFIGS.items()
            if name in args.configs.split(",")
            for backend in ("eager", "inductor")
        },
        "layer": measure_layer(args.layer_rows, args.layer_width, args.repeats, args.device),
    }
    if args.llama_width:
        record["llama"] = measure_llama(
            args.llama_width, args.llama_depth, args.repeats, args.device
        )
    text = json.dumps(record, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
