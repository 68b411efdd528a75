"""Corpus documents for the distillation phase: each training query's top-k from a corpus.

The teacher's scores are what a small labelled set lacks, and a corpus is where the documents a
deployed reranker will reorder come from: a first stage's top-k for each training query are the
hard, topically close candidates the labels rarely cover. This runs in the app (it reads the
workspace database; the worker never does) when a run is created, and writes the pairs to the
run's data folder. No validation or test query is retrieved for, and no document labelled for a
validation or test query is added, so held-out labels stay out of the run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from lib.workspace import Workspace

FILE = "distill_corpus.jsonl"
COLUMNS = ["query_id", "doc_id", "query", "document", "first_stage_score", "rank"]
PSEUDO_PREFIX = "pseudo:"  # query_id of a pseudo-query: the prefix + its source document's id
PSEUDO_WORDS = 24


def first_sentence(text: str, max_words: int = PSEUDO_WORDS) -> str:
    """A document's first sentence, at most `max_words` words: its title in collections that
    start with one (Cranfield), a topical summary in most others."""
    first = re.split(r"(?<=[.!?])\s", str(text).strip(), maxsplit=1)[0]
    return " ".join(first.split()[:max_words])


def pseudo_queries(ws: Workspace, corpus, n: int, seed: int, held_ids: set[str],
                   held_text: set[str]) -> pd.Series:
    """`n` corpus documents drawn (seeded) from those labelled for no held-out query, each
    document's first sentence as a query, keyed `pseudo:<doc_id>`. They give the student many more
    queries to learn the teacher on than the labelled training queries alone."""
    from lib.corpora import docs_at
    from lib.mining import text_hash

    order = np.random.default_rng(seed).permutation(corpus.n_docs)
    picked: list[pd.DataFrame] = []
    total, start, step = 0, 0, max(64, 2 * n)
    while total < n and start < len(order):
        chunk = order[start:start + step]
        start += step
        docs = docs_at(ws, corpus, chunk).set_index("pos").reindex(chunk).dropna()
        keep = ~docs["doc_id"].isin(held_ids) & ~docs["text"].map(text_hash).isin(held_text)
        docs = docs[keep].assign(query=docs.loc[keep, "text"].map(first_sentence))
        docs = docs[docs["query"].str.len() > 0]
        picked.append(docs)
        total += len(docs)
    if not picked:
        return pd.Series(dtype=str)
    chosen = pd.concat(picked).head(n)
    return pd.Series(chosen["query"].to_numpy(),
                     index=[PSEUDO_PREFIX + d for d in chosen["doc_id"]], dtype=str)


def corpus_pairs(ws: Workspace, train: pd.DataFrame, held_out: pd.DataFrame, corpus: str,
                 retriever: str, top_k: int, pseudo: int = 0, seed: int = 0) -> pd.DataFrame:
    """Each training query x its top-k corpus documents by `retriever`, minus any document
    labelled for that query (it is already a candidate) and any document labelled for a held-out
    query (by doc_id or by text). With `pseudo` > 0, as many pseudo-queries (`pseudo_queries`)
    and their top-k join them, under the same held-out exclusion."""
    from lib.corpora import get_corpus
    from lib.evaluation.candidates import retrieve
    from lib.mining import text_hash

    held_ids, held_text = set(held_out["doc_id"]), set(held_out["document"].map(text_hash))
    the_corpus = get_corpus(ws, corpus)
    queries = train.groupby("query_id", sort=True)["query"].first()
    if pseudo > 0:
        queries = pd.concat([queries, pseudo_queries(ws, the_corpus, pseudo, seed, held_ids,
                                                     held_text)])
    found = retrieve(ws, the_corpus, retriever, queries, top_k)
    hashes = found["document"].map(text_hash)
    labelled_ids = set(zip(train["query_id"], train["doc_id"], strict=True))
    labelled_text = set(zip(train["query_id"], train["document"].map(text_hash), strict=True))
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
