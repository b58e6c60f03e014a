"""Bad inputs across the structured and black-box entry points (issue #24): ``matrix`` (GAMP-RIE,
robust alt-min completion), ``dfo`` (CDSM ask/tell, ``minimize``, the directional attack),
``online`` (learners, domains, streams), ``data`` (Bayes-error estimate, label noise,
perturbations, the adaptive sampler), ``problems`` and ``diffusion`` (the TTSnap tools).

The cases and their classification are those of ``tests/test_bad_inputs.py`` (clean / deep /
silent / state). ``python tests/test_bad_inputs_structured.py`` prints the figures per package.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from optforge.data import (
    AdaptiveBatchSampler,
    bayes_error_estimate,
    make_pair_noise,
    make_symmetric_noise,
    project_perturbation,
)
from optforge.dfo import CDSM, CDSMConfig, directional_attack, minimize, poll_directions
from optforge.diffusion import PruningSchedule, borda_scores, relative_area_gain, simulate_ttsnap
from optforge.matrix import (
    RobustAltMinCompletion,
    gamp_rie,
    robust_altmin_complete,
    sample_quadratic_teacher,
    state_evolution,
)
from optforge.online import OGD, Ball, Box, OptimisticOMD, QuadraticStream, Simplex
from optforge.problems import make_incoherent_lowrank, single_index, tensor_pca
from test_bad_inputs import Case, classify

NAN, INF = math.nan, math.inf
F64 = torch.float64


# --------------------------------------------------------------------------------------------
# matrix


def _teacher() -> Any:
    return sample_quadratic_teacher(8, 0.5, 0.5, generator=torch.Generator().manual_seed(0))


def _completion_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(120, generator=g)[:80]  # distinct (row, col) pairs of a 12 x 10 matrix
    rows, cols = flat // 10, flat % 10
    vals = torch.randn(80, generator=g, dtype=F64)
    return rows, cols, vals


def _fitted_completion() -> RobustAltMinCompletion:
    rows, cols, vals = _completion_data()
    dense = np.full((12, 10), np.nan)
    dense[rows.numpy(), cols.numpy()] = vals.numpy()
    return RobustAltMinCompletion(rank=2, n_iters=2, random_state=0).fit(dense)


def _matrix_cases() -> list[Case]:
    t = _teacher()
    X, y = t.X, t.y
    rows, cols, vals = _completion_data()

    def gamp(**kw: Any) -> Any:
        args = {"X": X, "y": y, "kappa": 0.5, **kw}
        return lambda _: gamp_rie(args.pop("X"), args.pop("y"), **args)

    def altmin(**kw: Any) -> Any:
        args = {"rows": rows, "cols": cols, "vals": vals, "shape": (12, 10), "rank": 2, **kw}
        return lambda _: robust_altmin_complete(**args)

    cases = [
        Case("matrix:gamp_rie:X-int", gamp(X=X.long()), ("X",)),
        Case("matrix:gamp_rie:X-float16", gamp(X=X.half(), y=y.half()), ("X",)),
        Case("matrix:gamp_rie:empty", gamp(X=X[:0], y=y[:0]), ("X",)),
        Case("matrix:gamp_rie:X-nan", gamp(X=X * NAN), ("X",)),
        Case("matrix:gamp_rie:y-meta", gamp(y=y.to("meta")), ("y",)),
        Case("matrix:gamp_rie:kappa-neg", gamp(kappa=-1.0), ("kappa",)),
        Case("matrix:gamp_rie:delta-nan", gamp(delta=NAN), ("delta",)),
        Case("matrix:gamp_rie:damping-1", gamp(damping=1.0), ("damping",)),
        Case("matrix:gamp_rie:max_iter-0", gamp(max_iter=0), ("max_iter",)),
        Case("matrix:gamp_rie:init-bogus", gamp(init="bogus"), ("init",)),
        Case(
            "matrix:gamp_rie:S_true-shape", gamp(S_true=torch.zeros(3, 3, dtype=F64)), ("S_true",)
        ),
        Case("matrix:gamp_rie:max_restarts-float", gamp(max_restarts=1.5), ("max_restarts",)),
        Case("matrix:state_evolution:alpha-neg", lambda _: state_evolution(-1.0, 0.5), ("alpha",)),
        Case(
            "matrix:state_evolution:n_iter-0",
            lambda _: state_evolution(0.5, 0.5, n_iter=0),
            ("n_iter",),
        ),
        Case("matrix:teacher:d-0", lambda _: sample_quadratic_teacher(0, 0.5, 0.5), ("d",)),
        Case(
            "matrix:teacher:alpha-nan", lambda _: sample_quadratic_teacher(8, 0.5, NAN), ("alpha",)
        ),
        Case("matrix:altmin:rank-0", altmin(rank=0), ("rank",)),
        Case("matrix:altmin:rank-too-big", altmin(rank=11), ("rank",)),
        Case(
            "matrix:altmin:rows-out-of-range",
            altmin(rows=rows + 12),
            ("rows",),
            allowed=(IndexError,),
        ),
        Case(
            "matrix:altmin:cols-negative", altmin(cols=cols - 20), ("cols",), allowed=(IndexError,)
        ),
        Case("matrix:altmin:rows-float", altmin(rows=rows.double()), ("rows",)),
        Case("matrix:altmin:vals-nan", altmin(vals=vals * NAN), ("vals",)),
        Case("matrix:altmin:vals-float16", altmin(vals=vals.half()), ("vals",)),
        Case("matrix:altmin:vals-length", altmin(vals=vals[:-1]), ("vals",)),
        Case("matrix:altmin:shape-neg", altmin(shape=(-1, 10)), ("shape",)),
        Case("matrix:altmin:n_iters-0", altmin(n_iters=0), ("n_iters",)),
        Case("matrix:altmin:solver-bogus", altmin(solver="bogus"), ("solver",)),
        Case("matrix:altmin:init-bogus", altmin(init="bogus"), ("init",)),
        Case("matrix:altmin:ridge-neg", altmin(ridge=-1.0), ("ridge",)),
        Case(
            "matrix:altmin:empty",
            altmin(rows=rows[:0], cols=cols[:0], vals=vals[:0]),
            ("vals", "rows"),
        ),
        Case("matrix:altmin:vals-meta", altmin(vals=vals.to("meta")), ("vals",)),
        Case(
            "matrix:RobustAltMin:dtype-float16",
            lambda _: RobustAltMinCompletion(rank=2, dtype="float16").fit(np.ones((4, 4))),
            ("dtype",),
        ),
        Case(
            "matrix:RobustAltMin:rank-neg",
            lambda _: RobustAltMinCompletion(rank=-1).fit(np.ones((4, 4))),
            ("rank",),
        ),
        Case(
            "matrix:RobustAltMin:predict-neg-row",
            lambda m: m.predict_entries([-1], [0]),
            ("rows", "row"),
            setup=_fitted_completion,
            allowed=(IndexError,),
        ),
        Case(
            "matrix:RobustAltMin:predict-row-too-big",
            lambda m: m.predict_entries([12], [0]),
            ("rows", "row"),
            setup=_fitted_completion,
            allowed=(IndexError,),
        ),
        Case(
            "matrix:RobustAltMin:predict-length-mismatch",
            lambda m: m.predict_entries([0, 1], [0]),
            ("rows", "cols"),
            setup=_fitted_completion,
        ),
    ]
    return cases


# --------------------------------------------------------------------------------------------
# dfo


def _sphere(x: Any) -> float:
    return float(np.sum(np.asarray(x, dtype=float) ** 2))


def _cdsm() -> CDSM:
    return CDSM(np.ones(2), budget=20, generator=0)


def _cdsm_snapshot(opt: CDSM) -> Any:
    """The run's state, less the wall clock (which moves by itself)."""
    return {k: v for k, v in opt.state_dict().items() if k != "_elapsed"}


def _asked() -> tuple[CDSM, Any]:
    opt = _cdsm()
    return opt, opt.ask()


def _tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _dfo_cases() -> list[Case]:
    x = torch.randn(3)
    d = torch.randn(2)

    def attack(**kw: Any) -> Any:
        args = {"phi": _tiny_classifier(), "x": x, "direction": d, "radius": 0.5, **kw}
        return lambda _: directional_attack(**args)

    return [
        Case(
            "dfo:CDSM:bounds-length",
            lambda _: CDSM(np.ones(2), bounds=(np.zeros(3), np.ones(3))),
            ("bounds",),
        ),
        Case(
            "dfo:CDSM:bounds-inverted",
            lambda _: CDSM(np.ones(2), bounds=(np.ones(2), np.zeros(2))),
            ("bounds",),
        ),
        Case("dfo:CDSM:x0-nan", lambda _: CDSM(np.array([NAN, 1.0])), ("x0",)),
        Case("dfo:CDSM:x0-empty", lambda _: CDSM(np.zeros(0)), ("x0",)),
        Case("dfo:CDSM:x0-2d", lambda _: CDSM(np.ones((2, 2))), ("x0",)),
        Case("dfo:CDSM:budget-0", lambda _: CDSM(np.ones(2), budget=0), ("budget",)),
        Case("dfo:CDSM:budget-float", lambda _: CDSM(np.ones(2), budget=2.5), ("budget",)),
        Case(
            "dfo:CDSM:generator-str",
            lambda _: CDSM(np.ones(2), generator="abc"),
            ("generator", "seed"),
        ),
        Case(
            "dfo:CDSM:nonfinite-bogus",
            lambda _: CDSM(np.ones(2), nonfinite="bogus"),
            ("nonfinite",),
        ),
        Case("dfo:CDSMConfig:r0-neg", lambda _: CDSMConfig(r0=-1.0), ("r0",)),
        Case("dfo:CDSMConfig:r_min-nan", lambda _: CDSMConfig(r_min=NAN), ("r_min",)),
        Case("dfo:CDSMConfig:poll-bogus", lambda _: CDSMConfig(poll="bogus"), ("poll",)),
        Case(
            "dfo:CDSM:tell-vector",
            lambda ctx: ctx[0].tell(ctx[1], np.array([1.0, 2.0])),
            ("value", "tell", "f"),
            setup=_asked,
            snapshot=lambda ctx: _cdsm_snapshot(ctx[0]),
        ),
        Case(
            "dfo:CDSM:tell-str",
            lambda ctx: ctx[0].tell(ctx[1], "abc"),
            ("value", "tell", "f"),
            setup=_asked,
            snapshot=lambda ctx: _cdsm_snapshot(ctx[0]),
        ),
        Case(
            "dfo:CDSM:tell-outside-bounds",
            lambda ctx: ctx[0].tell(np.array([9.0, 9.0]), 1.0),
            ("bounds",),
            setup=lambda: (lambda o: (o, o.ask()))(
                CDSM(np.ones(2), bounds=(np.zeros(2), 2 * np.ones(2)), budget=20, generator=0)
            ),
            snapshot=lambda ctx: _cdsm_snapshot(ctx[0]),
        ),
        Case("diffusion:borda:1d", lambda _: borda_scores(torch.zeros(4)), ("scores",)),
        Case(
            "diffusion:area_gain:budgets-decreasing",
            lambda _: relative_area_gain([2, 1, 0], [1, 2, 3], [1, 2, 3]),
            ("budgets",),
        ),
        Case("dfo:minimize:fn-not-callable", lambda _: minimize(3, np.ones(2), budget=10), ("fn",)),
        Case(
            "dfo:minimize:bounds-length",
            lambda _: minimize(_sphere, np.ones(2), bounds=[(0, 1)] * 3, budget=10),
            ("bounds",),
        ),
        Case(
            "dfo:minimize:workers-0",
            lambda _: minimize(_sphere, np.ones(2), budget=10, workers=0),
            ("workers",),
        ),
        Case(
            "dfo:minimize:constraint_mode-bogus",
            lambda _: minimize(_sphere, np.ones(2), budget=10, constraint_mode="x"),
            ("constraint_mode",),
        ),
        Case(
            "dfo:minimize:penalty-neg",
            lambda _: minimize(_sphere, np.ones(2), budget=10, penalty_scale=-1.0),
            ("penalty_scale",),
        ),
        Case("dfo:poll_directions:n-0", lambda _: poll_directions(0, 1.0), ("n",)),
        Case("dfo:poll_directions:radius-neg", lambda _: poll_directions(2, -1.0), ("radius",)),
        Case("dfo:attack:radius-neg", attack(radius=-1.0), ("radius",)),
        Case("dfo:attack:radius-nan", attack(radius=NAN), ("radius",)),
        Case("dfo:attack:direction-shape", attack(direction=torch.randn(3)), ("direction",)),
        Case("dfo:attack:x-nan", attack(x=x * NAN), ("x",)),
        Case("dfo:attack:x-int", attack(x=x.long()), ("x",)),
        Case("dfo:attack:x-meta", attack(x=x.to("meta")), ("x",)),
        Case("dfo:attack:method-bogus", attack(method="bogus"), ("method",)),
        Case("dfo:attack:steps-0", attack(method="pgd", steps=0), ("steps",)),
    ]


# --------------------------------------------------------------------------------------------
# online


def _ogd() -> OGD:
    return OGD(torch.zeros(2, dtype=F64), Box())


def _online_snapshot(learner: Any) -> Any:
    return learner.state_dict() if hasattr(learner, "state_dict") else None


def _online_cases() -> list[Case]:
    z = torch.zeros(2, dtype=F64)
    cases = [
        Case("online:Box:inverted", lambda _: Box(1.0, -1.0), ("lower", "upper")),
        Case("online:Box:nan", lambda _: Box(NAN, 1.0), ("lower",)),
        Case("online:Ball:radius-neg", lambda _: Ball(-1.0), ("radius",)),
        Case("online:Ball:radius-nan", lambda _: Ball(NAN), ("radius",)),
        Case("online:Simplex:dim-0", lambda _: Simplex(0), ("dim",)),
        Case("online:OGD:x0-nan", lambda _: OGD(z * NAN, Box()), ("x0",)),
        Case("online:OGD:lr-neg", lambda _: OGD(z, Box(), step="fixed", lr=-1.0), ("lr",)),
        Case("online:OGD:step-bogus", lambda _: OGD(z, Box(), step="bogus"), ("step",)),
        Case(
            "online:OMD:mirror-bogus",
            lambda _: OptimisticOMD(z, Box(), mirror="bogus"),
            ("mirror",),
        ),
        Case("online:OMD:hint-bogus", lambda _: OptimisticOMD(z, Box(), hint="bogus"), ("hint",)),
        Case("online:OMD:delta-neg", lambda _: OptimisticOMD(z, Box(), delta=-1.0), ("delta",)),
        Case("online:OMD:x0-meta", lambda _: OptimisticOMD(z.to("meta"), Box()), ("x0",)),
        Case(
            "online:QuadraticStream:centers-nan",
            lambda _: QuadraticStream(torch.full((3, 2), NAN), Box()),
            ("centers",),
        ),
        Case(
            "online:QuadraticStream:sigma-neg",
            lambda _: QuadraticStream(torch.zeros(3, 2), Box(), sigma=-1.0),
            ("sigma",),
        ),
    ]
    learner_steps = [
        ("grad-nan", lambda opt: opt.update(torch.full((2,), NAN, dtype=F64)), ("grad", "finite")),
        ("grad-shape", lambda opt: opt.update(torch.zeros(3, dtype=F64)), ("grad", "shape")),
    ]
    for name, call, names in learner_steps:
        cases.append(
            Case(f"online:OGD:update-{name}", call, names, setup=_ogd, snapshot=_online_snapshot)
        )
    return cases


# --------------------------------------------------------------------------------------------
# data, problems, diffusion


def _data_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(20, 3, generator=g)
    labels = torch.randint(0, 3, (20,), generator=g)
    x = torch.rand(4, 3, generator=g)
    return [
        Case(
            "data:bayes_error:labels-out-of-range",
            lambda _: bayes_error_estimate(feats, labels + 5, 3),
            ("labels",),
            allowed=(IndexError,),
        ),
        Case(
            "data:bayes_error:labels-float",
            lambda _: bayes_error_estimate(feats, labels.double(), 3),
            ("labels",),
        ),
        Case(
            "data:bayes_error:features-nan",
            lambda _: bayes_error_estimate(feats * NAN, labels, 3),
            ("features",),
        ),
        Case(
            "data:bayes_error:length",
            lambda _: bayes_error_estimate(feats, labels[:-1], 3),
            ("labels",),
        ),
        Case(
            "data:bayes_error:sigma-neg",
            lambda _: bayes_error_estimate(feats, labels, 3, sigma=-1.0),
            ("sigma",),
        ),
        Case(
            "data:bayes_error:empty",
            lambda _: bayes_error_estimate(feats[:0], labels[:0], 3),
            ("features",),
        ),
        Case(
            "data:bayes_error:kernel-bogus",
            lambda _: bayes_error_estimate(feats, labels, 3, kernel="bogus"),
            ("kernel",),
        ),
        Case(
            "data:symmetric_noise:rate-1.5",
            lambda _: make_symmetric_noise(labels, 1.5, 3),
            ("rate",),
        ),
        Case(
            "data:symmetric_noise:rate-nan",
            lambda _: make_symmetric_noise(labels, NAN, 3),
            ("rate",),
        ),
        Case(
            "data:symmetric_noise:labels-out",
            lambda _: make_symmetric_noise(labels + 3, 0.2, 3),
            ("labels",),
            allowed=(IndexError,),
        ),
        Case(
            "data:pair_noise:mapping-out",
            lambda _: make_pair_noise(labels, 0.2, {0: 7}, num_classes=3),
            ("mapping",),
        ),
        Case("data:project:eps-neg", lambda _: project_perturbation(x, x, -1.0), ("eps",)),
        Case(
            "data:project:norm-bogus",
            lambda _: project_perturbation(x, x, 0.1, norm="bogus"),
            ("norm",),
        ),
        Case("data:project:shape", lambda _: project_perturbation(x[:2], x, 0.1), ("delta", "x")),
        Case("data:sampler:batch-0", lambda _: AdaptiveBatchSampler(10, 0), ("batch_size",)),
        Case(
            "data:sampler:rank-out",
            lambda _: AdaptiveBatchSampler(10, 2, num_replicas=2, rank=2),
            ("rank",),
        ),
        Case("data:sampler:seed-str", lambda _: AdaptiveBatchSampler(10, 2, seed="abc"), ("seed",)),
    ]


def _problem_cases() -> list[Case]:
    return [
        Case(
            "problems:lowrank:k-too-big", lambda _: make_incoherent_lowrank(5, 4, 6, p=0.5), ("k",)
        ),
        Case("problems:lowrank:p-1.5", lambda _: make_incoherent_lowrank(5, 4, 2, p=1.5), ("p",)),
        Case(
            "problems:lowrank:cond-0.5",
            lambda _: make_incoherent_lowrank(5, 4, 2, cond=0.5, p=0.5),
            ("cond",),
        ),
        Case(
            "problems:lowrank:noise-nan",
            lambda _: make_incoherent_lowrank(5, 4, 2, noise=NAN, p=0.5),
            ("noise",),
        ),
        Case("problems:tensor_pca:d-0", lambda _: tensor_pca(0, 3, 1.0), ("d",)),
        Case(
            "problems:tensor_pca:seed-str", lambda _: tensor_pca(4, 3, 1.0, seed="abc"), ("seed",)
        ),
        Case(
            "problems:single_index:link-bogus",
            lambda _: single_index(4, 10, link="bogus"),
            ("link",),
        ),
        Case(
            "problems:single_index:noise-neg",
            lambda _: single_index(4, 10, noise_std=-1.0),
            ("noise_std",),
        ),
    ]


def _diffusion_cases() -> list[Case]:
    final = torch.randn(8, 3)
    return [
        Case("diffusion:borda:nan", lambda _: borda_scores(torch.full((3, 4), NAN)), ("scores",)),
        Case(
            "diffusion:area_gain:length",
            lambda _: relative_area_gain([1, 2, 3], [1, 2], [1, 2, 3]),
            ("rewards_method", "budgets"),
        ),
        Case(
            "diffusion:area_gain:nan",
            lambda _: relative_area_gain([1, 2], [NAN, 1], [1, 2]),
            ("rewards_method",),
        ),
        Case(
            "diffusion:schedule:keep-1.5",
            lambda _: PruningSchedule(steps=(1,), keep=(1.5,)),
            ("keep",),
        ),
        Case(
            "diffusion:schedule:length",
            lambda _: PruningSchedule(steps=(1, 2), keep=(0.5,)),
            ("keep", "steps"),
        ),
        Case("diffusion:simulate:n-0", lambda _: simulate_ttsnap(None, final, None, 0), ("n",)),
        Case(
            "diffusion:simulate:final-nan",
            lambda _: simulate_ttsnap(None, final * NAN, None, 2),
            ("final",),
        ),
    ]


CASES: list[Case] = (
    _matrix_cases()
    + _dfo_cases()
    + _online_cases()
    + _data_cases()
    + _problem_cases()
    + _diffusion_cases()
)


def _valid_calls() -> list[tuple[str, Any]]:
    t = _teacher()
    rows, cols, vals = _completion_data()
    return [
        ("gamp_rie-float32", lambda: gamp_rie(t.X.float(), t.y.float(), 0.5, max_iter=3)),
        ("altmin", lambda: robust_altmin_complete(rows, cols, vals, (12, 10), 2, n_iters=2)),
        ("predict-last-row", lambda: _fitted_completion().predict_entries([11], [9])),
        ("cdsm-ask-tell", lambda: (lambda o: o.tell(o.ask(), 1.0))(_cdsm())),
        ("cdsm-tell-numpy-scalar", lambda: (lambda o: o.tell(o.ask(), np.float64(1.0)))(_cdsm())),
        ("cdsm-tell-0d-tensor", lambda: (lambda o: o.tell(o.ask(), torch.tensor(1.0)))(_cdsm())),
        ("minimize", lambda: minimize(_sphere, np.ones(2), budget=10)),
        ("sampler", lambda: AdaptiveBatchSampler(10, 2, seed=0)),
        ("gamp_rie-int-labels", lambda: gamp_rie(t.X, t.y.round().long(), 0.5, max_iter=3)),
        ("ogd-int-x0-cast", lambda: OGD(torch.zeros(2, dtype=torch.long), Box())),
        ("cdsm-tell-unasked-point", lambda: (lambda o: o.tell(np.array([0.5, 0.5]), 0.1))(_cdsm())),
        ("borda-empty-pool", lambda: borda_scores(torch.zeros(0, 4))),
        ("simulate-n-capped", lambda: simulate_ttsnap(None, torch.randn(8, 3), None, 9, repeats=2)),
        ("simulate-n-all", lambda: simulate_ttsnap(None, torch.randn(8, 3), None, 3, repeats=2)),
    ]


VALID = _valid_calls()


def test_case_ids_are_unique():
    counts = Counter(case.id for case in CASES)
    assert not [i for i, n in counts.items() if n > 1]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_rejected_cleanly(case):
    outcome, detail = classify(case)
    assert outcome == "clean", f"{outcome}: {detail}"


@pytest.mark.parametrize(("name", "call"), VALID, ids=[name for name, _ in VALID])
def test_valid_input_is_accepted(name, call):
    call()


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    per_package: dict[str, Counter] = {}
    for case in CASES:
        outcome, detail = classify(case)
        per_package.setdefault(case.package, Counter())[outcome] += 1
        if outcome != "clean" and "-v" in sys.argv:
            print(f"{outcome:7s} {case.id}: {detail[:200]}")
    keys = ("clean", "deep", "silent", "state", "setup")
    total: Counter = Counter()
    print(f"{'package':12s} {'tried':>6s} " + " ".join(f"{k:>6s}" for k in keys))
    for package, counts in sorted(per_package.items()):
        total += counts
        print(
            f"{package:12s} {sum(counts.values()):6d} " + " ".join(f"{counts[k]:6d}" for k in keys)
        )
    print(f"{'all':12s} {sum(total.values()):6d} " + " ".join(f"{total[k]:6d}" for k in keys))
    for name, call in VALID:
        try:
            call()
        except Exception as err:
            print(f"valid input refused: {name}: {type(err).__name__}: {err}")


if __name__ == "__main__":
    main()
