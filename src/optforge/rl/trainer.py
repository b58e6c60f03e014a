r"""A compact on-policy policy-gradient trainer with optimal baselines and an SNR learning rate.

One :meth:`OBLRPOTrainer.step` samples G responses per prompt, scores them with the reward
function, forms advantages (:func:`~optforge.rl.advantages`, weights from
:func:`~optforge.rl.score_sqnorms`), backpropagates the policy-gradient loss
(:func:`~optforge.rl.policy_gradient_loss`), optionally rescales the lr
(:class:`~optforge.rl.SNRLearningRate`) and takes one optimizer step:

.. math::

    \hat g = \frac1N \sum_{ij} c_{ij}(r_{ij} - b_{ij})\nabla_\theta\log\pi_\theta(y_{ij}\mid x_i),
    \qquad \theta \leftarrow \theta - \eta\,\rho\,\hat g \ \text{(SGD; any optimizer)}.

With ghost norms the weights come from the same forward pass as the loss (one forward, two
backward passes). The SNR estimate treats the B prompts as the independent units: the noise of
:math:`\hat g = \frac1B\sum_k g_k` is :math:`S/B` with
:math:`S = (\sum_k\lVert g_k\rVert^2 - B\lVert\hat g\rVert^2)/(B-1)` over the per-prompt
gradients :math:`g_k` (from the same ghost pass, or one micro-batch per prompt otherwise). The G
responses of a prompt share it and are correlated, so treating the N samples as independent
(``snr_units="sample"``) under-estimates the noise and over-estimates ρ.

Paper: Zixun Huang, Jiayi Sheng, Zeyu Zheng, "OBLR-PO: A Theoretical Framework for Stable
Reinforcement Learning", arXiv:2511.23310 (2025).

Choices: no PPO clipping and no KL term (one on-policy step per batch, so the ratio is ≡ 1 and
the clipped objective has the same gradient).

Example::

    from optforge.rl import OBLRPOTrainer, SNRLearningRate, TinyCausalLM

    policy = TinyCausalLM(vocab_size=10, max_len=16)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    trainer = OBLRPOTrainer(policy, reward_fn, opt, group_size=8, baseline="optimal",
                            norm_method="ghost", snr_lr=SNRLearningRate(opt),
                            max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    metrics = trainer.step(prompt_ids)        # sample → reward → advantages → update
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from optforge._core import (
    check_choice,
    check_finite,
    check_positive,
    check_positive_int,
    make_generator,
)
from optforge.func import GhostNormRecorder
from optforge.rl.advantages import BASELINES, SCALE_REWARDS, Baseline, ScaleRewards, advantages
from optforge.rl.logprobs import (
    _as_float,
    _causal_logits,
    _check_batch,
    _checked_logits,
    token_logprobs,
)
from optforge.rl.policy_loss import LOSS_TYPES, LossType, _loss_from_coef, loss_coefficients
from optforge.rl.score_norms import (
    NORM_METHODS,
    GhostScoreGradients,
    NormMethod,
    _ghost_errors,
    score_sqnorms,
)
from optforge.rl.snr_lr import SNRLearningRate

__all__ = ["OBLRPOTrainer", "ResponseRewardFn"]

#: ``reward_fn(prompt_ids [N, P], response_ids [N, R]) -> [N]`` rewards of sampled responses.
ResponseRewardFn = Callable[[Tensor, Tensor], Tensor]

_SNR_UNITS = ("prompt", "sample")


class OBLRPOTrainer:
    r"""Compact on-policy trainer: sample G responses per prompt, score, advantages, one update.

    Works with any causal LM in the Hugging Face convention (``AutoModelForCausalLM`` built from a
    config, or :class:`~optforge.rl.TinyCausalLM`). Sampling is plain ancestral sampling with the
    trainer's own ``torch.Generator`` (no KV cache; meant for short responses), under
    ``torch.no_grad()``; log-probs are then recomputed with grad under the same parameters.

    Args:
        model: The policy.
        reward_fn: ``reward_fn(prompt_ids [N, P], response_ids [N, R]) -> [N]`` float rewards
            (prompts repeated G times, groups contiguous; response tokens after EOS are
            ``pad_token_id``).
        optimizer: Any ``torch.optim`` optimizer over the policy's parameters.
        group_size: G (TRL's ``num_generations``), ≥ 2.
        baseline: See :func:`advantages` (default ``"optimal"``; GRPO is ``"group_mean"`` with
            ``scale_rewards="group"``, RLOO ``"rloo"``, REINFORCE ``"batch_mean"``).
        norm_method: Weights for the optimal baseline / SNR (see :func:`score_sqnorms`).
        scale_rewards: TRL's ``"none"`` / ``"group"`` / ``"batch"``.
        loss_type: ``"seq_sum"`` / ``"grpo"`` / ``"bnpo"`` / ``"dapo"`` / ``"dr_grpo"``.
        snr_lr: An :class:`SNRLearningRate` on ``optimizer`` (``None``: fixed lr).
        snr_units: The independent units of the SNR estimate. ``"prompt"`` (default): the
            per-prompt gradients (ghost norms: from the loss's own forward pass; other norm
            methods, or ``snr_microbatches`` given: one backward per micro-batch of whole
            prompts). ``"sample"``: the N per-sample terms
            (:math:`\sum_i c_i^2A_i^2\lVert s_i\rVert^2`, needs exact or ghost norms); biased
            low in noise when G > 1, kept for comparison.
        snr_microbatches: K micro-batches of whole prompts for the ``"prompt"`` estimate
            (default: one per prompt; with ghost norms no micro-batch is needed).
        max_new_tokens: Response length limit.
        temperature: Sampling temperature.
        eos_token_id: Stops a response (kept in it); later positions are padding.
        pad_token_id: Padding id after EOS (default: ``eos_token_id`` or 0).
        max_grad_norm: Optional global-norm clipping before the optimizer step.
        generator: Sampling generator (default: seeded from ``torch.initial_seed()``).
    """

    def __init__(
        self,
        model: nn.Module,
        reward_fn: ResponseRewardFn,
        optimizer: torch.optim.Optimizer,
        *,
        group_size: int = 8,
        baseline: Baseline = "optimal",
        norm_method: NormMethod = "ghost",
        scale_rewards: ScaleRewards = "none",
        loss_type: LossType = "seq_sum",
        snr_lr: SNRLearningRate | None = None,
        snr_units: Literal["prompt", "sample"] = "prompt",
        snr_microbatches: int | None = None,
        max_new_tokens: int,
        temperature: float = 1.0,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        max_grad_norm: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not callable(reward_fn):
            raise TypeError("reward_fn must be callable (prompt_ids, response_ids) -> [N] rewards")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if check_positive_int("group_size", group_size) < 2:
            raise ValueError(f"group_size must be >= 2, got {group_size}")
        check_choice("baseline", baseline, BASELINES)
        check_choice("norm_method", norm_method, NORM_METHODS)
        check_choice("scale_rewards", scale_rewards, SCALE_REWARDS)
        check_choice("loss_type", loss_type, LOSS_TYPES)
        if snr_lr is not None and snr_lr.optimizer is not optimizer:
            raise ValueError("snr_lr must wrap the trainer's optimizer")
        check_choice("snr_units", snr_units, _SNR_UNITS)
        if snr_units == "sample" and norm_method not in ("exact", "ghost"):
            raise ValueError(
                f"snr_units='sample' needs exact per-sample norms (norm_method 'exact' or "
                f"'ghost'), got norm_method={norm_method!r}"
            )
        if snr_units == "sample" and snr_microbatches is not None:
            raise ValueError("snr_microbatches applies to snr_units='prompt' only")
        if (
            snr_microbatches is not None
            and check_positive_int("snr_microbatches", snr_microbatches) < 2
        ):
            raise ValueError(f"snr_microbatches must be >= 2, got {snr_microbatches}")
        if max_grad_norm is not None:
            check_positive("max_grad_norm", max_grad_norm)
        self.model, self.reward_fn, self.optimizer = model, reward_fn, optimizer
        self.group_size = int(group_size)
        self.baseline, self.norm_method = baseline, norm_method
        self.scale_rewards, self.loss_type = scale_rewards, loss_type
        self.snr_lr, self.snr_microbatches = snr_lr, snr_microbatches
        self.snr_units = snr_units
        self.max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
        self.temperature = check_positive("temperature", temperature)
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id if pad_token_id is not None else (eos_token_id or 0)
        self.max_grad_norm = max_grad_norm
        device = next(model.parameters()).device
        self.generator = generator if generator is not None else make_generator(None, device)
        self.num_steps = 0

    @torch.no_grad()
    def generate(
        self, prompt_ids: Tensor, prompt_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sample G responses per prompt.

        Args:
            prompt_ids: ``[B, P]`` prompt ids (left-padded if ``prompt_mask`` is given).
            prompt_mask: ``[B, P]`` attention mask of the prompts.

        Returns:
            ``(input_ids [N, P+R], attention_mask, response_mask, sample_logprobs [N, P+R])`` with
            the sampling log-probs aligned like :func:`token_logprobs`.
        """
        if (
            not isinstance(prompt_ids, Tensor)
            or prompt_ids.dim() != 2
            or prompt_ids.is_floating_point()
        ):
            raise ValueError("prompt_ids must be an integer tensor [B, P]")
        ids = prompt_ids.repeat_interleave(self.group_size, dim=0)
        n = ids.shape[0]
        attn = (
            torch.ones_like(ids)
            if prompt_mask is None
            else prompt_mask.to(ids.dtype).repeat_interleave(self.group_size, dim=0)
        )
        resp = torch.zeros_like(ids)
        logps = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        done = torch.zeros(n, dtype=torch.bool, device=ids.device)
        # With a model that keeps a KV cache (transformers' causal LMs, TinyCausalLM) every new
        # token costs one position's forward instead of the whole sequence's; other models see
        # the whole sequence every time.
        cache_arg = _cache_argument(self.model)
        past = None
        # without an EOS token no response stops: every new position is live (the same tensors
        # as the masked update below, in fewer operations)
        live_col = torch.ones((n, 1), dtype=ids.dtype, device=ids.device)
        for _ in range(self.max_new_tokens):
            if cache_arg is not None:
                fed = ids if past is None else ids[:, -1:]
                out = self.model(
                    input_ids=fed, attention_mask=attn, use_cache=True, **{cache_arg: past}
                )
                last = _checked_logits(self.model, out, fed)[:, -1]
                past = getattr(out, cache_arg, None)
                if past is None:  # the model returned no cache: whole sequences from here on
                    cache_arg = None
            else:
                last = _causal_logits(self.model, ids, attn)[:, -1]
            logits = _as_float(last) / self.temperature
            logp = torch.log_softmax(logits, dim=-1)
            tok = torch.multinomial(logp.exp(), 1, generator=self.generator).squeeze(1)
            if self.eos_token_id is None:
                ids = torch.cat([ids, tok[:, None]], dim=1)
                attn = torch.cat([attn, live_col.to(attn.dtype)], dim=1)
                resp = torch.cat([resp, live_col], dim=1)
                logps = torch.cat([logps, logp.gather(1, tok[:, None])], dim=1)
                continue
            live = ~done
            tok = torch.where(live, tok, torch.full_like(tok, self.pad_token_id))
            ids = torch.cat([ids, tok[:, None]], dim=1)
            attn = torch.cat([attn, live[:, None].to(attn.dtype)], dim=1)
            resp = torch.cat([resp, live[:, None].to(resp.dtype)], dim=1)
            step_logp = torch.where(
                live,
                logp.gather(1, tok[:, None]).squeeze(1),
                torch.zeros_like(tok, dtype=logp.dtype),
            )
            logps = torch.cat([logps, step_logp[:, None]], dim=1)
            if self.eos_token_id is not None:
                done = done | (tok == self.eos_token_id)
                if bool(done.all()):
                    break
        return ids, attn, resp, logps

    def step(self, prompt_ids: Tensor, prompt_mask: Tensor | None = None) -> dict[str, float]:
        """One on-policy iteration: sample → reward → advantages → (SNR) → optimizer step.

        Returns:
            Metrics: ``reward_mean``, ``reward_std``, ``frac_reward_zero_std`` (TRL's), ``loss``,
            ``grad_norm``, ``rho``, ``lr``, ``advantage_abs_mean``, ``weight_mean``,
            ``logprob_gap`` (max |sampling − recomputed| log-prob: 0 up to float error on-policy).
        """
        g, p_len = self.group_size, prompt_ids.shape[1]
        ids, attn, resp, sample_logps = self.generate(prompt_ids, prompt_mask)
        n = ids.shape[0]
        rewards = self.reward_fn(ids[:, :p_len], ids[:, p_len:])
        if not isinstance(rewards, Tensor):
            rewards = torch.as_tensor(rewards, dtype=torch.float32, device=ids.device)
        if rewards.shape != (n,):
            raise ValueError(
                f"reward_fn must return rewards of shape [{n}], got {tuple(rewards.shape)}"
            )
        rewards = check_finite("rewards", rewards.detach().to(torch.float32))
        coef = loss_coefficients(resp, self.loss_type).to(rewards.device)
        route = self._snr_route()
        need_w = self.baseline.startswith("optimal") or route == "sample"
        fused = self.norm_method == "ghost" and (
            route == "prompt_ghost" or (need_w and route != "microbatch")
        )
        tok_logps: Tensor | None = None
        ghost: GhostScoreGradients | None = None
        if fused:  # ghost norms from the same forward pass as the loss (one forward, two backward)
            _check_batch(ids, attn, resp)
            with _ghost_errors(self.norm_method):
                recorder = GhostNormRecorder.for_model(self.model)
                with recorder:
                    tok_logps = token_logprobs(self.model, ids, attn, temperature=self.temperature)
                seq = (tok_logps * resp.to(tok_logps.dtype)).sum(dim=1)
                ghost = GhostScoreGradients(recorder, seq, retain_graph=True)
            w = ghost.sqnorms().to(rewards.device) if need_w else torch.ones_like(rewards)
        elif need_w:
            w = score_sqnorms(
                self.model, ids, attn, resp, method=self.norm_method, temperature=self.temperature
            ).to(rewards.device)
        else:
            w = torch.ones_like(rewards)
        adv = advantages(
            rewards,
            g,
            baseline=self.baseline,
            weights=coef.pow(2) * w,
            scale_rewards=self.scale_rewards,
        )
        self.optimizer.zero_grad(set_to_none=True)
        if route == "microbatch":
            loss, tok_logps, mb_sq = self._backward_microbatches(ids, attn, resp, adv, coef)
        else:
            if tok_logps is None:
                tok_logps = token_logprobs(self.model, ids, attn, temperature=self.temperature)
            loss = _loss_from_coef(tok_logps, adv, resp, coef)
            loss.backward()
        loss = loss.detach()
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"non-finite policy-gradient loss at step {self.num_steps}")
        params = [q for group in self.optimizer.param_groups for q in group["params"]]
        grad_sq = float(sum(q.grad.double().pow(2).sum() for q in params if q.grad is not None))
        if not math.isfinite(grad_sq):
            raise FloatingPointError(f"non-finite gradient at step {self.num_steps}")
        if self.snr_lr is not None:
            if route == "sample":
                self.snr_lr.update_from_per_sample(float((coef * adv).pow(2).mul(w).sum()), n)
            elif route == "prompt_ghost":
                assert ghost is not None
                # g_k = -(1/G) Σ_{j∈k} c_j A_j ∇ seq_j, so that ḡ = mean_k g_k
                per_prompt = ghost.sqnorms(weights=coef * adv / g, group_size=g)
                self.snr_lr.update_from_microbatches_sum(
                    float(per_prompt.double().sum()), n // g, mean_grad_sqnorm=grad_sq
                )
            else:
                self.snr_lr.update_from_microbatches(mb_sq, mean_grad_sqnorm=grad_sq)
            self.snr_lr.step()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()
        self.num_steps += 1
        grouped = rewards.view(-1, g)
        mask = resp.bool()
        return {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()) if n > 1 else 0.0,
            "frac_reward_zero_std": float((grouped.std(dim=1) == 0).float().mean()),
            "loss": float(loss),
            "grad_norm": math.sqrt(grad_sq),
            "rho": self.snr_lr.last_rho if self.snr_lr is not None else 1.0,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "advantage_abs_mean": float(adv.abs().mean()),
            "weight_mean": float(w.mean()),
            "logprob_gap": float((tok_logps.detach() - sample_logps).abs()[mask].max()),
        }

    def _snr_route(self) -> str | None:
        """The SNR estimate: ``None``, ``"sample"``, ``"prompt_ghost"`` or ``"microbatch"``."""
        if self.snr_lr is None:
            return None
        if self.snr_units == "sample":
            return "sample"
        if self.norm_method == "ghost" and self.snr_microbatches is None:
            return "prompt_ghost"
        return "microbatch"

    def _backward_microbatches(
        self, ids: Tensor, attn: Tensor, resp: Tensor, adv: Tensor, coef: Tensor
    ) -> tuple[Tensor, Tensor, list[float]]:
        n_prompts = ids.shape[0] // self.group_size
        k = self.snr_microbatches or n_prompts
        if k < 2 or k > n_prompts:
            raise ValueError(
                f"snr_microbatches={k} needs 2 <= K <= number of prompts ({n_prompts})"
            )
        params = [q for group in self.optimizer.param_groups for q in group["params"]]
        chunks = torch.arange(n_prompts, device=ids.device).tensor_split(k)
        sq, losses, logps = [], [], []
        prev = [torch.zeros_like(q) for q in params]
        for chunk in chunks:
            rows = (
                chunk[:, None] * self.group_size + torch.arange(self.group_size, device=ids.device)
            ).reshape(-1)
            tok = token_logprobs(self.model, ids[rows], attn[rows], temperature=self.temperature)
            # scaled so the chunk losses sum to the full-batch loss
            part = (
                _loss_from_coef(tok, adv[rows], resp[rows], coef[rows])
                * rows.numel()
                / ids.shape[0]
            )
            part.backward()
            now = [
                q.grad.detach().clone() if q.grad is not None else torch.zeros_like(q)
                for q in params
            ]
            delta2 = sum(
                float((a - b).double().pow(2).sum()) for a, b in zip(now, prev, strict=True)
            )
            sq.append(k * k * delta2)  # g_k = K·Δ_k so that ḡ = mean_k g_k
            prev = now
            losses.append(part.detach())
            logps.append((rows, tok.detach()))
        full = torch.zeros(ids.shape, dtype=logps[0][1].dtype, device=ids.device)
        for rows, tok in logps:
            full[rows] = tok
        return torch.stack(losses).sum(), full, sq


def _cache_argument(model: nn.Module) -> str | None:
    """The name of the KV-cache argument (and output field) of ``model``'s forward, if it takes
    one and ``use_cache`` by name: ``past_key_values`` (``transformers`` < 5, TinyCausalLM) or
    ``cache`` (``transformers`` 5); ``None`` otherwise."""
    try:
        names = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    if "use_cache" not in names:
        return None
    return next((name for name in ("past_key_values", "cache") if name in names), None)
