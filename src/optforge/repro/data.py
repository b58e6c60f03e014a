"""Data sets shared by the reproductions, with every preprocessing step an explicit argument.

Only data that ships inside a PyPI package or is generated in code: nothing is downloaded. Each
paper module says which loader and which preprocessing it uses; two papers asking for the same
data get the same arrays (the loaders are cached per process, and their tensors must not be
modified in place).

Example::

    from optforge.repro.data import digits, digits_split

    x, y = digits(pixels="symmetric", shuffle_seed=0)            # all 1,797 images in [−1, 1]
    x_tr, y_tr, x_te, y_te = digits_split(n_train=1400, center=True)   # fixed shuffle, then cut
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Pixels = Literal["raw", "unit", "symmetric"]

__all__ = ["Pixels", "digits", "digits_split"]


@cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data, data.target.astype(np.int64)


def _pixels(pixels: Pixels, center: bool) -> np.ndarray:
    raw, _ = _digits_arrays()
    if pixels == "raw":
        x = raw.astype(np.float64)
    elif pixels == "unit":
        x = raw.astype(np.float32) / 16.0
    elif pixels == "symmetric":
        x = raw.astype(np.float32) / 16.0 * 2.0 - 1.0  # exactly k/8 − 1 for k = 0 … 16
    else:
        raise ValueError(f"pixels must be 'raw', 'unit' or 'symmetric', got {pixels!r}")
    if center:
        x -= x.mean(axis=0, keepdims=True)  # mean over all images, before any split
    return x


@cache
def digits(
    *, pixels: Pixels = "unit", center: bool = False, shuffle_seed: int | None = None
) -> tuple[Tensor, Tensor]:
    """scikit-learn's 8 × 8 digits as ``(x, y)``: ``x`` of shape (1797, 64), ``y`` int64 labels.

    Args:
        pixels: ``"raw"`` (float64 counts 0 … 16), ``"unit"`` (float32 in [0, 1]) or
            ``"symmetric"`` (float32 in [−1, 1]).
        center: subtract the per-pixel mean over all images.
        shuffle_seed: permute the images with ``numpy.random.default_rng(shuffle_seed)``;
            ``None`` keeps scikit-learn's order.
    """
    x = _pixels(pixels, center)
    _, y = _digits_arrays()
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(x))
        x, y = x[order], y[order]
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


@cache
def digits_split(
    *,
    n_train: int | None = None,
    test_size: float | None = None,
    split_seed: int = 0,
    pixels: Pixels = "unit",
    center: bool = False,
    standardize: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Digits cut into ``(x_train, y_train, x_test, y_test)``.

    Give exactly one of:

    * ``n_train``: shuffle with ``default_rng(split_seed)``, the first ``n_train`` images train;
    * ``test_size``: scikit-learn's ``train_test_split`` stratified by label with
      ``random_state=split_seed``.

    ``standardize`` fits scikit-learn's ``StandardScaler`` on the training part and applies it to
    both parts (float32).
    """
    if (n_train is None) == (test_size is None):
        raise ValueError("digits_split: give exactly one of n_train and test_size")
    if n_train is not None:
        x, y = digits(pixels=pixels, center=center, shuffle_seed=split_seed)
        x_tr, y_tr, x_te, y_te = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    else:
        from sklearn.model_selection import train_test_split

        x_np = _pixels(pixels, center)
        _, y_np = _digits_arrays()
        a, b, c, d = train_test_split(
            x_np, y_np, test_size=test_size, stratify=y_np, random_state=split_seed
        )
        x_tr, x_te = torch.from_numpy(a), torch.from_numpy(b)
        y_tr, y_te = torch.from_numpy(c), torch.from_numpy(d)
    if standardize:
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x_tr.numpy())
        x_tr = torch.from_numpy(scaler.transform(x_tr.numpy()).astype(np.float32))
        x_te = torch.from_numpy(scaler.transform(x_te.numpy()).astype(np.float32))
    return x_tr, y_tr, x_te, y_te
