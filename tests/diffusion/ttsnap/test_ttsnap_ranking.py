"""Borda ranks: known values, ties, and one reward equal to the score order."""

from __future__ import annotations

import torch

from optforge.diffusion.ttsnap import borda_scores, simulate_best_of_n


def test_borda_scores_known_values_and_ties():
    scores = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.0, 0.0]])
    # reward 0 ranks: 0, 1, 3, 1 (tie shares the lower rank); reward 1: 3, 2, 1, 0.
    assert borda_scores(scores).tolist() == [3, 3, 4, 1]


def test_borda_single_reward_equals_argmax_with_ties():
    gen = torch.Generator().manual_seed(0)
    vals = torch.randint(0, 5, (50, 30), generator=gen).float()  # many ties
    order = torch.arange(30).expand(50, 1, 30)
    single = simulate_best_of_n(vals, 30, order=order, return_index=True)
    multi = simulate_best_of_n(vals[:, :, None], 30, order=order, return_index=True)
    assert torch.equal(single, multi)
    first_max = (vals == vals.max(1, keepdim=True).values).float().argmax(1)  # lowest index
    assert torch.equal(single[:, 0], first_max)
