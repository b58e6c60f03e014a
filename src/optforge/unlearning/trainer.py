"""The unlearning loop: a forget loss on forget batches plus a retain loss on retain batches.

``L = forget_loss(forget batch) + retain_weight · retain_loss(retain batch)`` with the inverted
hinge loss or gradient ascent as forget loss (:mod:`optforge.unlearning.losses`) and the retain
NLL (gradient difference, LoKU's objective, Cha et al., ICLR 2025, arXiv:2408.06621) or
``KL(p_ref ‖ p_θ)`` to a frozen reference model as retain loss.

Example::

    unlearner = Unlearner(model, forget_loss="ihl", retain_loss="nll", lr=1e-3)
    history = unlearner.fit(forget_loader, retain_loader, epochs=5)

Choice: the retain KL term averages over the positions with ``attention_mask == 1`` (the official
code divides by all ``B·T`` positions, padding included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from optforge._core import check_nonnegative, check_positive, check_positive_int
from optforge.unlearning.batches import _labels_of, _model_device, _to, causal_lm_logits
from optforge.unlearning.losses import gradient_ascent_loss, inverted_hinge_loss

__all__ = ["Unlearner"]


class Unlearner:
    """A trainer-free unlearning loop: forget loss on forget batches + retain loss on retain ones.

    ``L = forget_loss(forget batch) + retain_weight · retain_loss(retain batch)`` with
    ``forget_loss`` ∈ {``"ihl"``, ``"ga"``} and ``retain_loss`` ∈ {``"nll"`` (gradient
    difference / the official IHL objective), ``"kl"`` (KL(p_ref ‖ p_θ) to a frozen reference
    model), ``"none"`` (pure forget loss, e.g. plain GA)}.

    Args:
        model: The causal LM to unlearn (full model or a ``peft`` LoRA model).
        forget_loss: ``"ihl"`` or ``"ga"``.
        retain_loss: ``"nll"``, ``"kl"`` or ``"none"``.
        retain_weight: Weight of the retain term.
        ref_model: Frozen reference model, required for ``retain_loss="kl"``.
        optimizer: An optimizer over the trainable parameters; default ``torch.optim.AdamW``.
        lr: Learning rate of the default optimizer.
        weight_decay: Weight decay of the default optimizer.
        max_grad_norm: Clip the global gradient norm to this value (``None``: no clipping).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        forget_loss: Literal["ihl", "ga"] = "ihl",
        retain_loss: Literal["nll", "kl", "none"] = "nll",
        retain_weight: float = 1.0,
        ref_model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
    ) -> None:
        if forget_loss not in ("ihl", "ga"):
            raise ValueError(f"forget_loss must be 'ihl' or 'ga', got {forget_loss!r}")
        if retain_loss not in ("nll", "kl", "none"):
            raise ValueError(f"retain_loss must be 'nll', 'kl' or 'none', got {retain_loss!r}")
        if retain_loss == "kl" and ref_model is None:
            raise ValueError("ref_model is required for retain_loss='kl'")
        check_positive("lr", lr)
        check_nonnegative("retain_weight", retain_weight)
        if max_grad_norm is not None:
            check_positive("max_grad_norm", max_grad_norm)
        self.model = model
        self.forget_loss = forget_loss
        self.retain_loss = retain_loss
        self.retain_weight = float(retain_weight)
        self.ref_model = ref_model
        self.max_grad_norm = max_grad_norm
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        if optimizer is None:
            if not params:
                raise ValueError("model has no trainable parameter")
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        self.optimizer = optimizer
        self.steps = 0

    def losses(
        self, forget_batch: Mapping[str, Tensor], retain_batch: Mapping[str, Tensor] | None
    ) -> dict[str, Tensor]:
        """The forget term, the retain term and their weighted sum (``"loss"``), with graph."""
        device = _model_device(self.model)
        forget_batch = _to(forget_batch, device)
        logits = causal_lm_logits(self.model, forget_batch)
        labels = _labels_of(forget_batch)
        if self.forget_loss == "ihl":
            forget = inverted_hinge_loss(logits, labels)
        else:
            forget = gradient_ascent_loss(logits, labels)
        out = {"forget_loss": forget, "loss": forget}
        if self.retain_loss != "none":
            if retain_batch is None:
                raise ValueError(f"retain_batch is required for retain_loss={self.retain_loss!r}")
            retain_batch = _to(retain_batch, device)
            r_logits = causal_lm_logits(self.model, retain_batch)
            if self.retain_loss == "nll":
                retain = -gradient_ascent_loss(r_logits, _labels_of(retain_batch))
            else:
                with torch.no_grad():
                    ref_logits = causal_lm_logits(self.ref_model, retain_batch)
                retain = _kl_to_reference(r_logits, ref_logits, retain_batch.get("attention_mask"))
            out["retain_loss"] = retain
            out["loss"] = forget + self.retain_weight * retain
        return out

    def step(
        self, forget_batch: Mapping[str, Tensor], retain_batch: Mapping[str, Tensor] | None = None
    ) -> dict[str, float]:
        """One optimizer step; returns the loss values as floats.

        Raises:
            FloatingPointError: If the loss is NaN or infinite (the step is not applied).
        """
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.losses(forget_batch, retain_batch)
        if not bool(torch.isfinite(terms["loss"])):
            raise FloatingPointError(
                f"unlearning loss became {float(terms['loss'].detach())} at step {self.steps}"
            )
        terms["loss"].backward()
        if self.max_grad_norm is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()
        self.steps += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    def fit(
        self,
        forget_loader: Iterable[Mapping[str, Tensor]],
        retain_loader: Iterable[Mapping[str, Tensor]] | None = None,
        epochs: int = 1,
        callback: Callable[[int, Unlearner], Mapping[str, Any] | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Run ``epochs`` passes over the forget loader, pairing each forget batch with the next
        retain batch (the retain loader is cycled).

        Args:
            forget_loader: Forget batches (re-iterated every epoch).
            retain_loader: Retain batches (required unless ``retain_loss="none"``).
            epochs: Number of passes over the forget loader.
            callback: Called as ``callback(epoch, self)`` after each epoch (1-based); a returned
                mapping is merged into that epoch's history entry, and a ``"stop": True`` entry
                ends training.

        Returns:
            One dict per epoch with the mean losses and the callback's values.
        """
        check_positive_int("epochs", epochs)
        if retain_loader is None and self.retain_loss != "none":
            raise ValueError(f"retain_loader is required for retain_loss={self.retain_loss!r}")
        retain_iter = _cycle(retain_loader) if retain_loader is not None else None
        history: list[dict[str, Any]] = []
        for epoch in range(1, epochs + 1):
            sums: dict[str, float] = {}
            n = 0
            for forget_batch in forget_loader:
                retain_batch = next(retain_iter) if retain_iter is not None else None
                for k, v in self.step(forget_batch, retain_batch).items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
            if n == 0:
                raise ValueError("forget_loader is empty")
            entry: dict[str, Any] = {"epoch": epoch, **{k: v / n for k, v in sums.items()}}
            extra = callback(epoch, self) if callback is not None else None
            if extra:
                entry.update(extra)
            history.append(entry)
            if entry.get("stop"):
                break
        return history


def _cycle(loader: Iterable[Mapping[str, Tensor]]):
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("retain_loader is empty")


def _kl_to_reference(logits: Tensor, ref_logits: Tensor, attention_mask: Tensor | None) -> Tensor:
    """``KL(p_ref ‖ p_θ)`` averaged over the attended positions."""
    logp = logits.float().log_softmax(-1)
    logq = ref_logits.float().log_softmax(-1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    if attention_mask is None:
        return kl.mean()
    mask = attention_mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp_min(1.0)
