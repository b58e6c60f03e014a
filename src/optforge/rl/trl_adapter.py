r"""Plug OBLR-PO's baselines and SNR learning rate into TRL's ``GRPOTrainer``.

:func:`make_oblr_grpo_trainer_class` returns a ``trl.GRPOTrainer`` subclass whose advantages are
:func:`~optforge.rl.advantages` with an optimal (gradient-weighted, leave-one-out) baseline

.. math::

    A_{ij} = r_{ij} - \frac{\sum_{k\ne j} w_{ik} r_{ik}}{\sum_{k\ne j} w_{ik}},

then TRL's ``scale_rewards``. TRL computes advantages before its loss pass, so the weights are
proxies (``length``, ``logit`` or ``uniform``, see :func:`~optforge.rl.score_sqnorms`) and the
SNR learning rate uses the temporal estimator
:meth:`~optforge.rl.SNRLearningRate.update_from_gradient` in a callback that multiplies the lr by
ρ just before each optimizer step (composing with TRL's own scheduler). ``trl`` and
``transformers`` (the ``llm`` extra) are imported only when the class is made.

Example::

    OBLRGRPOTrainer = make_oblr_grpo_trainer_class()
    trainer = OBLRGRPOTrainer(model=model, reward_funcs=reward, args=GRPOConfig(...),
                              train_dataset=ds, baseline="optimal", norm_method="length",
                              snr_lr=True)
    trainer.train()
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from optforge._core import check_choice, require
from optforge.rl.advantages import BASELINES, Baseline, advantages
from optforge.rl.score_norms import score_sqnorms
from optforge.rl.snr_lr import SNRLearningRate

__all__ = ["make_oblr_grpo_trainer_class"]

_PROXY_NORMS = ("length", "logit", "uniform")


def make_oblr_grpo_trainer_class(base: type | None = None) -> type:
    """A ``trl.GRPOTrainer`` subclass whose advantages use :func:`advantages`' baselines.

    The subclass takes three extra keyword arguments: ``baseline`` (default ``"optimal"``),
    ``norm_method`` (``"length"``, ``"logit"`` or ``"uniform"``; proxies, because TRL computes
    advantages before the loss pass) and ``snr_lr`` (``True`` to scale the lr by
    :meth:`SNRLearningRate.update_from_gradient` at every optimizer step, composing with TRL's own
    scheduler; or a dict of :class:`SNRLearningRate` keyword arguments). ``scale_rewards`` and the
    reward functions keep TRL's meaning. Single-process, ``sum_then_normalize`` aggregation and
    scorable completions only.

    Args:
        base: The class to extend (default ``trl.GRPOTrainer``).

    Returns:
        The subclass ``OBLRGRPOTrainer``.
    """
    if base is None:
        base = require("trl", "llm").GRPOTrainer
    transformers = require("transformers", "llm")

    class SNRCallback(transformers.TrainerCallback):
        """Multiplies the lr by ρ just before each optimizer step and restores it after."""

        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs
            self.controller: SNRLearningRate | None = None
            self._saved: list[float] = []

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            opt = kw["optimizer"]
            inner = getattr(opt, "optimizer", opt)  # accelerate wraps the optimizer
            if self.controller is None:
                self.controller = SNRLearningRate(inner, **self.kwargs)
            rho = self.controller.update_from_gradient()
            self._saved = [g["lr"] for g in inner.param_groups]
            for group in inner.param_groups:
                group["lr"] = group["lr"] * rho

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
            snr_lr: bool | dict[str, Any] = False,
            **kwargs: Any,
        ) -> None:
            check_choice("baseline", baseline, BASELINES)
            check_choice("norm_method", norm_method, _PROXY_NORMS)
            super().__init__(*args, **kwargs)
            self.oblr_baseline, self.oblr_norm_method = baseline, norm_method
            self.snr_callback = None
            if snr_lr:
                self.snr_callback = SNRCallback(**(snr_lr if isinstance(snr_lr, dict) else {}))
                self.add_callback(self.snr_callback)

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
