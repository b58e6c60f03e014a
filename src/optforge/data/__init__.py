"""Data tools: samplers, label noise, perturbations."""

from optforge.data.adaptive_batch import AdaptiveBatchSampler, ResizableBatchSampler

__all__ = ["AdaptiveBatchSampler", "ResizableBatchSampler"]
