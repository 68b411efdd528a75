"""The evaluation set: a split of a stored dataset, or a JSONL file ingested like training data.

A query's candidates are exactly its labelled pairs; that is the candidate setting every number
of an evaluation refers to, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib import db
from lib.datasets import Dataset, DatasetNotFoundError, resolve_dataset
from lib.split import SPLITS, active_split_id, load_split_pairs
from lib.workspace import Workspace

ALL = "all"
EVAL_SPLITS = (*SPLITS, ALL)


@dataclass
class EvalSet:
    dataset: Dataset
    split: str  # 'validation' | 'test' | 'train' | 'all'
    split_id: str | None
    pairs: pd.DataFrame  # query_id, doc_id, query, document, label, line
    duplicate_ids_dropped: int = 0
    ingested_from: str | None = None
    # retrieve-then-rerank (lib.evaluation.candidates): judged relevant docs not retrieved,
    # the first stage's figures, and the candidate note
    missed: pd.DataFrame | None = None
    first_stage: dict | None = None
    note: str | None = None

    @property
    def split_label(self) -> str:
        return "(all pairs)" if self.split == ALL else self.split

    @property
    def candidates_note(self) -> str:
        if self.note:
            return self.note
        n_q = self.pairs["query_id"].nunique()
        per = len(self.pairs) / n_q if n_q else 0
        return (f"candidates = the labelled pairs of each query ({len(self.pairs):,} pairs, "
                f"{per:.1f} per query on average); rankers reorder these, nothing is retrieved")


def default_split(ws: Workspace, dataset_id: str) -> str:
    """test when the active split has test queries, else validation, else all pairs."""
    with db.connect(ws) as con:
        sid = active_split_id(con, dataset_id)
        if sid is None:
            return ALL
        have = {r[0] for r in con.execute(
            "SELECT DISTINCT split FROM split_assignments WHERE split_id = ?", [sid]).fetchall()}
    for s in ("test", "validation"):
        if s in have:
            return s
    return ALL


def resolve_eval_dataset(
    ws: Workspace, dataset_or_file: str, progress=None
) -> tuple[Dataset, str | None]:
    """A dataset id/name, or a JSONL file to ingest (the same content is ingested once)."""
    try:
        with db.connect(ws) as con:
            return resolve_dataset(con, dataset_or_file), None
    except DatasetNotFoundError:
        path = Path(dataset_or_file).expanduser()
        if not path.is_file():
            raise
    from lib.ingest import ingest_file

    report = ingest_file(ws, path, source=str(path), progress=progress)
    with db.connect(ws) as con:
        return resolve_dataset(con, report.dataset_id), str(path)


def load_eval_set(ws: Workspace, dataset_or_file: str, split: str | None = None) -> EvalSet:
    ds, ingested = resolve_eval_dataset(ws, dataset_or_file)
    if split is None:
        split = ALL if ingested else default_split(ws, ds.dataset_id)
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
    split_id = None
    if split == ALL:
        with db.connect(ws) as con:
            pairs = con.execute(
                "SELECT query_id, doc_id, query, document, label, line FROM pairs "
                "WHERE dataset_id = ? ORDER BY line", [ds.dataset_id]).df()
    else:
        with db.connect(ws) as con:
            split_id = active_split_id(con, ds.dataset_id)
        if split_id is None:
            raise ValueError(f"dataset {ds.name!r} has no split: use split 'all' or split it first")
        pairs = load_split_pairs(ws, ds.dataset_id, split, split_id)
        pairs = pairs.drop(columns=["split"])
    if pairs.empty:
        raise ValueError(
            f"dataset {ds.name!r} has no {split} queries in its active split {split_id}; choose "
            "another split (e.g. validation) or re-split with a test fraction on the Data page"
        )
    pairs["query_id"] = pairs["query_id"].astype(str)
    pairs["doc_id"] = pairs["doc_id"].astype(str)
    before = len(pairs)
    # ranx keeps the LAST of duplicate (query, doc) ids silently: keep the first line instead
    pairs = pairs.drop_duplicates(["query_id", "doc_id"], keep="first").reset_index(drop=True)
    return EvalSet(ds, split, split_id, pairs, before - len(pairs), ingested)
