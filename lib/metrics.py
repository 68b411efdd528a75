"""Ranking metrics with ranx over (query, document, label, score) tables.

One function serves the training worker's validation and the Evaluate step, so a number seen during
training means the same as the number in the report. Queries with no relevant document are
excluded (NDCG is undefined there) and counted, never silently averaged in as zeros.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_METRICS = ("ndcg@10", "mrr@10")

# numba compiles ranx's kernels on first use, and two threads compiling at once abort the whole
# process (seen: the app's background warm-up beside a user's evaluation). Every ranx call in
# this code base holds this lock.
RANX_LOCK = threading.RLock()


def configure_numba_cache(cache_dir: str | Path) -> None:
    """ranx JIT-compiles with numba; a persistent cache makes every start after the first fast."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(cache_dir)


def ranx_metric(metric: str, rel_threshold: int = 1) -> str:
    """Binary metrics count a document relevant at label >= threshold; NDCG keeps the grades."""
    m = metric.strip().lower()
    if rel_threshold > 1 and not m.startswith("ndcg") and "-l" not in m:
        return f"{m}-l{rel_threshold}"
    return m


@dataclass
class EvalResult:
    means: dict[str, float]
    per_query: pd.DataFrame  # query_id + one column per metric
    n_queries: int
    n_excluded: int
    excluded: list[str] = field(default_factory=list)


def qrels_dict(pairs: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{query_id: {doc_id: label}} for labels > 0 (ranx wants int grades)."""
    rel = pairs[pairs["label"] > 0]
    out: dict[str, dict[str, int]] = {}
    for q, d, lab in zip(rel["query_id"], rel["doc_id"], rel["label"], strict=True):
        out.setdefault(str(q), {})[str(d)] = int(lab)
    return out


def run_dict(pairs: pd.DataFrame, scores) -> dict[str, dict[str, float]]:
    """{query_id: {doc_id: score}}; ties are broken by doc id so results never depend on order."""
    frame = pd.DataFrame(
        {"q": pairs["query_id"].astype(str).to_numpy(), "d": pairs["doc_id"].astype(str).to_numpy(),
         "s": np.asarray(scores, dtype=np.float64)}
    ).sort_values(["q", "s", "d"], ascending=[True, False, True], kind="stable")
    out: dict[str, dict[str, float]] = {}
    for q, d, s in zip(frame["q"], frame["d"], frame["s"], strict=True):
        out.setdefault(q, {})[d] = float(s)
    return out


def evaluate_rankings(
    pairs: pd.DataFrame,
    scores,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    rel_threshold: int = 1,
    name: str = "model",
    extra_qrels: pd.DataFrame | None = None,
) -> EvalResult:
    """Mean and per-query metrics of one ranker over the candidates in `pairs`.

    `extra_qrels` (query_id, doc_id, label): relevant documents that are not candidates (a first
    stage missed them); they count in the qrels, so missing them costs recall and NDCG."""
    from ranx import Qrels, Run, evaluate

    if len(pairs) != len(np.asarray(scores)):
        raise ValueError(f"{len(pairs)} pairs but {len(np.asarray(scores))} scores")
    pairs = pairs.reset_index(drop=True)
    relevant = pairs["label"] >= rel_threshold
    has_rel = relevant.groupby(pairs["query_id"].astype(str)).any()
    if extra_qrels is not None and len(extra_qrels):
        missed_rel = extra_qrels[extra_qrels["label"] >= rel_threshold]
        has_rel |= has_rel.index.isin(set(missed_rel["query_id"].astype(str)))
    keep_q = set(has_rel[has_rel].index)
    excluded = sorted(set(has_rel.index) - keep_q)
    mask = pairs["query_id"].astype(str).isin(keep_q).to_numpy()
    kept = pairs[mask]
    kept_scores = np.asarray(scores, dtype=np.float64)[mask]
    ranx_names = [ranx_metric(m, rel_threshold) for m in metrics]
    if not keep_q:
        return EvalResult({m: float("nan") for m in metrics}, pd.DataFrame(), 0, len(excluded),
                          excluded)
    with RANX_LOCK:
        qd = qrels_dict(kept)
        if extra_qrels is not None:
            for q, d, lab in zip(extra_qrels["query_id"], extra_qrels["doc_id"],
                                 extra_qrels["label"], strict=True):
                if str(q) in keep_q and lab > 0:
                    qd.setdefault(str(q), {}).setdefault(str(d), int(lab))
        qrels = Qrels(qd)
        run = Run(run_dict(kept, kept_scores), name=name)
        per = evaluate(qrels, run, ranx_names, return_mean=False, make_comparable=True)
    if len(ranx_names) == 1:
        per = {ranx_names[0]: per}
    qids = list(run.keys())
    per_query = pd.DataFrame({"query_id": qids})
    means = {}
    for m, rm in zip(metrics, ranx_names, strict=True):
        values = np.asarray(per[rm], dtype=np.float64)
        per_query[m] = values
        means[m] = float(values.mean())
    return EvalResult(means, per_query, len(qids), len(excluded), excluded)
