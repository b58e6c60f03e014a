"""The public surface of ``optforge.diffusion``: ``__all__`` everywhere, the import paths from
before the split into packages, and one name per reward signature."""

from __future__ import annotations

import importlib
import pkgutil

import optforge.diffusion

OLD_TTSNAP_NAMES = [
    "CostModel",
    "DDIMSampler",
    "DiffusersSampler",
    "IntermediateRewardFn",
    "NoiseAwareDistiller",
    "NoiseAwareReward",
    "PruningSchedule",
    "RewardFn",
    "SamplerState",
    "SearchResult",
    "SteppableSampler",
    "TrajectoryDataset",
    "alignment_metrics",
    "best_of_n",
    "borda_scores",
    "relative_area_gain",
    "reward_budget_curve",
    "simulate_best_of_n",
    "simulate_ttsnap",
    "ttsnap_search",
]
OLD_RENO_NAMES = [
    "GeneratorFn",
    "OneStepDiffusersGenerator",
    "OptimizerSpec",
    "ReNO",
    "ReNOResult",
    "RewardFn",
    "best_of_n",
    "chi_norm_nll",
    "reno",
]


def _modules():
    yield optforge.diffusion
    for info in pkgutil.walk_packages(optforge.diffusion.__path__, "optforge.diffusion."):
        yield importlib.import_module(info.name)


def test_every_module_has_a_complete_all():
    names = []
    for module in _modules():
        names.append(module.__name__)
        assert hasattr(module, "__all__"), module.__name__
        assert len(set(module.__all__)) == len(module.__all__), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert "optforge.diffusion.ttsnap.samplers" in names
    assert "optforge.diffusion.reno.driver" in names


def test_old_import_paths_still_work():
    ttsnap = importlib.import_module("optforge.diffusion.ttsnap")
    reno = importlib.import_module("optforge.diffusion.reno")
    for name in OLD_TTSNAP_NAMES:
        assert hasattr(ttsnap, name), name
    for name in OLD_RENO_NAMES:
        assert hasattr(reno, name), name
    from optforge.diffusion.reno import ReNO
    from optforge.diffusion.ttsnap import DDIMSampler

    assert ReNO.__module__ == "optforge.diffusion.reno.driver"
    assert DDIMSampler.__module__ == "optforge.diffusion.ttsnap.samplers"


def test_one_reward_type_per_signature_and_old_aliases():
    from optforge.diffusion import ImageRewardFn, IntermediateRewardFn, PromptRewardFn
    from optforge.diffusion import reno as reno_module_attr  # the function shadows the package
    from optforge.diffusion.reno import RewardFn as RenoRewardFn
    from optforge.diffusion.ttsnap import IntermediateRewardFn as TTSnapIntermediate
    from optforge.diffusion.ttsnap import RewardFn as TTSnapRewardFn

    assert RenoRewardFn is ImageRewardFn
    assert TTSnapRewardFn is PromptRewardFn
    assert TTSnapIntermediate is IntermediateRewardFn
    assert len({ImageRewardFn, PromptRewardFn, IntermediateRewardFn}) == 3
    assert callable(reno_module_attr) and reno_module_attr.__name__ == "reno"


def test_package_best_of_n_is_renos_and_sampler_best_of_n_is_ttsnaps():
    from optforge.diffusion import best_of_n, sampler_best_of_n
    from optforge.diffusion.reno import best_of_n as reno_best_of_n
    from optforge.diffusion.ttsnap import sampler_best_of_n as ttsnap_sampler_best_of_n

    assert best_of_n is reno_best_of_n
    assert sampler_best_of_n is ttsnap_sampler_best_of_n
