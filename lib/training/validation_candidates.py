"""Validation candidates for positives-only queries: their top-k from the corpus the data was
mined from, unjudged documents counted as not relevant.

A validation query whose labelled pairs are all relevant only ranks its positives against each
other: NDCG@10 there measures the order of grades (1.0 with binary labels), so it can neither pick
a checkpoint that tells relevant from not-relevant nor show the bar to beat. Mining never touches
validation queries, so positives-only data mined from a corpus leaves every validation query that
way. A deployed reranker reorders a first stage's top-k, so those queries get exactly that, as
retrieve-then-rerank evaluation scores them (unjudged = not relevant). Runs in the app when a run
is created (it reads the workspace database), like the distillation corpus.
"""

from __future__ import annotations

import pandas as pd

from lib.workspace import Workspace

COLUMNS = ["query_id", "doc_id", "query", "document", "label"]


def positives_only(val: pd.DataFrame) -> pd.Series:
    """query_id -> query text of the validation queries with no labelled non-relevant pair."""
    has_negative = val.groupby("query_id")["label"].min() <= 0
    keep = has_negative[~has_negative].index
    queries = val.groupby("query_id")["query"].first()
    return queries.loc[sorted(keep)]


def corpus_candidates(ws: Workspace, val: pd.DataFrame, corpus: str, top_k: int,
                      retriever: str = "bm25") -> pd.DataFrame:
    """Label-0 rows for each positives-only validation query's top-k corpus documents, minus the
    ones labelled for it (by doc_id or text). Empty when every query has a labelled negative."""
    from lib.corpora import get_corpus
    from lib.evaluation.candidates import retrieve
    from lib.mining import text_hash

    queries = positives_only(val)
    if queries.empty or top_k <= 0:
        return pd.DataFrame(columns=COLUMNS)
    found = retrieve(ws, get_corpus(ws, corpus), retriever, queries, top_k)
    labelled_ids = set(zip(val["query_id"], val["doc_id"], strict=True))
    labelled_text = set(zip(val["query_id"], val["document"].map(text_hash), strict=True))
    keep = [(q, d) not in labelled_ids and (q, h) not in labelled_text
            for q, d, h in zip(found["query_id"], found["doc_id"],
                               found["document"].map(text_hash), strict=True)]
    found = found[keep].drop_duplicates(["query_id", "doc_id"])
    return found.assign(query=found["query_id"].map(queries), label=0)[COLUMNS].reset_index(
        drop=True)
