"""Every registered reproduction's smoke scale runs here, and all its claims must hold."""

import pytest

from optforge.repro import all_reproductions, run_reproduction


@pytest.mark.parametrize("name", [r.name for r in all_reproductions()])
def test_smoke_claims_hold(name):
    from optforge.repro import get

    record = run_reproduction(get(name), "smoke")
    failed = [c for c in record["claims"] if not c["held"]]
    assert record["claims"], f"{name}: the smoke scale evaluates no claim"
    assert not failed, f"{name}: smoke claims failed: {failed}"
