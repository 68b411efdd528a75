"""Paired comparison of two rankers on the same queries: test, confidence interval, verdict.

Per-query metric values come from lib.metrics (ranx). The paired tests:
  fisher   Fisher's randomisation test, as ranx defines it (swap the two systems' scores of each
           query with probability 1/2; p = share of swaps whose |mean difference| >= the observed).
           ranx's own implementation draws its permutations in a numba parallel loop that ignores
           its seed, so its p-values change from call to call (0.0955, 0.0846, 0.0890 for the same
           input here); the CLI and the page must print the same number, so the same test runs
           here with numpy's seeded generator, and exactly (all 2^n swaps) for n <= 16 queries.
  student  the two-sided paired t-test, ranx.statistical_tests.paired_student_t_test.
The 95% confidence interval of the mean difference is a seeded percentile bootstrap over queries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

STAT_TESTS = ("fisher", "student")
STAT_TEST_LABELS = {
    "fisher": "Fisher's randomisation test (paired, two-sided)",
    "student": "paired Student's t-test (two-sided)",
}
DEFAULT_PERMUTATIONS = 10_000
DEFAULT_BOOTSTRAP = 10_000
EXACT_MAX_N = 16
_CHUNK = 1000


@dataclass
class Comparison:
    model: str
    baseline: str
    metric: str
    model_mean: float
    baseline_mean: float
    delta: float
    rel_change: float | None  # delta / baseline mean; None when the baseline scores 0
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    wins: int
    ties: int
    losses: int
    n_queries: int
    stat_test: str
    max_p: float

    def to_json(self) -> dict:
        return {k: (_round(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _round(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 6)


def randomization_test(
    model: np.ndarray, baseline: np.ndarray, n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 42,
) -> float:
    """Two-sided paired randomisation test of the mean difference.

    Exact over all 2^n sign assignments when n <= 16; else `n_permutations` seeded random ones,
    with p = (hits + 1) / (n_permutations + 1) so a sampled p is never 0.
    """
    d = np.asarray(model, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = len(d)
    if n == 0:
        return float("nan")
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    if not np.any(d):
        return 1.0
    if n <= EXACT_MAX_N:
        codes = np.arange(2**n, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((codes >> np.arange(n)) & 1)
        stats = np.abs(signs @ d) / n
        return float(np.mean(stats >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_permutations, _CHUNK):
        m = min(_CHUNK, n_permutations - start)
        signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1
        hits += int(np.sum(np.abs(signs @ d) / n >= observed - tol))
    return (hits + 1) / (n_permutations + 1)


def student_test(model: np.ndarray, baseline: np.ndarray) -> float:
    """ranx's paired t-test (scipy ttest_rel); identical differences give p = 0 or 1, not NaN."""
    from ranx.statistical_tests import paired_student_t_test

    d = np.asarray(model, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if len(d) < 2:
        return float("nan")
    if np.allclose(d, d[0]):
        return 1.0 if d[0] == 0 else 0.0
    from lib.metrics import RANX_LOCK

    with RANX_LOCK:  # numba compiles on first use; concurrent compiles abort the process
        p, _ = paired_student_t_test(np.asarray(model, float), np.asarray(baseline, float), 0.05)
    return float(p)


def bootstrap_ci(
    diff: np.ndarray, n_resamples: int = DEFAULT_BOOTSTRAP, seed: int = 13, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-query differences."""
    d = np.asarray(diff, dtype=np.float64)
    if len(d) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        m = min(_CHUNK, n_resamples - start)
        idx = rng.integers(0, len(d), size=(m, len(d)))
        means[start:start + m] = d[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def compare_pair(
    per_query: pd.DataFrame,
    model: str,
    baseline: str,
    metric: str,
    *,
    stat_test: str = "fisher",
    max_p: float = 0.05,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 13,
) -> Comparison:
    """`per_query` has one row per query and columns '<ranker>|<metric>'."""
    if stat_test not in STAT_TESTS:
        raise ValueError(f"stat_test must be one of {', '.join(STAT_TESTS)}, got {stat_test!r}")
    a = per_query[f"{model}|{metric}"].to_numpy(np.float64)
    b = per_query[f"{baseline}|{metric}"].to_numpy(np.float64)
    d = a - b
    if stat_test == "fisher":
        p = randomization_test(a, b, n_permutations, seed)
    else:
        p = student_test(a, b)
    lo, hi = bootstrap_ci(d, n_bootstrap, seed)
    base_mean = float(b.mean()) if len(b) else float("nan")
    delta = float(d.mean()) if len(d) else float("nan")
    return Comparison(
        model=model, baseline=baseline, metric=metric,
        model_mean=float(a.mean()) if len(a) else float("nan"), baseline_mean=base_mean,
        delta=delta, rel_change=delta / base_mean if base_mean else None,
        ci_low=lo, ci_high=hi, p_value=p, significant=bool(p <= max_p),
        wins=int(np.sum(a > b)), ties=int(np.sum(a == b)), losses=int(np.sum(a < b)),
        n_queries=len(d), stat_test=stat_test, max_p=max_p,
    )


def format_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def metric_label(metric: str) -> str:
    """ndcg@10 -> NDCG@10, mrr@10 -> MRR@10, precision@5 -> P@5, recall@100 -> Recall@100."""
    name, _, k = metric.partition("@")
    labels = {"ndcg": "NDCG", "mrr": "MRR", "map": "MAP", "precision": "P", "recall": "Recall",
              "hit_rate": "HitRate", "hits": "Hits", "f1": "F1", "r-precision": "R-Prec",
              "bpref": "BPref", "ndcg_burges": "NDCG-Burges", "dcg": "DCG"}
    base = labels.get(name, name)
    return f"{base}@{k}" if k else base


def verdict(c: Comparison, n_excluded: int, split_label: str) -> str:
    """One sentence a stakeholder can act on, with the evidence in it."""
    m = metric_label(c.metric)
    evidence = f"95% CI {c.ci_low:+.3f}..{c.ci_high:+.3f}, {format_p(c.p_value)}"
    scope = f"over {c.n_queries:,} {split_label} queries; {n_excluded:,} excluded"
    if c.significant and c.delta > 0:
        return f"{c.model} beats {c.baseline} on {m} by {c.delta:+.3f} ({evidence}) {scope}."
    if c.significant and c.delta < 0:
        return (f"{c.model} is worse than {c.baseline} on {m} by {c.delta:+.3f} ({evidence}) "
                f"{scope}.")
    return (f"{c.model} does not differ significantly from {c.baseline} on {m}: "
            f"{c.delta:+.3f} ({evidence}) {scope}.")
