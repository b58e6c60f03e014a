"""Small labelled data sets shared by the Bayes-error tests."""

import numpy as np
import torch


def _data(n=30, d=4, c=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, d, generator=g, dtype=dtype) + 0.8 * y[:, None].to(dtype)
    return x, y


def _digits_subset(n):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.data[:n].astype(np.float32) / 16)
    return x, torch.from_numpy(d.target[:n].astype(np.int64))
