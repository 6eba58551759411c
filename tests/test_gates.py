"""convkit.gates.judge: the one verdict export, evaluate and the recommendation apply."""

from __future__ import annotations

import math

import pytest

from convkit import gates


def test_judge_passes_within_the_limits_and_says_why_it_fails():
    limits = gates.Limits(max_drop_points=0.3, max_disagreement_points=1.0)
    ok = gates.judge(limits, accuracy=0.9870, reference_accuracy=0.9890, agreement=0.995)
    assert ok.passed and ok.reasons == []
    assert ok.checks["drop_points"] == pytest.approx(0.2) and ok.checks["disagreement_points"] == pytest.approx(0.5)
    bad = gates.judge(limits, accuracy=0.9800, reference_accuracy=0.9890, agreement=0.98)
    assert not bad.passed and len(bad.reasons) == 2
    assert "0.90 points below" in bad.reasons[0] and "2.00 points of images" in bad.reasons[1]
    assert bad.to_dict()["passed"] is False and "pass" not in bad.to_dict()


def test_judge_reports_ungated_checks_and_fails_nan():
    int8 = gates.Limits.for_precision("int8")  # int8 agreement is reported, not gated
    assert int8.max_disagreement_points is None and int8.max_drop_points == gates.MAX_ACC_DROP["int8"]
    v = gates.judge(int8, accuracy=0.99, reference_accuracy=0.99, agreement=0.5)
    assert v.passed and v.checks["disagreement_points"] == pytest.approx(50.0)
    assert not gates.judge(gates.Limits(atol=1e-4), max_abs_diff=math.nan).passed
    assert not gates.judge(gates.Limits(max_disagreement_points=1.0), agreement=math.nan).passed
    # an unknown precision (a foreign model's "model") is judged by fp32's limits
    assert gates.Limits.for_precision("model", {"fp32": 0.5}).max_drop_points == 0.5
