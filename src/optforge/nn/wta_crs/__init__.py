"""WTA-CRS: linear layers whose weight gradient is an unbiased estimate from sampled token rows.

Paper: *Winner-Take-All Column Row Sampling for Memory Efficient Adaptation of Language Model*,
Zirui Liu, Guanchu Wang, Shaochen Zhong, Zhaozhuo Xu, Daochen Zha, Ruixiang Tang, Zhimeng Jiang,
Kaixiong Zhou, Vipin Chaudhary, Shuai Xu, Xia Hu (NeurIPS 2023), arXiv:2305.15265.

A linear layer ``Z = H Wᵀ + b`` stores its input ``H`` (``N × d_in`` after flattening the leading
dimensions, ``N = batch · sequence``) only to form the weight gradient

$$ \\nabla W = \\nabla Z^\\top H = \\sum_{i=1}^{N} \\nabla Z_{i,:}^\\top H_{i,:}. $$

WTA-CRS replaces this sum over token rows by an unbiased estimate that uses ``k`` of the ``N``
rows, chosen in the forward pass, so the layer saves ``k`` rows (plus ``k`` indices and ``k``
fp32 weights) instead of ``N``. With sampling probabilities ``p`` the ``|C|`` most probable rows
(the *winners* ``C``) are kept exactly and the other ``s = k − |C|`` are drawn i.i.d. with
replacement from the residual distribution ``q_j = p_j / Σ_{l∉C} p_l`` (``j ∉ C``):

$$ \\widehat{\\nabla W} = \\sum_{c\\in C} \\nabla Z_c^\\top H_c
   + \\frac{1}{s}\\sum_{t=1}^{s} \\frac{\\nabla Z_{j_t}^\\top H_{j_t}}{q_{j_t}}, \\qquad
   \\mathbb E\\,\\widehat{\\nabla W} = \\nabla W. $$

``|C|`` follows the official adaptive rule (``argmin_c R_c/(k − c)``, equivalently the paper's
condition ``P_C > |C|/k``); ``|C| = 0`` is plain column-row sampling (CRS). The forward output,
the input gradient ``∇Z W`` and the bias gradient are exact.

The package, one idea per module:

* :mod:`~optforge.nn.wta_crs.sampling` — the sampler (one sort, one cumulative sum, one ``rand``,
  one ``searchsorted``; no host sync), :func:`approx_matmul`;
* :mod:`~optforge.nn.wta_crs.variance` — the closed-form variance of CRS and WTA-CRS;
* :mod:`~optforge.nn.wta_crs.cache` — :class:`GradNormCache`, the official ``‖H_i‖·‖∇Z_i‖``
  probabilities from the previous visit's gradient norms (opt-in);
* :mod:`~optforge.nn.wta_crs.function` — the autograd function;
* :mod:`~optforge.nn.wta_crs.layer` — :class:`WTACRSLinear` and :class:`SampleShare`;
* :mod:`~optforge.nn.wta_crs.convert` — :func:`convert_model` / :func:`convert_linear` for HF,
  PEFT LoRA and plain models, :func:`revert_linear`, and :class:`ConversionSpec` /
  :func:`apply_conversion` to re-apply a recorded conversion to a reloaded model;
* :mod:`~optforge.nn.wta_crs.recompute` — SwiGLU MLP and RMSNorm that recompute their
  elementwise tensors in the backward pass (``convert_model(..., recompute=True)``);
* :mod:`~optforge.nn.wta_crs.measure` — saved bytes, peak memory, aten op counts, host syncs.

Example:
    >>> import torch
    >>> from optforge.nn import WTACRSLinear, convert_model
    >>> layer = WTACRSLinear(64, 32, ratio=0.3)
    >>> y = layer(torch.randn(8, 16, 64))  # saves 0.3 · 128 rows for the weight gradient
    >>> y.sum().backward()
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())
    >>> convert_model(model, 0.3, include=None)  # every trainable linear, ReLU -> 1-bit mask
    ['0', '1']
"""

from optforge.nn.wta_crs.cache import GradNormCache
from optforge.nn.wta_crs.convert import (
    ALL_TARGETS,
    DEFAULT_TARGETS,
    ConversionSpec,
    ConversionStep,
    apply_conversion,
    conversion_spec,
    convert_linear,
    convert_model,
    revert_linear,
)
from optforge.nn.wta_crs.function import WTACRSLinearFunction, tie_sample
from optforge.nn.wta_crs.layer import SampleShare, WTACRSLinear
from optforge.nn.wta_crs.measure import (
    aten_op_counts,
    host_sync_ops,
    peak_memory_bytes,
    saved_tensor_bytes,
)
from optforge.nn.wta_crs.recompute import RecomputeRMSNorm, SwiGLUMLP, swiglu
from optforge.nn.wta_crs.sampling import (
    approx_matmul,
    n_winners,
    sample_indices,
    sample_rows,
    sample_size,
)
from optforge.nn.wta_crs.variance import expected_squared_error

__all__ = [
    "ALL_TARGETS",
    "DEFAULT_TARGETS",
    "ConversionSpec",
    "ConversionStep",
    "GradNormCache",
    "RecomputeRMSNorm",
    "SampleShare",
    "SwiGLUMLP",
    "WTACRSLinear",
    "WTACRSLinearFunction",
    "apply_conversion",
    "approx_matmul",
    "aten_op_counts",
    "conversion_spec",
    "convert_linear",
    "convert_model",
    "expected_squared_error",
    "host_sync_ops",
    "n_winners",
    "peak_memory_bytes",
    "revert_linear",
    "sample_indices",
    "sample_rows",
    "sample_size",
    "saved_tensor_bytes",
    "swiglu",
    "tie_sample",
]
