"""The scikit-learn transformer (``optforge.matrix.altmin.estimator``)."""

import math

import numpy as np
import pytest
import torch
from _altmin_helpers import DT, _gen
from scipy import sparse
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import check_estimator

from optforge.matrix.altmin import RobustAltMinCompletion
from optforge.problems import make_incoherent_lowrank

#: checks of scikit-learn's ``check_estimator`` expected to fail, with the reason (none).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


def _low_rank(m=200, n=40, k=3, p=0.5, seed=0):
    rng = np.random.default_rng(seed)
    full = rng.normal(size=(m, k)) @ rng.normal(size=(k, n))
    return full, np.where(rng.random(full.shape) < p, full, np.nan)


def test_check_estimator_passes():
    # rank=1: the checks fit matrices with two features, and the rank must stay below that
    results = check_estimator(
        RobustAltMinCompletion(rank=1, random_state=0),
        expected_failed_checks=EXPECTED_FAILED_CHECKS,
        on_fail=None,
    )
    failed = {r["check_name"]: r["exception"] for r in results if r["status"] == "failed"}
    assert not failed
    assert sum(r["status"] == "passed" for r in results) >= 40


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
    assert est.n_features_in_ == 60 and est.solver_ == "exact"
    # triplet input gives the same factors under the same seed
    est2 = RobustAltMinCompletion(rank=3, random_state=0).fit((rows, cols, vals), shape=(90, 60))
    pred = est2.predict_entries(rows[:5], cols[:5])
    assert isinstance(pred, torch.Tensor) and torch.allclose(pred, vals[:5], atol=1e-7)
    assert torch.equal(est2.U_, est.U_)
    assert est.get_params()["rank"] == 3
    assert est.set_params(rank=2).rank == 2


def test_fold_in_completes_new_rows():
    full, x = _low_rank()
    est = RobustAltMinCompletion(rank=3, random_state=0).fit(x[:150])
    new = est.transform(x[150:])
    assert np.abs(new - full[150:]).max() < 1e-8 * np.abs(full).max()
    observed = ~np.isnan(x[150:])
    np.testing.assert_array_equal(new[observed], x[150:][observed])
    # rows are independent, and on the training rows the fold-in reproduces the fit
    np.testing.assert_allclose(est.transform(x[150:160]), new[:10], rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.transform(x[:150]), est.fit_transform(x[:150]), atol=1e-8)


def test_fold_in_of_an_empty_row_is_zero():
    _, x = _low_rank()
    est = RobustAltMinCompletion(rank=3, random_state=0).fit(x)
    rows = x[:2].copy()
    rows[0] = np.nan
    out = est.transform(rows)
    assert np.all(out[0] == 0.0) and np.isfinite(out[1]).all()


def test_score_is_negative_rmse_on_held_out_entries():
    _, x = _low_rank()
    est = RobustAltMinCompletion(rank=3, random_state=0).fit(x[:150])
    assert -1e-8 < est.score(x[150:]) <= 0.0  # exactly low rank: fold-in recovers hidden entries
    noisy = x[150:] + 0.1 * np.random.default_rng(1).normal(size=x[150:].shape)
    assert -0.5 < est.score(noisy) < -0.01
    assert est.score(x[150:]) == est.score(x[150:])  # seeded by random_state
    low = RobustAltMinCompletion(rank=1, random_state=0).fit(x[:150])
    assert low.score(x[150:]) < est.score(x[150:])  # the score ranks the ranks
    with pytest.raises(ValueError, match="holdout"):
        est.score(x[150:], holdout=1.5)


def test_predict_entries_bounds_and_deprecated_alias():
    _, x = _low_rank()
    est = RobustAltMinCompletion(rank=3, random_state=0).fit(x)
    full = (est.U_ @ est.V_.T).numpy()
    got = est.predict_entries(np.array([0, 5, 199]), np.array([0, 39, 7]))
    np.testing.assert_allclose(got, full[[0, 5, 199], [0, 39, 7]], rtol=1e-12)
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 200\)"):
        est.predict_entries([200], [0])
    with pytest.raises(ValueError, match=r"cols must lie in \[0, 40\)"):
        est.predict_entries([0], [-1])
    with pytest.raises(TypeError, match="integer"):
        est.predict_entries([0.5], [1])
    with pytest.raises(ValueError, match="same shape"):
        est.predict_entries([0, 1], [1])
    with pytest.warns(FutureWarning, match="predict_entries"):
        old = est.predict([0, 5], [0, 39])
    np.testing.assert_allclose(old.numpy(), full[[0, 5], [0, 39]])
    with pytest.warns(FutureWarning, match="transform"):
        np.testing.assert_allclose(est.predict(x[:3]), est.transform(x[:3]))


def test_not_fitted_errors():
    est = RobustAltMinCompletion(rank=2)
    for call in (
        lambda: est.transform(np.zeros((3, 4))),
        lambda: est.score(np.zeros((3, 4))),
        lambda: est.predict_entries([0], [0]),
    ):
        with pytest.raises(NotFittedError):
            call()


def test_feature_names_set_output_and_input_checks():
    pd = pytest.importorskip("pandas")
    _, x = _low_rank()
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    est = RobustAltMinCompletion(rank=3, random_state=0).fit(frame)
    assert list(est.feature_names_in_) == list(frame.columns)
    assert list(est.get_feature_names_out()) == list(frame.columns)
    out = est.set_output(transform="pandas").transform(frame.iloc[:5])
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(frame.columns)
    with pytest.raises(TypeError, match=r"[Ss]parse"):
        RobustAltMinCompletion(rank=1).fit(sparse.random(20, 5, density=0.5, format="csr"))
    with pytest.raises(ValueError, match="n_features = 1"):
        RobustAltMinCompletion(rank=1).fit(np.ones((10, 1)))
    with pytest.raises(ValueError, match="features"):
        est.set_output(transform="default").transform(x[:, :5])


def test_estimator_torch_input_returns_tensor():
    _, _, _, rows, cols, vals = make_incoherent_lowrank(40, 30, 2, p=0.6, generator=_gen(1))
    x = torch.full((40, 30), float("nan"), dtype=DT)
    x[rows, cols] = vals
    out = RobustAltMinCompletion(rank=2, solver="exact", random_state=1).fit_transform(x)
    assert isinstance(out, torch.Tensor) and not torch.isnan(out).any()


def _digits_with_missing_pixels(n=360, missing=0.3, seed=0):
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(seed)
    x = data.data[:n] / 16.0
    return np.where(rng.random(x.shape) < missing, np.nan, x), data.target[:n]


def test_pipeline_cross_validation_and_grid_search_on_digits():
    """Before fold-in, ``transform`` refused new rows, so every CV score was NaN."""
    x, y = _digits_with_missing_pixels()
    complete = RobustAltMinCompletion(rank=8, n_iters=5, ridge=1e-2, random_state=0)
    pipe = Pipeline([("complete", complete), ("clf", LogisticRegression(max_iter=100))])
    scores = cross_val_score(pipe, x, y, cv=3, error_score="raise")
    assert np.all(np.isfinite(scores)) and scores.mean() > 0.8
    grid = GridSearchCV(pipe, {"complete__rank": [1, 8]}, cv=2, error_score="raise").fit(x, y)
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    # unsupervised: the estimator's own score (negative RMSE on held-out entries) ranks ranks
    alone = GridSearchCV(complete, {"rank": [1, 8]}, cv=2, error_score="raise").fit(x)
    assert all(math.isfinite(v) for v in alone.cv_results_["mean_test_score"])
    assert alone.best_params_ == {"rank": 8}
