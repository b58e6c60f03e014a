r"""Noisy-label tools: an index-returning dataset wrapper, seeded label-noise injection, metrics.

Companion of :class:`optforge.losses.ELRLoss` (Liu et al., "Early-Learning Regularization
Prevents Memorization of Noisy Labels", NeurIPS 2020, arXiv:2007.00151), whose per-example
targets need the **dataset index** of every example in a batch, and of the benchmarks of that
literature, which corrupt clean labels with a known noise model:

* **symmetric, rate r** — exactly ``round(r n)`` examples, chosen uniformly, get a new label drawn
  uniformly from the *other* ``C - 1`` classes (``include_true_class=False``, the default: every
  selected label really changes, so the corruption rate is ``r``) or from *all* ``C`` classes
  (``include_true_class=True``, the official ELR / Co-teaching CIFAR code: effective corruption
  ``r (1 - 1/C)``);
* **pair / asymmetric, rate r** — in every source class ``c`` of a ``mapping``, exactly
  ``round(r n_c)`` of its examples get label ``mapping[c]``. Mappings provided:
  :data:`CIFAR10_ASYMMETRIC_MAPPING` (truck→automobile, bird→airplane, deer→horse, cat↔dog),
  :func:`cyclic_mapping` (``c → c+1 mod C``) and :func:`superclass_cyclic_mapping` (CIFAR-100:
  ``i → i+1`` cyclically within each block of 5 classes).

Choice: noise is applied per class with an exact count (``round(r n_c)``) rather than by an
independent coin per example as in the official CIFAR code, so the realised rate is within
``1/n_c`` of the requested one and tests can check it.

Example::

    noisy = make_symmetric_noise(labels, rate=0.4, num_classes=10, generator=0)
    train = IndexedDataset(TensorDataset(x, labels), labels=noisy.labels)
    x_b, y_b, index_b = next(iter(DataLoader(train, batch_size=64, shuffle=True)))
    noisy.flipped.float().mean()      # tensor(0.4000)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from optforge._core import check_in_range, check_positive_int, make_generator

__all__ = [
    "CIFAR10_ASYMMETRIC_MAPPING",
    "IndexedDataset",
    "NoisyLabels",
    "cyclic_mapping",
    "label_noise_metrics",
    "make_pair_noise",
    "make_symmetric_noise",
    "superclass_cyclic_mapping",
]

#: CIFAR-10 asymmetric noise (Patrini et al. 2017): truck→automobile, bird→airplane,
#: deer→horse, cat→dog, dog→cat.
CIFAR10_ASYMMETRIC_MAPPING: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


class NoisyLabels(NamedTuple):
    """Result of a noise injection.

    Attributes:
        labels: the noisy labels ``(n,)`` (a new tensor; the input is not modified).
        flipped: boolean mask ``(n,)`` of labels that differ from the clean ones.
        selected: boolean mask ``(n,)`` of examples drawn for corruption (differs from
            ``flipped`` only with ``include_true_class=True``).
    """

    labels: Tensor
    flipped: Tensor
    selected: Tensor


class IndexedDataset(Dataset):
    """Wrap any map-style dataset so that items come back as ``(x, y, index)``.

    ``index`` is the position ``0 .. len(dataset) - 1`` **in the wrapped dataset** (wrap the
    ``Subset`` you train on, not its parent, so indices match the loss's target buffer). Items
    that are tuples ``(x, y, *rest)`` become ``(x, y, *rest, index)``; other items ``x`` become
    ``(x, index)``. The default collate function stacks the indices into a ``LongTensor``.

    Args:
        dataset: a map-style dataset (``__getitem__`` and ``__len__``).
        labels: optional replacement labels ``(len(dataset),)`` — e.g. noisy labels from
            :func:`make_symmetric_noise` — returned instead of the item's own ``y``.
    """

    def __init__(self, dataset: Any, labels: Tensor | Sequence[int] | None = None) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError("dataset must be a map-style dataset with __getitem__ and __len__")
        self.dataset = dataset
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.dim() != 1 or labels.shape[0] != len(dataset):
                raise ValueError(
                    f"labels must have shape ({len(dataset)},), got {tuple(labels.shape)}"
                )
        self.labels = labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        item = self.dataset[index]
        if isinstance(item, tuple | list):
            item = tuple(item)
            if self.labels is not None:
                if len(item) < 2:
                    raise ValueError("labels= needs items of the form (x, y, ...)")
                item = (item[0], self.labels[index], *item[2:])
            return (*item, index)
        if self.labels is not None:
            return (item, self.labels[index], index)
        return (item, index)


def make_symmetric_noise(
    labels: Tensor,
    rate: float,
    num_classes: int,
    include_true_class: bool = False,
    generator: torch.Generator | int | None = None,
) -> NoisyLabels:
    """Symmetric label noise: ``round(rate * n)`` random examples get a uniformly drawn label.

    Args:
        labels: clean integer labels ``(n,)`` in ``[0, num_classes)``.
        rate: fraction of examples to corrupt, in ``[0, 1]``.
        num_classes: number of classes ``C >= 2``.
        include_true_class: draw the new label from all ``C`` classes (official ELR/CIFAR code;
            a selected label stays unchanged with probability ``1/C``) instead of the other
            ``C - 1`` classes (default; every selected label changes).
        generator: a ``torch.Generator`` or an integer seed (``None`` derives one from
            ``torch.initial_seed()``).

    Returns:
        :class:`NoisyLabels` ``(labels, flipped, selected)``.
    """
    clean = _check_labels(labels, num_classes)
    check_in_range("rate", rate, 0.0, 1.0)
    gen = _generator(generator)
    n = clean.numel()
    selected_idx = torch.randperm(n, generator=gen)[: round(rate * n)]
    noisy = clean.clone()
    if include_true_class:
        new = torch.randint(0, num_classes, (selected_idx.numel(),), generator=gen)
    else:  # uniform over the other C - 1 classes: shift by 1..C-1
        shift = torch.randint(1, num_classes, (selected_idx.numel(),), generator=gen)
        new = (clean[selected_idx] + shift) % num_classes
    noisy[selected_idx] = new
    selected = torch.zeros(n, dtype=torch.bool)
    selected[selected_idx] = True
    return NoisyLabels(noisy, noisy != clean, selected)


def make_pair_noise(
    labels: Tensor,
    rate: float,
    mapping: Mapping[int, int],
    generator: torch.Generator | int | None = None,
    num_classes: int | None = None,
) -> NoisyLabels:
    """Class-dependent (asymmetric / pair) noise: ``round(rate * n_c)`` examples of each source
    class ``c`` in ``mapping`` get label ``mapping[c]``; other classes are untouched.

    Args:
        labels: clean integer labels ``(n,)``.
        rate: fraction of each source class to relabel, in ``[0, 1]``.
        mapping: source class → destination class (e.g. :data:`CIFAR10_ASYMMETRIC_MAPPING`,
            :func:`cyclic_mapping`).
        generator: a ``torch.Generator`` or an integer seed.
        num_classes: optional number of classes, to validate labels and mapping.

    Returns:
        :class:`NoisyLabels` ``(labels, flipped, selected)``.
    """
    c = num_classes if num_classes is not None else int(torch.as_tensor(labels).max()) + 1
    clean = _check_labels(labels, max(c, 2))
    check_in_range("rate", rate, 0.0, 1.0)
    if not isinstance(mapping, Mapping):
        raise TypeError(f"mapping must be a dict source class -> target class, got {mapping!r}")
    for src, dst in mapping.items():
        if num_classes is not None and not (0 <= src < num_classes and 0 <= dst < num_classes):
            raise ValueError(f"mapping {src}->{dst} leaves [0, num_classes={num_classes})")
    gen = _generator(generator)
    noisy = clean.clone()
    selected = torch.zeros(clean.numel(), dtype=torch.bool)
    for src in sorted(mapping):  # loop over classes (≤ C iterations), vectorised inside
        members = torch.nonzero(clean == src).squeeze(1)
        chosen = members[torch.randperm(members.numel(), generator=gen)]
        chosen = chosen[: round(rate * members.numel())]
        noisy[chosen] = int(mapping[src])
        selected[chosen] = True
    return NoisyLabels(noisy, noisy != clean, selected)


def cyclic_mapping(num_classes: int) -> dict[int, int]:
    """The mapping ``c → (c + 1) mod C`` (the digits reproduction's asymmetric noise)."""
    check_positive_int("num_classes", num_classes)
    return {c: (c + 1) % num_classes for c in range(num_classes)}


def superclass_cyclic_mapping(num_classes: int = 100, group_size: int = 5) -> dict[int, int]:
    """CIFAR-100 asymmetric noise: ``i → i+1`` cyclically inside each block of ``group_size``
    consecutive classes (the 20 super-classes of CIFAR-100 with their 5 classes)."""
    check_positive_int("num_classes", num_classes)
    check_positive_int("group_size", group_size)
    if num_classes % group_size:
        raise ValueError(f"num_classes={num_classes} is not a multiple of group_size={group_size}")
    return {
        c: (c // group_size) * group_size + (c % group_size + 1) % group_size
        for c in range(num_classes)
    }


def label_noise_metrics(predictions: Tensor, noisy_labels: Tensor, clean_labels: Tensor) -> dict:
    """How a model treats the mislabelled training examples.

    Args:
        predictions: predicted classes ``(n,)`` on the training set.
        noisy_labels: the labels used for training ``(n,)``.
        clean_labels: the true labels ``(n,)``.

    Returns:
        ``memorized`` (share of mislabelled examples predicted as their wrong label),
        ``corrected`` (… predicted as their true label), ``clean_fit`` (share of correctly
        labelled examples predicted correctly) and ``noise_rate`` (share mislabelled); NaN when
        a group is empty.
    """
    pred, noisy, clean = (
        torch.as_tensor(t).reshape(-1).cpu() for t in (predictions, noisy_labels, clean_labels)
    )
    if not (pred.shape == noisy.shape == clean.shape):
        raise ValueError(
            f"predictions, noisy_labels and clean_labels must have one shape, got "
            f"{tuple(pred.shape)}, {tuple(noisy.shape)}, {tuple(clean.shape)}"
        )
    wrong = noisy != clean

    def share(mask: Tensor, of: Tensor) -> float:
        return float(mask[of].float().mean()) if bool(of.any()) else float("nan")

    return {
        "memorized": share(pred == noisy, wrong),
        "corrected": share(pred == clean, wrong),
        "clean_fit": share(pred == clean, ~wrong),
        "noise_rate": float(wrong.float().mean()) if pred.numel() else float("nan"),
    }


def _check_labels(labels: Tensor, num_classes: int) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 1:
        raise ValueError(
            f"labels must be a 1-D integer tensor, got dtype {labels.dtype} shape "
            f"{tuple(labels.shape)}"
        )
    check_positive_int("num_classes", num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if labels.numel() and bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(f"labels must lie in [0, num_classes={num_classes})")
    return labels.to(torch.long).cpu()


def _generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None or isinstance(generator, int):
        return make_generator(generator)
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")
