r"""The ``torch.optim`` form: :class:`Sven`, ``θ ← θ − lr · M_k⁺ R`` over per-example conditions.

One step builds the residuals ``R`` and their Jacobian ``M`` (:mod:`.jacobian`), optionally
rescales ``M``'s columns, takes the truncated-pseudoinverse direction (:mod:`.direction`) and
applies it with each param group's ``lr``.

Options of the official code: RMSProp scaling ``rmsprop="pre"`` (divide each Jacobian column by
:math:`\sqrt{v}+\epsilon`, ``v`` an EMA of the squared mean row of ``M``, and map the step back:
:math:`\delta = D\,(MD)_k^+R` with :math:`D = \mathrm{diag}(1/(\sqrt v+\epsilon))`, a change of
variables θ = Dφ) or ``"post"`` (RMSProp on the Sven update vector), heavy-ball ``momentum``,
parameter subsampling (``param_fraction``, random coordinates or whole tensors with
``mask_by_block``) and micro-batching (``microbatch_size``).

Choices:

* Param groups: one joint direction over all groups; each group's slice is scaled by its own
  ``lr`` (so LR schedulers work). All other hyper-parameters must agree across groups.
* ``variable_k`` (greedy rank selection with extra forward passes) is not implemented.
* Under DDP each rank builds ``M`` from its local batch, so the replicas would take different
  steps: either all-gather the batch (every rank then solves the whole batch's system), or use
  ``data_parallel=True``: each rank passes its own examples to the Gram path, one all-gather
  of the layers' factors (inputs and output gradients, ``O(B·Σ(d_in+d_out))`` per step, not
  ``O(B·P)``) builds the global ``B × B`` system on every rank, and every rank solves it and
  applies the same update — the step of one process on the union batch (rank order). Pass the
  plain module (not the DDP wrapper): Sven never reads ``.grad``.

Two paths, chosen per step (``path="auto"``; ``optimizer.last_path`` says which ran):

* **Gram** (:mod:`.gram`): with ``svd="gram"``, no ``rmsprop="pre"``, ``param_fraction = 1``,
  the ``model=/loss_fn=/inputs=`` call form, every trainable parameter of the model in the
  optimizer and in an ``nn.Linear``, ``nn.Embedding``, ``nn.LayerNorm``, RMSNorm or
  ``nn.Conv1d``/``nn.Conv2d`` (``groups=1``, zero padding) module (not
  shared), no BatchNorm in train mode, one residual per example and ``B / microbatch_size ≤ P``:
  one forward, one backward, the ``B × B`` Gram matrix from the layers' inputs and output
  gradients, a ``B × B`` ``eigh`` and one weighted sum of per-example gradients from the same
  factors. Memory ``O(B²)`` plus the activations; ``M`` is never formed.
* **Jacobian**: otherwise (the closure form, the other solvers, RMSProp ``"pre"`` scaling,
  parameter subsampling, other layers): ``M`` is stored as a ``B × P`` matrix in
  ``solver_dtype`` (8·B·P bytes in float64).

Both give the same step (to rounding) where both apply. Sharded (FSDP2 / DTensor) parameters are
refused with a ``TypeError`` before anything is computed.

Example::

    model = nn.Sequential(nn.Linear(1, 16), nn.GELU(), nn.Linear(16, 1))
    optimizer = Sven(model.parameters(), lr=0.1, k=32)
    loss_fn = nn.MSELoss(reduction="none")
    for x, y in loader:
        mean_loss = optimizer.step(model=model, loss_fn=loss_fn, inputs=x, targets=y)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from optforge._core import (
    check_choice,
    check_device,
    check_finite,
    check_in_range,
    check_is_tensor,
    check_nonnegative,
    check_nonnegative_int,
    check_not_meta,
    check_positive,
    check_positive_int,
    check_seed,
    make_generator,
)
from optforge._core.sharding import refuse_dtensor
from optforge.func import UnsupportedModuleError
from optforge.optim.sven.direction import (
    SOLVERS,
    Solver,
    SvdInfo,
    gram_direction_weights,
    sven_direction,
)
from optforge.optim.sven.gram import _flat_weighted, _gram_blocked, _gram_system
from optforge.optim.sven.jacobian import _jacobian_closure, _jacobian_model, _residuals

__all__ = ["Sven"]

_PATHS = ("auto", "jacobian", "gram")

_VALIDATED_KEYS = (
    "k",
    "rtol",
    "tol",
    "kappa",
    "svd",
    "oversample",
    "power_iters",
    "param_fraction",
    "microbatch_size",
    "rmsprop",
    "rms_alpha",
    "rms_eps",
    "momentum",
)

_JOINT_KEYS = (
    "k",
    "rtol",
    "tol",
    "kappa",
    "svd",
    "oversample",
    "power_iters",
    "param_fraction",
    "mask_by_block",
    "microbatch_size",
    "rmsprop",
    "rms_alpha",
    "rms_eps",
    "momentum",
    "residual_mode",
)


class Sven(torch.optim.Optimizer):
    """Sven (Singular Value Descent): ``θ ← θ − lr · M_k⁺ R`` over per-example conditions.

    Args:
        params: parameters or param groups (groups may differ only in ``lr``).
        lr: step scale η (1 = full Gauss–Newton step; the paper's examples use 0.1).
        k: maximum number of singular directions (``None``: all; the README suggests ``B // 2``).
        rtol: relative singular-value cut-off in (0, 1).
        tol: absolute singular-value floor (>= 0).
        kappa: residual exponent, ``R = loss ** (kappa / 2)`` (> 0; 2 = the loss itself,
            1 = classical least squares on ``sqrt(loss)``). Ignored with ``residual_mode``.
        svd: solver, ``"gram"`` | ``"full"`` | ``"randomized"`` | ``"lowrank"``.
        oversample: randomized solvers' oversampling (>= 0).
        power_iters: randomized solvers' power iterations (>= 0).
        param_fraction: fraction of the parameters updated per step, in (0, 1].
        mask_by_block: subsample whole parameter tensors instead of coordinates.
        microbatch_size: average the conditions over consecutive groups of this size.
        rmsprop: ``None``, ``"pre"`` or ``"post"`` RMSProp scaling (module docstring).
        rms_alpha: RMSProp EMA decay in [0, 1).
        rms_eps: RMSProp epsilon (> 0).
        momentum: heavy-ball momentum on the Sven direction, in [0, 1).
        residual_mode: the closure / ``loss_fn`` returns residuals, not losses.
        chunk_size: ``vmap`` chunk size for the per-example Jacobian (``None``: all at once).
        solver_dtype: dtype of ``M`` and of the linear algebra (default float64).
        seed: seed of the optimizer's generator (randomized solvers, parameter masks).
        path: ``"auto"`` (the Gram path when the step allows it, else the Jacobian; module
            docstring), ``"jacobian"`` (always form ``M``) or ``"gram"`` (raise
            ``ValueError`` when the Gram path cannot run).
        data_parallel: under ``torch.distributed`` (initialised, more than one rank in
            ``process_group``), each rank passes its own examples and the step is the one of
            the union batch (rank order): the Gram path's factors are all-gathered, every rank
            builds and solves the same ``B_global × B_global`` system and applies the same
            update (module docstring). Needs the Gram path and equal local batch sizes.
        process_group: the group of ``data_parallel`` (default: the world).

    After each step ``optimizer.last_svd_info`` holds the :class:`SvdInfo` of that step and
    ``optimizer.last_path`` the path taken (``"gram"`` or ``"jacobian"``).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        k: int | None = None,
        rtol: float = 1e-3,
        tol: float = 1e-10,
        kappa: float = 2.0,
        svd: Solver = "gram",
        oversample: int = 5,
        power_iters: int = 1,
        param_fraction: float = 1.0,
        mask_by_block: bool = False,
        microbatch_size: int = 1,
        rmsprop: Literal["pre", "post"] | None = None,
        rms_alpha: float = 0.99,
        rms_eps: float = 1e-8,
        momentum: float = 0.0,
        residual_mode: bool = False,
        chunk_size: int | None = None,
        solver_dtype: torch.dtype = torch.float64,
        seed: int | None = None,
        path: Literal["auto", "jacobian", "gram"] = "auto",
        data_parallel: bool = False,
        process_group: Any = None,
    ) -> None:
        check_choice("path", path, _PATHS)
        if data_parallel and path == "jacobian":
            raise ValueError("data_parallel=True needs the Gram path; path='jacobian' excludes it")
        _validate_hyperparams(
            lr=lr, k=k, rtol=rtol, tol=tol, kappa=kappa, svd=svd, oversample=oversample,
            power_iters=power_iters, param_fraction=param_fraction,
            microbatch_size=microbatch_size, rmsprop=rmsprop, rms_alpha=rms_alpha,
            rms_eps=rms_eps, momentum=momentum,
        )  # fmt: skip
        if chunk_size is not None:
            check_positive_int("chunk_size", chunk_size)
        if not (isinstance(solver_dtype, torch.dtype) and solver_dtype.is_floating_point):
            raise ValueError(f"solver_dtype must be a floating torch.dtype, got {solver_dtype!r}")
        check_seed("seed", seed)
        defaults = dict(
            lr=lr,
            k=k,
            rtol=rtol,
            tol=tol,
            kappa=float(kappa),
            svd=svd,
            oversample=oversample,
            power_iters=power_iters,
            param_fraction=float(param_fraction),
            mask_by_block=bool(mask_by_block),
            microbatch_size=microbatch_size,
            rmsprop=rmsprop,
            rms_alpha=rms_alpha,
            rms_eps=rms_eps,
            momentum=momentum,
            residual_mode=bool(residual_mode),
        )
        super().__init__(params, defaults)
        self.chunk_size = chunk_size
        self.solver_dtype = solver_dtype
        self.generator = make_generator(seed)
        self.path = path
        self.data_parallel = bool(data_parallel)
        self.process_group = process_group
        self.last_svd_info: SvdInfo | None = None
        self.last_path: str | None = None

    # -- torch.optim plumbing ---------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate the group first (``lr``; the joint keys must match the first group's)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        merged = {**self.defaults, **param_group}
        if not self.param_groups:  # the first group: its own values must be valid
            _validate_hyperparams(**{k: merged[k] for k in ("lr", *_VALIDATED_KEYS)})
        else:
            check_nonnegative("lr", merged["lr"])
            first = self.param_groups[0]
            differ = [key for key in _JOINT_KEYS if merged[key] != first[key]]
            if differ:
                raise ValueError(
                    f"Sven computes one joint direction over all param groups; only lr may "
                    f"differ between groups, got different {differ}"
                )
        super().add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["generator_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator_state", None)
        super().load_state_dict(state_dict)
        if generator_state is not None:
            self.generator.set_state(generator_state)

    # -- the step ---------------------------------------------------------------------------

    @torch.no_grad()
    def step(
        self,
        closure: Callable[[], Tensor] | None = None,
        *,
        model: nn.Module | None = None,
        loss_fn: Callable[..., Tensor] | None = None,
        inputs: Tensor | None = None,
        targets: Tensor | None = None,
    ) -> Tensor:
        """One Sven step; returns the mean per-example loss before the step (detached).

        Give either ``closure`` (returns per-example losses or residuals, built with autograd;
        grad mode is enabled for it) or ``model``, ``loss_fn``, ``inputs`` (and ``targets``):
        ``loss_fn(model(inputs), targets)`` must return per-example losses of shape ``(B,)`` or
        ``(B, ...)`` (summed over trailing dimensions). In ``residual_mode`` the value returned
        is ``½‖r‖²``.

        Raises:
            ValueError: losses not per-example, wrong batch length, negative losses with a
                fractional ``kappa / 2``, missing arguments.
            FloatingPointError: NaN/inf in the losses or the Jacobian (the message gives the
                step number).
        """
        group0 = self.param_groups[0]
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        if not params:
            raise ValueError("params: no parameter requires grad")
        refuse_dtensor(params, _DTENSOR_MESSAGE)
        if closure is not None:
            if model is not None or loss_fn is not None or inputs is not None:
                raise ValueError("give either closure or model/loss_fn/inputs, not both")
            if not callable(closure):
                raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        else:
            if model is None or loss_fn is None or inputs is None:
                raise ValueError("step needs a closure, or model, loss_fn and inputs")
            _check_model_inputs(model, loss_fn, inputs, targets, params[0].device)
        # Nothing below changes the optimizer until every value is computed: a step that raises
        # (bad closure output, NaN losses, a failed SVD) leaves parameters, state and the
        # generator as they were.
        step_no = int(self.state.get(params[0], {}).get("step", 0)) + 1
        generator_state = self.generator.get_state()
        try:
            d, writes = self._direction(
                closure, model, loss_fn, inputs, targets, params, group0, step_no
            )
        except BaseException:
            self.generator.set_state(generator_state)
            raise
        d, selected, reported, info = d
        self.last_path = self._pending_path
        for key, flat in writes.items():
            self._write_flat_state(key, params, selected, flat)
        self.last_svd_info = info
        self._apply(params, selected, d)
        for p in params:
            state = self.state[p]
            state["step"] = state.get("step", torch.tensor(0.0)) + 1
        return reported

    def _direction(
        self,
        closure: Callable[[], Tensor] | None,
        model: nn.Module | None,
        loss_fn: Callable[..., Tensor] | None,
        inputs: Tensor | None,
        targets: Tensor | None,
        params: list[Tensor],
        group0: dict[str, Any],
        step_no: int,
    ) -> tuple[tuple[Tensor, list[Tensor], Tensor, SvdInfo], dict[str, Tensor]]:
        """The step's update direction and the state it will write (nothing is written here)."""
        selected = self._select_params(params, group0)
        writes: dict[str, Tensor] = {}
        gram = None
        if self.path != "jacobian" or self._data_parallel_group() is not None:
            gram = self._gram_step(model, loss_fn, inputs, targets, params, group0, step_no)
        if gram is not None:
            d, info, reported = gram
            self._pending_path = "gram"
        else:
            self._pending_path = "jacobian"
            if closure is not None:
                values, jac = _jacobian_closure(
                    closure, params, selected, group0, self.solver_dtype
                )
            else:
                assert model is not None and loss_fn is not None and inputs is not None
                values, jac = _jacobian_model(
                    model, loss_fn, inputs, targets, params, selected, group0,
                    self.solver_dtype, self.chunk_size,
                )  # fmt: skip
            residuals, M, reported = _residuals(values, jac, group0, step_no, self.solver_dtype)
            reported = reported.to(values.dtype)
            scale = None
            if group0["rmsprop"] == "pre":
                mean_row = M.mean(0)
                v = self._ema_sq("rms_v", params, selected, mean_row, group0)
                writes["rms_v"] = v
                scale = 1.0 / (v.sqrt() + group0["rms_eps"])
                M = M * scale
            d, info = sven_direction(
                M,
                residuals,
                group0["k"],
                group0["rtol"],
                group0["tol"],
                group0["svd"],
                oversample=group0["oversample"],
                power_iters=group0["power_iters"],
                generator=self.generator,
            )
            if scale is not None:
                d = d * scale
        if group0["rmsprop"] == "post":
            v = self._ema_sq("rms_v", params, selected, d, group0)
            writes["rms_v"] = v
            d = d / (v.sqrt() + group0["rms_eps"])
        if group0["momentum"] > 0:
            buf = self._flat_state("momentum_buffer", params, selected, d.dtype)
            buf = group0["momentum"] * buf + d
            writes["momentum_buffer"] = buf
            d = buf
        if not bool(torch.isfinite(d).all()):
            raise FloatingPointError(
                f"Sven step {step_no}: the update direction is non-finite (NaN or inf); the step "
                "was not taken"
            )
        return (d, selected, reported, info), writes

    def _gram_step(
        self,
        model: nn.Module | None,
        loss_fn: Callable[..., Tensor] | None,
        inputs: Tensor | None,
        targets: Tensor | None,
        params: list[Tensor],
        group0: dict[str, Any],
        step_no: int,
    ) -> tuple[Tensor, SvdInfo, Tensor] | None:
        """The Gram path's ``(d, info, reported)``, or ``None`` when it cannot run (module
        docstring); with ``path="gram"`` that raises ``ValueError`` instead."""
        if model is None or loss_fn is None or inputs is None:
            why: str | None = "the closure form gives no model to record"
        else:
            why = _gram_blocked(model, params, group0)
        n_params = sum(p.numel() for p in params)
        group = self._data_parallel_group()
        world = 1 if group is None else torch.distributed.get_world_size(group)
        if why is None:
            assert model is not None and loss_fn is not None and inputs is not None
            n_cond = world * inputs.shape[0] // group0["microbatch_size"] if inputs.dim() else 0
            if n_cond > n_params:
                why = f"more conditions ({n_cond}) than parameters ({n_params})"
        if why is None:
            try:
                values, W, jjt, ghost = _gram_system(
                    model, loss_fn, inputs, targets, group0, self.solver_dtype, group
                )
            except UnsupportedModuleError as err:
                why = str(err)
        if why is not None:
            if group is not None:
                raise ValueError(
                    f"data-parallel Sven needs the Gram path, which cannot run this step: {why}; "
                    "all-gather the batch on every rank instead (data_parallel=False)"
                )
            if self.path == "gram":
                raise ValueError(f"path='gram' cannot run this step: {why}")
            return None
        residuals, WF, reported = _residuals(values, W, group0, step_no, self.solver_dtype)
        if not bool(torch.isfinite(jjt).all()):
            what = "residuals" if group0["residual_mode"] else "losses"
            raise FloatingPointError(
                f"Sven step {step_no}: the Jacobian of the {what} has non-finite entries"
            )
        if WF.shape[1] == 1:  # one example per condition: diag(f') JJᵀ diag(f')
            gram, to_examples = WF * jjt * WF.T, lambda c: WF[:, 0] * c
        else:
            gram, to_examples = WF @ jjt @ WF.T, lambda c: WF.T @ c
        c, info = gram_direction_weights(
            gram, residuals, n_params, group0["k"], group0["rtol"], group0["tol"]
        )
        d = _flat_weighted(ghost, to_examples(c), params, self.solver_dtype)
        return d, info, reported.to(values.dtype)

    # -- private helpers --------------------------------------------------------------------

    def _data_parallel_group(self) -> Any:
        """The process group of a data-parallel step (``None``: one process)."""
        if not self.data_parallel:
            return None
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    def _select_params(self, params: list[Tensor], group: dict[str, Any]) -> list[Tensor]:
        """Per parameter, the flat indices updated this step (all, a random subset, or none)."""
        numels = [p.numel() for p in params]
        total = sum(numels)
        fraction = group["param_fraction"]
        if fraction >= 1.0:
            return [torch.arange(n) for n in numels]
        if group["mask_by_block"]:
            order = torch.randperm(len(params), generator=self.generator).tolist()
            chosen, count = set(), 0
            for i in order:
                if count >= fraction * total:
                    break
                chosen.add(i)
                count += numels[i]
            empty = torch.arange(0)
            return [torch.arange(n) if i in chosen else empty for i, n in enumerate(numels)]
        n_keep = max(1, round(fraction * total))
        flat = torch.randperm(total, generator=self.generator)[:n_keep].sort().values
        out, start = [], 0
        for n in numels:
            part = flat[(flat >= start) & (flat < start + n)] - start
            out.append(part)
            start += n
        return out

    def _flat_state(
        self, key: str, params: list[Tensor], selected: list[Tensor], dtype: torch.dtype
    ) -> Tensor:
        parts = []
        for p, idx in zip(params, selected, strict=True):
            state = self.state.get(p, {})
            if key in state:
                parts.append(state[key].reshape(-1)[idx.to(p.device)].to(dtype))
            else:  # read-only: the buffer is created when it is written
                parts.append(torch.zeros(idx.numel(), dtype=dtype, device=p.device))
        return torch.cat(parts)

    def _write_flat_state(
        self, key: str, params: list[Tensor], selected: list[Tensor], flat: Tensor
    ) -> None:
        start = 0
        for p, idx in zip(params, selected, strict=True):
            n = idx.numel()
            state = self.state[p]
            if key not in state:
                dtype_state = torch.float64 if p.dtype == torch.float64 else torch.float32
                state[key] = torch.zeros(p.shape, dtype=dtype_state, device=p.device)
            buf = state[key].view(-1)
            buf[idx.to(p.device)] = flat[start : start + n].to(buf.dtype)
            start += n

    def _ema_sq(
        self,
        key: str,
        params: list[Tensor],
        selected: list[Tensor],
        value: Tensor,
        group: dict[str, Any],
    ) -> Tensor:
        alpha = group["rms_alpha"]
        v = self._flat_state(key, params, selected, value.dtype)
        return alpha * v + (1.0 - alpha) * value**2  # written by step() once the step is taken

    def _apply(self, params: list[Tensor], selected: list[Tensor], d: Tensor) -> None:
        lr_of = {id(p): g["lr"] for g in self.param_groups for p in g["params"]}
        start = 0
        for p, idx in zip(params, selected, strict=True):
            n = idx.numel()
            if n == 0:
                continue
            update = d[start : start + n].to(device=p.device, dtype=p.dtype)
            start += n
            lr = lr_of[id(p)]
            if n == p.numel():
                p.add_(update.view_as(p), alpha=-lr)
            else:
                p.view(-1).index_add_(0, idx.to(p.device), update, alpha=-lr)


def _validate_hyperparams(
    *,
    lr: float,
    k: int | None,
    rtol: float,
    tol: float,
    kappa: float,
    svd: str,
    oversample: int,
    power_iters: int,
    param_fraction: float,
    microbatch_size: int,
    rmsprop: str | None,
    rms_alpha: float,
    rms_eps: float,
    momentum: float,
) -> None:
    check_nonnegative("lr", lr)
    if k is not None:
        check_positive_int("k", k)
    check_in_range("rtol", rtol, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_nonnegative("tol", tol)
    check_positive("kappa", kappa)
    check_choice("svd", svd, SOLVERS)
    check_nonnegative_int("oversample", oversample)
    check_nonnegative_int("power_iters", power_iters)
    check_in_range("param_fraction", param_fraction, 0.0, 1.0, low_inclusive=False)
    check_positive_int("microbatch_size", microbatch_size)
    check_choice("rmsprop", rmsprop, (None, "pre", "post"))
    check_in_range("rms_alpha", rms_alpha, 0.0, 1.0, high_inclusive=False)
    check_positive("rms_eps", rms_eps)
    check_in_range("momentum", momentum, 0.0, 1.0, high_inclusive=False)


def _check_model_inputs(
    model: Any, loss_fn: Any, inputs: Any, targets: Any, device: torch.device
) -> None:
    """Types, devices and finiteness of the model path's arguments (before any state change)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    for name, value in (("inputs", inputs), ("targets", targets)):
        if value is None:
            continue
        check_is_tensor(name, value)
        check_not_meta(name, value)
        check_device(name, value, device)
        if value.is_floating_point():
            check_finite(name, value.detach())


# Sven needs whole per-example gradients and one joint solve: refuse sharded parameters
_DTENSOR_MESSAGE = (
    "Sven does not support FSDP2 / DTensor (sharded) parameters: its step needs whole "
    "per-example gradients and one joint B×B solve. Workaround: train with DDP "
    "(replicated parameters; see the data-parallel Sven notes in docs/distributed.md), "
    "or keep the parameters unsharded."
)
