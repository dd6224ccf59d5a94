"""The composition finding on synthetic hybrid results with a known interaction."""

from __future__ import annotations

import math
import random

import pytest

from lawlab.findings.composition import base_method, composition, interactions, verdict
from lawlab.findings.stage import findings

L0 = {"m1": 3.0, "m2": 2.6}
QUANT = {"w8a8": 1.01, "w4g32": 1.12}  # what each setting alone multiplies the loss by


def synthetic(k: float, noise: float = 0.002, seed: int = 0, kind: str = "intrinsic") -> list[dict]:
    """Loss rows: prune alone multiplies L0 by (1 + r)^0.8 (less after RFT), quantisation by
    QUANT[q], and a combined cell by both times exp(k) (k = 0: multiplicative)."""
    rng = random.Random(seed)
    sign = 1 if kind == "intrinsic" else -1
    rows = []

    def row(model, method, ratio, d, quant, value):
        label = f"{method}+{quant}" if quant else method
        rows.append({"model": model, "method": label, "ratio": ratio, "D": d, "quant": quant, "kind": kind,
                     "metric": "cross_entropy", "dataset": "ptb", "evaluator": "ce", "value": value,
                     "L0": L0[model], "law_input": True, "details": {}, "seed": 0})

    for model, l0 in L0.items():
        base = l0 if kind == "intrinsic" else 1 / l0
        row(model, "", 0.0, 0, "", base)
        for q, f in QUANT.items():
            row(model, "", 0.0, 0, q, base * f ** sign)
        for method in ("sp", "unstr"):
            for r in (0.2, 0.4, 0.6):
                for d in (0, 64):
                    p = (1 + r) ** (0.8 if d == 0 else 0.5)
                    row(model, method, r, d, "", base * p ** sign)
                    for q, f in QUANT.items():
                        wobble = math.exp(rng.gauss(0, noise))
                        row(model, method, r, d, q, base * (p * f * math.exp(k)) ** sign * wobble)
    for r in rows:  # L0 is the row's own unpruned value, as load_table sets it
        r["L0"] = L0[r["model"]] if kind == "intrinsic" else 1 / L0[r["model"]]
    return rows


@pytest.mark.parametrize(("k", "expect", "direction"), [
    (0.0, "consistent", "multiplicative"),
    (0.05, "inconsistent", "worse than the product"),
    (-0.05, "inconsistent", "better than the product"),
])
def test_known_interaction_is_recovered_with_its_verdict(k, expect, direction):
    answer = composition(synthetic(k))
    assert answer.verdict == expect
    assert {p.name for p in answer.parts} == {"intrinsic w8a8", "intrinsic w4g32"}
    for part in answer.parts:
        ev = part.evidence
        assert ev["delta"] == pytest.approx(k, abs=0.003)
        assert ev["ci"][0] < k < ev["ci"][1] or abs(ev["delta"] - k) < 0.002
        assert ev["direction"] == direction and ev["cells"] == 2 * 2 * 3 * 2  # models x methods x r x D
        assert ev["clusters"] == 2 * 2 * 3


def test_accuracy_is_signed_so_worse_is_always_positive():
    # accuracy falls: a combined cell 5% below the product is worse, δ > 0
    answer = composition(synthetic(0.05, kind="extrinsic"))
    assert answer.verdict == "inconsistent"
    assert all(p.evidence["delta"] == pytest.approx(0.05, abs=0.003) for p in answer.parts)
    assert all(p.evidence["direction"] == "worse than the product" for p in answer.parts)


def test_a_wide_interval_is_undetermined():
    answer = composition(synthetic(0.0, noise=0.2))
    assert answer.verdict == "undetermined" and "too wide" in answer.reason


def test_cells_without_both_axes_alone_are_not_predicted():
    rows = [r for r in synthetic(0.0) if not (r["quant"] == "w4g32" and r["ratio"] == 0.0)]
    cells = interactions(rows)
    assert {c["quant"] for c in cells} == {"w8a8"}
    one = cells[0]
    assert one["predicted"] == pytest.approx(one["pruned"] * one["quantized"] / one["L0"])


def test_findings_answer_composition_only_for_hybrid_studies_and_keep_it_out_of_the_rqs():
    rows = synthetic(0.05)
    f = findings(rows)
    assert f.to_dict()["composition"]["verdict"] == "inconsistent"
    plain = findings([r for r in rows if not r["quant"]])
    assert "composition" not in plain.to_dict()
    # the pruning questions see the same rows either way
    assert f["rq1"].to_dict() == plain["rq1"].to_dict()


def test_verdict_and_method_label_helpers():
    assert verdict(-0.004, 0.006) == ("consistent", "multiplicative")
    assert verdict(0.002, 0.03) == ("inconsistent", "worse than the product")
    assert verdict(-0.02, 0.02) == ("undetermined", "interval too wide to tell")
    assert verdict(math.nan, 0.0)[0] == "undetermined"
    assert base_method({"method": "wanda-sp+w8a8", "quant": "w8a8"}) == "wanda-sp"
    assert base_method({"method": "+w4g32", "quant": "w4g32"}) == ""
    assert base_method({"method": "wanda-sp", "quant": ""}) == "wanda-sp"
