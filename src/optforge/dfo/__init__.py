"""Derivative-free and surrogate-based black-box optimization."""

from optforge.dfo.attacks import DirectionalAttack, directional_attack
from optforge.dfo.cdsm import CDSM, CDSMConfig, minimize, poll_directions
from optforge.dfo.direct_search import Budget, OptimResult
from optforge.dfo.hybrid import (
    HybridAttackCDSM,
    HybridConfig,
    attacks_only,
    cdsm,
    hybrid_attack_cdsm,
    random_line_search,
)
from optforge.dfo.surrogate import SurrogateProblem

__all__ = [
    "CDSM",
    "Budget",
    "CDSMConfig",
    "DirectionalAttack",
    "HybridAttackCDSM",
    "HybridConfig",
    "OptimResult",
    "SurrogateProblem",
    "attacks_only",
    "cdsm",
    "directional_attack",
    "hybrid_attack_cdsm",
    "minimize",
    "poll_directions",
    "random_line_search",
]
