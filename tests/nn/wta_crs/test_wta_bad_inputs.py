"""Bad inputs to convert_linear / convert_model / WTACRSLinear: clear errors naming the argument,
raised before anything changes; non-finite inputs never give an invalid sample (issue #24)."""

import warnings

import pytest
import torch
from torch import nn

from optforge.nn import WTACRSLinear, convert_linear, convert_model


def _net():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


CONVERT_CASES = [
    # (kwargs, exception, the argument named)
    ({"ratio": 0.0}, ValueError, "ratio"),
    ({"ratio": 1.5}, ValueError, "ratio"),
    ({"ratio": float("nan")}, ValueError, "ratio"),
    ({"ratio": "0.3"}, ValueError, "ratio"),
    ({"ratio": True}, ValueError, "ratio"),
    ({"include": []}, ValueError, "include"),
    ({"include": ()}, ValueError, "include"),
    ({"include": 5}, TypeError, "include"),
    ({"include": ["0", 2]}, TypeError, "include"),
    ({"exclude": 3.0}, TypeError, "exclude"),
    ({"share_inputs": "yes"}, TypeError, "share_inputs"),
    ({"trainable_only": 1}, TypeError, "trainable_only"),
    ({"min_k": -5}, ValueError, "min_k"),
    ({"min_k": 2.5}, ValueError, "min_k"),
    ({"method": "bogus"}, ValueError, "method"),
    ({"det_ratio": 1.0}, ValueError, "det_ratio"),
    ({"det_ratio": 0.5, "method": "crs"}, ValueError, "det_ratio"),
    ({"generator": "seed"}, TypeError, "generator"),
    ({"generator": True}, TypeError, "generator"),
    ({"grad_norm_cache": object()}, TypeError, "grad_norm_cache"),
    ({"share": object()}, TypeError, "share"),
    ({"ratoi": 0.3}, TypeError, "ratoi"),
]


@pytest.mark.parametrize(
    ("convert", "kwargs", "exc", "name"),
    [(convert_linear, *case) for case in CONVERT_CASES]
    + [(convert_model, *case) for case in CONVERT_CASES if "trainable_only" not in case[0]],
)
def test_convert_rejects_bad_arguments_before_changing_the_model(convert, kwargs, exc, name):
    net = _net()
    kwargs = {"include": None, **kwargs}
    with pytest.raises(exc, match=name):
        convert(net, **kwargs)
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU, nn.Linear]


def test_bad_options_rejected_even_when_no_layer_matches():
    """Issue #24: min_k=-5, method='bogus' used to pass silently when nothing matched."""
    with pytest.raises(ValueError, match="min_k"):
        convert_linear(_net(), include=("nothing",), min_k=-5, method="bogus")


def test_model_and_target_types():
    with pytest.raises(TypeError, match="model"):
        convert_linear("a model")
    with pytest.raises(TypeError, match="model"):
        convert_model([nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="from_linear"):
        convert_linear(nn.Linear(4, 4))
    with pytest.raises(TypeError, match="masks"):
        convert_model(_net(), masks="no")
    with pytest.raises(TypeError, match="linear"):
        WTACRSLinear.from_linear(nn.Conv1d(2, 2, 1))
    net = _net()
    with pytest.warns(UserWarning, match="no nn.Linear"):  # a ReLU is not a target
        assert convert_linear(net, include=("1",)) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert convert_linear(_net(), include=("0",)) == ["0"]


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "name"),
    [
        ((-1, 4), {}, ValueError, "in_features"),
        ((4.5, 4), {}, ValueError, "in_features"),
        ((4, -2), {}, ValueError, "out_features"),
        ((4, 4), {"bias": "yes"}, TypeError, "bias"),
        ((4, 4), {"ratio": -0.1}, ValueError, "ratio"),
        ((4, 4), {"min_k": 0}, ValueError, "min_k"),
        ((4, 4), {"method": None}, ValueError, "method"),
    ],
)
def test_layer_constructor(args, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        WTACRSLinear(*args, **kwargs)


def test_layer_inputs_named_before_torch_errors():
    layer = WTACRSLinear(4, 3, ratio=0.5, min_k=1)
    with pytest.raises(ValueError, match="in_features"):
        layer(torch.randn(8, 5))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(8, 4, dtype=torch.float16))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(8, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="meta"):
        layer(torch.empty(8, 4, device="meta"))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a valid mixed-dtype input is accepted
        out = layer(torch.randn(8, 4))
    out.float().sum().backward()
    assert layer.weight.grad is not None


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("rows", ["one", "half", "all"])
@pytest.mark.parametrize("method", ["wta", "crs", "fixed"])
def test_non_finite_input_gives_non_finite_output_never_a_bad_index(value, rows, method):
    """A NaN row once sent the draws past the last row (IndexError on CPU, a device-side assert
    on CUDA). Now the output is non-finite exactly as nn.Linear's, and the sample is valid."""
    config = {"det_ratio": 0.5} if method == "fixed" else {"method": method}
    layer = WTACRSLinear(16, 8, ratio=0.3, min_k=1, **config)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    if rows == "one":
        x[5, 3] = value
    elif rows == "half":  # more non-finite rows than sampled slots
        x[::2] = value
    else:
        x[:] = value
    out = layer(x)
    assert not torch.isfinite(out).all()
    out.sum().backward()
    assert layer.weight.grad.shape == (8, 16)


def test_estimator_helpers_name_their_arguments():
    from optforge.nn import GradNormCache, approx_matmul, sample_indices

    with pytest.raises(TypeError, match="x"):
        approx_matmul([[1.0]], torch.ones(1, 1), 1)
    with pytest.raises(ValueError, match="probs"):
        approx_matmul(torch.ones(2, 3), torch.ones(3, 2), 1, probs=torch.ones(5))
    with pytest.raises(TypeError, match="dtype"):
        GradNormCache(dtype="bf16")
    with pytest.raises(ValueError, match="floor"):
        GradNormCache(floor=float("nan"))
    probs = torch.tensor([1.0, float("nan"), 2.0, 0.0, 3.0, 1.0])
    idx, w = sample_indices(probs, 3, generator=torch.Generator().manual_seed(0))
    assert int(idx.max()) < 6 and torch.isfinite(w).all()  # a NaN score gets the floor
