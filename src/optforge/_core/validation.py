"""Argument validation with error messages that name the argument and what was expected."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch


def check_positive(name: str, value: float) -> float:
    """Return ``value`` if it is a finite real number > 0, else raise ``ValueError`` naming it."""
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def check_nonnegative(name: str, value: float) -> float:
    """Return ``value`` if it is a finite real number >= 0, else raise ``ValueError`` naming it."""
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an integer >= 1, else raise ``ValueError`` naming it."""
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_nonnegative_int(name: str, value: int) -> int:
    """Return ``value`` if it is an integer >= 0 (not a bool), else raise ``ValueError``."""
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def check_choice(name: str, value: object, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]


def check_in_range(
    name: str,
    value: float,
    low: float,
    high: float,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` if it lies in the interval, else raise ``ValueError`` naming it."""
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    ok_low = value >= low if low_inclusive else value > low
    ok_high = value <= high if high_inclusive else value < high
    if not (ok_low and ok_high):
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")
    return value


def check_finite(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Return ``tensor`` if it holds no NaN or inf, else raise ``ValueError`` naming it."""
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    return tensor


# --------------------------------------------------------------------------------------------
# Tensor inputs: type, device, dtype, shape, emptiness, finiteness, index range; and seeds.
# Each entry point validates its inputs with a few calls (or one ``check_tensor``) before it
# changes any state, so a bad input never leaves a half-updated optimizer, buffer or generator.


class OutOfRangeError(ValueError, IndexError):
    """An index or label outside its valid range (both a ``ValueError`` and an ``IndexError``)."""


class NonFiniteError(ValueError, FloatingPointError):
    """NaN or inf in an input: a bad value (``ValueError``) that, met during training, is also the
    ``FloatingPointError`` training loops report for a diverged loss."""


def same_device(a: torch.device, b: torch.device) -> bool:
    """``True`` if ``a`` and ``b`` are the same device (``cuda`` matches ``cuda:0`` etc.)."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def check_is_tensor(name: str, value: object) -> torch.Tensor:
    """Return ``value`` if it is a ``torch.Tensor``, else raise ``TypeError`` naming it."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_not_meta(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``ValueError`` if ``tensor`` lives on the ``meta`` device (it has no values to use)."""
    if tensor.device.type == "meta":
        raise ValueError(
            f"{name} is on the meta device (a tensor without data); move it to a real device"
        )
    return tensor


def check_device(
    name: str, tensor: torch.Tensor, device: torch.device | str, *, owner: str = "the parameters"
) -> torch.Tensor:
    """``ValueError`` naming ``name`` unless ``tensor`` is on ``device`` (where ``owner`` lives)."""
    if not same_device(tensor.device, torch.device(device)):
        raise ValueError(
            f"{name} is on {tensor.device} but {owner} on {device}; "
            f"move it with .to({str(device)!r})"
        )
    return tensor


def check_floating(name: str, tensor: torch.Tensor, *, allow_half: bool = True) -> torch.Tensor:
    """``TypeError`` unless ``tensor`` has a real floating dtype (float16/bfloat16 optional)."""
    if not tensor.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if not allow_half and tensor.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"{name} must be float32 or float64 here, got {tensor.dtype}; cast it with .float()"
        )
    return tensor


def check_integer(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``TypeError`` unless ``tensor`` has an integer dtype (not bool, not floating)."""
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {tensor.dtype}")
    return tensor


def check_shape(
    name: str, tensor: torch.Tensor, shape: tuple[int | None, ...], *, what: str = ""
) -> torch.Tensor:
    """``ValueError`` unless ``tensor.shape`` matches ``shape`` (``None`` matches any size)."""
    ok = tensor.dim() == len(shape) and all(
        want is None or want == got for want, got in zip(shape, tensor.shape, strict=True)
    )
    if not ok:
        expected = "(" + ", ".join("*" if s is None else str(s) for s in shape)
        expected += ",)" if len(shape) == 1 else ")"
        detail = f" ({what})" if what else ""
        raise ValueError(f"{name} must have shape {expected}{detail}, got {tuple(tensor.shape)}")
    return tensor


def check_nonempty(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``ValueError`` if ``tensor`` has no elements (an empty batch)."""
    if tensor.numel() == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(tensor.shape)}); expected a non-empty batch"
        )
    return tensor


def check_nonnegative_values(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``ValueError`` if ``tensor`` holds a negative value (call after :func:`check_finite`)."""
    if bool((tensor < 0).any()):
        raise ValueError(f"{name} must be >= 0 everywhere, got a minimum of {float(tensor.min())}")
    return tensor


def check_index_range(
    name: str, index: torch.Tensor, low: int, high: int, *, high_name: str | None = None
) -> torch.Tensor:
    """Integer ``index`` with every value in ``[low, high)``, else :class:`OutOfRangeError`.

    ``high_name`` names the bound in the message (``"num_classes"`` gives ``[0, num_classes=3)``).
    """
    check_integer(name, index)
    if index.numel():
        lo, hi = torch.aminmax(index.reshape(-1))
        if int(lo) < low or int(hi) >= high:
            bound = f"{high_name}={high}" if high_name else str(high)
            raise OutOfRangeError(
                f"{name}: every value must lie in [{low}, {bound}), got values in "
                f"[{int(lo)}, {int(hi)}]"
            )
    return index


def check_tensor(
    name: str,
    value: object,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int | None, ...] | None = None,
    dtype: str | None = "floating",
    allow_half: bool = True,
    device: torch.device | str | None = None,
    owner: str = "the parameters",
    nonempty: bool = True,
    finite: bool = True,
) -> torch.Tensor:
    """One call for the usual checks of a tensor input, in a fixed order.

    Type (``TypeError``), meta device, ``device`` (where ``owner`` lives), ``dtype``
    (``"floating"``, ``"integer"`` or ``None`` for any; ``TypeError``), ``ndim`` / ``shape``,
    emptiness, then finiteness (floating tensors only). Every message names ``name``.
    """
    tensor = check_is_tensor(name, value)
    check_not_meta(name, tensor)
    if device is not None:
        check_device(name, tensor, device, owner=owner)
    if dtype == "floating":
        check_floating(name, tensor, allow_half=allow_half)
    elif dtype == "integer":
        check_integer(name, tensor)
    elif dtype is not None:
        raise ValueError(f"dtype must be 'floating', 'integer' or None, got {dtype!r}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if tensor.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {tuple(tensor.shape)}")
    if shape is not None:
        check_shape(name, tensor, shape)
    if nonempty:
        check_nonempty(name, tensor)
    if finite and tensor.dtype.is_floating_point:
        check_finite(name, tensor.detach())
    return tensor


_SEED_LOW, _SEED_HIGH = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts


def check_seed(name: str, seed: object) -> int | None:
    """Return ``seed`` if it is ``None`` or an integer a ``torch.Generator`` accepts."""
    if seed is None:
        return None
    if not isinstance(seed, Integral) or isinstance(seed, bool):
        raise TypeError(f"{name} must be an integer or None, got {seed!r}")
    if not _SEED_LOW <= int(seed) <= _SEED_HIGH:
        raise ValueError(f"{name} must lie in [-2**63, 2**64 - 1], got {seed!r}")
    return int(seed)


def check_finite_number(name: str, value: float) -> float:
    """Return ``value`` if it is a finite real number (any sign), else raise ``ValueError``."""
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value
