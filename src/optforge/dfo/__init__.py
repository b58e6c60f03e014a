"""Derivative-free and surrogate-based black-box optimization."""
