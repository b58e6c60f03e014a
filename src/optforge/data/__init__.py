"""Data tools: samplers, label noise, perturbations."""

from optforge.data.adaptive_batch import AdaptiveBatchSampler, ResizableBatchSampler
from optforge.data.noisy_labels import (
    CIFAR10_ASYMMETRIC_MAPPING,
    IndexedDataset,
    NoisyLabels,
    cyclic_mapping,
    label_noise_metrics,
    make_pair_noise,
    make_symmetric_noise,
    superclass_cyclic_mapping,
)

__all__ = [
    "CIFAR10_ASYMMETRIC_MAPPING",
    "AdaptiveBatchSampler",
    "IndexedDataset",
    "NoisyLabels",
    "ResizableBatchSampler",
    "cyclic_mapping",
    "label_noise_metrics",
    "make_pair_noise",
    "make_symmetric_noise",
    "superclass_cyclic_mapping",
]
