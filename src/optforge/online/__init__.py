"""Online learning: learners, domains and loss streams."""

from optforge.online.domains import Ball, Box, Domain, Simplex, Unconstrained
from optforge.online.learners import (
    FTRL,
    OGD,
    ONS,
    OnlineLearner,
    OptimisticEnsemble,
    OptimisticFTRL,
    OptimisticOGD,
    OptimisticOMD,
    OptimisticONS,
    ensemble_step_sizes,
)
from optforge.online.streams import (
    SEA_KINDS,
    LeastSquaresStream,
    QuadraticStream,
    online_regret,
    play_online,
    run_online,
    sea_least_squares,
    sea_means,
    sea_stream,
)

__all__ = [
    "FTRL",
    "OGD",
    "ONS",
    "SEA_KINDS",
    "Ball",
    "Box",
    "Domain",
    "LeastSquaresStream",
    "OnlineLearner",
    "OptimisticEnsemble",
    "OptimisticFTRL",
    "OptimisticOGD",
    "OptimisticOMD",
    "OptimisticONS",
    "QuadraticStream",
    "Simplex",
    "Unconstrained",
    "ensemble_step_sizes",
    "online_regret",
    "play_online",
    "run_online",
    "sea_least_squares",
    "sea_means",
    "sea_stream",
]
