r"""The observed entries of one half-step as linear operators, built once per pattern of Ω.

With the factor ``U`` (m × k) fixed, a half-step of alternating minimization solves one
regression per column ``j``: ``min_v ‖A_j v − b_j‖`` with ``A_j = U[Ω_j]`` and
``b_j = M[Ω_j, j]``. Every solver needs only a few products with all the ``A_j`` at once, and
:class:`ObservedPattern` provides them, with the index structures built once per pattern of Ω
(and orientation: the U-step swaps rows and columns) and reused by every sweep:

* ``rhs(U)`` = ``A_jᵀ b_j`` for all ``j`` (one sparse–dense product, ``|Ω|k``);
* ``normal(U, P)`` = ``A_jᵀ A_j p_j`` and ``residual_normal(U, V)`` = ``A_jᵀ (b_j − A_j v_j)``:
  ``A p`` is ``(U Pᵀ)[Ω]``, the product restricted to the observed entries (a sampled
  dense–dense product), then ``Aᵀ r`` is one sparse–dense product; ``2|Ω|k`` each;
* ``gram(U)`` = ``A_jᵀ A_j`` (exact normal equations): the observed-pattern matrix times the
  Khatri–Rao square ``[u_i ⊗ u_i]`` of ``U`` (its ``k(k+1)/2`` upper products, ``|Ω|k²/2``);
* ``sketch_gram(U)`` = ``(S_j A_j)ᵀ(S_j A_j)`` and ``(S_j A_j)ᵀ S_j b_j`` for the
  :class:`CountSketch` the pattern was built with (``|Ω|k + n s k²``).

Two backends compute the same quantities (to rounding):

* ``"sparse"``: torch sparse CSR products (``sampled_addmm``, CSR @ dense): ``O(|Ω|k)``
  work and memory whatever the density ``p = |Ω|/(mn)``;
* ``"dense"``: the pattern as a dense (n × m) 0/1 matrix and the values zero-filled, and the
  products as BLAS-3 GEMMs on blocks of columns (``U Pᵀ`` masked, then times ``U``): ``mnk``
  flops, i.e. ``|Ω|k/p``, but at dense-BLAS speed, which wins on a CPU once ``p`` is more than
  a few percent. It holds two (n × m) matrices per orientation (16 bytes per matrix entry in
  float64);
* ``"auto"`` (default) picks ``"dense"`` when ``p`` is above the solver's measured crossover
  (:data:`DENSE_MIN_DENSITY` for the sketch) and ``n·m ≤`` :data:`DENSE_MAX_ELEMENTS`, else
  ``"sparse"``.

Example:
    >>> import torch
    >>> from optforge.matrix.altmin import ObservedPattern
    >>> rows, cols = torch.tensor([0, 2, 1]), torch.tensor([0, 0, 1])
    >>> vals = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> pat = ObservedPattern.build(rows, cols, vals, n_cols=2, n_rows=3)
    >>> pat.rhs(torch.eye(3, dtype=torch.float64))  # A_jᵀ b_j
    tensor([[1., 0., 2.],
            [0., 3., 0.]], dtype=torch.float64)
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from optforge._core import check_choice, check_positive_int

__all__ = [
    "DENSE_MAX_ELEMENTS",
    "DENSE_MIN_DENSITY",
    "Backend",
    "CountSketch",
    "ObservedPattern",
    "resolve_backend",
]

Backend = Literal["auto", "dense", "sparse"]
_BACKENDS = ("auto", "dense", "sparse")

#: ``backend="auto"`` uses dense GEMMs from this observed fraction ``|Ω|/(mn)`` on (the sketch
#: solver's measured CPU crossover; the exact solver's Khatri–Rao product stays sparse longer at
#: small k, see :class:`~optforge.matrix.altmin.ExactNormalEquations`).
DENSE_MIN_DENSITY = 0.1
#: ... and only while one orientation's (n × m) matrix has at most this many entries
#: (2²⁶: 1 GiB for the pattern and values in float64).
DENSE_MAX_ELEMENTS = 2**26

_CHUNK_ELEMENTS = 2**18  # entries of a (block × m) temporary of the dense backend (2 MiB f64)
_SKETCH_CHUNK = 2**22  # entries of a (block × s × k) sketch of the dense backend


@dataclass
class CountSketch:
    """A CountSketch of every column's regression, drawn once per pattern.

    Every row ``i`` of the fixed factor gets a bucket ``h(i) ∈ [s]`` and a sign
    ``σ(i) = ±1`` (uniform, independent), shared by all columns: ``S_j`` maps the rows
    ``Ω_j`` of column ``j`` to ``s`` buckets, ``(S_j A_j)_h = Σ_{i ∈ Ω_j, h(i) = h} σ(i) u_i``.
    Each ``S_j`` is exactly a CountSketch of its own rows (``E[S_jᵀS_j] = I``); the sketches of
    different columns share the hash, which the per-column embedding guarantee (a union bound
    over columns) does not need to be independent.

    Attributes:
        size: buckets ``s``.
        bucket: (m,) bucket of every row.
        sign: (m,) sign of every row.
        order: (m,) the rows sorted by bucket (stable).
        bounds: ``s + 1`` offsets of the buckets in ``order``.
    """

    size: int
    bucket: Tensor
    sign: Tensor
    order: Tensor
    bounds: list[int]

    @classmethod
    def draw(
        cls,
        n_rows: int,
        size: int,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> CountSketch:
        """Draw the bucket and sign of each of ``n_rows`` rows (``size`` buckets)."""
        size = check_positive_int("sketch_size", size)
        gen_dev = generator.device if generator is not None else torch.device("cpu")
        bucket = torch.randint(size, (n_rows,), generator=generator, device=gen_dev).to(device)
        sign = torch.randint(2, (n_rows,), generator=generator, device=gen_dev).to(device)
        order = torch.argsort(bucket, stable=True)
        bounds = [0, *torch.cumsum(torch.bincount(bucket, minlength=size), 0).tolist()]
        return cls(size, bucket, sign.to(dtype) * 2 - 1, order, bounds)


@dataclass
class ObservedPattern:
    """The observed entries of one orientation, grouped by column, as reusable operators.

    Attributes:
        n_cols: number of regressions ``n`` (columns of the orientation).
        n_rows: rows ``m`` of the fixed factor.
        n_obs: ``|Ω|``.
        counts: (n,) observations per column ``d_j``.
        crow: (n + 1,) CSR row pointers (column ``j``'s entries are ``crow[j]:crow[j+1]``).
        index: (|Ω|,) row ``i`` of every entry, grouped by column, ascending within a column.
        values: (|Ω|,) ``b`` in the same order.
        backend: ``"dense"`` or ``"sparse"`` (resolved).
        sketch: the :class:`CountSketch` the pattern was built for, or ``None``.
        row_order: dense backend: the rows of the factor in the order of the dense matrices'
            columns (the sketch's bucket order, so every bucket is a contiguous block).
        mask: dense backend: (n, m) 0/1 pattern (the values' dtype), columns in ``row_order``.
        dense_values: dense backend: (n, m) values, zero off the pattern, same layout.
        sketched_values: ``S_j b_j`` for every column (n, s), with a sketch.
        operator: sparse backend with a sketch: the (n·s × m) CSR matrix stacking the ``S_j``.
        slot: with a sketch, the bucket ``j·s + h(i)`` of every entry (CSR order).
    """

    n_cols: int
    n_rows: int
    n_obs: int
    counts: Tensor
    crow: Tensor
    index: Tensor
    values: Tensor
    backend: str
    sketch: CountSketch | None = None
    row_order: Tensor | None = None
    mask: Tensor | None = None
    dense_values: Tensor | None = None
    sketched_values: Tensor | None = None
    operator: Tensor | None = None
    slot: Tensor | None = None

    @classmethod
    def build(
        cls,
        rows: Tensor,
        cols: Tensor,
        vals: Tensor,
        n_cols: int,
        n_rows: int,
        backend: Backend = "auto",
        sketch: CountSketch | None = None,
    ) -> ObservedPattern:
        """Group the entries ``(rows[e], cols[e], vals[e])`` by column (one sort) and build
        the structures of ``backend`` (and of ``sketch``, if given)."""
        check_choice("backend", backend, _BACKENDS)
        index, group, values, counts, crow = _group_by_column(rows, cols, vals, n_cols, n_rows)
        n_obs = int(index.numel())
        pattern = cls(
            n_cols, n_rows, n_obs, counts, crow, index, values,
            resolve_backend(backend, n_obs, n_cols, n_rows), sketch,
        )  # fmt: skip
        if pattern.backend == "dense":
            row_order = sketch.order if sketch is not None else None
            position = index
            if row_order is not None:
                position = torch.empty_like(row_order)
                position[row_order] = torch.arange(n_rows, device=index.device)
                position = position[index]
            pattern.row_order = row_order
            pattern.mask = torch.zeros(n_cols, n_rows, dtype=vals.dtype, device=vals.device)
            pattern.mask[group, position] = 1.0
            pattern.dense_values = torch.zeros_like(pattern.mask)
            pattern.dense_values[group, position] = values
        if sketch is not None:
            s = sketch.size
            pattern.slot = group * s + sketch.bucket[index]
            pattern.sketched_values = pattern._sketch_values(sketch.sign)
            if pattern.backend == "sparse":
                perm = torch.argsort(pattern.slot, stable=True)
                op_crow = torch.zeros(n_cols * s + 1, dtype=torch.long, device=index.device)
                op_crow[1:] = torch.cumsum(torch.bincount(pattern.slot, minlength=n_cols * s), 0)
                idx = index[perm]
                pattern.operator = _sparse_csr(op_crow, idx, sketch.sign[idx], (n_cols * s, n_rows))
        return pattern

    def resign(self, sign: Tensor) -> None:
        """Give the pattern's sketch new signs ``σ`` (m,), keeping its buckets: ``S_j b_j`` and
        the sparse operator's values are recomputed in ``O(|Ω|)`` (no sort)."""
        if self.sketch is None:
            raise ValueError("this pattern was built without a sketch")
        self.sketch.sign = sign
        self.sketched_values = self._sketch_values(sign)
        if self.operator is not None:
            op = self.operator
            self.operator = _sparse_csr(
                op.crow_indices(), op.col_indices(), sign[op.col_indices()], tuple(op.shape)
            )

    def _sketch_values(self, sign: Tensor) -> Tensor:
        """``S_j b_j`` (n, s) for the signs ``sign``."""
        assert self.sketch is not None and self.slot is not None
        sb = torch.zeros(
            self.n_cols * self.sketch.size, dtype=self.values.dtype, device=sign.device
        )
        sb.index_add_(0, self.slot, sign[self.index] * self.values)
        return sb.reshape(self.n_cols, self.sketch.size)

    # ------------------------------------------------------------------ products
    def rhs(self, U: Tensor, subset: Tensor | None = None) -> Tensor:
        """``A_jᵀ b_j`` for every column (or the columns ``subset``): (n, k)."""
        if self.dense_values is not None:
            vals = self.dense_values if subset is None else self.dense_values[subset]
            return vals @ self._ordered(U)
        return self._csr(self.values, subset) @ U

    def normal(self, U: Tensor, P: Tensor) -> Tensor:
        """``A_jᵀ A_j p_j`` for every column (``P``: (n, k)): (n, k)."""
        if self.mask is not None:
            return self._dense_chunks(U, P, residual=False)
        return self._csr(self._sampled(U, P)) @ U

    def residual_normal(self, U: Tensor, V: Tensor) -> Tensor:
        """``A_jᵀ (b_j − A_j v_j)`` for every column (``V``: (n, k)): (n, k)."""
        if self.mask is not None:
            return self._dense_chunks(U, V, residual=True)
        return self._csr(self.values - self._sampled(U, V)) @ U

    def residual_norms(self, U: Tensor, V: Tensor) -> Tensor:
        """``‖A_j v_j − b_j‖`` for every column: (n,)."""
        if self.mask is not None and self.dense_values is not None:
            u_t = self._ordered(U).T
            out = []
            for j0, j1 in self._chunks():
                y = (V[j0:j1] @ u_t).mul_(self.mask[j0:j1]).sub_(self.dense_values[j0:j1])
                out.append(torch.linalg.vector_norm(y, dim=1))
            return torch.cat(out)
        r = self._sampled(U, V) - self.values
        group = torch.repeat_interleave(torch.arange(self.n_cols, device=U.device), self.counts)
        sq = torch.zeros(self.n_cols, dtype=U.dtype, device=U.device).index_add_(0, group, r * r)
        return sq.sqrt()

    def gram(self, U: Tensor, subset: Tensor | None = None) -> Tensor:
        """Exact ``A_jᵀ A_j`` for every column (or the columns ``subset``): (n, k, k).

        The pattern matrix times the Khatri–Rao square of ``U`` (its ``k(k+1)/2`` upper
        products), in blocks of products so the (m × block) factor stays small.
        """
        k = U.shape[1]
        iu = torch.triu_indices(k, k, device=U.device)
        n_out = self.n_cols if subset is None else int(subset.numel())
        upper = U.new_empty(n_out, iu.shape[1])
        block = max(1, 8 * _CHUNK_ELEMENTS // max(1, self.n_rows))
        if self.mask is not None:
            u = self._ordered(U)
            pattern = self.mask if subset is None else self.mask[subset]
        else:
            u = U
            ones = torch.ones(self.n_obs, dtype=U.dtype, device=U.device)
            pattern = self._csr(ones, subset)
        for a in range(0, iu.shape[1], block):
            kr = u[:, iu[0, a : a + block]] * u[:, iu[1, a : a + block]]
            upper[:, a : a + block] = pattern @ kr
        out = U.new_empty(n_out, k, k)
        out[:, iu[0], iu[1]] = upper
        out[:, iu[1], iu[0]] = upper
        return out

    def sketch_gram(self, U: Tensor) -> tuple[Tensor, Tensor]:
        """``(S_jA_j)ᵀ(S_jA_j)`` (n, k, k) and ``(S_jA_j)ᵀ S_j b_j`` (n, k) for every column,
        with the pattern's :class:`CountSketch`.

        ``S_j A_j`` is formed a block of columns at a time and reduced at once, so the
        (n, s, k) sketch is never held in full: on the dense backend by one GEMM per bucket
        (the pattern's columns are stored bucket by bucket), on the sparse backend by one
        CSR product of the stacked sketch operator.
        """
        sketch, sb = self.sketch, self.sketched_values
        if sketch is None or sb is None:
            raise ValueError("this pattern was built without a sketch")
        n, k, s = self.n_cols, U.shape[1], sketch.size
        gram = U.new_empty(n, k, k)
        cross = U.new_empty(n, k)
        step = max(1, min(n, _SKETCH_CHUNK // (s * k)))
        if self.mask is not None:
            signed = (U * sketch.sign[:, None])[sketch.order]
            bounds = sketch.bounds
            buf = U.new_empty(step, s, k)
            for j0 in range(0, n, step):
                j1 = min(n, j0 + step)
                sa = buf[: j1 - j0]
                part = self.mask[j0:j1]
                for b in range(s):
                    lo, hi = bounds[b], bounds[b + 1]
                    if hi > lo:
                        torch.mm(part[:, lo:hi], signed[lo:hi], out=sa[:, b, :])
                    else:
                        sa[:, b, :] = 0.0
                _reduce_sketch(sa, sb[j0:j1], gram[j0:j1], cross[j0:j1])
        else:
            op = self.operator
            assert op is not None
            crow, col, val = op.crow_indices(), op.col_indices(), op.values()
            step = max(1, min(n, _CHUNK_ELEMENTS // (s * k)))
            for j0 in range(0, n, step):
                j1 = min(n, j0 + step)
                a, b = int(crow[j0 * s]), int(crow[j1 * s])
                block = _sparse_csr(
                    crow[j0 * s : j1 * s + 1] - a, col[a:b], val[a:b], ((j1 - j0) * s, self.n_rows)
                )
                sa = (block @ U).reshape(j1 - j0, s, k)
                _reduce_sketch(sa, sb[j0:j1], gram[j0:j1], cross[j0:j1])
        return gram, cross

    # ------------------------------------------------------------------ helpers
    def _ordered(self, U: Tensor) -> Tensor:
        """``U`` with its rows in the order of the dense matrices' columns."""
        return U if self.row_order is None else U[self.row_order]

    def _chunks(self) -> list[tuple[int, int]]:
        step = max(1, _CHUNK_ELEMENTS // max(1, self.n_rows))
        return [(j, min(self.n_cols, j + step)) for j in range(0, self.n_cols, step)]

    def _dense_chunks(self, U: Tensor, P: Tensor, residual: bool) -> Tensor:
        """``A_jᵀ A_j p_j`` (or ``A_jᵀ(b_j − A_j p_j)``) by masked GEMMs, a block at a time."""
        assert self.mask is not None and self.dense_values is not None
        u = self._ordered(U)
        u_t = u.T
        out = U.new_empty(self.n_cols, U.shape[1])
        for j0, j1 in self._chunks():
            y = (P[j0:j1] @ u_t).mul_(self.mask[j0:j1])
            if residual:
                torch.sub(self.dense_values[j0:j1], y, out=y)
            torch.mm(y, u, out=out[j0:j1])
        return out

    def _sampled(self, U: Tensor, P: Tensor) -> Tensor:
        """``u_i · p_j`` at every observed entry, in CSR order (SDDMM)."""
        pattern = self._csr(torch.zeros(self.n_obs, dtype=U.dtype, device=U.device))
        return torch.sparse.sampled_addmm(pattern, P, U.T, beta=0.0).values()

    def _csr(self, values: Tensor, subset: Tensor | None = None) -> Tensor:
        """The (n × m) CSR matrix of ``values`` on the pattern (or its rows ``subset``)."""
        if subset is None:
            return _sparse_csr(self.crow, self.index, values, (self.n_cols, self.n_rows))
        sub_counts = self.counts[subset]
        offsets = torch.cumsum(sub_counts, 0) - sub_counts
        take = torch.repeat_interleave(self.crow[subset] - offsets, sub_counts)
        take = take + torch.arange(take.numel(), device=take.device)
        crow = torch.zeros(subset.numel() + 1, dtype=torch.long, device=take.device)
        crow[1:] = torch.cumsum(sub_counts, 0)
        return _sparse_csr(crow, self.index[take], values[take], (int(subset.numel()), self.n_rows))


def resolve_backend(
    backend: str, n_obs: int, n_cols: int, n_rows: int, min_density: float = DENSE_MIN_DENSITY
) -> str:
    """``"dense"`` or ``"sparse"`` for ``backend`` on a pattern of ``n_obs`` entries (n × m):
    ``"auto"`` is dense from the observed fraction ``min_density`` on, if ``n·m`` fits."""
    check_choice("backend", backend, _BACKENDS)
    if backend != "auto":
        return backend
    size = n_cols * n_rows
    dense = n_obs >= min_density * size and size <= DENSE_MAX_ELEMENTS
    return "dense" if dense else "sparse"


def _reduce_sketch(sa: Tensor, sb: Tensor, gram: Tensor, cross: Tensor, block: int = 64) -> None:
    """``gram = saᵀsa`` and ``cross = saᵀsb`` per column, in cache-sized blocks of columns."""
    for a in range(0, sa.shape[0], block):
        part_t = sa[a : a + block].transpose(1, 2)
        torch.bmm(part_t, sa[a : a + block], out=gram[a : a + block])
        cross[a : a + block] = torch.bmm(part_t, sb[a : a + block, :, None])[:, :, 0]


def _sparse_csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # torch flags sparse CSR as "beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


# The Ω-only part of a pattern (the entries grouped by column: one sort of |Ω| keys), shared by
# every pattern built on the same (rows, cols, vals) tensors whatever their sketch or backend
# (issue #34: the R2 scaling experiment builds a sketch solver per rank k on one Ω, and an exact
# solver on it too). Keyed on the tensors' identity and version counters (an in-place change
# is a miss); an entry is dropped when one of its tensors is freed, and at most
# _GROUPED_ENTRIES are kept.
_GROUPED_ENTRIES = 4
_grouped: list[tuple[tuple, tuple[Tensor, ...]]] = []


def _group_by_column(
    rows: Tensor, cols: Tensor, vals: Tensor, n_cols: int, n_rows: int
) -> tuple[Tensor, ...]:
    """``(index, group, values, counts, crow)``: the entries sorted by (column, row), their rows,
    columns and values in that order, the count per column and the CSR row pointers."""
    sources = (rows, cols, vals)
    versions = tuple(t._version for t in sources)
    for key, grouped in _grouped:
        refs, *rest = key
        if rest == [versions, n_cols, n_rows] and all(
            ref() is t for ref, t in zip(refs, sources, strict=True)
        ):
            return grouped
    long_rows, long_cols = rows.long(), cols.long()
    keys = long_cols * n_rows + long_rows
    if n_cols * n_rows <= 2**31 - 1:  # 32-bit keys sort faster (same order: keys are unique)
        keys = keys.int()
    order = torch.argsort(keys)
    index, group, values = long_rows[order], long_cols[order], vals[order]
    counts = torch.bincount(group, minlength=n_cols)
    crow = torch.zeros(n_cols + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.cumsum(counts, 0)
    grouped = (index, group, values, counts, crow)

    def forget(_ref: object) -> None:
        _grouped[:] = [item for item in _grouped if item[0] is not key]

    try:
        refs = tuple(weakref.ref(t, forget) for t in sources)
    except TypeError:  # a tensor subclass without weak references: not cached
        return grouped
    key = (refs, versions, n_cols, n_rows)
    _grouped[:] = [*_grouped[-(_GROUPED_ENTRIES - 1) :], (key, grouped)]
    return grouped


class _PatternCache:
    """Remembers the patterns of the last two index sets (the V- and U-step of a sweep).

    With ``sketch_size``, each pattern carries a :class:`CountSketch` of that size drawn from
    ``generator`` when the pattern is first built (once per pattern, reused by every sweep).
    """

    def __init__(self) -> None:
        self._items: list[tuple[tuple, ObservedPattern]] = []

    def get(
        self,
        rows: Tensor,
        cols: Tensor,
        vals: Tensor,
        n_cols: int,
        n_rows: int,
        backend: str,
        sketch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> ObservedPattern:
        for (r, c, v, *rest), pattern in self._items:
            if r is rows and c is cols and v is vals and rest == [
                n_cols, n_rows, backend, sketch_size,
            ]:  # fmt: skip
                return pattern
        sketch = None
        if sketch_size is not None:
            sketch = CountSketch.draw(n_rows, sketch_size, generator, vals.device, vals.dtype)
        pattern = ObservedPattern.build(rows, cols, vals, n_cols, n_rows, backend, sketch)
        key = (rows, cols, vals, n_cols, n_rows, backend, sketch_size)
        self._items = [*self._items[-1:], (key, pattern)]
        return pattern
