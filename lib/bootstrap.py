"""First start: load the bundled demo dataset once, so a newcomer sees data without uploading."""

from __future__ import annotations

from lib import db, split
from lib.demo_data import DEMO_DATASET_NAME, DEMO_DATASET_PATH
from lib.ingest import ingest_file
from lib.workspace import Workspace

_MARK = "demo_loaded"


def load_demo(ws: Workspace, force: bool = False) -> dict:
    """Ingest and split the Cranfield demo unless it was loaded before (and maybe deleted since)."""
    with db.connect(ws) as con:
        done = con.execute("SELECT value FROM settings WHERE key = ?", [_MARK]).fetchone()
        taken = con.execute(
            "SELECT dataset_id FROM datasets WHERE name = ?", [DEMO_DATASET_NAME]
        ).fetchone()
    if taken or (done and not force):
        return {"loaded": False, "message": "demo dataset already loaded before; nothing to do"}
    report = ingest_file(ws, DEMO_DATASET_PATH, DEMO_DATASET_NAME, source="bundled demo")
    summary = None
    if not report.already_ingested:
        summary = split.make_split(ws, report.dataset_id)
    with db.connect(ws) as con:
        con.execute(
            "INSERT OR REPLACE INTO settings VALUES (?, ?)", [_MARK, report.dataset_id]
        )
    return {
        "loaded": True,
        "dataset_id": report.dataset_id,
        "message": f"loaded demo dataset {report.name}: {report.accepted} pairs, "
        f"{report.n_queries} queries" + (f", split {summary.split_id}" if summary else ""),
    }


def first_start(ws: Workspace) -> dict | None:
    """Called by the app on every start; cheap after the first time."""
    with db.connect(ws) as con:
        done = con.execute("SELECT 1 FROM settings WHERE key = ?", [_MARK]).fetchone()
    if done:
        return None
    return load_demo(ws)
