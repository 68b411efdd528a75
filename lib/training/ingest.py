"""Copy a run's files (status.json, new progress.jsonl lines) into the runs/run_metrics tables.

Incremental: `runs.metrics_lines` counts the progress lines already stored, so a poll every 2 s
reads only what is new. Safe to call any time; the files stay the source of truth.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pandas as pd

from lib.training import runfiles
from lib.workspace import Workspace

_METRIC_COLUMNS = ["run_id", "seq", "ts", "kind", "step", "epoch", "loss", "lr",
                   "samples_per_s", "ndcg10", "mrr10", "gpu_mem_mb", "extra"]


def _ts(value: Any) -> str | None:
    return str(value).replace("T", " ") if value else None


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def ingest_run(con: duckdb.DuckDBPyConnection, ws: Workspace, run_id: str) -> int:
    """Update the run's row from its files; returns the number of new progress records."""
    run_dir = ws.runs_dir / run_id
    rows = con.execute("SELECT metrics_lines FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not rows:
        return 0
    done = int(rows[0][0] or 0)
    # Status before progress: the worker appends its last progress line before it writes a
    # terminal status, so a terminal status read here means every line is already on disk.
    # The other order could store "finished" without the end line, and finished runs are
    # not polled again.
    status = runfiles.read_status(run_dir)
    records = runfiles.read_progress(run_dir, skip=done)
    if records:
        frame = pd.DataFrame(
            [[run_id, done + i, _num(r.get("ts")), str(r.get("kind")), r.get("step"),
              _num(r.get("epoch")), _num(r.get("loss")), _num(r.get("lr")),
              _num(r.get("samples_per_s")), _num(r.get("ndcg@10")), _num(r.get("mrr@10")),
              _num(r.get("gpu_mem_mb")), json.dumps(r, default=str)]
             for i, r in enumerate(records)],
            columns=_METRIC_COLUMNS,
        )
        frame["step"] = pd.array(frame["step"], dtype="Int64")
        con.register("new_metrics", frame)
        con.execute("INSERT OR REPLACE INTO run_metrics SELECT * FROM new_metrics")
        con.unregister("new_metrics")
        con.execute(
            "UPDATE runs SET start_ndcg10 = m.ndcg10, start_mrr10 = m.mrr10 FROM (SELECT ndcg10, "
            "mrr10 FROM run_metrics WHERE run_id = ? AND kind = 'eval' AND step = 0 ORDER BY seq "
            "LIMIT 1) m WHERE run_id = ? AND start_ndcg10 IS NULL",
            [run_id, run_id],
        )
    best = status.get("best") or {}
    start = status.get("start") or {}
    con.execute(
        """UPDATE runs SET status = coalesce(?, status), started_at = coalesce(?, started_at),
           finished_at = ?, device = coalesce(?, device), precision = coalesce(?, precision),
           global_step = coalesce(?, global_step), max_steps = coalesce(?, max_steps),
           start_ndcg10 = coalesce(?, start_ndcg10), start_mrr10 = coalesce(?, start_mrr10),
           best_step = ?, best_ndcg10 = ?, best_mrr10 = ?,
           train_samples_per_second = coalesce(?, train_samples_per_second),
           model_path = coalesce(?, model_path), error = ?, metrics_lines = ?
           WHERE run_id = ?""",
        [status.get("state"), _ts(status.get("started_at")),
         _ts(status.get("finished_at")) if status.get("state") in runfiles.TERMINAL else None,
         status.get("device"), status.get("precision"), status.get("step"),
         status.get("max_steps"), _num(start.get("ndcg@10")), _num(start.get("mrr@10")),
         best.get("step"), _num(best.get("ndcg@10")), _num(best.get("mrr@10")),
         _num(status.get("train_samples_per_second")), status.get("model_path"),
         status.get("error"), done + len(records), run_id],
    )
    bar = status.get("baselines") or {}
    if bar:
        bm25, bi = bar.get("bm25") or {}, bar.get("biencoder") or {}
        con.execute(
            "UPDATE runs SET bm25_ndcg10 = ?, bm25_mrr10 = ?, biencoder_ndcg10 = ?, "
            "biencoder_mrr10 = ? WHERE run_id = ?",
            [_num(bm25.get("ndcg@10")), _num(bm25.get("mrr@10")), _num(bi.get("ndcg@10")),
             _num(bi.get("mrr@10")), run_id],
        )
    return len(records)
