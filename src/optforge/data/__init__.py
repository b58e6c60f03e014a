"""Data tools: samplers, label noise, perturbations."""
