"""Proof that an export ranks like its original, and how much faster it is, in one process.

Both models score the same pairs here, one after the other: NDCG@10/MRR@10 by lib.metrics (the
numbers Evaluate shows) with the paired randomisation test of lib.evaluation.compare, Spearman
correlation and max |difference| of the scores, the share of queries whose top 10 (in order) is
identical, throughput over all the pairs at one batch size, and the latency of one query with
100 candidates (p50/p95 over repeats). Only numbers from the same process and machine compare.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

DEFAULT_TOLERANCE = 0.005  # NDCG@10 an export may lose and still be recommended
# bench/results/export.log (MiniLM, 15 demo queries): every fp32 export 1.0, openvino-int8
# (calibrated) 0.989, onnx-int8 (dynamic) 0.939 with no query's top 10 identical and NDCG@10
# +0.006 by luck. Below 0.98 an export reorders enough pairs to be a different ranker.
DEFAULT_MIN_SPEARMAN = 0.98
DEFAULT_BATCH = 32
LATENCY_CANDIDATES = 100
DEFAULT_REPEATS = 10


@dataclass
class Proof:
    format: str
    path: str
    n_queries: int
    n_pairs: int
    ndcg: dict  # original, export, delta
    mrr: dict
    p_value: float  # Fisher randomisation test on per-query NDCG@10
    spearman: float
    max_abs_diff: float
    top10_agreement: float
    pairs_per_s: dict  # original, export
    speedup: float
    latency_ms: dict  # p50, p95 (export); original_p50, original_p95
    batch_size: int
    split: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    def cli_json(self) -> dict:
        """The keys `reranker-studio export --json` prints (issue 14)."""
        return {"path": self.path, "format": self.format,
                "ndcg@10": dict(self.ndcg), "spearman": self.spearman,
                "top10_agreement": self.top10_agreement, "pairs_per_s": dict(self.pairs_per_s),
                "speedup": self.speedup,
                "latency_ms": {"p50": self.latency_ms["p50"], "p95": self.latency_ms["p95"]}}


def top_k_lists(pairs: pd.DataFrame, scores, k: int = 10) -> dict[str, tuple[str, ...]]:
    """Each query's top-k doc ids, best first; ties broken by doc id (as lib.metrics does)."""
    frame = pd.DataFrame({"q": pairs["query_id"].astype(str).to_numpy(),
                          "d": pairs["doc_id"].astype(str).to_numpy(),
                          "s": np.asarray(scores, dtype=np.float64)})
    frame = frame.sort_values(["q", "s", "d"], ascending=[True, False, True], kind="stable")
    return {q: tuple(g["d"].head(k)) for q, g in frame.groupby("q", sort=False)}


def top_k_agreement(pairs: pd.DataFrame, a, b, k: int = 10) -> float:
    """Share of queries whose top k is the same list, in the same order, under both scores."""
    ta, tb = top_k_lists(pairs, a, k), top_k_lists(pairs, b, k)
    if not ta:
        return float("nan")
    return sum(ta[q] == tb.get(q) for q in ta) / len(ta)


def _timed_predict(model, pairs: list[tuple[str, str]],
                   batch_size: int) -> tuple[np.ndarray, float]:
    model.predict(pairs[:batch_size], batch_size=batch_size, show_progress_bar=False)  # warm-up
    t0 = time.perf_counter()
    scores = model.predict(pairs, batch_size=batch_size, show_progress_bar=False)
    return np.asarray(scores, dtype=np.float64).reshape(-1), time.perf_counter() - t0


def latency_ms(model, pairs: list[tuple[str, str]], repeats: int = DEFAULT_REPEATS) -> dict:
    """p50/p95 milliseconds of scoring one query's candidates in one call."""
    model.predict(pairs, batch_size=len(pairs), show_progress_bar=False)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(pairs, batch_size=len(pairs), show_progress_bar=False)
        times.append(1000 * (time.perf_counter() - t0))
    return {"p50": round(float(np.percentile(times, 50)), 2),
            "p95": round(float(np.percentile(times, 95)), 2)}


def latency_pairs(pairs: pd.DataFrame, n: int = LATENCY_CANDIDATES) -> list[tuple[str, str]]:
    """One query (the one with most candidates) against n candidates: its own, then other
    queries' documents to fill up to n (a realistic first-stage depth)."""
    counts = pairs.groupby("query_id").size().sort_values(ascending=False, kind="stable")
    qid = counts.index[0]
    own = pairs[pairs["query_id"] == qid]
    query = str(own["query"].iloc[0])
    docs = list(own["document"].astype(str))
    others = [d for d in pairs["document"].astype(str) if d not in set(docs)]
    docs = (docs + others)[:n]
    while len(docs) < n:
        docs += docs[: n - len(docs)]
    return [(query, d) for d in docs]


def prove(original, exported, pairs: pd.DataFrame, *, fmt: str, path: str = "",
          batch_size: int = DEFAULT_BATCH, repeats: int = DEFAULT_REPEATS,
          split: str = "", original_scores: tuple[np.ndarray, float] | None = None) -> Proof:
    """Score `pairs` (query_id, doc_id, query, document, label) with both models and compare.
    `original_scores` (scores, seconds) reuses the original's pass across several exports."""
    from scipy.stats import spearmanr

    from lib.evaluation.compare import randomization_test
    from lib.metrics import evaluate_rankings

    pairs = pairs.reset_index(drop=True)
    work = list(zip(pairs["query"].astype(str), pairs["document"].astype(str), strict=True))
    if original_scores is None:
        original_scores = _timed_predict(original, work, batch_size)
    s_orig, t_orig = original_scores
    s_exp, t_exp = _timed_predict(exported, work, batch_size)
    ev_o = evaluate_rankings(pairs, s_orig, name="original")
    ev_e = evaluate_rankings(pairs, s_exp, name="export")
    per = ev_o.per_query.merge(ev_e.per_query, on="query_id", suffixes=("_o", "_e"))
    p = randomization_test(per["ndcg@10_e"].to_numpy(), per["ndcg@10_o"].to_numpy())
    rho = float(spearmanr(s_orig, s_exp).statistic) if len(work) > 1 else float("nan")
    lat_pairs = latency_pairs(pairs)
    lat_o = latency_ms(original, lat_pairs, repeats)
    lat_e = latency_ms(exported, lat_pairs, repeats)
    pps_o, pps_e = len(work) / t_orig, len(work) / t_exp

    def trio(key: str) -> dict:
        o, e = ev_o.means[key], ev_e.means[key]
        return {"original": round(o, 6), "export": round(e, 6), "delta": round(e - o, 6)}

    notes = []
    if ev_o.n_excluded:
        notes.append(f"{ev_o.n_excluded} queries without a relevant candidate are not in "
                     "NDCG/MRR (they still count in agreement, Spearman and speed)")
    return Proof(
        format=fmt, path=path, n_queries=int(pairs["query_id"].nunique()), n_pairs=len(work),
        ndcg=trio("ndcg@10"), mrr=trio("mrr@10"), p_value=round(float(p), 6),
        spearman=round(rho, 6), max_abs_diff=float(np.max(np.abs(s_orig - s_exp))),
        top10_agreement=round(top_k_agreement(pairs, s_orig, s_exp), 6),
        pairs_per_s={"original": round(pps_o, 2), "export": round(pps_e, 2)},
        speedup=round(pps_e / pps_o, 3),
        latency_ms={**lat_e, "original_p50": lat_o["p50"], "original_p95": lat_o["p95"]},
        batch_size=batch_size, split=split, notes=notes,
    )


def rejection(proof: Proof | dict, tolerance: float = DEFAULT_TOLERANCE,
              min_spearman: float = DEFAULT_MIN_SPEARMAN) -> str | None:
    """Why an export is not recommendable, in words; None when it qualifies. Equal NDCG@10 on
    a few queries is not enough: an export whose scores order pairs differently (low Spearman)
    is a different ranker that happened to score alike here."""
    r = proof if isinstance(proof, dict) else proof.to_json()
    if r["ndcg"]["delta"] < -tolerance - 1e-12:
        return f"loses {-r['ndcg']['delta']:.4f} NDCG@10 (tolerance {tolerance:.3f})"
    rho = r.get("spearman")
    if rho is None or not rho >= min_spearman:  # NaN fails too
        return f"ranks differently: Spearman {rho:.3f} < {min_spearman:.3f}" if rho is not None \
            else "no Spearman correlation measured"
    if r["speedup"] <= 1.0:
        return f"not faster than the original ({r['speedup']:.2f}x)"
    return None


def recommend(proofs: list[Proof] | list[dict], tolerance: float = DEFAULT_TOLERANCE,
              min_spearman: float = DEFAULT_MIN_SPEARMAN):
    """The fastest export that loses at most `tolerance` NDCG@10 (a gain is fine), whose scores
    keep the original's order (Spearman >= `min_spearman`) and that is faster than the original;
    None when none qualifies."""
    rows = [p if isinstance(p, dict) else p.to_json() for p in proofs]
    ok = [r for r in rows if rejection(r, tolerance, min_spearman) is None]
    return max(ok, key=lambda r: r["pairs_per_s"]["export"]) if ok else None
