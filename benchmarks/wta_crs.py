"""WTA-CRS memory–time frontier: saved-activation bytes vs step time, against checkpointing.

Models, built from configs with random weights (nothing downloaded), one batch each:

* ``llama`` — ``transformers.LlamaForCausalLM`` (``optforge.repro.llm.tiny_llama``; vocab 256,
  hidden 256, MLP 688, 4 layers, 4 heads, SDPA attention), batch 8 × 128 tokens, LM loss;
* ``bert`` — ``transformers.BertForSequenceClassification`` (vocab 256, hidden 256, MLP 1024,
  4 layers, 4 heads, default dropout), batch 8 × 128 tokens, 2 labels;
* ``relu-mlp`` — embedding → 4 residual blocks ``x + fc2(relu(fc1(x)))`` (d 256, MLP 1024) →
  head, batch 8 × 128: the linear-dominated case, where WTA-CRS adds 1-bit ReLU masks.

Variants (same weights and batch, in one process): ``linear`` (unconverted), ``checkpoint``
(activation checkpointing of every block, non-reentrant), ``wta-0.3`` / ``wta-0.1``
(``optforge.nn.convert_model``: every attention/MLP linear, one shared sample per input, 1-bit
ReLU masks where the activation is a ReLU), ``wta-0.3+checkpoint`` / ``wta-0.1+checkpoint``
(both: checkpoint the block, sample inside), ``wta-0.3+recompute`` / ``wta-0.1+recompute``
(``convert_model(..., recompute=True)``: the SwiGLU MLPs and RMSNorms also keep only their inputs
and recompute ``silu``/the normalised output and the sampled rows in the backward pass). Recompute
applies to Llama-style blocks only (SiLU-gated MLP, RMSNorm); for ``bert`` (GELU MLP, LayerNorm)
and ``relu-mlp`` it would replace nothing, so those variants are not run there and the record
lists them under ``not_applicable`` with the reason.

Per (model, variant): saved-activation bytes between forward and backward
(``optforge.nn.saved_tensor_bytes``, parameters excluded; exact and machine independent; the
checkpointed inputs are counted, the transient recomputation of one block in backward is not),
the forward + backward step time (median of interleaved rounds, ``optforge.repro.timing``), the
top-level aten operators of one step and the host synchronisations (CPU profiler), and whether
the variant is on the Pareto frontier (no other variant both saves fewer bytes and runs faster).
Under checkpointing only the block inputs survive between the passes, with or without sampling;
sampling shrinks the one block recomputed at a time in the backward pass. So a second memory
figure, ``peak_estimate_bytes``, adds to the checkpointed variants the saved bytes of the largest
block of the same model without checkpointing (an estimate of the activation peak, not a
measurement; on CUDA the measured peak is ``cuda_peak_bytes``), with its own frontier.
The layer section counts the aten ops of one forward + backward of a single 1024 → 4096 layer at
N = 8192 rows (the issue's measurement) and, when ``llama`` is measured, the same count in the
realistic setting: ``(aten ops of a WTA-CRS step − aten ops of the unconverted step) / converted
linears`` of the tiny Llama (all seven projections of every block converted; q/k/v share one
sample, gate/up another), as ``llama_*`` keys. On CUDA, ``torch.cuda.max_memory_allocated`` per
step is reported too.

Run (writes the JSON record and the plot of the docs page; ``--replot RECORD`` redraws the
plot from a stored record without measuring; ``--table RECORD`` prints the docs page's markdown
frontier table from a stored record)::

    python benchmarks/wta_crs.py --json docs/methods/img/wta-crs-frontier.json \\
        --plot docs/methods/img/wta-crs-frontier.png
    python benchmarks/wta_crs.py --table docs/methods/img/wta-crs-frontier.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from optforge.nn import (
    ALL_TARGETS,
    WTACRSLinear,
    aten_op_counts,
    convert_model,
    host_sync_ops,
    peak_memory_bytes,
    saved_tensor_bytes,
)
from optforge.repro.llm import tiny_llama
from optforge.repro.timing import time_interleaved

VARIANTS = (
    "linear",
    "checkpoint",
    "wta-0.3",
    "wta-0.1",
    "wta-0.3+checkpoint",
    "wta-0.1+checkpoint",
    "wta-0.3+recompute",
    "wta-0.1+recompute",
)
MODELS = ("llama", "bert", "relu-mlp")
#: Variants that do not apply to a model (``convert_model(recompute=True)`` recomputes SiLU-gated
#: MLPs and RMSNorms only), with the reason stored in the record.
NOT_APPLICABLE = {
    "bert": {
        v: "recompute=True replaces SiLU-gated MLPs and RMSNorms only; BERT has a GELU MLP and "
        "LayerNorm, so it would convert nothing more than wta-" + v[4:7]
        for v in VARIANTS
        if v.endswith("+recompute")
    },
    "relu-mlp": {
        v: "recompute=True replaces SiLU-gated MLPs and RMSNorms only; this model has a ReLU MLP "
        "(already 1-bit masks) and no norm, so it would convert nothing more than wta-" + v[4:7]
        for v in VARIANTS
        if v.endswith("+recompute")
    },
}


def variants_of(name: str) -> tuple[str, ...]:
    """The variants measured on model ``name``."""
    return tuple(v for v in VARIANTS if v not in NOT_APPLICABLE.get(name, {}))


class ReLUNet(nn.Module):
    """Embedding → residual ReLU MLP blocks → head: linear inputs dominate saved activations."""

    def __init__(self, vocab: int, d: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d)) for _ in range(depth)
        )
        self.head = nn.Linear(d, vocab)
        self.checkpoint = False

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            if self.checkpoint:
                x = x + torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = x + block(x)
        return F.cross_entropy(self.head(x).flatten(0, 1), ids.flatten())


def _enable_checkpointing(model: nn.Module) -> None:
    if isinstance(model, ReLUNet):
        model.checkpoint = True
    elif hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def build(name: str, variant: str, args: argparse.Namespace) -> tuple[nn.Module, Callable]:
    """The model for ``variant`` and its loss closure on one fixed batch."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(args.vocab, (args.batch, args.seq), generator=gen).to(args.device)
    if name == "llama":
        model = tiny_llama(
            seed=0,
            vocab_size=args.vocab,
            hidden_size=args.width,
            intermediate_size=688 * args.width // 256,
            num_hidden_layers=args.depth,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=args.seq,
        )

        def loss(model=model):
            return model(input_ids=ids, labels=ids).loss

    elif name == "bert":
        import transformers

        config = transformers.BertConfig(
            vocab_size=args.vocab,
            hidden_size=args.width,
            num_hidden_layers=args.depth,
            num_attention_heads=4,
            intermediate_size=4 * args.width,
            max_position_embeddings=args.seq,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = transformers.BertForSequenceClassification(config)
        labels = torch.randint(2, (args.batch,), generator=gen).to(args.device)

        def loss(model=model):
            return model(input_ids=ids, labels=labels).loss

    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = ReLUNet(args.vocab, args.width, args.depth)

        def loss(model=model):
            return model(ids)

    model.to(args.device).train()
    if variant.startswith("wta"):
        ratio = float(variant.split("+")[0].split("-")[1])
        convert_model(
            model,
            ratio,
            include=("blocks.*",) if name == "relu-mlp" else ALL_TARGETS,
            recompute=variant.endswith("+recompute"),
        )
    if variant.endswith("checkpoint"):
        _enable_checkpointing(model)
    return model, loss


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks (decoder / encoder layers, residual MLP blocks) of a model."""
    if isinstance(model, ReLUNet):
        return list(model.blocks)
    if hasattr(model, "bert"):
        return list(model.bert.encoder.layer)
    return list(model.model.layers)


def largest_block_bytes(model: nn.Module, loss: Callable) -> int:
    """Saved bytes first saved while the largest block runs (the activations one checkpointed
    block recomputes in the backward pass hold at once)."""
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
    current: list[int | None] = [None]
    per_block: dict[int, int] = {}
    hooks = []
    for i, block in enumerate(blocks_of(model)):
        hooks.append(block.register_forward_pre_hook(lambda m, a, i=i: current.__setitem__(0, i)))
        hooks.append(block.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)))

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            skip.add(ptr)
            if current[0] is not None:
                per_block[current[0]] = per_block.get(current[0], 0) + t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = loss()
    out.backward()
    for hook in hooks:
        hook.remove()
    return max(per_block.values())


def pareto(points: dict[str, tuple[float, float]]) -> dict[str, bool]:
    """``True`` for the points no other point dominates (≤ in both coordinates, < in one)."""
    return {
        v: not any(
            (b[0] <= a[0] and b[1] <= a[1]) and (b[0] < a[0] or b[1] < a[1])
            for u, b in points.items()
            if u != v
        )
        for v, a in points.items()
    }


def measure_model(name: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    built = {v: build(name, v, args) for v in variants_of(name)}

    def step(model: nn.Module, loss: Callable) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            loss().backward()

        return run

    steps = {v: step(*built[v]) for v in built}
    rows: dict[str, dict[str, Any]] = {}
    for v, (model, loss) in built.items():
        rows[v] = {
            "saved_bytes": saved_tensor_bytes(loss, exclude=model.parameters()),
            "aten_ops": sum(aten_op_counts(steps[v]).values()),
            "host_syncs": len(host_sync_ops(steps[v])),
        }
        if args.device.startswith("cuda"):
            rows[v]["cuda_peak_bytes"] = peak_memory_bytes(loss, args.device)
        if not v.endswith("checkpoint"):
            rows[v]["block_bytes"] = largest_block_bytes(model, loss)
    medians = time_interleaved(steps, args.device, args.repeats, warmup=3)
    base = rows["linear"]
    for v, row in rows.items():
        # between the passes + (with checkpointing) one block recomputed in the backward pass
        row["peak_estimate_bytes"] = row["saved_bytes"] + (
            rows[v.split("+")[0] if "+" in v else "linear"]["block_bytes"]
            if v.endswith("checkpoint")
            else 0
        )
    for v, row in rows.items():
        row["step_s"] = medians[v]
        row["saved_ratio"] = row["saved_bytes"] / base["saved_bytes"]
        row["peak_estimate_ratio"] = row["peak_estimate_bytes"] / base["peak_estimate_bytes"]
        row["time_ratio"] = medians[v] / medians["linear"]
        row["ops_ratio"] = row["aten_ops"] / base["aten_ops"]
    for metric in ("saved", "peak_estimate"):
        front = pareto({v: (r[f"{metric}_ratio"], r["time_ratio"]) for v, r in rows.items()})
        for v, row in rows.items():
            row[f"on_frontier_{metric}"] = front[v]
    return rows


def measure_layer(device: str, rows: int = 8192, width: int = 1024) -> dict[str, Any]:
    """Top-level aten ops of one forward + ``sum().backward()`` of a ``width → 4·width`` layer
    on ``rows`` rows (default the issue's 1024 → 4096, N = 8192)."""
    x = torch.randn(rows, width, device=device)
    out: dict[str, Any] = {}
    layers = {
        "linear": nn.Linear(width, 4 * width),
        "wta-0.3": WTACRSLinear(width, 4 * width, ratio=0.3),
        "crs-0.3": WTACRSLinear(width, 4 * width, ratio=0.3, method="crs"),
    }
    for name, layer in layers.items():
        layer.to(device)

        def run(layer=layer) -> None:
            layer.zero_grad(set_to_none=True)
            layer(x).sum().backward()

        run()
        out[name] = sum(aten_op_counts(run).values())
        out[f"{name}_host_syncs"] = len(host_sync_ops(run))
    return out


def llama_layer_ops(rows: dict[str, dict[str, Any]], converted: int) -> dict[str, Any]:
    """Per converted linear in the tiny Llama: ``(ops of a converted step − ops of the
    unconverted step) / converted linears`` (measured counts from the model rows)."""
    out: dict[str, Any] = {
        "llama_step_linear": rows["linear"]["aten_ops"],
        "llama_converted_linears": converted,
    }
    for v in ("wta-0.3", "wta-0.1", "wta-0.3+recompute"):
        if v in rows:
            extra = rows[v]["aten_ops"] - rows["linear"]["aten_ops"]
            out[f"llama_step_{v}"] = rows[v]["aten_ops"]
            out[f"llama_extra_ops_per_converted_linear_{v}"] = extra / converted
    return out


def _colour(variant: str) -> str:
    if variant.endswith("+recompute"):
        return "C2"
    return "C3" if variant.startswith("wta") else "C0"


def _label(variant: str) -> str:
    return " + ".join(
        part.replace("wta-", "WTA@") if part.startswith("wta") else part
        for part in variant.split("+")
    )


def frontier_table(record: dict[str, Any]) -> str:
    """The docs page's markdown frontier table (and its ``nn.Linear`` footnote) from a record."""
    lines = [
        "| model | variant | saved / Linear | + one block / Linear | step time / Linear "
        "| aten ops / Linear | on frontier (saved / + block) |",
        "|---|---|---|---|---|---|---|",
    ]
    base = []
    for name in (m for m in MODELS if m in record["models"]):
        rows = record["models"][name]
        for v, r in rows.items():
            if v == "linear":
                continue
            front = " / ".join(
                "yes" if r[f"on_frontier_{m}"] else "no" for m in ("saved", "peak_estimate")
            )
            lines.append(
                f"| {name} | {_label(v)} | {r['saved_ratio']:.3f} | {r['peak_estimate_ratio']:.3f} "
                f"| {r['time_ratio']:.2f} | {r['ops_ratio']:.2f} | {front} |"
            )
        lin = rows["linear"]
        title = {"llama": "Llama", "bert": "BERT", "relu-mlp": "ReLU MLP"}.get(name, name)
        base.append(
            f"{title} {lin['step_s'] * 1e3:.0f} ms, {lin['saved_bytes'] / 2**20:.1f} MiB"
            + (" saved" if not base else "")
        )
    syncs = [
        f"{name} {_label(v)} {r['host_syncs']}"
        for name, rows in record["models"].items()
        for v, r in rows.items()
        if r["host_syncs"]
    ]
    wta_syncs = any(s.split(" ", 1)[1].startswith("WTA") for s in syncs)
    lines.append("")
    lines.append(
        f"(`nn.Linear` steps: {'; '.join(base)}. "
        + ("" if wta_syncs else "No WTA-CRS variant synchronises with the host. ")
        + (f"Host reads per step: {', '.join(syncs)}.)" if syncs else "No host reads.)")
    )
    for name, skipped in record.get("not_applicable", {}).items():
        for v, why in skipped.items():
            lines.append(f"\n{name}, {_label(v)}: not run ({why}).")
    return "\n".join(lines)


def plot(record: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in MODELS if m in record["models"]]
    fig, axes = plt.subplots(2, len(models), figsize=(4.2 * len(models), 7.2), squeeze=False)
    markers = {"linear": "o", "checkpoint": "s", "wta-0.3": "^", "wta-0.1": "v"}
    ylabels = {
        "saved": "saved activation bytes / nn.Linear",
        "peak_estimate": "between passes + one block / nn.Linear",
    }
    for (row_i, metric), (col, name) in (
        (m, c) for m in enumerate(ylabels) for c in enumerate(models)
    ):
        ax = axes[row_i][col]
        rows = record["models"][name]
        front = sorted(
            (r["time_ratio"], r[f"{metric}_ratio"])
            for r in rows.values()
            if r[f"on_frontier_{metric}"]
        )
        ax.step(
            [t for t, _ in front],
            [b for _, b in front],
            where="post",
            color="0.7",
            zorder=0,
            label="Pareto frontier",
        )
        for v, r in rows.items():
            base = v.split("+")[0]
            ax.scatter(
                r["time_ratio"],
                r[f"{metric}_ratio"],
                marker=markers.get(base, "o"),
                facecolors="none" if v.endswith("+checkpoint") else None,
                edgecolors=_colour(v),
                color=_colour(v),
                s=55,
            )
            offset = {
                "wta-0.3+checkpoint": -9,
                "wta-0.1+checkpoint": -17,
                "wta-0.3+recompute": 9,
                "wta-0.1+recompute": -9,
            }.get(v, 3)
            ax.annotate(
                v,
                (r["time_ratio"], r[f"{metric}_ratio"]),
                fontsize=7,
                xytext=(4, offset),
                textcoords="offset points",
            )
        ax.set_yscale("log")
        ax.set_xlabel("step time / nn.Linear")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if col == 0:
            ax.set_ylabel(ylabels[metric], fontsize=8)
    axes[0][0].legend(fontsize=7, loc="upper right")
    note = record["config"].get("note", "")
    fig.suptitle(
        f"WTA-CRS vs checkpointing ({record['device_name']}, {record['date']})"
        + (f"\n{note}" if note else ""),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--layer-rows", type=int, default=8192, help="N of the layer section")
    parser.add_argument("--layer-width", type=int, default=1024, help="d_in of the layer section")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the record here")
    parser.add_argument("--plot", help="write the frontier plot here (PNG)")
    parser.add_argument("--note", default="", help="free text stored in the record")
    parser.add_argument("--replot", help="only redraw --plot from this stored JSON record")
    parser.add_argument("--table", help="only print the markdown frontier table of this record")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as f:
            print(frontier_table(json.load(f)))
        return
    if args.replot:
        with open(args.replot) as f:
            plot(json.load(f), args.plot)
        return
    torch.set_num_threads(args.threads)
    device_name = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else f"CPU {platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s)"
    )
    record: dict[str, Any] = {
        "benchmark": "wta-crs-frontier",
        "date": datetime.date.today().isoformat(),
        "device_name": device_name,
        "torch": torch.__version__,
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "plot")},
        "layer_ops": measure_layer(args.device, args.layer_rows, args.layer_width),
        "models": {},
    }
    names = args.models.split(",")
    record["not_applicable"] = {n: NOT_APPLICABLE[n] for n in names if n in NOT_APPLICABLE}
    for name in names:
        record["models"][name] = measure_model(name, args)
    if "llama" in record["models"]:
        model, _ = build("llama", "wta-0.3", args)
        converted = sum(isinstance(m, WTACRSLinear) for m in model.modules())
        record["layer_ops"].update(llama_layer_ops(record["models"]["llama"], converted))
    text = json.dumps(record, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    if args.plot:
        plot(record, args.plot)


if __name__ == "__main__":
    main()
