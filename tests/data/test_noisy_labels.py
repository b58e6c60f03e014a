"""Tests of the noisy-label tools: IndexedDataset, seeded noise, metrics (elr.md §7.11)."""

import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from optforge.data import (
    CIFAR10_ASYMMETRIC_MAPPING,
    IndexedDataset,
    cyclic_mapping,
    label_noise_metrics,
    make_pair_noise,
    make_symmetric_noise,
    superclass_cyclic_mapping,
)


def _labels(n=1000, c=10, seed=0):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


def test_indexed_dataset_returns_dataset_index_through_shuffled_loader():
    x = torch.arange(20.0)[:, None]
    y = torch.arange(20) % 3
    ds = IndexedDataset(TensorDataset(x, y))
    assert len(ds) == 20
    assert ds[7] == (x[7], y[7], 7)
    loader = DataLoader(ds, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = []
    for xb, yb, ib in loader:
        assert ib.dtype == torch.long
        torch.testing.assert_close(xb[:, 0], ib.float())  # the index is the dataset position
        torch.testing.assert_close(yb, y[ib])
        seen += ib.tolist()
    assert sorted(seen) == list(range(20))


def test_indexed_dataset_label_override_and_subset():
    x, y = torch.randn(10, 2), torch.zeros(10, dtype=torch.long)
    noisy = torch.arange(10) % 4
    ds = IndexedDataset(TensorDataset(x, y), labels=noisy)
    assert ds[3][1] == 3 and ds[3][2] == 3
    sub = IndexedDataset(Subset(TensorDataset(x, y), [9, 4, 6]))
    assert [sub[i][2] for i in range(3)] == [0, 1, 2]  # positions in the subset, not the parent
    plain = IndexedDataset([torch.tensor(1.0), torch.tensor(2.0)])
    assert plain[1] == (torch.tensor(2.0), 1)
    with pytest.raises(ValueError, match="labels must have shape"):
        IndexedDataset(TensorDataset(x, y), labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="map-style"):
        IndexedDataset(42)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8, 1.0])
def test_symmetric_noise_exact_rate_and_other_classes(rate):
    clean = _labels()
    out = make_symmetric_noise(clean, rate, 10, generator=0)
    n = clean.numel()
    assert abs(out.flipped.float().mean().item() - rate) <= 1 / n
    assert torch.equal(out.flipped, out.selected)  # other-class mode: every selected label moves
    assert torch.equal(out.labels[~out.flipped], clean[~out.flipped])
    assert out.labels.min() >= 0 and out.labels.max() < 10
    assert torch.equal(clean, _labels())  # input untouched


def test_symmetric_noise_new_label_uniform_over_other_classes():
    clean = torch.zeros(20000, dtype=torch.long)
    out = make_symmetric_noise(clean, 1.0, 5, generator=1)
    counts = torch.bincount(out.labels, minlength=5).float()
    assert counts[0] == 0
    # each of the 4 other classes gets 5000 ± 4 sd (binomial sd = sqrt(20000·¼·¾) ≈ 61)
    assert torch.all((counts[1:] - 5000).abs() < 4 * 61.3)


def test_symmetric_noise_including_true_class():
    clean = _labels(20000, 10, 2)
    out = make_symmetric_noise(clean, 0.6, 10, include_true_class=True, generator=2)
    assert out.selected.sum() == round(0.6 * 20000)
    kept = (out.labels[out.selected] == clean[out.selected]).float().mean().item()
    # a selected label stays with prob 1/C = 0.1; sd = sqrt(0.09 / 12000) ≈ 0.0027
    assert abs(kept - 0.1) < 4 * 0.0028
    assert torch.equal(out.flipped, out.labels != clean)


def test_noise_reproducible_with_generator_and_seed():
    clean = _labels()
    a = make_symmetric_noise(clean, 0.4, 10, generator=torch.Generator().manual_seed(5))
    b = make_symmetric_noise(clean, 0.4, 10, generator=5)
    c = make_symmetric_noise(clean, 0.4, 10, generator=6)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)
    p1 = make_pair_noise(clean, 0.4, cyclic_mapping(10), generator=3)
    p2 = make_pair_noise(clean, 0.4, cyclic_mapping(10), generator=3)
    assert torch.equal(p1.labels, p2.labels)


def test_pair_noise_moves_only_designated_classes_at_exact_rate():
    clean = _labels(5000, 10, 4)
    out = make_pair_noise(clean, 0.4, CIFAR10_ASYMMETRIC_MAPPING, generator=0, num_classes=10)
    for c in range(10):
        members = clean == c
        moved = out.flipped[members]
        if c in CIFAR10_ASYMMETRIC_MAPPING:
            n_c = int(members.sum())
            assert abs(moved.float().mean().item() - 0.4) <= 1 / n_c
            assert torch.all(out.labels[members & out.flipped] == CIFAR10_ASYMMETRIC_MAPPING[c])
        else:
            assert not moved.any()


def test_mappings():
    assert cyclic_mapping(3) == {0: 1, 1: 2, 2: 0}
    m = superclass_cyclic_mapping(100, 5)
    assert m[0] == 1 and m[4] == 0 and m[99] == 95 and m[7] == 8
    assert sorted(m.values()) == list(range(100))
    with pytest.raises(ValueError, match="multiple"):
        superclass_cyclic_mapping(12, 5)


def test_bad_noise_inputs():
    clean = _labels()
    with pytest.raises(ValueError, match="rate"):
        make_symmetric_noise(clean, 1.5, 10)
    with pytest.raises(ValueError, match="labels must lie"):
        make_symmetric_noise(clean, 0.4, 5)
    with pytest.raises(ValueError, match="labels must be a 1-D integer"):
        make_symmetric_noise(clean.float(), 0.4, 10)
    with pytest.raises(ValueError, match="num_classes"):
        make_symmetric_noise(torch.zeros(3, dtype=torch.long), 0.4, 1)
    with pytest.raises(ValueError, match="mapping"):
        make_pair_noise(clean, 0.4, {0: 12}, num_classes=10)
    with pytest.raises(TypeError, match="generator"):
        make_symmetric_noise(clean, 0.4, 10, generator="seed")


def test_label_noise_metrics():
    clean = torch.tensor([0, 1, 2, 3, 0, 1])
    noisy = torch.tensor([1, 1, 0, 3, 2, 1])  # examples 0, 2, 4 mislabelled
    pred = torch.tensor([1, 1, 2, 0, 1, 1])  # memorises 0, corrects 2, neither for 4
    stats = label_noise_metrics(pred, noisy, clean)
    assert stats["memorized"] == pytest.approx(1 / 3)
    assert stats["corrected"] == pytest.approx(1 / 3)
    assert stats["clean_fit"] == pytest.approx(2 / 3)
    assert stats["noise_rate"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one shape"):
        label_noise_metrics(pred[:3], noisy, clean)
