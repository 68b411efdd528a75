"""Fusion: the math by hand, and the weight never chosen on the queries it is reported on."""

import numpy as np
import pandas as pd
import pytest

from lib.evaluation.fusion import (
    choose_weight,
    cross_validate,
    fit_and_report,
    fuse,
    normalise,
    query_folds,
)
from lib.metrics import evaluate_rankings


def _pairs(queries: dict[str, list[int]]) -> pd.DataFrame:
    rows = [(q, f"{q}-d{i}", lab) for q, labels in queries.items() for i, lab in enumerate(labels)]
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "label"])


def test_normalise_and_fuse_match_hand_computed_values():
    q = ["q1", "q1", "q1", "q2", "q2"]
    a = [1.0, 2.0, 3.0, 5.0, 5.0]  # q2 constant: no order to add, so 0
    b = [10.0, 0.0, 20.0, 1.0, 3.0]
    r = np.sqrt(1.5)  # z of the extremes of three evenly spaced values
    np.testing.assert_allclose(normalise(a, q), [-r, 0, r, 0, 0], atol=1e-12)
    np.testing.assert_allclose(normalise(b, q), [0, -r, r, -1, 1], atol=1e-12)
    np.testing.assert_allclose(fuse(a, b, q, 0.25), [-0.25 * r, -0.75 * r, r, -0.75, 0.75],
                               atol=1e-12)
    np.testing.assert_allclose(normalise(a, q, "minmax"), [0, 0.5, 1, 0, 0])
    np.testing.assert_allclose(fuse(a, b, q, 0.25, "minmax"), [0.375, 0.125, 1.0, 0.0, 0.75])
    np.testing.assert_allclose(fuse(a, b, q, 1.0), normalise(a, q))
    with pytest.raises(ValueError, match="weight"):
        fuse(a, b, q, 1.5)
    with pytest.raises(ValueError, match="normalisation"):
        normalise(a, q, "rank")


def _planted(prefers_a: list[str], prefers_b: list[str]):
    """Per query, 3 candidates labelled 0, 1, 2: one ranker orders them right, the other
    exactly reversed (as does the doc-id tie-break); which one depends on the query."""
    pairs = _pairs({q: [0, 1, 2] for q in prefers_a + prefers_b})
    good, bad = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]
    a, b = [], []
    for q in pairs["query_id"].drop_duplicates():
        a += good if q in prefers_a else bad
        b += bad if q in prefers_a else good
    return pairs, np.array(a), np.array(b)


def test_weight_chosen_on_validation_is_reported_on_test_only():
    val_q = [f"v{i}" for i in range(4)]
    test_q = [f"t{i}" for i in range(4)]
    pairs, a, b = _planted(prefers_a=val_q, prefers_b=test_q)
    is_val = pairs["query_id"].str.startswith("v").to_numpy()
    val, test = pairs[is_val].reset_index(drop=True), pairs[~is_val].reset_index(drop=True)
    fit, fused = fit_and_report(val, a[is_val], b[is_val], test, a[~is_val], b[~is_val])
    assert fit.weight > 0.5  # validation says: trust a
    # ... and the test figure is what that weight really gets there (a is reversed on test),
    # not the 1.0 that choosing on test would have shown
    a_on_test = evaluate_rankings(test, a[~is_val], ("ndcg@10",)).means["ndcg@10"]
    assert fit.estimate == pytest.approx(a_on_test)
    assert fit.estimate < 0.9
    assert choose_weight(test, a[~is_val], b[~is_val])[0] < 0.5  # in-sample would pick b
    assert "validation" in fit.chosen_on and "test" in fit.reported_on
    np.testing.assert_allclose(fused, fuse(a[~is_val], b[~is_val], test["query_id"], fit.weight))
    with pytest.raises(ValueError, match="both"):
        fit_and_report(pairs, a, b, test, a[~is_val], b[~is_val])


def test_cross_validation_never_uses_a_querys_own_preference():
    # leave-one-out: q0 alone prefers a; every other query prefers b
    qs = [f"q{i}" for i in range(5)]
    pairs, a, b = _planted(prefers_a=["q0"], prefers_b=qs[1:])
    fit, fused = cross_validate(pairs, a, b, k=5)
    folds = query_folds(pairs["query_id"], 5)
    w_q0 = fit.fold_weights[folds["q0"]]
    assert w_q0 < 0.5  # chosen on q1..q4, which all prefer b
    rows = (pairs["query_id"] == "q0").to_numpy()
    np.testing.assert_allclose(fused[rows], fuse(a[rows], b[rows], ["q0"] * 3, w_q0))
    per = evaluate_rankings(pairs, fused, ("ndcg@10",)).per_query.set_index("query_id")
    b_q0 = evaluate_rankings(pairs[rows], b[rows], ("ndcg@10",)).means["ndcg@10"]
    assert per.loc["q0", "ndcg@10"] == pytest.approx(b_q0) and b_q0 < 0.9
    # q0's own queries would have chosen the other side: its weight did not come from it
    assert choose_weight(pairs[rows].reset_index(drop=True), a[rows], b[rows])[0] > 0.5
    assert "cross-validation" in fit.reported_on


def test_each_fold_weight_equals_a_choice_on_the_other_folds_only():
    rng = np.random.default_rng(0)
    labels = {f"q{i}": list(rng.integers(0, 3, 6)) for i in range(12)}
    for q in labels:
        labels[q][0] = 2  # every query has a relevant candidate
    pairs = _pairs(labels)
    a = rng.normal(size=len(pairs)) + pairs["label"].to_numpy() * (rng.random(len(pairs)) > 0.5)
    b = rng.normal(size=len(pairs)) + pairs["label"].to_numpy() * 0.5
    fit, _ = cross_validate(pairs, a, b, k=3, seed=4)
    folds = query_folds(pairs["query_id"], 3, seed=4)
    for f, w in enumerate(fit.fold_weights):
        rows = pairs["query_id"].map(folds).to_numpy() != f
        sub = pairs[rows].reset_index(drop=True)
        assert w == choose_weight(sub, a[rows], b[rows])[0]
    assert fit.weight == choose_weight(pairs, a, b)[0]
