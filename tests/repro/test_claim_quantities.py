"""Every registered claim names its measured quantity (issue #25: the report's quantity column)."""

from __future__ import annotations

from optforge.repro.registry import all_reproductions


def test_every_claim_declares_its_quantity_and_description() -> None:
    missing = [
        f"{rep.name}/{claim.name}"
        for rep in all_reproductions()
        for claim in rep.claims
        if not claim.quantity.strip() or not claim.description.strip()
    ]
    assert not missing, f"claims without a quantity or description: {missing}"
