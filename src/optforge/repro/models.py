"""Small model builders shared by the reproductions.

Example::

    from optforge.repro.models import mlp

    net = mlp([64, 128, 10], activation=nn.Tanh)          # Linear → Tanh → Linear
    net = mlp([64, 256, 256, 64], activation=nn.SiLU, dropout=0.1)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["mlp"]


def mlp(
    sizes: Sequence[int],
    *,
    activation: Callable[[], nn.Module] = nn.ReLU,
    dropout: float = 0.0,
    out_activation: nn.Module | None = None,
) -> nn.Sequential:
    """A multilayer perceptron ``Linear(sizes[0], sizes[1]) → activation → … → Linear``.

    Hidden layers are followed by ``activation()`` (and ``Dropout(dropout)`` when > 0); the last
    ``Linear`` by ``out_activation`` if given. Weights use ``nn.Linear``'s default initialisation,
    drawn from the global generator in layer order (seed it, or re-initialise afterwards).
    """
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output size, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
            if dropout:
                layers.append(nn.Dropout(dropout))
    if out_activation is not None:
        layers.append(out_activation)
    return nn.Sequential(*layers)
