"""Reviewing mined negatives: the most suspicious first, and decisions saved with the version.

A decision changes the mined dataset version itself (never its parent): 'dropped' removes the
pair, 'relevant' turns it into a positive (label 1), 'accepted'/'pending' keep it as a negative
(label 0). Decisions can be changed back; a dropped pair is restored from the corpus.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lib import db
from lib.datasets import resolve_dataset
from lib.workspace import Workspace

DECISIONS = ("pending", "accepted", "dropped", "relevant")


def mined_versions(ws: Workspace) -> pd.DataFrame:
    """Every mined dataset version with its parent and corpus names, newest first."""
    with db.connect(ws) as con:
        return con.execute(
            "SELECT v.dataset_id, d.name, p.name AS parent, c.name AS corpus, v.created_at "
            "FROM dataset_versions v JOIN datasets d ON d.dataset_id = v.dataset_id "
            "LEFT JOIN datasets p ON p.dataset_id = v.parent_id "
            "LEFT JOIN corpora c ON c.corpus_id = v.corpus_id "
            "WHERE v.kind = 'mined' ORDER BY v.created_at DESC").df()


def suspicion(frame: pd.DataFrame) -> np.ndarray:
    """Higher = more likely a false negative: the guard's score when there is one, else how
    close the retriever score comes to the strongest positive's (0 = equal, > 0 = above it)."""
    rel = (frame["score"] - frame["positive_score"]) / frame["positive_score"].abs().clip(
        lower=1e-9)
    out = rel.where(frame["guard_score"].isna(), frame["guard_score"])
    return out.fillna(-np.inf).to_numpy(dtype=np.float64)


def review_table(ws: Workspace, dataset: str) -> pd.DataFrame:
    """One row per mined negative, most suspicious first."""
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        frame = con.execute(
            """
            SELECT m.query_id, q.query, m.doc_id, coalesce(p.document, '') AS document,
                   m.retriever, m.rank, m.score, m.positive_score, m.guard_score, m.sampled,
                   m.decision
            FROM mined_pairs m
            JOIN (SELECT query_id, any_value(query) AS query FROM pairs WHERE dataset_id = $d
                  GROUP BY query_id) q USING (query_id)
            LEFT JOIN pairs p ON p.dataset_id = $d AND p.query_id = m.query_id
                 AND p.doc_id = m.doc_id AND p.line = m.line
            WHERE m.dataset_id = $d
            """, {"d": ds.dataset_id}).df()
    frame["suspicion"] = suspicion(frame)
    frame["_close"] = suspicion(frame.assign(guard_score=np.nan))  # tie-break: retriever
    return frame.sort_values(["suspicion", "_close", "query_id", "rank"],
                             ascending=[False, False, True, True], ignore_index=True,
                             na_position="last").drop(columns="_close")


def positives(ws: Workspace, dataset: str, query_id: str) -> pd.DataFrame:
    """The labelled positives of one query (what a mined negative is compared with)."""
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        return con.execute(
            "SELECT p.doc_id, p.label, p.document FROM pairs p WHERE p.dataset_id = ? AND "
            "p.query_id = ? AND p.label > 0 AND NOT EXISTS (SELECT 1 FROM mined_pairs m WHERE "
            "m.dataset_id = p.dataset_id AND m.query_id = p.query_id AND m.doc_id = p.doc_id) "
            "ORDER BY p.label DESC, p.line", [ds.dataset_id, query_id]).df()


def decide(ws: Workspace, dataset: str, keys: list[tuple[str, str]], decision: str) -> int:
    """Apply one decision to mined rows (query_id, doc_id); returns how many changed."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if not keys:
        return 0
    with db.connect(ws) as con:
        want = pd.DataFrame(keys, columns=["query_id", "doc_id"])
        con.register("want", want)  # before any query: DuckDB refuses it with a result pending
        ds = resolve_dataset(con, dataset)
        try:
            with db.transaction(con):
                rows = con.execute(
                    "SELECT m.query_id, m.doc_id, m.line, m.decision FROM mined_pairs m "
                    "JOIN want USING (query_id, doc_id) WHERE m.dataset_id = ?",
                    [ds.dataset_id]).df()
                if len(rows) != len(want.drop_duplicates()):
                    raise ValueError(f"{len(want) - len(rows)} of the given pairs were not "
                                     f"mined in {ds.name}")
                if decision == "dropped":
                    con.execute("DELETE FROM pairs WHERE dataset_id = ? AND (query_id, doc_id, "
                                "line) IN (SELECT query_id, doc_id, line FROM mined_pairs JOIN "
                                "want USING (query_id, doc_id) WHERE dataset_id = ?)",
                                [ds.dataset_id, ds.dataset_id])
                else:
                    _restore_dropped(con, ds.dataset_id, rows)
                    con.execute("UPDATE pairs SET label = ? WHERE dataset_id = ? AND (query_id, "
                                "doc_id, line) IN (SELECT query_id, doc_id, line FROM mined_pairs"
                                " JOIN want USING (query_id, doc_id) WHERE dataset_id = ?)",
                                [1 if decision == "relevant" else 0, ds.dataset_id,
                                 ds.dataset_id])
                con.execute("UPDATE mined_pairs SET decision = ?, decided_at = current_timestamp"
                            " WHERE dataset_id = ? AND (query_id, doc_id) IN "
                            "(SELECT query_id, doc_id FROM want)", [decision, ds.dataset_id])
                _refresh_counts(con, ds.dataset_id)
        finally:
            con.unregister("want")
    return int((rows["decision"] != decision).sum())


def _restore_dropped(con, dataset_id: str, rows: pd.DataFrame) -> None:
    back = rows[rows["decision"] == "dropped"]
    if back.empty:
        return
    corpus_id = con.execute("SELECT corpus_id FROM dataset_versions WHERE dataset_id = ?",
                            [dataset_id]).fetchall()[0][0]
    con.register("back", back)
    try:
        n = con.execute(
            "INSERT INTO pairs SELECT $d, b.line, b.query_id, b.doc_id, q.query, c.text, 0, NULL "
            "FROM back b JOIN corpus_docs c ON c.corpus_id = $c AND c.doc_id = b.doc_id "
            "JOIN (SELECT query_id, any_value(query) AS query FROM pairs WHERE dataset_id = $d "
            "GROUP BY query_id) q ON q.query_id = b.query_id",
            {"d": dataset_id, "c": corpus_id}).fetchone()[0]
    finally:
        con.unregister("back")
    if n != len(back):
        raise ValueError("the corpus these negatives were mined from is gone: a dropped pair "
                         "cannot be restored")


def _refresh_counts(con, dataset_id: str) -> None:
    con.execute(
        "UPDATE datasets SET accepted = s.n, lines_read = s.n, n_docs = s.nd, "
        "label_scale = CASE WHEN s.mx <= 1 THEN 'binary' ELSE 'graded' END, max_label = s.mx "
        "FROM (SELECT count(*) AS n, count(DISTINCT doc_id) AS nd, max(label) AS mx FROM pairs "
        "WHERE dataset_id = $d) s WHERE datasets.dataset_id = $d", {"d": dataset_id})


def review_counts(ws: Workspace, dataset: str) -> dict:
    """What was mined, filtered while mining, and decided since."""
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        row = con.execute("SELECT stats FROM dataset_versions WHERE dataset_id = ?",
                          [ds.dataset_id]).fetchone()
        decided = dict(con.execute(
            "SELECT decision, count(*) FROM mined_pairs WHERE dataset_id = ? GROUP BY decision",
            [ds.dataset_id]).fetchall())
    stats = json.loads(row[0]) if row else {}
    return {
        "mined": int(stats.get("mined", sum(decided.values()))),
        "skipped_labelled": int(stats.get("skipped_labelled", 0)),
        "dropped_by_margin": int(stats.get("dropped_by_margin", 0)),
        "dropped_by_guard": int(stats.get("dropped_by_guard", 0)),
        **{d: int(decided.get(d, 0)) for d in DECISIONS},
    }
