"""The scikit-learn style estimator (``optforge.matrix.altmin.estimator``)."""

import numpy as np
import torch
from _altmin_helpers import DT, _gen

from optforge.matrix.altmin import RobustAltMinCompletion
from optforge.problems import make_incoherent_lowrank


def test_estimator_fit_transform_nan_matrix():
    us, s, vs, rows, cols, vals = make_incoherent_lowrank(90, 60, 3, p=0.5, generator=_gen(9))
    full = (us * s @ vs.T).numpy()
    x = np.full_like(full, np.nan)
    x[rows.numpy(), cols.numpy()] = vals.numpy()
    est = RobustAltMinCompletion(rank=3, random_state=0)
    out = est.fit_transform(x)
    assert isinstance(out, np.ndarray) and out.shape == x.shape
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(out[observed], x[observed])  # observed entries kept
    assert np.abs(out - full).max() / np.abs(full).max() < 1e-7
    assert est.U_.shape == (90, 3) and est.V_.shape == (60, 3) and est.n_iter_ >= 1
    # triplet input gives the same factors under the same seed
    est2 = RobustAltMinCompletion(rank=3, random_state=0).fit((rows, cols, vals), shape=(90, 60))
    pred = est2.predict(rows[:5], cols[:5])
    assert torch.allclose(pred, vals[:5], atol=1e-7)
    assert est.get_params()["rank"] == 3
    assert est.set_params(rank=2).rank == 2


def test_estimator_torch_input_returns_tensor():
    _, _, _, rows, cols, vals = make_incoherent_lowrank(40, 30, 2, p=0.6, generator=_gen(1))
    x = torch.full((40, 30), float("nan"), dtype=DT)
    x[rows, cols] = vals
    out = RobustAltMinCompletion(rank=2, solver="exact", random_state=1).fit_transform(x)
    assert isinstance(out, torch.Tensor) and not torch.isnan(out).any()
