r"""Plug OBLR-PO's baselines and SNR learning rate into TRL's ``GRPOTrainer``.

:func:`make_oblr_grpo_trainer_class` returns a ``trl.GRPOTrainer`` subclass whose advantages are
:func:`~optforge.rl.advantages` with an optimal (gradient-weighted, leave-one-out) baseline

.. math::

    A_{ij} = r_{ij} - \frac{\sum_{k\ne j} w_{ik} r_{ik}}{\sum_{k\ne j} w_{ik}},

then TRL's ``scale_rewards``. TRL computes advantages before its loss pass, so the weights are
proxies (``length``, ``logit`` or ``uniform``, see :func:`~optforge.rl.score_sqnorms`) and the
SNR learning rate uses the temporal estimator
:meth:`~optforge.rl.SNRLearningRate.update_from_gradient` in a callback that multiplies the lr by
ρ just before each optimizer step (composing with TRL's own scheduler). The controller's state
travels with the Trainer's checkpoints (as TRL's own adaptive-entropy controller does) and ρ and
the SNR are logged with TRL's metrics. ``trl`` and ``transformers`` (the ``llm`` extra) are
imported only when the class is made.

Example::

    OBLRGRPOTrainer = make_oblr_grpo_trainer_class()
    trainer = OBLRGRPOTrainer(model=model, reward_funcs=reward, args=GRPOConfig(...),
                              train_dataset=ds, baseline="optimal", norm_method="length",
                              snr_lr=True)
    trainer.train()
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import check_choice, require
from optforge.rl.advantages import BASELINES, Baseline, advantages
from optforge.rl.score_norms import score_sqnorms
from optforge.rl.snr_lr import SNRLearningRate

__all__ = ["make_oblr_grpo_trainer_class"]

_PROXY_NORMS = ("length", "logit", "uniform")
SNR_STATE_NAME = "oblr_snr_lr.pt"  # the SNR controller's state in a Trainer checkpoint


def _check_snr_kwargs(kwargs: dict[str, Any]) -> None:
    """Validate ``snr_lr``'s keyword arguments when the trainer is built, not at the first step."""
    if "lr_max" in kwargs:
        raise ValueError(
            "snr_lr: lr_max is not used with TRL (the lr is GRPOConfig.learning_rate and its "
            "scheduler; ρ multiplies it); remove lr_max from snr_lr"
        )
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    SNRLearningRate(dummy, **kwargs)


def make_oblr_grpo_trainer_class(base: type | None = None) -> type:
    """A ``trl.GRPOTrainer`` subclass whose advantages use :func:`advantages`' baselines.

    The subclass takes three extra keyword arguments: ``baseline`` (default ``"optimal"``),
    ``norm_method`` (``"length"``, ``"logit"`` or ``"uniform"``; proxies, because TRL computes
    advantages before the loss pass) and ``snr_lr`` (``True`` to scale the lr by
    :meth:`SNRLearningRate.update_from_gradient` at every optimizer step, composing with TRL's own
    scheduler; or a dict of :class:`SNRLearningRate` keyword arguments except ``lr_max``, checked
    when the trainer is built; ``False``/``None`` for off). ``scale_rewards`` and the reward
    functions keep TRL's meaning. Single-process, ``sum_then_normalize`` aggregation (the other
    value raises ``ValueError``) and scorable completions only.

    With ``snr_lr``, every Trainer checkpoint holds the controller's state
    (``oblr_snr_lr.pt``, restored by ``train(resume_from_checkpoint=...)``, so a resumed run
    continues with the straight run's ρ), and the Trainer's logs get ``snr_lr/rho``,
    ``snr_lr/snr`` (once defined) and ``snr_lr/lr`` (ρ × the scheduler's lr) next to TRL's own
    metrics.

    Args:
        base: The class to extend (default ``trl.GRPOTrainer``).

    Returns:
        The subclass ``OBLRGRPOTrainer``.
    """
    if base is None:
        base = require("trl", "llm").GRPOTrainer
    transformers = require("transformers", "llm")
    checkpoint_prefix = require("transformers.trainer_utils", "llm").PREFIX_CHECKPOINT_DIR

    class SNRCallback(transformers.TrainerCallback):
        """Multiplies the lr by ρ just before each optimizer step and restores it after.

        ρ comes from :meth:`SNRLearningRate.update_from_gradient`; the controller is built on the
        first step (it needs the optimizer). ``metrics`` (TRL's ``_metrics["train"]``, a dict of
        lists) receives ``snr_lr/rho``, ``snr_lr/snr`` and ``snr_lr/lr`` (ρ × the scheduler's
        lr) at every step, so they are averaged and logged like TRL's own metrics.
        """

        def __init__(self, metrics: Callable[[], Any] | None = None, **kwargs: Any) -> None:
            _check_snr_kwargs(kwargs)
            self.kwargs = kwargs
            self.metrics = metrics
            self.controller: SNRLearningRate | None = None
            self._pending_state: dict[str, Any] | None = None
            self._saved: list[float] = []

        def state_dict(self) -> dict[str, Any] | None:
            """The controller's state (``None`` before the first optimizer step)."""
            if self.controller is not None:
                return self.controller.state_dict()
            return self._pending_state

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            """Restore the controller now, or on the first step if it is not built yet."""
            if self.controller is not None:
                self.controller.load_state_dict(state_dict)
            else:
                self._pending_state = dict(state_dict)

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            opt = kw["optimizer"]
            inner = getattr(opt, "optimizer", opt)  # accelerate wraps the optimizer
            if self.controller is None:
                # lr_max is not used: TRL's scheduler sets the lr and ρ multiplies it here.
                self.controller = SNRLearningRate(inner, lr_max=1.0, **self.kwargs)
                if self._pending_state is not None:
                    self.controller.load_state_dict(self._pending_state)
                    self._pending_state = None
            ctl = self.controller
            rho = ctl.update_from_gradient()
            self._saved = [g["lr"] for g in inner.param_groups]
            for group in inner.param_groups:
                group["lr"] = group["lr"] * rho
            sink = self.metrics() if self.metrics is not None else None
            if sink is not None:
                sink["snr_lr/rho"].append(float(rho))
                sink["snr_lr/lr"].append(float(inner.param_groups[0]["lr"]))
                snr = ctl.last_signal / ctl.last_noise if ctl.last_noise > 0 else math.nan
                if math.isfinite(snr):  # undefined before the second step or without noise
                    sink["snr_lr/snr"].append(snr)

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            opt = kw["optimizer"]
            inner = getattr(opt, "optimizer", opt)
            for group, lr in zip(inner.param_groups, self._saved, strict=False):
                group["lr"] = lr

    class OBLRGRPOTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            *args: Any,
            baseline: Baseline = "optimal",
            norm_method: Literal["length", "logit", "uniform"] = "length",
            snr_lr: bool | dict[str, Any] | None = False,
            **kwargs: Any,
        ) -> None:
            check_choice("baseline", baseline, BASELINES)
            check_choice("norm_method", norm_method, _PROXY_NORMS)
            if snr_lr is None:
                snr_lr = False
            if not isinstance(snr_lr, (bool, dict)):
                raise TypeError(
                    "snr_lr must be True/False or a dict of SNRLearningRate keyword arguments, "
                    f"got {type(snr_lr).__name__}"
                )
            snr_kwargs = snr_lr if isinstance(snr_lr, dict) else {}
            if snr_lr is not False:
                _check_snr_kwargs(snr_kwargs)
            config = kwargs.get("args", args[2] if len(args) > 2 else None)
            aggregation = getattr(config, "multi_objective_aggregation", "sum_then_normalize")
            if aggregation != "sum_then_normalize":
                raise ValueError(
                    "OBLRGRPOTrainer supports multi_objective_aggregation='sum_then_normalize' "
                    f"only (the weighted sum of the rewards gets the baseline), got {aggregation!r}"
                )
            super().__init__(*args, **kwargs)
            self.oblr_baseline, self.oblr_norm_method = baseline, norm_method
            self.snr_callback = None
            if snr_lr is not False:
                self.snr_callback = SNRCallback(metrics=self._oblr_train_metrics, **snr_kwargs)
                self.add_callback(self.snr_callback)

        def _oblr_train_metrics(self) -> Any:
            metrics = getattr(self, "_metrics", None)
            return metrics.get("train") if isinstance(metrics, dict) else None

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            super()._save_checkpoint(model, trial)
            state = None if self.snr_callback is None else self.snr_callback.state_dict()
            if state is not None and self.args.should_save:
                folder = f"{checkpoint_prefix}-{self.state.global_step}"
                path = os.path.join(self._get_output_dir(trial=trial), folder, SNR_STATE_NAME)
                tmp = path + ".tmp"
                torch.save(state, tmp)
                os.replace(tmp, path)

        def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
            super()._load_optimizer_and_scheduler(checkpoint)
            if checkpoint is None or self.snr_callback is None:
                return
            path = os.path.join(checkpoint, SNR_STATE_NAME)
            if os.path.isfile(path):
                state = torch.load(path, map_location="cpu", weights_only=True)
                self.snr_callback.load_state_dict(state)
            else:
                warnings.warn(
                    f"{checkpoint!r} has no {SNR_STATE_NAME} (saved without snr_lr?): the SNR "
                    "learning rate starts afresh at rho_max",
                    stacklevel=2,
                )

        def _calculate_rewards(
            self, inputs: Any, prompts: Any, completions: Any, ids: Any
        ) -> Tensor:
            out = super()._calculate_rewards(inputs, prompts, completions, ids)
            self._oblr_rewards_per_func = out
            return out

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            out = super()._generate_and_score_completions(inputs)
            if self.accelerator.num_processes != 1:
                raise NotImplementedError("OBLRGRPOTrainer supports a single process")
            per_func = self._oblr_rewards_per_func
            if torch.isnan(per_func).all(dim=1).any():
                raise ValueError(
                    "OBLRGRPOTrainer: some completions were unscorable (all rewards None)"
                )
            weights = self.reward_weights.to(per_func.device)
            rewards = (per_func * weights.unsqueeze(0)).nansum(dim=1)
            mask = out["completion_mask"]
            if self.oblr_norm_method == "length":
                w = mask.to(torch.float32).sum(dim=1)
            elif self.oblr_norm_method == "uniform":
                w = torch.ones_like(rewards)
            else:
                ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
                attn = torch.cat([out["prompt_mask"], mask], dim=1)
                resp = torch.cat([torch.zeros_like(out["prompt_mask"]), mask], dim=1)
                w = score_sqnorms(
                    self.model, ids, attn, resp, method="logit", temperature=self.temperature
                )
            mode = "train" if self.model.training else "eval"
            g = self.num_generations if mode == "train" else self.num_generations_eval
            adv = advantages(
                rewards.float(),
                g,
                baseline=self.oblr_baseline,
                weights=w.to(rewards.device).float(),
                scale_rewards=self.scale_rewards,
            )
            out["advantages"] = adv.to(out["advantages"].dtype)
            return out

    OBLRGRPOTrainer.SNRCallback = SNRCallback  # type: ignore[attr-defined]
    return OBLRGRPOTrainer
