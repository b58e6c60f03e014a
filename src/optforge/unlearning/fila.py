"""FILA: Fisher-weighted LoRA initialisation for unlearning (LoKU).

Paper: *Towards Robust and Parameter-Efficient Knowledge Unlearning for LLMs*, Sungmin Cha,
Sungjun Cho, Dasol Hwang, Moontae Lee, ICLR 2025, arXiv:2408.06621. Official code:
``csm9493/efficient-llm-unlearning`` (TOFU part).

For each LoRA-adapted weight ``W`` (``d_out × d_in``):

1. empirical Fisher diagonals ``F_f``, ``F_r`` on forget and retain batches
   (``Σ_b n_b (∂CE_b/∂W)² / Σ_b n_b``, ``n_b`` target tokens of batch ``b``; batch gradients
   squared, as in the official code; :mod:`optforge.unlearning.fisher`);
2. relative importance ``I = F_f / (F_r + eps)``; row weights ``w_i = sqrt(Σ_j I_ij)``;
3. rank-``r`` SVD ``diag(w) W ≈ U_r S_r V_rᵀ`` (the optimal weighted approximation,
   Eckart–Young); with PEFT's scaling ``s`` (``lora_alpha / r``, or ``/ sqrt(r)`` for rsLoRA)
   and ``S' = S_r / s``: ``A = sqrt(S') V_rᵀ``, ``B = diag(1 / (w + eps)) U_r sqrt(S')``;
4. the frozen base keeps the residual ``W ← W − s B A``, so the model's outputs are unchanged
   at step 0, and only ``A``, ``B`` are trained (with IHL + retain NLL).

Example::

    from peft import LoraConfig, get_peft_model
    from optforge.unlearning import FilaConfig, initialize_fila

    model = get_peft_model(base_lm, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    initialize_fila(model, forget_loader, retain_loader, FilaConfig())

Choices:

* The Fisher pass runs with the LoRA adapters disabled and the model in eval mode (no dropout),
  so it measures the base model whatever the adapters' current values are.
* Exact SVD (``torch.linalg.svd``) when ``min(d_out, d_in) ≤ 4096``; randomised
  ``torch.svd_lowrank`` above (``svd="auto"``), because ``svd_lowrank(q=r)`` — the official
  choice — is inaccurate for small matrices.
* DoRA adapters are rejected (FILA is defined for plain LoRA).

Saving: FILA rewrites the frozen base weight (``W ← W − s·BA``), exactly like PEFT's PiSSA/OLoRA,
so an adapter saved alone does not reproduce the fine-tuned model on the *original* base. It uses
PEFT's conversion path for such initialisations: pass ``initial_adapter_dir`` to
:func:`initialize_fila` (it saves the freshly initialised adapter there) and, after training,
``model.save_pretrained(out, path_initial_model_for_weight_conversion=initial_adapter_dir)``.
PEFT then saves ``ΔW = s(BA − B₀A₀) = s[B | −B₀][A; A₀]``, a standard LoRA of rank ``2r`` (and
``lora_alpha`` doubled, or ×√2 with rsLoRA, so ``s`` is unchanged) that
``PeftModel.from_pretrained(original_base, out)`` applies to the unmodified ``W``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from optforge._core import check_positive, require
from optforge.unlearning.fisher import fisher_diagonal, relative_importance

__all__ = ["FilaConfig", "fila_factors", "fila_init_", "initialize_fila", "lora_layers"]


@dataclass
class FilaConfig:
    """Settings of the Fisher-weighted LoRA initialisation (PEFT style: config + init function).

    Attributes:
        eps: Stabiliser in the importance ratio ``F_f / (F_r + eps)`` and in ``1 / (w + eps)``.
        svd: ``"exact"`` (``torch.linalg.svd``), ``"lowrank"`` (``torch.svd_lowrank``) or
            ``"auto"`` (exact when the smaller side is at most 4096).
        lowrank_oversample: Extra columns ``q - r`` for ``torch.svd_lowrank``.
        lowrank_niter: Subspace iterations for ``torch.svd_lowrank``.
        retain_batches: Number of retain batches for ``F_r``; ``None`` uses as many as there are
            forget batches (cycling the retain loader), as the official code pairs them.
    """

    eps: float = 1e-5
    svd: Literal["auto", "exact", "lowrank"] = "auto"
    lowrank_oversample: int = 10
    lowrank_niter: int = 4
    retain_batches: int | None = None

    def __post_init__(self) -> None:
        check_positive("eps", self.eps)
        if self.svd not in ("auto", "exact", "lowrank"):
            raise ValueError(f"svd must be 'auto', 'exact' or 'lowrank', got {self.svd!r}")
        if self.lowrank_oversample < 0:
            raise ValueError(f"lowrank_oversample must be >= 0, got {self.lowrank_oversample}")
        if self.lowrank_niter < 0:
            raise ValueError(f"lowrank_niter must be >= 0, got {self.lowrank_niter}")
        if self.retain_batches is not None and self.retain_batches < 1:
            raise ValueError(f"retain_batches must be >= 1 or None, got {self.retain_batches}")


def fila_factors(
    weight: Tensor,
    importance: Tensor,
    rank: int,
    scaling: float,
    *,
    eps: float = 1e-5,
    svd: Literal["auto", "exact", "lowrank"] = "auto",
    lowrank_oversample: int = 10,
    lowrank_niter: int = 4,
) -> tuple[Tensor, Tensor]:
    """LoRA factors ``(A, B)`` of the Fisher-weighted rank-``rank`` approximation of ``weight``.

    ``s · B @ A`` is the best rank-``rank`` approximation of ``weight`` in the row-weighted norm
    ``||diag(w)(·)||_F`` with ``w_i = sqrt(Σ_j importance_ij)`` (up to ``eps``).

    Args:
        weight: ``(d_out, d_in)`` weight matrix.
        importance: Non-negative importance of every entry, same shape.
        rank: LoRA rank ``r``.
        scaling: PEFT's adapter scaling ``s`` (``lora_alpha / r``).
        eps: Stabiliser in ``1 / (w + eps)``.
        svd: ``"exact"``, ``"lowrank"`` or ``"auto"``.
        lowrank_oversample: Extra columns for ``torch.svd_lowrank``.
        lowrank_niter: Subspace iterations for ``torch.svd_lowrank``.

    Returns:
        ``A`` of shape ``(rank, d_in)`` and ``B`` of shape ``(d_out, rank)`` in the dtype of
        ``weight`` (computed in float32, or float64 for float64 input).
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be a matrix, got shape {tuple(weight.shape)}")
    if importance.shape != weight.shape:
        raise ValueError(
            f"importance must have the weight's shape {tuple(weight.shape)}, "
            f"got {tuple(importance.shape)}"
        )
    d_out, d_in = weight.shape
    if not isinstance(rank, int) or rank < 1 or rank > min(d_out, d_in):
        raise ValueError(
            f"rank (LoRA r) must be an int in [1, min(d_out, d_in)] = [1, {min(d_out, d_in)}], "
            f"got {rank}"
        )
    check_positive("scaling", scaling)
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w_mat = weight.detach().to(dtype)
    imp = importance.detach().to(dtype)
    if not bool(torch.isfinite(imp).all()) or bool((imp < 0).any()):
        raise ValueError("importance must be finite and non-negative")
    row_w = imp.sum(dim=1).sqrt()
    target = row_w[:, None] * w_mat
    use_exact = svd == "exact" or (svd == "auto" and min(d_out, d_in) <= 4096)
    if use_exact:
        u, s, vh = torch.linalg.svd(target, full_matrices=False)
        u, s, v = u[:, :rank], s[:rank], vh[:rank].mT
    else:
        q = min(rank + lowrank_oversample, d_out, d_in)
        u, s, v = torch.svd_lowrank(target, q=q, niter=lowrank_niter)
        u, s, v = u[:, :rank], s[:rank], v[:, :rank]
    root = (s / scaling).sqrt()
    lora_a = (v * root).mT
    lora_b = (u * root) / (row_w + eps)[:, None]
    return lora_a.to(weight.dtype).contiguous(), lora_b.to(weight.dtype).contiguous()


def lora_layers(model: nn.Module, adapter_name: str = "default") -> dict[str, nn.Module]:
    """The ``peft`` LoRA layers of ``model`` that hold ``adapter_name``, by module name.

    Raises:
        ValueError: If the model has no LoRA layer, or none holds ``adapter_name``.
    """
    lora = require("peft.tuners.lora", "llm")
    found = {n: m for n, m in model.named_modules() if isinstance(m, lora.LoraLayer)}
    if not found:
        raise ValueError(
            "model has no peft LoRA modules; wrap it first, e.g. "
            "peft.get_peft_model(model, LoraConfig(...))"
        )
    layers = {n: m for n, m in found.items() if adapter_name in m.lora_A}
    if not layers:
        have = sorted({a for m in found.values() for a in m.lora_A})
        raise ValueError(
            f"adapter_name {adapter_name!r} not found in the LoRA modules; have {have}"
        )
    return layers


@torch.no_grad()
def fila_init_(
    model: nn.Module,
    importance: Mapping[str, Tensor],
    *,
    adapter_name: str = "default",
    config: FilaConfig | None = None,
    initial_adapter_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Write FILA factors into every LoRA layer of ``model`` and keep the residual in the base.

    For each LoRA layer ``m`` (name ``N``) this sets ``m.lora_A[adapter].weight = A``,
    ``m.lora_B[adapter].weight = B`` and ``m.base_layer.weight ← W − s·B A`` so that the model's
    function is unchanged.

    Args:
        model: A ``peft`` LoRA model (e.g. from ``peft.get_peft_model``).
        importance: ``"N.base_layer.weight"`` → importance of that weight (see
            :func:`relative_importance`), as produced for the same model's parameter names.
        adapter_name: Which adapter to initialise.
        config: Settings (:class:`FilaConfig`); defaults if None.
        initial_adapter_dir: If given, save the initialised adapter there (a ``peft``
            ``PeftModel`` and ``adapter_name="default"`` only), for PEFT's conversion at save
            time: ``model.save_pretrained(out,
            path_initial_model_for_weight_conversion=initial_adapter_dir)`` writes a rank-``2r``
            standard LoRA that reproduces the trained model on the original base weights.
    """
    config = config or FilaConfig()
    layers = lora_layers(model, adapter_name)
    if initial_adapter_dir is not None:
        _check_can_save_initial(model, adapter_name, initial_adapter_dir)
    for name, module in layers.items():
        if module.use_dora.get(adapter_name, False):
            raise ValueError(f"{name}: FILA is defined for plain LoRA, not DoRA (use_dora=True)")
        key = _base_weight_name(name)
        if key not in importance:
            raise ValueError(f"importance has no entry {key!r} for LoRA module {name!r}")
        base = module.get_base_layer()
        transpose = bool(getattr(module, "fan_in_fan_out", False))
        weight = base.weight.T if transpose else base.weight
        imp = importance[key].to(weight.device)
        imp = imp.T if transpose else imp
        rank = module.r[adapter_name]
        if rank > min(weight.shape):
            raise ValueError(
                f"LoRA rank r={rank} of {name!r} exceeds min(d_out, d_in) = {min(weight.shape)}"
            )
        scaling = float(module.scaling[adapter_name])
        lora_a, lora_b = fila_factors(
            weight,
            imp,
            rank,
            scaling,
            eps=config.eps,
            svd=config.svd,
            lowrank_oversample=config.lowrank_oversample,
            lowrank_niter=config.lowrank_niter,
        )
        a_layer, b_layer = module.lora_A[adapter_name], module.lora_B[adapter_name]
        a_layer.weight.copy_(lora_a.to(a_layer.weight.dtype))
        b_layer.weight.copy_(lora_b.to(b_layer.weight.dtype))
        delta = scaling * (b_layer.weight.to(torch.float32) @ a_layer.weight.to(torch.float32))
        new_weight = weight.to(torch.float32) - delta
        base.weight.copy_((new_weight.T if transpose else new_weight).to(base.weight.dtype))
    if initial_adapter_dir is not None:
        _save_initial_adapter(model, adapter_name, initial_adapter_dir)


def _check_can_save_initial(model: nn.Module, adapter_name: str, path: object) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"initial_adapter_dir must be a path or None, got {type(path).__name__}")
    if os.path.isfile(path):
        raise ValueError(f"initial_adapter_dir {os.fspath(path)!r} is a file, not a directory")
    if not (hasattr(model, "save_pretrained") and hasattr(model, "peft_config")):
        raise TypeError(
            "initial_adapter_dir needs a peft PeftModel (from peft.get_peft_model), got "
            f"{type(model).__name__}"
        )
    if adapter_name != "default":
        # PEFT's conversion loads the initial adapter under the folder's name and saves a
        # non-default adapter into a sub-folder: it is made for the "default" adapter.
        raise ValueError(
            "initial_adapter_dir supports adapter_name='default' only (PEFT's "
            f"path_initial_model_for_weight_conversion), got {adapter_name!r}"
        )


@torch.no_grad()
def _save_initial_adapter(
    model: nn.Module, adapter_name: str, path: str | os.PathLike[str]
) -> None:
    """Save the freshly initialised adapter for PEFT's save-time conversion (PiSSA's recipe).

    The config is saved with ``init_lora_weights=True`` so that PEFT's ``load_adapter`` restores
    the saved factors instead of initialising them again.
    """
    config = model.peft_config[adapter_name]
    previous = config.init_lora_weights
    config.init_lora_weights = True
    try:
        model.save_pretrained(os.fspath(path), selected_adapters=[adapter_name])
    finally:
        config.init_lora_weights = previous


def initialize_fila(
    model: nn.Module,
    forget_loader: Iterable[Mapping[str, Tensor]],
    retain_loader: Iterable[Mapping[str, Tensor]],
    config: FilaConfig | None = None,
    *,
    adapter_name: str = "default",
    initial_adapter_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Tensor]:
    """Fisher-weighted LoRA initialisation of a ``peft`` LoRA model from forget/retain data.

    Computes the Fisher diagonals of every LoRA layer's base weight on the forget and retain
    batches (adapters disabled), their ratio, and calls :func:`fila_init_`.

    Args:
        model: A ``peft`` LoRA model.
        forget_loader: Forget batches (HF-style dicts).
        retain_loader: Retain batches.
        config: Settings (:class:`FilaConfig`).
        adapter_name: Which adapter to initialise.
        initial_adapter_dir: Where to save the initialised adapter for PEFT's conversion at save
            time (see :func:`fila_init_`): after training,
            ``model.save_pretrained(out, path_initial_model_for_weight_conversion=...)`` with the
            same directory saves a rank-``2r`` LoRA for the original base.

    Returns:
        The relative importance used, by base-weight parameter name.
    """
    config = config or FilaConfig()
    layers = lora_layers(model, adapter_name)
    if initial_adapter_dir is not None:
        _check_can_save_initial(model, adapter_name, initial_adapter_dir)
    keys = {_base_weight_name(n) for n in layers}
    forget_batches = list(forget_loader)
    if not forget_batches:
        raise ValueError("forget_loader is empty")
    n_retain = config.retain_batches or len(forget_batches)
    retain_iter = iter(retain_loader)
    first = next(retain_iter, None)
    if first is None:
        raise ValueError("retain_loader is empty")
    retain_batches = list(
        itertools.islice(itertools.cycle(itertools.chain([first], retain_iter)), n_retain)
    )
    enabled = {n: not m.disable_adapters for n, m in layers.items()}
    try:
        for m in layers.values():
            m.enable_adapters(False)

        def select(n: str, _: nn.Parameter) -> bool:
            return n in keys

        f_forget = fisher_diagonal(model, forget_batches, param_filter=select, name="forget_loader")
        f_retain = fisher_diagonal(model, retain_batches, param_filter=select, name="retain_loader")
    finally:
        for n, m in layers.items():
            if enabled[n]:
                m.enable_adapters(True)
    importance = relative_importance(f_forget, f_retain, config.eps)
    fila_init_(
        model,
        importance,
        adapter_name=adapter_name,
        config=config,
        initial_adapter_dir=initial_adapter_dir,
    )
    return importance


def _base_weight_name(module_name: str) -> str:
    return f"{module_name}.base_layer.weight"
