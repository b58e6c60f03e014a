r"""Mergeable sufficient statistics of per-example gradients (the input of the batch-size tests).

For per-example gradients :math:`G_1, \dots, G_b \in \mathbb R^p` (flattened over all trainable
parameters) and a direction :math:`d` (the minibatch mean for the paper's tests),
:class:`GradStats` keeps

.. math::

    b,\qquad \textstyle\sum_i G_i,\qquad m_2 = \sum_i (G_i - \bar G)^{\odot 2},\qquad
    \sum_i a_i,\qquad \sum_i (a_i - \bar a)^2 \quad (a_i = \langle G_i, d\rangle),

from which the unbiased variances (divisor ``b - 1``) of the tests follow. Statistics of
disjoint sets of examples merge exactly (Chan, Golub, LeVeque's pairwise update), so
micro-batches and ranks (:meth:`GradStats.all_reduce`, two ``all_reduce`` calls) give the
statistics of the whole global batch.

Statistics taken from ghost norms (:func:`~optforge.optim.adadagrad.ghost.ghost_grad_stats`) keep
only the **total** :math:`\sum_j m_{2,j} = \sum_i\lVert G_i\rVert^2 - b\lVert\bar G\rVert^2` (a
0-dim ``m2``): every test but the coordinate-wise one needs no more; :attr:`~GradStats.variance`
and :attr:`~GradStats.sumsq` then raise ``ValueError``.

Example::

    G = torch.randn(16, 10)                      # 16 examples, 10 coordinates
    stats = GradStats.from_samples(G[:6], ref=G.mean(0)).merge(
        GradStats.from_samples(G[6:], ref=G.mean(0)))
    stats.trace_variance, stats.ip_variance      # as if computed on G at once
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["GradStats"]


@dataclass
class GradStats:
    """Mergeable sufficient statistics of per-example gradients ``G_i`` (flattened, length p).

    Attributes:
        count: number of examples ``b``.
        sum: ``Σ_i G_i``.
        m2: ``Σ_i (G_i − mean)²`` per coordinate (centred; ``sumsq`` is derived from it), or
            its total over the coordinates as a 0-dim tensor (:attr:`coordinatewise` False).
        ref: the direction ``d`` of the inner products ``a_i = ⟨G_i, d⟩`` (the minibatch mean
            for the paper's tests), or ``None`` when no inner-product statistics were taken.
        ip_sum: ``Σ_i a_i``; ``ip_m2``: ``Σ_i (a_i − ā)²``.

    Statistics of disjoint sets of examples merge exactly (:meth:`merge`, :meth:`all_reduce`),
    so micro-batches and ranks give the statistics of the whole global batch.
    """

    count: int
    sum: Tensor
    m2: Tensor
    ref: Tensor | None = None
    ip_sum: Tensor | None = None
    ip_m2: Tensor | None = None
    _g2: float | None = field(default=None, init=False, repr=False, compare=False)
    # float(m2.sum(dtype=float64)) when the producer has it on the host already (ghost, CPU)
    _m2_sum: float | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_samples(cls, samples: Tensor, ref: Tensor | None = None) -> GradStats:
        """Statistics of a ``(b, p)`` matrix of per-example gradients (``ref``: ``(p,)``)."""
        if samples.dim() != 2:
            raise ValueError(f"samples must be a (b, p) matrix, got shape {tuple(samples.shape)}")
        n = samples.shape[0]
        if n == 0:
            return cls.empty(samples.shape[1], samples.dtype, samples.device, ref)
        total = samples.sum(0)
        m2 = (samples - total / n).pow(2).sum(0)
        if ref is None:
            return cls(n, total, m2)
        if ref.shape != (samples.shape[1],):
            raise ValueError(f"ref must have shape ({samples.shape[1]},), got {tuple(ref.shape)}")
        a = samples @ ref.to(samples.dtype)
        return cls(n, total, m2, ref, a.sum(), (a - a.mean()).pow(2).sum())

    @classmethod
    def empty(
        cls,
        numel: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        ref: Tensor | None = None,
    ) -> GradStats:
        """Statistics of zero examples (the identity of :meth:`merge`)."""
        zeros = torch.zeros(numel, dtype=dtype, device=device)
        if ref is None:
            return cls(0, zeros, zeros.clone())
        scalar = torch.zeros((), dtype=dtype, device=device)
        return cls(0, zeros, zeros.clone(), ref, scalar, scalar.clone())

    # -- derived quantities ------------------------------------------------------------------
    @property
    def coordinatewise(self) -> bool:
        """Whether ``m2`` is per coordinate (False: only its total, from ghost norms)."""
        return self.m2.dim() > 0

    @property
    def mean(self) -> Tensor:
        """The minibatch gradient ``g = Σ G_i / b``."""
        self._require(1)
        return self.sum / self.count

    @property
    def sumsq(self) -> Tensor:
        """``Σ_i G_i ⊙ G_i`` per coordinate."""
        self._require_coordinates()
        if self.count == 0:
            return torch.zeros_like(self.m2)
        return self.m2 + self.sum.pow(2) / self.count

    @property
    def variance(self) -> Tensor:
        """Unbiased per-coordinate sample variance ``Var_j`` (divisor ``b − 1``)."""
        self._require_coordinates()
        self._require(2)
        return self.m2 / (self.count - 1)

    @property
    def trace_variance(self) -> float:
        """``S = Σ_j Var_j``, the trace of the sample covariance."""
        self._require(2)
        return self._m2_total() / (self.count - 1)

    @property
    def grad_sq_norm(self) -> float:
        """``‖g‖²`` (one dot product in the statistics' dtype, computed once per object)."""
        if self._g2 is None:
            self._require(1)
            self._g2 = float(torch.dot(self.sum, self.sum)) / self.count**2
        return self._g2

    @property
    def ip_variance(self) -> float:
        """Unbiased sample variance of ``a_i = ⟨G_i, ref⟩``."""
        self._require(2, inner_product=True)
        return float(self.ip_m2) / (self.count - 1)

    @property
    def orth_trace_variance(self) -> float:
        """``Σ_j Var_i(r_ij)`` with ``r_i = G_i − (a_i/‖ref‖²) ref`` (no ``r_i`` is formed).

        Uses ``Σ‖r_i − r̄‖² = Σ_j m2_j − Σ(a_i − ā)²/‖ref‖²`` (Pythagoras: ``r_i ⟂ ref``).
        """
        self._require(2, inner_product=True)
        ref = self.ref
        assert ref is not None
        ref_sq = float(torch.dot(ref, ref))
        if ref_sq == 0.0:
            return self.trace_variance
        m2_total = self._m2_total()
        return max(m2_total - float(self.ip_m2) / ref_sq, 0.0) / (self.count - 1)

    # -- merging -----------------------------------------------------------------------------
    def merge(self, other: GradStats) -> GradStats:
        """Statistics of the union of two disjoint sets of examples (exact; Chan et al.)."""
        if (self.ref is None) != (other.ref is None) or (
            self.ref is not None and not torch.equal(self.ref, other.ref)  # type: ignore[arg-type]
        ):
            raise ValueError("other: cannot merge statistics taken with different ref directions")
        if other.count == 0:
            return replace(self)
        if self.count == 0:
            return replace(other)
        n_a, n_b = self.count, other.count
        n = n_a + n_b
        delta = other.sum / n_b - self.sum / n_a
        if self.coordinatewise != other.coordinatewise:
            raise ValueError(
                "other: cannot merge per-coordinate statistics with total-only (ghost) ones"
            )
        m2 = self.m2 + other.m2 + _fold(delta.pow(2), self.m2) * (n_a * n_b / n)
        if self.ref is None:
            return GradStats(n, self.sum + other.sum, m2)
        d_ip = other.ip_sum / n_b - self.ip_sum / n_a  # type: ignore[operator]
        ip_m2 = self.ip_m2 + other.ip_m2 + d_ip.pow(2) * (n_a * n_b / n)  # type: ignore[operator]
        return GradStats(n, self.sum + other.sum, m2, self.ref, self.ip_sum + other.ip_sum, ip_m2)

    def all_reduce(self, group: Any = None) -> GradStats:
        """The statistics of all ranks' examples together (every rank gets the same result).

        Two ``torch.distributed.all_reduce`` (sum) calls: first the counts and sums, then the
        centred second moments about the global mean (exact, no cancellation).
        """
        import torch.distributed as dist

        has_ip = self.ref is not None
        scalars = [float(self.count)] + ([float(self.ip_sum)] if has_ip else [])  # type: ignore[arg-type]
        head = torch.tensor(scalars, dtype=self.sum.dtype, device=self.sum.device)
        first = torch.cat([head, self.sum])
        dist.all_reduce(first, group=group)
        n_total = round(float(first[0]))
        total = first[len(scalars) :].clone()
        if n_total == 0:
            return GradStats.empty(total.numel(), total.dtype, total.device, self.ref)
        local_mean = self.sum / max(self.count, 1)
        between = _fold((local_mean - total / n_total).pow(2), self.m2) * self.count
        pieces = [(self.m2 + between).reshape(-1)]
        if has_ip:
            ip_total = first[1]
            local_ip = self.ip_sum / max(self.count, 1)  # type: ignore[operator]
            ip_term = self.ip_m2 + (local_ip - ip_total / n_total).pow(2) * self.count  # type: ignore[operator]
            pieces.insert(0, ip_term.reshape(1))
        second = torch.cat(pieces)
        dist.all_reduce(second, group=group)
        m2 = second[1:] if has_ip else second
        if not self.coordinatewise:
            m2 = m2.reshape(())
        if not has_ip:
            return GradStats(n_total, total, m2)
        return GradStats(n_total, total, m2.clone(), self.ref, ip_total.clone(), second[0].clone())

    def _m2_total(self) -> float:
        """``Σ_j m2_j`` in float64 (as a Python float)."""
        if self._m2_sum is None:
            return float(self.m2.sum(dtype=torch.float64))
        return self._m2_sum

    def _require_coordinates(self) -> None:
        if not self.coordinatewise:
            raise ValueError(
                "stats: per-coordinate statistics are not available (these were taken from "
                "ghost norms, which give only their total); use method='per_example'"
            )

    def _require(self, n: int, *, inner_product: bool = False) -> None:
        if self.count < n:
            raise ValueError(
                f"stats: need at least {n} example(s), got count={self.count}"
                + (" (one example has no sample variance)" if n == 2 else "")
            )
        if inner_product and self.ref is None:
            raise ValueError("stats: no inner-product statistics (take them with a ref direction)")


def _fold(sq: Tensor, like: Tensor) -> Tensor:
    """``sq`` per coordinate, or its total when ``like`` (an ``m2``) is a 0-dim total."""
    return sq if like.dim() > 0 else sq.sum()
