"""Test-time optimization for generative models."""
