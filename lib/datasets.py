"""Looking up, listing and deleting stored datasets."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from lib import db
from lib.workspace import Workspace


class DatasetNotFoundError(LookupError):
    pass


@dataclass(frozen=True)
class Dataset:
    dataset_id: str
    name: str
    source: str
    label_scale: str
    max_label: int
    accepted: int
    n_queries: int


def resolve_dataset(con: duckdb.DuckDBPyConnection, id_or_name: str) -> Dataset:
    """Accept either the dataset id or its name, as users type whichever they see."""
    row = con.execute(
        "SELECT dataset_id, name, source, label_scale, max_label, accepted, n_queries "
        "FROM datasets WHERE dataset_id = ? OR name = ?",
        [id_or_name, id_or_name],
    ).fetchone()
    if row is None:
        known = [r[0] for r in con.execute("SELECT name FROM datasets ORDER BY name").fetchall()]
        raise DatasetNotFoundError(
            f"no dataset {id_or_name!r}; known: {', '.join(known) if known else 'none'}"
        )
    return Dataset(*row)


def get_dataset(ws: Workspace, id_or_name: str) -> Dataset:
    with db.connect(ws) as con:
        return resolve_dataset(con, id_or_name)


def mined_from_corpus(con, dataset_id: str) -> str | None:
    """The id of the corpus this dataset (or the version it was made from, e.g. a relabelled copy
    of a mined version) was mined from; None for data that was never mined."""
    seen: set[str] = set()
    while dataset_id and dataset_id not in seen:
        seen.add(dataset_id)
        row = con.execute("SELECT parent_id, corpus_id FROM dataset_versions WHERE dataset_id = ?",
                          [dataset_id]).fetchone()
        if row is None:
            return None
        if row[1]:
            return row[1]
        dataset_id = row[0]
    return None


def list_datasets(ws: Workspace) -> pd.DataFrame:
    with db.connect(ws) as con:
        return con.execute(
            "SELECT d.dataset_id, d.name, d.created_at, d.accepted, d.rejected, d.duplicates, "
            "d.blank, d.lines_read, d.n_queries, d.n_docs, d.label_scale, d.source, "
            "s.split_id AS active_split FROM datasets d "
            "LEFT JOIN splits s ON s.dataset_id = d.dataset_id AND s.is_active "
            "ORDER BY d.created_at"
        ).df()


# Derived from the dataset and cheap to rebuild: deleted with it. Training runs and evaluations
# are the user's work and keep their own copies of what they need: they stay.
_DERIVED_TABLES = ("check_cache", "check_runs")


def delete_dataset(ws: Workspace, id_or_name: str) -> Dataset:
    """Remove a dataset with its pairs, errors, splits and cached checks, in one transaction."""
    with db.connect(ws) as con:
        ds = resolve_dataset(con, id_or_name)
        with db.transaction(con):
            con.execute(
                "DELETE FROM split_assignments WHERE split_id IN "
                "(SELECT split_id FROM splits WHERE dataset_id = ?)",
                [ds.dataset_id],
            )
            for table in ("noise_pairs", "noise_decisions"):  # the noise jobs that scored it
                con.execute(f"DELETE FROM {table} WHERE job_id IN (SELECT job_id FROM "
                            "noise_jobs WHERE dataset_id = ?)", [ds.dataset_id])
            for table in (*_DERIVED_TABLES, "splits", "pairs", "ingest_errors", "mined_pairs",
                          "noise_jobs", "label_changes", "dataset_versions", "datasets"):
                con.execute(f"DELETE FROM {table} WHERE dataset_id = ?", [ds.dataset_id])
    return ds


def ingest_errors(ws: Workspace, id_or_name: str) -> pd.DataFrame:
    """Every rejected line with its reason (the Data page offers it as a download)."""
    with db.connect(ws) as con:
        ds = resolve_dataset(con, id_or_name)
        return con.execute(
            "SELECT line, field, message, raw FROM ingest_errors WHERE dataset_id = ? "
            "ORDER BY line",
            [ds.dataset_id],
        ).df()


def pair_stats(ws: Workspace, id_or_name: str) -> pd.DataFrame:
    """Per pair: split, label and word lengths, for the Data page's distribution charts."""
    with db.connect(ws) as con:
        ds = resolve_dataset(con, id_or_name)
        return con.execute(
            "SELECT coalesce(a.split, 'unsplit') AS split, p.label, "
            "len(string_split(trim(p.query), ' ')) AS query_words, "
            "len(string_split(trim(p.document), ' ')) AS document_words "
            "FROM pairs p LEFT JOIN splits s ON s.dataset_id = p.dataset_id AND s.is_active "
            "LEFT JOIN split_assignments a ON a.split_id = s.split_id AND a.query_id = p.query_id "
            "WHERE p.dataset_id = ?",
            [ds.dataset_id],
        ).df()
