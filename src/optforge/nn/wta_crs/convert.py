"""Model surgery: turn the linear layers of a model (HF transformers, PEFT LoRA, plain torch)
into :class:`~optforge.nn.WTACRSLinear` layers in place, and back.

* :func:`convert_linear` replaces the ``nn.Linear`` layers whose names match ``include`` (default:
  the paper's "level 2" set, :data:`DEFAULT_TARGETS`). Parameters are shared, not copied, so
  optimizers, checkpoints and ``state_dict`` keys keep working. All layers converted by one
  call share one :class:`~optforge.nn.wta_crs.SampleShare`, so layers that read the same input
  tensor (q/k/v, gate/up) store one sample of it.
* With PEFT LoRA the base weights are frozen and the trainable ``lora_A`` matrices read the
  layer input: a ``lora_A`` is converted when its LoRA layer's name matches (the paper's
  "LoRA + WTA-CRS": sample the input saved for ``A``'s gradient).
* :func:`convert_model` is the one call for a whole model: every trainable linear of the
  attention and MLP blocks (:data:`ALL_TARGETS`) plus ``nn.ReLU`` → :class:`~optforge.nn.MaskedReLU`
  (1-bit masks, where the activation is a ReLU).

Activation checkpointing composes: checkpoint a block (``torch.utils.checkpoint`` non-reentrant,
or HF ``gradient_checkpointing_enable``) and the converted layers inside sample during the
recomputation; with the default RNG the recomputation replays the same rows.

Example:
    >>> import torch
    >>> from optforge.nn import convert_linear, revert_linear
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    >>> convert_linear(model, 0.3, include=None)  # every nn.Linear
    ['0', '2']
    >>> revert_linear(model)
    ['0', '2']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from optforge._core import check_in_range
from optforge.nn.activations import convert_relu
from optforge.nn.wta_crs.layer import SampleShare, WTACRSLinear

__all__ = [
    "ALL_TARGETS",
    "DEFAULT_TARGETS",
    "convert_linear",
    "convert_model",
    "revert_linear",
]

#: Layer-name patterns replaced by default, the paper's "level 2" set: attention output and
#: feed-forward projections (not q/k/v). Llama/Mistral/Qwen, T5, BERT, OPT/BART/Whisper naming.
DEFAULT_TARGETS: tuple[str, ...] = (
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "*.SelfAttention.o",
    "*.EncDecAttention.o",
    "wi",
    "wi_0",
    "wi_1",
    "wo",
    "*.attention.output.dense",
    "*.intermediate.dense",
    "*.output.dense",
    "out_proj",
    "fc1",
    "fc2",
)

#: Every linear of the attention and MLP blocks: :data:`DEFAULT_TARGETS` plus the q/k/v
#: projections (Llama ``q_proj``…, T5 ``q``/``k``/``v``, BERT ``query``/``key``/``value``,
#: GPT-NeoX ``query_key_value``/``dense*``). Siblings reading one input share one sample.
ALL_TARGETS: tuple[str, ...] = (
    *DEFAULT_TARGETS,
    "q_proj",
    "k_proj",
    "v_proj",
    "*.SelfAttention.[qkv]",
    "*.EncDecAttention.[qkv]",
    "*.attention.self.query",
    "*.attention.self.key",
    "*.attention.self.value",
    "*.attention.query_key_value",
    "*.attention.dense",
    "*.mlp.dense_h_to_4h",
    "*.mlp.dense_4h_to_h",
)

Selector = Sequence[str] | Callable[[str, nn.Module], bool] | None

_LORA_A = ".lora_A."


def _base_name(name: str) -> str:
    """``x.q_proj`` for PEFT's ``x.q_proj.lora_A.default``; the name itself otherwise."""
    head, sep, _ = name.rpartition(_LORA_A)
    return head if sep else name


def _matches(name: str, module: nn.Module, selector: Selector, default: bool) -> bool:
    if selector is None:
        return default
    if callable(selector):
        return bool(selector(name, module))
    if isinstance(selector, str):
        selector = (selector,)
    names = {name, _base_name(name)}
    return any(
        fnmatch.fnmatchcase(n, pat) or fnmatch.fnmatchcase(n.rsplit(".", 1)[-1], pat)
        for n in names
        for pat in selector
    )


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def convert_linear(
    model: nn.Module,
    ratio: float = 0.3,
    *,
    include: Selector = DEFAULT_TARGETS,
    exclude: Selector = ("lm_head",),
    share_inputs: bool = True,
    trainable_only: bool = False,
    **config: Any,
) -> list[str]:
    """Replace matching ``nn.Linear`` layers of ``model`` in place by :class:`WTACRSLinear`.

    Only layers whose type is exactly ``nn.Linear`` are replaced (subclasses such as the
    ``out_proj`` of ``nn.MultiheadAttention``, whose weight is read directly by its parent, are
    left alone). A PEFT ``lora_A`` layer matches through its LoRA layer's name.

    Args:
        model: The model to modify in place.
        ratio: Fraction of rows kept, in ``(0, 1]``.
        include: Name patterns (``fnmatch``, matched against the full module name and its last
            component), a predicate ``(name, module) -> bool``, or ``None`` for every linear.
        exclude: Patterns or predicate of layers never replaced (default ``lm_head``).
        share_inputs: Give the converted layers one :class:`~optforge.nn.wta_crs.SampleShare`
            (layers reading the same input tensor store one sample of it).
        trainable_only: Skip layers whose weight does not require grad.
        **config: Further :class:`WTACRSLinear` options (``min_k``, ``method``, ``det_ratio``,
            ``generator``, ``grad_norm_cache``).

    Returns:
        The names of the replaced layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_in_range("ratio", ratio, 0.0, 1.0, low_inclusive=False)
    if isinstance(model, nn.Linear):
        raise ValueError("model is itself an nn.Linear; use WTACRSLinear.from_linear(model)")
    names = [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear
        and (module.weight.requires_grad or not trainable_only)
        and _matches(name, module, include, True)
        and not _matches(name, module, exclude, False)
    ]
    if share_inputs and "share" not in config:
        config = {**config, "share": SampleShare()}
    for name in names:
        layer = WTACRSLinear.from_linear(model.get_submodule(name), ratio=ratio, **config)
        _set_submodule(model, name, layer)
    return names


def convert_model(
    model: nn.Module,
    ratio: float = 0.3,
    *,
    include: Selector = ALL_TARGETS,
    exclude: Selector = ("lm_head",),
    masks: bool = True,
    share_inputs: bool = True,
    **config: Any,
) -> list[str]:
    """One call for a whole model: every trainable attention/MLP linear, plus 1-bit ReLU masks.

    Converts the trainable ``nn.Linear`` layers matching ``include`` (default
    :data:`ALL_TARGETS`; with PEFT LoRA, the ``lora_A`` of the matching LoRA layers) with one
    shared sample per input, and, with ``masks=True``, every ``nn.ReLU`` to
    :class:`~optforge.nn.MaskedReLU`.

    Args:
        model: The model to modify in place.
        ratio: Fraction of rows kept, in ``(0, 1]``.
        include: As :func:`convert_linear`.
        exclude: As :func:`convert_linear`.
        masks: Also replace ``nn.ReLU`` modules by 1-bit-mask ReLUs.
        share_inputs: As :func:`convert_linear`.
        **config: Further :class:`WTACRSLinear` options.

    Returns:
        The names of the replaced modules (linears first, then ReLUs).
    """
    names = convert_linear(
        model,
        ratio,
        include=include,
        exclude=exclude,
        share_inputs=share_inputs,
        trainable_only=True,
        **config,
    )
    if masks:
        names += convert_relu(model)
    return names


def revert_linear(model: nn.Module) -> list[str]:
    """Turn every :class:`WTACRSLinear` of ``model`` back into an ``nn.Linear`` (shared params).

    Args:
        model: The model to modify in place.

    Returns:
        The names of the reverted layers.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, WTACRSLinear) and n]
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).to_linear())
    return names
