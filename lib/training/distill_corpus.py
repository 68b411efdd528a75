"""Corpus documents for the distillation phase: each training query's top-k from a corpus.

The teacher's scores are what a small labelled set lacks, and a corpus is where the documents a
deployed reranker will reorder come from: a first stage's top-k for each training query are the
hard, topically close candidates the labels rarely cover. This runs in the app (it reads the
workspace database; the worker never does) when a run is created, and writes the pairs to the
run's data folder. No validation or test query is retrieved for, and no document labelled for a
validation or test query is added, so held-out labels stay out of the run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lib.workspace import Workspace

FILE = "distill_corpus.jsonl"
COLUMNS = ["query_id", "doc_id", "query", "document", "first_stage_score", "rank"]


def corpus_pairs(ws: Workspace, train: pd.DataFrame, held_out: pd.DataFrame, corpus: str,
                 retriever: str, top_k: int) -> pd.DataFrame:
    """Each training query x its top-k corpus documents by `retriever`, minus any document
    labelled for that query (it is already a candidate) and any document labelled for a held-out
    query (by doc_id or by text)."""
    from lib.corpora import get_corpus
    from lib.evaluation.candidates import retrieve
    from lib.mining import text_hash

    queries = train.groupby("query_id", sort=True)["query"].first()
    found = retrieve(ws, get_corpus(ws, corpus), retriever, queries, top_k)
    hashes = found["document"].map(text_hash)
    labelled_ids = set(zip(train["query_id"], train["doc_id"], strict=True))
    labelled_text = set(zip(train["query_id"], train["document"].map(text_hash), strict=True))
    held_ids, held_text = set(held_out["doc_id"]), set(held_out["document"].map(text_hash))
    keep = [(q, d) not in labelled_ids and (q, h) not in labelled_text
            and d not in held_ids and h not in held_text
            for q, d, h in zip(found["query_id"], found["doc_id"], hashes, strict=True)]
    found = found[keep].drop_duplicates(["query_id", "doc_id"])
    found = found.assign(query=found["query_id"].map(queries))
    return found[COLUMNS].reset_index(drop=True)


def write(frame: pd.DataFrame, data_dir: Path) -> Path:
    path = data_dir / FILE
    frame.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def read(data_dir: Path) -> pd.DataFrame | None:
    """The run's corpus pairs, or None when the run was created without a distillation corpus."""
    path = data_dir / FILE
    if not path.is_file():
        return None
    frame = pd.read_json(path, lines=True, dtype={"query_id": str, "doc_id": str})
    return frame if len(frame) else frame.reindex(columns=COLUMNS)
