"""Structured matrix estimation: completion and rotation-invariant denoising."""
