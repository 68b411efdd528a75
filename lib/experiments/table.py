"""The runs as one flat table (hyperparameters as columns), their curves, and config diffs."""

from __future__ import annotations

import json

import pandas as pd

from lib import db
from lib.experiments.grid import SWEEPABLE
from lib.workspace import Workspace

SHOWN_PARAMS = ("base_model", *SWEEPABLE, "gradient_accumulation", "precision")


def runs_table(ws: Workspace) -> pd.DataFrame:
    """One row per run: status, data, hyperparameters, validation metrics, cost, sweep mode."""
    with db.connect(ws) as con:
        df = con.execute(
            """
            SELECT r.run_id, r.status, d.name AS dataset, r.split_id, r.config,
                   r.start_ndcg10, r.best_ndcg10, r.best_mrr10, r.best_step,
                   r.validation_queries, r.train_pairs, r.train_samples_per_second,
                   r.device, r.created_at, r.started_at, r.finished_at, r.model_path,
                   sr.sweep_id, s.quick
            FROM runs r
            LEFT JOIN datasets d ON d.dataset_id = r.dataset_id
            LEFT JOIN sweep_runs sr ON sr.run_id = r.run_id
            LEFT JOIN sweeps s ON s.sweep_id = sr.sweep_id
            ORDER BY r.created_at DESC
            """
        ).df()
    if df.empty:
        return df
    configs = df.pop("config").map(json.loads)
    for key in SHOWN_PARAMS:
        df[key] = configs.map(lambda c, k=key: c.get(k))
    df["duration_s"] = (df["finished_at"] - df["started_at"]).dt.total_seconds()
    df["mode"] = df["quick"].map(lambda q: "quick what-if" if q is True else
                                 ("full" if q is False else "single run"))
    df["gain_ndcg10"] = df["best_ndcg10"] - df["start_ndcg10"]
    return df.drop(columns=["quick"])


def run_configs(ws: Workspace, run_ids: list[str]) -> dict[str, dict]:
    with db.connect(ws) as con:
        rows = con.execute(
            "SELECT run_id, config FROM runs WHERE list_contains(?, run_id)", [run_ids]
        ).fetchall()
    found = {r: json.loads(c) for r, c in rows}
    return {r: found[r] for r in run_ids if r in found}


def config_diff(configs: dict[str, dict], only_differences: bool = True) -> pd.DataFrame:
    """Keys as rows, runs as columns; with only_differences, rows where any run differs."""
    keys = sorted({k for c in configs.values() for k in c})
    frame = pd.DataFrame(
        {run: [json.dumps(c.get(k)) if isinstance(c.get(k), dict | list) else c.get(k)
               for k in keys] for run, c in configs.items()},
        index=pd.Index(keys, name="setting"),
    )
    if only_differences and len(configs) > 1:
        differs = frame.astype(str).nunique(axis=1) > 1
        frame = frame[differs]
    return frame


def curves(ws: Workspace, run_ids: list[str]) -> pd.DataFrame:
    """Training loss and validation NDCG@10/MRR@10 per step, for overlaying runs."""
    with db.connect(ws) as con:
        return con.execute(
            "SELECT run_id, kind, step, epoch, loss, ndcg10, mrr10 FROM run_metrics "
            "WHERE list_contains(?, run_id) AND kind IN ('train', 'eval') "
            "QUALIFY row_number() OVER (PARTITION BY run_id, kind, step ORDER BY seq DESC) = 1 "
            "ORDER BY run_id, step", [run_ids]
        ).df()


def best_run(table: pd.DataFrame) -> pd.Series | None:
    done = table.dropna(subset=["best_ndcg10"])
    if done.empty:
        return None
    return done.loc[done["best_ndcg10"].idxmax()]


def retrain_pairs(ws: Workspace, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each run retrained on a cleaned-label version beside the run it repeats: same config,
    same validation queries (the version copies the split). `validation_labels_changed` counts
    the cleaning's changes on those validation queries: when it is not 0, the two best NDCG@10
    are measured against different judgments and should not be compared directly.

    `table`: the UNFILTERED `runs_table(ws)` the caller already built (the Experiments page
    does), so one render queries the runs once and reads each run's lineage file once."""
    from lib.relabel import change_log, retrain_of
    from lib.training.jobs import run_dir_of

    table = runs_table(ws) if table is None else table
    logs: dict[str, pd.DataFrame] = {}  # one change log per cleaned version
    cols = ["retrain_run", "original_run", "dataset", "original_dataset", "status",
            "original_status", "validation_queries", "original_ndcg10", "retrain_ndcg10",
            "delta_ndcg10", "validation_labels_changed"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    by_id = table.set_index("run_id")
    rows = []
    for run_id, run in by_id.iterrows():
        run_dir = run_dir_of(ws, str(run_id))
        source = retrain_of(run_dir)
        if source is None or source not in by_id.index:
            continue
        orig = by_id.loc[source]
        val_path = run_dir / "data" / "validation.jsonl"
        val_qids = (set(pd.read_json(val_path, lines=True, dtype={"query_id": str})["query_id"])
                    if val_path.is_file() else set())
        name = str(run["dataset"])
        if name not in logs:
            try:
                logs[name] = change_log(ws, name)
            except (LookupError, ValueError):  # the version was deleted since
                logs[name] = pd.DataFrame(columns=["query_id", "action"])
        log = logs[name]
        hits = log["query_id"].astype(str).isin(val_qids) & log["action"].isin(["relabel", "drop"])
        changed = int(hits.sum())
        rows.append({
            "retrain_run": run_id, "original_run": source, "dataset": run["dataset"],
            "original_dataset": orig["dataset"], "status": run["status"],
            "original_status": orig["status"], "validation_queries": run["validation_queries"],
            "original_ndcg10": orig["best_ndcg10"], "retrain_ndcg10": run["best_ndcg10"],
            "delta_ndcg10": run["best_ndcg10"] - orig["best_ndcg10"],
            "validation_labels_changed": changed,
        })
    return pd.DataFrame(rows, columns=cols)
