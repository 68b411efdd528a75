"""Label quality: conflicting judgements, queries that cannot be evaluated or teach nothing, and
label mixes that differ between splits.

A pair counts as relevant when label >= REL_THRESHOLD, the same rule lib.metrics uses, so what is
reported here as "excluded from evaluation" is exactly what the Evaluate step excludes.
"""

from __future__ import annotations

import json

import pandas as pd

from lib import db
from lib.split import SPLITS
from lib.workspace import Workspace

REL_THRESHOLD = 1
EXAMPLES = 50
FEW_POSITIVES = 0.01  # share of relevant pairs under which a split gets a warning
MANY_POSITIVES = 0.5  # above: most candidates are relevant, little to contrast
MIX_RATIO = 2.0  # relevant share of a held-out split vs train, beyond which the mixes differ

_BASE = """
    SELECT p.query_id, p.query, p.doc_id, p.document, p.label, p.line, a.split
    FROM pairs p JOIN split_assignments a ON a.split_id = $sid AND a.query_id = p.query_id
    WHERE p.dataset_id = $ds
"""


def check_labels(ws: Workspace, dataset_id: str, split_id: str) -> dict:
    """Label issues and the label distribution per split of one dataset split."""
    params = {"ds": dataset_id, "sid": split_id}
    with db.connect(ws) as con:
        conflicts = con.execute(
            f"""
            WITH c AS (
                SELECT list(DISTINCT label ORDER BY label) AS labels,
                       list(DISTINCT split ORDER BY split) AS splits,
                       list(line ORDER BY line)[1:5] AS lines, count(*) AS rows,
                       min(line) AS first_line
                FROM ({_BASE}) GROUP BY hash(query), hash(document)
                HAVING count(DISTINCT label) > 1)
            SELECT p.query_id, p.doc_id, left(p.query, 200) AS query,
                   left(p.document, 200) AS document, c.labels, c.splits, c.lines, c.rows
            FROM c JOIN pairs p ON p.dataset_id = $ds AND p.line = c.first_line
            ORDER BY c.first_line
            """, params,
        ).df()
        per_query = con.execute(
            f"""
            SELECT split, query_id, count(*) AS candidates,
                   count(*) FILTER (WHERE label >= {REL_THRESHOLD}) AS relevant,
                   count(DISTINCT label) AS distinct_labels, min(line) AS first_line
            FROM ({_BASE}) GROUP BY split, query_id
            """, params,
        ).df()
        dist = con.execute(
            f"SELECT split, label, count(*) AS n FROM ({_BASE}) GROUP BY ALL ORDER BY ALL",
            params,
        ).df()
        multi_text = con.execute(
            "SELECT query_id, count(DISTINCT query) AS texts, "
            "list(DISTINCT left(query, 120))[1:3] AS examples FROM pairs "
            "WHERE dataset_id = ? GROUP BY query_id HAVING count(DISTINCT query) > 1 "
            "ORDER BY query_id", [dataset_id],
        ).df()
    distribution = _distribution(dist)
    issues = _conflict_issues(conflicts) + _query_issues(per_query)
    if len(multi_text):
        issues.append({
            "kind": "query_id_multiple_texts", "split": None, "count": len(multi_text),
            "message": f"{len(multi_text):,} query ids carry more than one query text. They are "
            "kept in one split and evaluated as one query; if they are different questions, give "
            "them different ids.",
            "examples": _records(multi_text.head(EXAMPLES)),
        })
    issues += _skew_warnings(distribution)
    return {"rel_threshold": REL_THRESHOLD, "issues": issues, "distribution": distribution,
            "queries": _query_counts(per_query)}


def _records(df: pd.DataFrame) -> list[dict]:
    """JSON-safe rows (numpy scalars and DuckDB lists become plain Python values)."""
    return json.loads(df.to_json(orient="records"))


def _conflict_issues(conflicts: pd.DataFrame) -> list[dict]:
    if conflicts.empty:
        return []
    n = len(conflicts)
    return [{
        "kind": "conflicting_labels", "split": None, "count": n,
        "message": f"{n:,} (query, document) pairs appear more than once with different labels. "
        "Training sees contradicting targets and evaluation keeps one of them arbitrarily: decide "
        "the right label and remove the others (the lines are listed).",
        "examples": _records(conflicts.head(EXAMPLES)),
    }]


def _query_issues(pq: pd.DataFrame) -> list[dict]:
    out = []
    for sp in SPLITS:
        rows = pq[pq["split"] == sp].sort_values("first_line")
        if rows.empty:
            continue
        total = len(rows)
        none = rows[rows["relevant"] == 0]
        only = rows[rows["relevant"] == rows["candidates"]]
        single = rows[rows["candidates"] == 1]
        held = sp != "train"
        if len(none):
            why = ("NDCG and MRR are undefined for them, so they are EXCLUDED from evaluation: "
                   "the scores on this split cover the other queries only." if held else
                   "they contribute negatives only (pointwise losses use them, listwise losses "
                   "learn nothing from them).")
            out.append(_query_issue("no_positive", sp, none, total,
                                    f"have no relevant candidate (label >= {REL_THRESHOLD}): "
                                    + why))
        if len(only):
            flat = int((only["distinct_labels"] == 1).sum())
            out.append(_query_issue(
                "only_positive", sp, only, total,
                "have only relevant candidates: there is no irrelevant document to rank below "
                f"them; {flat:,} of these have a single label value, so every ranking scores "
                "the maximum (nothing to rank).",
            ))
        if len(single):
            out.append(_query_issue(
                "single_candidate", sp, single, total,
                "have a single candidate: any ranking of one document is the same, so they say "
                "nothing about ranking quality.",
            ))
    return out


def _query_issue(kind: str, split: str, rows: pd.DataFrame, total: int, text: str) -> dict:
    n = len(rows)
    return {
        "kind": kind, "split": split, "count": n, "of_queries": total,
        "message": f"{n:,} of {total:,} {split} queries ({n / total:.0%}) {text}",
        "examples": _records(rows[["query_id", "candidates", "relevant"]].head(EXAMPLES)),
    }


def _distribution(dist: pd.DataFrame) -> dict:
    out: dict[str, dict] = {}
    for sp in SPLITS:
        rows = dist[dist["split"] == sp]
        if rows.empty:
            continue
        counts = {str(int(k)): int(v) for k, v in zip(rows["label"], rows["n"], strict=True)}
        total = sum(counts.values())
        relevant = int(rows.loc[rows["label"] >= REL_THRESHOLD, "n"].sum())
        out[sp] = {"pairs": total, "labels": counts, "relevant": relevant,
                   "relevant_share": round(relevant / total, 4)}
    return out


def _query_counts(pq: pd.DataFrame) -> dict:
    out = {}
    for sp in SPLITS:
        rows = pq[pq["split"] == sp]
        if len(rows):
            out[sp] = {"queries": len(rows),
                       "candidates_median": float(rows["candidates"].median()),
                       "relevant_median": float(rows["relevant"].median())}
    return out


def _skew_warnings(distribution: dict) -> list[dict]:
    out = []

    def warn(split: str | None, text: str) -> None:
        out.append({"kind": "skew", "split": split, "count": 1, "message": text, "examples": []})

    for sp, d in distribution.items():
        share = d["relevant_share"]
        if share < FEW_POSITIVES:
            warn(sp, f"{sp}: only {share:.2%} of {d['pairs']:,} pairs are relevant; with so few "
                 "positives BCE training drifts to 'nothing is relevant' (consider pos_weight or "
                 "a listwise loss).")
        elif share > MANY_POSITIVES:
            warn(sp, f"{sp}: {share:.0%} of {d['pairs']:,} pairs are relevant; a reranker learns "
                 "from contrast, so add negatives (e.g. mined hard negatives).")
        if len(d["labels"]) == 1:
            warn(sp, f"{sp}: every pair has label {next(iter(d['labels']))}.")
    train = distribution.get("train")
    if train:
        for sp, d in distribution.items():
            if sp == "train":
                continue
            a, b = train["relevant_share"], d["relevant_share"]
            if min(a, b) > 0 and max(a, b) / min(a, b) > MIX_RATIO:
                warn(sp, f"relevant share differs between train ({a:.1%}) and {sp} ({b:.1%}): "
                     "scores on this split may not reflect the training distribution.")
            missing = sorted(set(d["labels"]) - set(train["labels"]), key=int)
            if missing:
                warn(sp, f"{sp} has label value(s) {', '.join(missing)} that train never shows.")
    return out
