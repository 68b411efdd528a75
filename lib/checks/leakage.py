"""Query leakage: held-out queries (validation, test, or an evaluation dataset) that also appear,
verbatim or nearly, in the training data, so the model is scored on what it trained on.

Four relations are found between a training query and a held-out one:
  exact           the same query text (different query ids: ids derived from text collapse)
  normalized      the same text after NFKC, case folding, punctuation and whitespace removal
  near_duplicate  character 3-shingle Jaccard >= threshold (MinHash + LSH, verified exactly)
  same_query_id   (evaluation dataset only) a training query id reused with a different text
Only train-vs-held-out pairs are leakage; near-duplicates inside one split matter only for the
grouped re-split (see `query_groups`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib import db
from lib.checks.neardup import (
    jaccard,
    near_duplicate_pairs,
    normalize_text,
    shingle_sets,
)
from lib.workspace import Workspace

TRAIN = "train"
EVAL_SPLIT = "eval"
HELD_OUT = ("validation", "test", EVAL_SPLIT)
KIND_ORDER = {"exact": 0, "normalized": 1, "same_query_id": 2, "near_duplicate": 3}
KIND_TEXT = {
    "exact": "identical query text",
    "normalized": "same text after normalising case, punctuation, Unicode and whitespace",
    "same_query_id": "same query id with a different text",
    "near_duplicate": "near-duplicate text (character 3-shingle Jaccard)",
}
EXAMPLE_FINDINGS = 200  # findings that get example rows (all findings are listed)
EXAMPLES_PER_SIDE = 2
DOC_PREVIEW = 300

Progress = Callable[[str, float], None]


@dataclass
class LeakageReport:
    threshold: float
    eval_dataset: str | None
    findings: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"threshold": self.threshold, "eval_dataset": self.eval_dataset,
                "findings": self.findings, "summary": self.summary}


def load_queries(con, dataset_id: str, split_id: str,
                 eval_dataset_id: str | None = None) -> pd.DataFrame:
    """One row per (dataset, query id, text) with its split and pair count.

    With an evaluation dataset, the training side is the dataset's train split and every query
    of the evaluation dataset is on the held-out side (split 'eval').
    """
    sql = (
        "SELECT p.dataset_id, p.query_id, p.query, a.split, count(*) AS pairs "
        "FROM pairs p JOIN split_assignments a ON a.split_id = ? AND a.query_id = p.query_id "
        "WHERE p.dataset_id = ? {extra} GROUP BY ALL"
    )
    if eval_dataset_id is None:
        q = con.execute(sql.format(extra=""), [split_id, dataset_id]).df()
    else:
        q = con.execute(sql.format(extra="AND a.split = 'train'"), [split_id, dataset_id]).df()
        ev = con.execute(
            "SELECT dataset_id, query_id, query, 'eval' AS split, count(*) AS pairs FROM pairs "
            "WHERE dataset_id = ? GROUP BY ALL", [eval_dataset_id]
        ).df()
        q = pd.concat([q, ev], ignore_index=True)
    q = q.sort_values(["dataset_id", "query_id", "query"], ignore_index=True)
    q["norm"] = [normalize_text(t) for t in q["query"]]
    return q


def _qualifies(splits: set[str]) -> bool:
    return TRAIN in splits and bool(splits & set(HELD_OUT))


# A query row as a plain tuple: pandas per-finding overhead would dominate with many findings.
_DS, _QID, _TEXT, _SPLIT, _PAIRS, _NORM = range(6)


def _records(q: pd.DataFrame) -> list[tuple]:
    cols = ["dataset_id", "query_id", "query", "split", "pairs", "norm"]
    return list(q[cols].itertuples(index=False, name=None))


def _split_rank(s: str) -> int:
    order = (TRAIN, *HELD_OUT)
    return order.index(s) if s in order else len(order)


def _finding(kind: str, recs: list[tuple], idxs, similarity: float) -> dict:
    rows = sorted((recs[i] for i in idxs), key=lambda r: (_split_rank(r[_SPLIT]), r[_QID]))
    return {
        "kind": kind,
        "queries": [{"query_id": r[_QID], "query": r[_TEXT], "split": r[_SPLIT],
                     "pairs": int(r[_PAIRS]), "dataset_id": r[_DS]} for r in rows],
        "splits": sorted({r[_SPLIT] for r in rows}, key=_split_rank),
        "similarity": round(float(similarity), 4),
        "pairs": int(sum(r[_PAIRS] for r in rows if r[_SPLIT] != TRAIN)),
        "train_pairs": int(sum(r[_PAIRS] for r in rows if r[_SPLIT] == TRAIN)),
    }


def _group_findings(q: pd.DataFrame, recs: list[tuple], key: str, kind: str) -> list[dict]:
    """Groups of rows with equal `key` that span train and a held-out split."""
    mask = (q.duplicated(key, keep=False) & (q[key] != "")).to_numpy()
    positions = np.flatnonzero(mask)
    out = []
    for idx in q[mask].groupby(key, sort=False).indices.values():
        rows = [int(positions[i]) for i in idx if recs[positions[i]][_SPLIT] in (TRAIN, *HELD_OUT)]
        if not _qualifies({recs[i][_SPLIT] for i in rows}):
            continue
        if kind == "normalized" and len({recs[i][_TEXT] for i in rows}) == 1:
            continue  # the same raw text: already an exact finding
        out.append(_finding(kind, recs, rows, 1.0))
    return out


def _near_findings(q: pd.DataFrame, recs: list[tuple], threshold: float,
                   progress: Progress | None) -> list[dict]:
    norms = sorted(set(q["norm"]) - {""})
    if len(norms) < 2:
        return []
    if progress:
        progress(f"near-duplicates among {len(norms):,} distinct normalised queries", 0.2)
    nd = near_duplicate_pairs(norms, threshold)
    index = {n: i for i, n in enumerate(norms)}
    nidx = q["norm"].map(index).fillna(-1).to_numpy(np.int64)
    has_train = np.zeros(len(norms), bool)
    has_held = np.zeros(len(norms), bool)
    is_train = (q["split"] == TRAIN).to_numpy()
    is_held = q["split"].isin(HELD_OUT).to_numpy()
    has_train[nidx[is_train & (nidx >= 0)]] = True
    has_held[nidx[is_held & (nidx >= 0)]] = True
    a, b = nd.pairs[:, 0], nd.pairs[:, 1]
    cross = (has_train[a] & has_held[b]) | (has_held[a] & has_train[b])
    rows_of = q.groupby("norm").indices
    out = []
    for (i, j), sim in zip(nd.pairs[cross], nd.similarity[cross], strict=True):
        members = []
        for me, other in ((i, j), (j, i)):
            want = ((TRAIN,) if has_held[other] else ()) + (HELD_OUT if has_train[other] else ())
            members += [int(k) for k in rows_of[norms[me]] if recs[k][_SPLIT] in want]
        out.append(_finding("near_duplicate", recs, members, sim))
    return out


def _same_id_findings(q: pd.DataFrame, recs: list[tuple]) -> list[dict]:
    """An evaluation query whose id is a training query id, with a different text."""
    train = q[q["split"] == TRAIN]
    ev = q[q["split"] == EVAL_SPLIT]
    both = ev.merge(train, on="query_id", suffixes=("_e", "_t"))
    both = both[both["query_e"] != both["query_t"]]
    out = []
    for qid in sorted(set(both["query_id"])):
        members = np.flatnonzero(((q["query_id"] == qid)
                                  & q["split"].isin((TRAIN, EVAL_SPLIT))).to_numpy())
        texts = list(dict.fromkeys(recs[i][_NORM] for i in members))
        sh = shingle_sets(texts)
        pairs = np.array([[0, k] for k in range(1, len(texts))], np.int64).reshape(-1, 2)
        sim = float(jaccard(sh, pairs).max()) if len(pairs) else 1.0
        out.append(_finding("same_query_id", recs, members, sim))
    return out


def find_leakage(
    ws: Workspace,
    dataset_id: str,
    split_id: str,
    threshold: float = 0.8,
    eval_dataset_id: str | None = None,
    progress: Progress | None = None,
) -> LeakageReport:
    """All train-vs-held-out leaks of one split (or of an evaluation dataset against it)."""
    if progress:
        progress("loading queries", 0.0)
    with db.connect(ws) as con:
        q = load_queries(con, dataset_id, split_id, eval_dataset_id)
    recs = _records(q)
    findings = _group_findings(q, recs, "query", "exact")
    findings += _group_findings(q, recs, "norm", "normalized")
    if eval_dataset_id is not None:
        findings += _same_id_findings(q, recs)
    findings += _near_findings(q, recs, threshold, progress)
    findings.sort(key=lambda f: (KIND_ORDER[f["kind"]], -f["pairs"], f["queries"][0]["query_id"]))
    if progress:
        progress("collecting shared documents and examples", 0.8)
    _attach_documents(ws, findings)
    report = LeakageReport(threshold, eval_dataset_id, findings)
    report.summary = _summary(q, findings)
    return report


def _members_frame(findings: list[dict]) -> pd.DataFrame:
    rows = [
        (fid, m["dataset_id"], m["query_id"], m["query"], m["split"],
         "train" if m["split"] == TRAIN else "held")
        for fid, f in enumerate(findings) for m in f["queries"]
    ]
    return pd.DataFrame(rows, columns=["fid", "dataset_id", "query_id", "query", "split", "side"])


_ROWS_SQL = """
    CREATE TEMP TABLE leak_rows AS
    SELECT m.fid, m.side, m.split, p.query_id, p.query, p.doc_id, p.document, p.label, p.line
    FROM leak_members m JOIN pairs p
      ON p.dataset_id = m.dataset_id AND p.query_id = m.query_id AND p.query = m.query
"""


def _attach_documents(ws: Workspace, findings: list[dict]) -> None:
    """Per finding: documents judged for both sides, identical (query, document) pairs on both
    sides, and a few example rows (shared documents first, then the best-labelled)."""
    for f in findings:
        f.update(shared_documents=0, identical_pairs=0, examples=[])
    if not findings:
        return
    members = _members_frame(findings)
    with db.connect(ws) as con:
        con.register("leak_members", members)
        con.execute(_ROWS_SQL)
        shared = con.execute(
            "SELECT fid, count(*) FROM (SELECT fid, document FROM leak_rows GROUP BY ALL "
            "HAVING count(DISTINCT side) = 2) GROUP BY fid"
        ).fetchall()
        ident = con.execute(
            "SELECT fid, count(*) FROM (SELECT fid, query, document FROM leak_rows GROUP BY ALL "
            "HAVING count(DISTINCT side) = 2) GROUP BY fid"
        ).fetchall()
        examples = con.execute(
            f"""
            WITH shared AS (SELECT fid, document FROM leak_rows GROUP BY ALL
                            HAVING count(DISTINCT side) = 2)
            SELECT fid, split, query_id, doc_id, document, label, is_shared FROM (
                SELECT r.*, s.document IS NOT NULL AS is_shared, row_number() OVER (
                    PARTITION BY r.fid, r.side
                    ORDER BY (s.document IS NOT NULL) DESC, r.label DESC, r.line) AS rn
                FROM leak_rows r LEFT JOIN shared s ON s.fid = r.fid AND s.document = r.document
                WHERE r.fid < {EXAMPLE_FINDINGS})
            WHERE rn <= {EXAMPLES_PER_SIDE} ORDER BY fid, side DESC, rn
            """
        ).fetchall()
        con.execute("DROP TABLE leak_rows")
        con.unregister("leak_members")
    for fid, n in shared:
        findings[fid]["shared_documents"] = int(n)
    for fid, n in ident:
        findings[fid]["identical_pairs"] = int(n)
    for fid, split, qid, did, doc, label, is_shared in examples:
        findings[fid]["examples"].append({
            "split": split, "query_id": qid, "doc_id": did, "label": int(label),
            "document": doc if len(doc) <= DOC_PREVIEW else doc[:DOC_PREVIEW] + "...",
            "judged_on_both_sides": bool(is_shared),
        })


def _summary(q: pd.DataFrame, findings: list[dict]) -> dict:
    by_kind = {k: 0 for k in KIND_ORDER}
    leaked: dict[str, dict[str, int]] = {}  # split -> {query_id: pairs}
    for f in findings:
        by_kind[f["kind"]] += 1
        for m in f["queries"]:
            if m["split"] != TRAIN:
                ids = leaked.setdefault(m["split"], {})
                ids[m["query_id"]] = max(ids.get(m["query_id"], 0), m["pairs"])
    per_split = {}
    for sp in HELD_OUT:
        rows = q[q["split"] == sp]
        if rows.empty:
            continue
        n_queries = int(rows["query_id"].nunique())
        ids = leaked.get(sp, {})
        pairs_of = rows.groupby("query_id")["pairs"].sum()
        per_split[sp] = {
            "queries": n_queries,
            "leaked_queries": len(ids),
            "leaked_share": round(len(ids) / max(1, n_queries), 4),
            "pairs": int(rows["pairs"].sum()),
            "leaked_pairs": int(pairs_of.reindex(list(ids)).sum()) if ids else 0,
        }
    return {
        "findings": len(findings),
        "by_kind": by_kind,
        "held_out": per_split,
        "identical_pairs": int(sum(f["identical_pairs"] for f in findings)),
    }


# ---- grouping for the leakage-free re-split ------------------------------------------------------

class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x):
        parent = self.parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class QueryGroups:
    groups: dict[str, str]  # query_id -> group key (the group's smallest query id)
    n_groups: int  # groups of more than one query
    largest: int
    near_duplicate_pairs: int


def query_groups(ws: Workspace, dataset_id: str, split_id: str,
                 threshold: float = 0.8) -> QueryGroups:
    """Every query joined with its exact, normalised and near-duplicate twins, in any split."""
    with db.connect(ws) as con:
        q = load_queries(con, dataset_id, split_id)
    uf = _UnionFind()
    for qid, text, norm in zip(q["query_id"], q["query"], q["norm"], strict=True):
        uf.union(("id", qid), ("norm", norm) if norm else ("raw", text))
    norms = sorted(set(q["norm"]) - {""})
    nd = near_duplicate_pairs(norms, threshold)
    for i, j in nd.pairs:
        uf.union(("norm", norms[i]), ("norm", norms[j]))
    members: dict = {}
    for qid in q["query_id"].unique():
        members.setdefault(uf.find(("id", qid)), []).append(qid)
    groups = {}
    sizes = []
    for ids in members.values():
        key = min(ids)
        sizes.append(len(ids))
        for qid in ids:
            groups[qid] = key
    multi = [s for s in sizes if s > 1]
    return QueryGroups(groups, len(multi), max(sizes, default=0), len(nd.pairs))
