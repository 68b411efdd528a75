"""Check results cached in DuckDB per (dataset, split, section, parameters).

Datasets and splits are content-addressed and the model key is its weights' fingerprint, so a
cached result stays valid until one of them changes; CHECKS_VERSION invalidates results computed
by older check code.
"""

from __future__ import annotations

import hashlib
import json

from lib import db
from lib.workspace import Workspace

CHECKS_VERSION = "1"


def params_key(**params) -> str:
    """A stable key for the parameters a section's result depends on."""
    items = "|".join(f"{k}={params[k]}" for k in sorted(params))
    return f"v{CHECKS_VERSION}|{items}"


def get(ws: Workspace, dataset_id: str, split_id: str, section: str, key: str) -> dict | None:
    with db.connect(ws) as con:
        row = con.execute(
            "SELECT result FROM check_cache WHERE dataset_id = ? AND split_id = ? AND section = ? "
            "AND params_key = ?", [dataset_id, split_id, section, key],
        ).fetchone()
    return json.loads(row[0]) if row else None


def put(ws: Workspace, dataset_id: str, split_id: str, section: str, key: str, result: dict,
        seconds: float) -> None:
    with db.connect(ws) as con:
        con.execute(
            "INSERT OR REPLACE INTO check_cache (dataset_id, split_id, section, params_key, "
            "result, seconds) VALUES (?, ?, ?, ?, ?, ?)",
            [dataset_id, split_id, section, key, json.dumps(result, default=str), seconds],
        )


def record_run(ws: Workspace, run: dict) -> str:
    """Remember a run's settings (the page restores the last ones on load)."""
    run_id = "chk-" + hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:12]
    cols = ["dataset_id", "split_id", "eval_dataset_id", "model_spec", "model_fp", "max_length",
            "threshold", "batch_size", "precision", "leak_findings"]
    with db.connect(ws) as con:
        con.execute("DELETE FROM check_runs WHERE run_id = ?", [run_id])
        con.execute(
            f"INSERT INTO check_runs (run_id, {', '.join(cols)}) VALUES "
            f"(?, {', '.join('?' * len(cols))})", [run_id, *[run.get(c) for c in cols]],
        )
    return run_id


def last_run(ws: Workspace, dataset_id: str) -> dict | None:
    with db.connect(ws) as con:
        cur = con.execute(
            "SELECT * FROM check_runs WHERE dataset_id = ? ORDER BY created_at DESC LIMIT 1",
            [dataset_id],
        )
        row = cur.fetchone()
        names = [d[0] for d in cur.description]
    return dict(zip(names, row, strict=True)) if row else None
