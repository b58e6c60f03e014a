"""Random matrices shared by the GAMP-RIE tests."""

import math

import torch


def _goe(d, gen):
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return (a + a.T) / math.sqrt(2 * d)  # off-diagonal variance 1/d


def _wishart_std(d, kappa, gen):
    m = round(kappa * d)
    w = torch.randn(m, d, generator=gen, dtype=torch.float64)
    return w.T @ w / m
