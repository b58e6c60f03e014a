"""Seeding helpers: dedicated generators so library code never touches the global RNG."""

from __future__ import annotations

import random

import numpy as np
import torch

from optforge._core.validation import check_seed


def make_generator(
    seed: int | None, device: torch.device | str = "cpu", *, name: str = "seed"
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``.

    With ``seed=None`` the seed is derived from ``torch.initial_seed()``, so runs are
    reproducible under ``torch.manual_seed`` without consuming the global random stream.
    A seed that is not an integer a generator accepts raises, naming ``name``.
    """
    seed = check_seed(name, seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(torch.initial_seed() if seed is None else int(seed))
    return generator


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (used by the harness, not methods)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
