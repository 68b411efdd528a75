"""Query-level train/validation/test splits: seeded, reproducible, never a query in two splits.

A split is stored as a new `splits` row plus one assignment per query, and one split per dataset
is active. Older splits are kept, so results computed on them stay explainable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib import db
from lib.datasets import resolve_dataset
from lib.workspace import Workspace

SPLITS = ("train", "validation", "test")


@dataclass
class SplitSummary:
    split_id: str
    dataset_id: str
    seed: int
    fractions: dict[str, float]
    method: str
    counts: dict[str, dict] = field(default_factory=dict)
    conflicting_hints: int = 0

    def to_json(self) -> dict:
        return {
            "split_id": self.split_id,
            "dataset_id": self.dataset_id,
            "seed": self.seed,
            "fractions": self.fractions,
            "method": self.method,
            "counts": self.counts,
            "conflicting_hints": self.conflicting_hints,
        }


def assign_queries(
    query_ids: list[str],
    val_frac: float = 0.2,
    test_frac: float = 0.0,
    seed: int = 13,
    fixed: dict[str, str] | None = None,
    groups: dict[str, str] | None = None,
) -> dict[str, str]:
    """Assign each query (or each group of queries, kept together) to a split.

    `fixed` maps query ids whose rows carried a `split` field; those win. The rest are shuffled
    with `seed` (over sorted ids, so the input order does not matter) and cut by the fractions.
    """
    _check_fractions(val_frac, test_frac)
    fixed = fixed or {}
    free = sorted(q for q in set(query_ids) if q not in fixed)
    group_of = {q: (groups or {}).get(q, q) for q in free}
    units = sorted(set(group_of.values()))
    rng = np.random.default_rng(seed)
    order = [units[i] for i in rng.permutation(len(units))]
    n = len(order)
    n_test = _count(n, test_frac)
    n_val = _count(n, val_frac)
    if n_val + n_test >= n and n > 1:  # always leave something to train on
        n_val = max(0, n - 1 - n_test)
    unit_split = {}
    for i, unit in enumerate(order):
        unit_split[unit] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    out = {q: unit_split[group_of[q]] for q in free}
    out.update(fixed)
    return out


def _count(n: int, frac: float) -> int:
    if frac <= 0 or n == 0:
        return 0
    return max(1, int(round(n * frac)))


def _check_fractions(val_frac: float, test_frac: float) -> None:
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(
            f"validation fraction {val_frac} and test fraction {test_frac} must each be in [0, 1) "
            "and sum to less than 1"
        )


def make_split(
    ws: Workspace,
    dataset: str,
    val_frac: float = 0.2,
    test_frac: float = 0.0,
    seed: int = 13,
    *,
    groups: dict[str, str] | None = None,
    method: str = "random",
    note: str | None = None,
    activate: bool = True,
) -> SplitSummary:
    """Create (or reuse, when identical) a split of a dataset and make it the active one."""
    _check_fractions(val_frac, test_frac)
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        hints = con.execute(
            "SELECT query_id, list(DISTINCT split_hint) FILTER (WHERE split_hint IS NOT NULL) "
            "FROM pairs WHERE dataset_id = ? GROUP BY query_id",
            [ds.dataset_id],
        ).fetchall()
        query_ids = [q for q, _ in hints]
        fixed, conflicts = {}, 0
        for q, h in hints:
            if h:
                if len(h) > 1:
                    conflicts += 1  # rows of one query name different splits: first by order
                fixed[q] = sorted(h, key=SPLITS.index)[0]
        assignment = assign_queries(query_ids, val_frac, test_frac, seed, fixed, groups)
        split_id = _split_id(ds.dataset_id, assignment)
        with db.transaction(con):
            exists = con.execute("SELECT 1 FROM splits WHERE split_id = ?", [split_id]).fetchone()
            if not exists:
                con.execute(
                    "INSERT INTO splits (split_id, dataset_id, seed, train_frac, val_frac, "
                    "test_frac, method, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [split_id, ds.dataset_id, seed, 1 - val_frac - test_frac, val_frac,
                     test_frac, method, note],
                )
                frame = pd.DataFrame(
                    {"split_id": split_id, "query_id": list(assignment),
                     "split": list(assignment.values())}
                )
                con.register("assign_df", frame)
                con.execute("INSERT INTO split_assignments SELECT * FROM assign_df")
                con.unregister("assign_df")
            if activate:
                con.execute(
                    "UPDATE splits SET is_active = (split_id = ?) WHERE dataset_id = ?",
                    [split_id, ds.dataset_id],
                )
        summary = SplitSummary(
            split_id, ds.dataset_id, seed,
            {"train": 1 - val_frac - test_frac, "validation": val_frac, "test": test_frac},
            method, split_counts(con, split_id), conflicts,
        )
    return summary


def _split_id(dataset_id: str, assignment: dict[str, str]) -> str:
    """Content-addressed: the same assignment is the same split, whatever seed produced it."""
    h = hashlib.sha256(dataset_id.encode())
    for q in sorted(assignment):
        h.update(f"{q}\t{assignment[q]}\n".encode())
    return "sp-" + h.hexdigest()[:12]


def split_counts(con, split_id: str) -> dict[str, dict]:
    """Queries, pairs and label distribution per split."""
    rows = con.execute(
        """
        SELECT a.split, p.label, count(*)
        FROM pairs p JOIN splits s ON s.dataset_id = p.dataset_id
        JOIN split_assignments a ON a.split_id = s.split_id AND a.query_id = p.query_id
        WHERE s.split_id = ? GROUP BY a.split, p.label
        """,
        [split_id],
    ).fetchall()
    totals = con.execute(
        """
        SELECT a.split, count(DISTINCT p.query_id), count(*)
        FROM pairs p JOIN splits s ON s.dataset_id = p.dataset_id
        JOIN split_assignments a ON a.split_id = s.split_id AND a.query_id = p.query_id
        WHERE s.split_id = ? GROUP BY a.split
        """,
        [split_id],
    ).fetchall()
    out: dict[str, dict] = {
        sp: {"queries": int(nq), "pairs": int(n), "labels": {}} for sp, nq, n in totals
    }
    for sp, label, n in rows:
        out[sp]["labels"][str(label)] = int(n)
    for sp in out.values():
        sp["labels"] = dict(sorted(sp["labels"].items()))
    return {sp: out[sp] for sp in SPLITS if sp in out}


def active_split_id(con, dataset_id: str) -> str | None:
    row = con.execute(
        "SELECT split_id FROM splits WHERE dataset_id = ? AND is_active", [dataset_id]
    ).fetchone()
    return row[0] if row else None


def load_split_pairs(
    ws: Workspace, dataset: str, split: str | None = None, split_id: str | None = None
) -> pd.DataFrame:
    """The pairs of one split (or all, with a `split` column) of the active or given split."""
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        sid = split_id or active_split_id(con, ds.dataset_id)
        if sid is None:
            raise ValueError(f"dataset {ds.name!r} has no split yet: run `reranker-studio split`")
        sql = (
            "SELECT p.query_id, p.doc_id, p.query, p.document, p.label, a.split, p.line "
            "FROM pairs p JOIN split_assignments a ON a.query_id = p.query_id AND a.split_id = ? "
            "WHERE p.dataset_id = ?"
        )
        params: list = [sid, ds.dataset_id]
        if split:
            if split not in SPLITS:
                raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
            sql += " AND a.split = ?"
            params.append(split)
        return con.execute(sql + " ORDER BY p.line", params).df()
