"""Data tools: samplers, label noise, perturbations."""

from optforge.data.adaptive_batch import AdaptiveBatchSampler, ResizableBatchSampler
from optforge.data.bayes_error import (
    BayesErrorPerturbation,
    bayes_error_estimate,
    error_minimizing_noise,
    kernel_posterior,
    median_nn_distance,
    mix_protected,
    project_perturbation,
    random_noise,
)
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
    "BayesErrorPerturbation",
    "IndexedDataset",
    "NoisyLabels",
    "ResizableBatchSampler",
    "bayes_error_estimate",
    "cyclic_mapping",
    "error_minimizing_noise",
    "kernel_posterior",
    "label_noise_metrics",
    "make_pair_noise",
    "make_symmetric_noise",
    "median_nn_distance",
    "mix_protected",
    "project_perturbation",
    "random_noise",
    "superclass_cyclic_mapping",
]
