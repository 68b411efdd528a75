"""Fusion of a reranker with a first stage: per-query normalised scores, one honestly chosen weight.

`fused = w * norm(a) + (1 - w) * norm(b)`, where `a` is usually the reranker and `b` BM25 or the
bi-encoder, and `norm` rescales each query's candidate scores on their own (raw BM25 and logits
live on unrelated scales, and only the order within a query matters). The weight is chosen on a
grid by mean NDCG@10 (`lib.metrics.evaluate_rankings`, the code every other number uses) and must
never be reported on the queries it was chosen on: `fit_and_report` chooses on validation and
reports on test; `cross_validate` (no test split) chooses, for each of K query folds, on the
other folds only, so every query's fused score comes from a weight it did not help choose.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from lib.metrics import evaluate_rankings

NORMALISATIONS = ("zscore", "minmax")
DEFAULT_NORMALISATION = "zscore"
DEFAULT_GRID = tuple(round(i / 10, 1) for i in range(11))
DEFAULT_METRIC = "ndcg@10"
DEFAULT_FOLDS = 5


def normalise(scores, query_ids, method: str = DEFAULT_NORMALISATION) -> np.ndarray:
    """Each query's scores rescaled on their own: z-score (mean 0, population std 1) or min-max
    to [0, 1]. A query whose candidates all score the same gets 0 everywhere (no order to add)."""
    if method not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, "
                         f"got {method!r}")
    s = pd.Series(np.asarray(scores, dtype=np.float64))
    q = pd.Series(np.asarray(query_ids).astype(str))
    if len(s) != len(q):
        raise ValueError(f"{len(s)} scores but {len(q)} query ids")
    g = s.groupby(q)
    if method == "zscore":
        centre, spread = g.transform("mean"), g.transform(lambda x: x.std(ddof=0))
    else:
        centre = g.transform("min")
        spread = g.transform("max") - centre
    spread_np = spread.to_numpy()
    out = np.zeros(len(s))
    ok = spread_np > 0
    out[ok] = (s.to_numpy()[ok] - centre.to_numpy()[ok]) / spread_np[ok]
    return out


def fuse(score_a, score_b, query_ids, weight: float,
         method: str = DEFAULT_NORMALISATION) -> np.ndarray:
    """weight * norm(a) + (1 - weight) * norm(b), normalised per query."""
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"the fusion weight must be in [0, 1], got {weight}")
    w = float(weight)
    return w * normalise(score_a, query_ids, method) + (1 - w) * normalise(score_b, query_ids,
                                                                           method)


def per_query_curve(pairs: pd.DataFrame, score_a, score_b, grid=DEFAULT_GRID,
                    method: str = DEFAULT_NORMALISATION, metric: str = DEFAULT_METRIC,
                    rel_threshold: int = 1, extra_qrels: pd.DataFrame | None = None,
                    ) -> pd.DataFrame:
    """Per query (rows, index query_id) the metric of the fusion at every grid weight (columns).
    A query's value depends only on its own candidates, so any subset's mean is exact.
    `extra_qrels`: relevant documents that are not candidates (retrieve-then-rerank), counted
    as every other evaluation counts them (lib.metrics.evaluate_rankings)."""
    cols = {}
    for w in grid:
        res = evaluate_rankings(pairs, fuse(score_a, score_b, pairs["query_id"], w, method),
                                (metric,), rel_threshold, name=f"fuse-{w}",
                                extra_qrels=extra_qrels)
        cols[float(w)] = res.per_query.set_index("query_id")[metric]
    return pd.DataFrame(cols)


def best_weight(curve: pd.DataFrame, queries=None) -> float:
    """The grid weight with the highest mean over `queries` (all rows when None); ties go to
    the weight closest to 0.5 (the least extreme), then the smaller one."""
    sub = curve if queries is None else curve.loc[curve.index.isin(list(queries))]
    if sub.empty:
        raise ValueError("no query (with a relevant candidate) to choose the fusion weight on")
    means = sub.mean(axis=0)
    top = means.max()
    tied = [float(w) for w, v in means.items() if np.isclose(v, top, rtol=0, atol=1e-12)]
    return min(tied, key=lambda w: (abs(w - 0.5), w))


def choose_weight(pairs: pd.DataFrame, score_a, score_b, grid=DEFAULT_GRID,
                  method: str = DEFAULT_NORMALISATION, metric: str = DEFAULT_METRIC,
                  rel_threshold: int = 1, extra_qrels: pd.DataFrame | None = None,
                  ) -> tuple[float, dict[float, float]]:
    """(best weight, mean metric per grid weight) on the queries of `pairs` (all of them are
    'seen': never report the returned weight's score on these queries)."""
    curve = per_query_curve(pairs, score_a, score_b, grid, method, metric, rel_threshold,
                            extra_qrels)
    return best_weight(curve), {float(w): float(v) for w, v in curve.mean(axis=0).items()}


@dataclass
class FusionFit:
    """A chosen weight and where it came from / where its figure was measured."""

    weight: float
    normalisation: str
    metric: str
    chosen_on: str  # e.g. "validation split (100 queries)"
    reported_on: str  # e.g. "test split (50 queries)" or "5-fold cross-validation ..."
    estimate: float | None  # the metric on reported_on, with weights never chosen there
    grid: list[float] = field(default_factory=list)
    curve: dict[str, float] = field(default_factory=dict)  # chosen_on mean per weight
    fold_weights: list[float] = field(default_factory=list)  # cross-validation only
    a: str | None = None
    b: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def sentence(self) -> str:
        est = "n/a" if self.estimate is None else f"{self.estimate:.4f}"
        where = (self.chosen_on if self.chosen_on.startswith("fixed")
                 else f"chosen on {self.chosen_on}")
        return (f"fusion weight {self.weight:g} on {self.a or 'A'} ({self.normalisation} per "
                f"query) {where}; {self.metric} {est} reported on {self.reported_on}")


def fit_and_report(choose_pairs: pd.DataFrame, choose_a, choose_b, report_pairs: pd.DataFrame,
                   report_a, report_b, *, grid=DEFAULT_GRID,
                   method: str = DEFAULT_NORMALISATION, metric: str = DEFAULT_METRIC,
                   rel_threshold: int = 1, chosen_label: str = "validation split",
                   reported_label: str = "test split", choose_missed: pd.DataFrame | None = None,
                   report_missed: pd.DataFrame | None = None) -> tuple[FusionFit, np.ndarray]:
    """Weight chosen on one split, scored on another: (fit, fused scores of report_pairs).
    `*_missed`: each split's relevant documents its candidates lack (extra_qrels)."""
    overlap = (set(choose_pairs["query_id"].astype(str))
               & set(report_pairs["query_id"].astype(str)))
    if overlap:
        raise ValueError(f"{len(overlap)} queries are in both the split that chooses the fusion "
                         "weight and the one it is reported on: the figure would be optimistic")
    w, curve = choose_weight(choose_pairs, choose_a, choose_b, grid, method, metric,
                             rel_threshold, choose_missed)
    fused = fuse(report_a, report_b, report_pairs["query_id"], w, method)
    res = evaluate_rankings(report_pairs, fused, (metric,), rel_threshold,
                            extra_qrels=report_missed)
    fit = FusionFit(
        weight=w, normalisation=method, metric=metric,
        chosen_on=f"{chosen_label} ({choose_pairs['query_id'].nunique()} queries)",
        reported_on=f"{reported_label} ({res.n_queries} queries)",
        estimate=float(res.means[metric]) if res.n_queries else None,
        grid=[float(g) for g in grid], curve={f"{k:g}": v for k, v in curve.items()},
    )
    return fit, fused


def query_folds(query_ids, k: int = DEFAULT_FOLDS, seed: int = 13) -> dict[str, int]:
    """Each distinct query id -> a fold in 0..k-1 (shuffled with the seed, sizes within one)."""
    qs = sorted(set(np.asarray(query_ids).astype(str)))
    if len(qs) < 2:
        raise ValueError("cross-validating a fusion weight needs at least 2 queries")
    k = max(2, min(int(k), len(qs)))
    order = np.random.default_rng(seed).permutation(len(qs))
    return {qs[i]: int(pos % k) for pos, i in enumerate(order)}


def cross_validate(pairs: pd.DataFrame, score_a, score_b, *, k: int = DEFAULT_FOLDS,
                   seed: int = 13, grid=DEFAULT_GRID, method: str = DEFAULT_NORMALISATION,
                   metric: str = DEFAULT_METRIC, rel_threshold: int = 1,
                   label: str = "this split", extra_qrels: pd.DataFrame | None = None,
                   ) -> tuple[FusionFit, np.ndarray]:
    """No held-out split: K query folds, each fold's fused scores use the weight chosen on the
    other folds. Returns (fit, out-of-fold fused scores); fit.estimate is their mean metric and
    fit.weight the one chosen on every query (what to serve; its own figure is not reported)."""
    qid = pairs["query_id"].astype(str).to_numpy()
    folds = query_folds(qid, k, seed)
    n_folds = max(folds.values()) + 1
    curve = per_query_curve(pairs, score_a, score_b, grid, method, metric, rel_threshold,
                            extra_qrels)
    fused = np.zeros(len(pairs))
    fold_weights = []
    for f in range(n_folds):
        held = {q for q, v in folds.items() if v == f}
        others = [q for q, v in folds.items() if v != f]
        w = best_weight(curve, others) if curve.index.isin(others).any() else 0.5
        fold_weights.append(w)
        rows = np.isin(qid, list(held))
        fused[rows] = fuse(np.asarray(score_a, np.float64)[rows],
                           np.asarray(score_b, np.float64)[rows], qid[rows], w, method)
    res = evaluate_rankings(pairs, fused, (metric,), rel_threshold, extra_qrels=extra_qrels)
    fit = FusionFit(
        weight=best_weight(curve), normalisation=method, metric=metric,
        chosen_on=f"{label} (all {len(folds)} queries; served weight)",
        reported_on=(f"{n_folds}-fold query cross-validation on {label} ({res.n_queries} "
                     "queries; each fold's weight chosen on the other folds)"),
        estimate=float(res.means[metric]) if res.n_queries else None,
        grid=[float(g) for g in grid],
        curve={f"{w:g}": float(v) for w, v in curve.mean(axis=0).items()},
        fold_weights=fold_weights,
    )
    return fit, fused
