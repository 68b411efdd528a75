"""Retrieve-then-rerank candidates: each query's top-k from a corpus instead of its labelled pairs.

In production a reranker reorders a first stage's top-k from the whole corpus. Here the first
stage (BM25, a bi-encoder, or the user's own run file) retrieves top-k per evaluation query; a
candidate keeps its label when the user judged it for that query (same doc_id or same text) and
counts as NOT relevant otherwise. Judged relevant documents the first stage missed stay in the
qrels, so they cost every ranker (a reranker cannot recover what was never retrieved), and the
first stage's recall@k, the reranker's ceiling, is reported beside each ranker's judged@10.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from lib.corpora import docs_at, get_corpus
from lib.evaluation.evalset import EvalSet
from lib.evaluation.rankers import RUN_PREFIX, load_run_file
from lib.mining import text_hash
from lib.workspace import Workspace

JUDGED_AT = 10


def retrieve(ws: Workspace, corpus, first_stage: str, queries: pd.Series, top_k: int,
             progress=None) -> pd.DataFrame:
    """query_id, doc_id, document, first_stage_score, rank (1-based) for each query's top-k."""
    if first_stage.lower().startswith(RUN_PREFIX):
        run = load_run_file(first_stage[len(RUN_PREFIX):])
        run = run[run["query_id"].isin(set(queries.index))]
        run = run.sort_values(["query_id", "score", "doc_id"], ascending=[True, False, True])
        run = run.groupby("query_id").head(top_k).copy()
        run["rank"] = run.groupby("query_id").cumcount() + 1
        from lib import db

        with db.connect(ws) as con:
            con.register("want", pd.DataFrame({"doc_id": run["doc_id"].unique()}))
            texts = con.execute("SELECT doc_id, text FROM corpus_docs JOIN want USING (doc_id) "
                                "WHERE corpus_id = ?", [corpus.corpus_id]).df()
            con.unregister("want")
        run = run.merge(texts, on="doc_id", how="inner")  # run entries not in the corpus: gone
        return run.rename(columns={"text": "document", "score": "first_stage_score"})
    from lib.first_stage import get_retriever

    retriever = get_retriever(ws, corpus, first_stage, progress)
    qids = list(queries.index)
    pos, sc = retriever.search(list(queries.to_numpy()), top_k, progress)
    docs = docs_at(ws, corpus, pos.ravel()).set_index("pos")
    flat = pos.ravel()
    return pd.DataFrame({
        "query_id": np.repeat(qids, pos.shape[1]),
        "doc_id": docs.loc[flat, "doc_id"].to_numpy(),
        "document": docs.loc[flat, "text"].to_numpy(),
        "first_stage_score": sc.ravel().astype(np.float64),
        "rank": np.tile(np.arange(1, pos.shape[1] + 1), len(qids)),
    })


def corpus_candidates(ws: Workspace, es: EvalSet, corpus_name: str, first_stage: str = "bm25",
                      top_k: int = 100, rel_threshold: int = 1, progress=None) -> EvalSet:
    """The evaluation set with top-k corpus candidates, judged labels carried over."""
    if top_k < 1:
        raise ValueError(f"top-k must be at least 1, got {top_k}")
    corpus = get_corpus(ws, corpus_name)
    judged = es.pairs
    queries = judged.groupby("query_id")["query"].first()
    cand = retrieve(ws, corpus, first_stage, queries, top_k, progress)
    by_id = {(q, d): lab for q, d, lab in zip(judged["query_id"], judged["doc_id"],
                                              judged["label"], strict=True)}
    by_text = {(q, text_hash(t)): lab for q, t, lab in zip(
        judged["query_id"], judged["document"], judged["label"], strict=True)}
    hashes = [text_hash(t) for t in cand["document"]]
    labels, is_judged = [], []
    for q, d, h in zip(cand["query_id"], cand["doc_id"], hashes, strict=True):
        lab = by_id.get((q, d), by_text.get((q, h)))
        is_judged.append(lab is not None)
        labels.append(int(lab) if lab is not None else 0)
    cand["label"], cand["judged"] = labels, is_judged
    cand["query"] = cand["query_id"].map(queries)
    cand["line"] = cand["rank"]
    found_ids = set(zip(cand["query_id"], cand["doc_id"], strict=True))
    found_txt = set(zip(cand["query_id"], hashes, strict=True))
    rel = judged[judged["label"] >= rel_threshold]
    rel_found = np.array([(q, d) in found_ids or (q, text_hash(t)) in found_txt for q, d, t in
                          zip(rel["query_id"], rel["doc_id"], rel["document"], strict=True)],
                         dtype=bool)
    missed_all = judged[judged["label"] > 0]
    missed_mask = [not ((q, d) in found_ids or (q, text_hash(t)) in found_txt) for q, d, t in
                   zip(missed_all["query_id"], missed_all["doc_id"], missed_all["document"],
                       strict=True)]
    missed = missed_all[missed_mask][["query_id", "doc_id", "label"]]
    per_q = pd.Series(rel_found.astype(float), index=rel["query_id"].to_numpy())
    recall = per_q.groupby(level=0).mean()
    judged_first = (cand[cand["rank"] <= JUDGED_AT].groupby("query_id")["judged"].mean())
    k_eff = int(cand.groupby("query_id").size().max()) if len(cand) else 0
    info = {
        "corpus": corpus.name, "corpus_id": corpus.corpus_id, "n_docs": corpus.n_docs,
        "first_stage": first_stage, "top_k": top_k,
        f"recall@{top_k}": float(recall.mean()) if len(recall) else None,
        f"judged@{JUDGED_AT}": float(judged_first.mean()) if len(judged_first) else None,
        "relevant_judged": int(len(rel)), "relevant_retrieved": int(rel_found.sum()),
        "queries_without_candidates": int(len(set(queries.index) - set(cand["query_id"]))),
        "candidates": int(len(cand)), "judged_candidates": int(cand["judged"].sum()),
    }
    note = (f"candidates = top-{top_k} of corpus {corpus.name} ({corpus.n_docs:,} documents) "
            f"by {first_stage}; unjudged documents count as not relevant. First-stage "
            f"recall@{top_k} {_fmt(info[f'recall@{top_k}'])} (the rerankers' ceiling); "
            f"{k_eff} candidates per query at most")
    pairs = cand[["query_id", "doc_id", "query", "document", "label", "line", "judged",
                  "first_stage_score"]].reset_index(drop=True)
    return replace(es, pairs=pairs, missed=missed.reset_index(drop=True), first_stage=info,
                   note=note)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def judged_at(pairs: pd.DataFrame, scores, k: int = JUDGED_AT) -> float:
    """Mean share of judged documents in each query's top k by these scores (of min(k, n))."""
    frame = pd.DataFrame({"q": pairs["query_id"].to_numpy(), "d": pairs["doc_id"].to_numpy(),
                          "s": np.asarray(scores, dtype=np.float64),
                          "j": pairs["judged"].to_numpy(dtype=bool)})
    frame = frame.sort_values(["q", "s", "d"], ascending=[True, False, True], kind="stable")
    top = frame.groupby("q").head(k)
    return float(top.groupby("q")["j"].mean().mean()) if len(top) else float("nan")
