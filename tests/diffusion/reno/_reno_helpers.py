"""Shared helpers of the ReNO tests: linear and quadratic rewards, the identity generator."""


def _linear_reward(a):
    return lambda x: (x * a).flatten(1).sum(1)


def _quadratic_reward(target):
    return lambda x: -(x - target).square().flatten(1).sum(1)


def _identity(z):
    return z
