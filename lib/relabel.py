"""Fixing labels without loss: review decisions become a NEW dataset version with a change log.

The same versioning as hard-negative mining: the new dataset is a row of `dataset_versions`
(kind 'relabelled') with the parent's pairs copied and its split copied (same queries on the same
side), so the parent stays exactly as it was and runs on either are comparable. `label_changes`
lists every change: who, when, the pair, old and new label (NULL when dropped).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lib import db, noise
from lib.datasets import resolve_dataset
from lib.mining import _version_name, copy_split
from lib.split import active_split_id
from lib.workspace import Workspace

DECISIONS = ("keep", "relabel", "drop", "ambiguous")
MAX_LABEL = 4


def current_user() -> str:
    """Who made the change: $RERANKER_STUDIO_USER, else the OS account."""
    try:
        return os.environ.get("RERANKER_STUDIO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class RelabelReport:
    dataset_id: str  # the new version
    name: str
    parent_id: str
    relabelled: int  # pairs whose label changed
    dropped: int
    ambiguous: int  # marked for a second look: kept with their label, logged
    kept: int  # decisions that keep the label (keep, or relabel to the same label)
    changed: int  # relabelled + dropped

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_decisions(rows: list[dict]) -> pd.DataFrame:
    """Check decisions (query_id, doc_id, decision, label for relabel); one per pair, the last
    one wins. Errors name the row (1-based) and what is wrong."""
    out = []
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise ValueError(f"decision {i}: not an object")
        missing = [k for k in ("query_id", "doc_id", "decision") if r.get(k) in (None, "")]
        if missing:
            raise ValueError(f"decision {i}: missing {', '.join(missing)}")
        d = str(r["decision"]).strip().lower()
        if d not in DECISIONS:
            raise ValueError(f"decision {i}: {d!r} is not one of {', '.join(DECISIONS)}")
        label = r.get("label", r.get("new_label"))
        if d == "relabel":
            if isinstance(label, bool) or not isinstance(label, int | float) or \
                    float(label) != int(label) or not 0 <= int(label) <= MAX_LABEL:
                raise ValueError(f"decision {i}: relabel needs a whole label 0-{MAX_LABEL}, "
                                 f"got {label!r}")
            label = int(label)
        else:
            label = None
        out.append({"query_id": str(r["query_id"]), "doc_id": str(r["doc_id"]), "decision": d,
                    "new_label": label})
    frame = pd.DataFrame(out, columns=["query_id", "doc_id", "decision", "new_label"])
    return frame.drop_duplicates(["query_id", "doc_id"], keep="last").reset_index(drop=True)


def read_decisions_file(path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {n} is not JSON ({exc.msg})") from None
    return rows


def relabel(ws: Workspace, dataset: str, decisions: list[dict] | pd.DataFrame, *,
            by: str | None = None, name: str | None = None,
            job_id: str | None = None) -> RelabelReport:
    """Apply decisions to a copy of `dataset`: the new version, its split and its change log."""
    dec = decisions if isinstance(decisions, pd.DataFrame) else parse_decisions(decisions)
    if dec.empty:
        raise ValueError("no decisions given: nothing to relabel")
    by = by or current_user()
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        sid = active_split_id(con, ds.dataset_id)
        if sid is None:
            raise ValueError(f"dataset {ds.name!r} has no split to carry over: split it first")
        db.register(con, "dec_df", dec)
        try:
            hits = con.execute(
                "SELECT p.line, p.query_id, p.doc_id, p.label AS old_label, d.decision, "
                "d.new_label FROM pairs p JOIN dec_df d USING (query_id, doc_id) "
                "WHERE p.dataset_id = ? ORDER BY p.line", [ds.dataset_id]).df()
        finally:
            con.unregister("dec_df")
        found = set(zip(hits["query_id"], hits["doc_id"], strict=True))
        missing = [(q, d) for q, d in zip(dec["query_id"], dec["doc_id"], strict=True)
                   if (q, d) not in found]
        if missing:
            raise ValueError(f"{len(missing)} decided pairs are not in {ds.name}, e.g. query "
                             f"{missing[0][0]!r} doc {missing[0][1]!r}")
        hits["new_label"] = hits["new_label"].astype("Int64")
        change = hits[(hits["decision"] == "drop") | (hits["decision"] == "ambiguous") |
                      ((hits["decision"] == "relabel") &
                       (hits["new_label"] != hits["old_label"]))].copy()
        change["action"] = change["decision"]
        change.loc[change["action"] == "ambiguous", "new_label"] = change["old_label"]
        change.loc[change["action"] == "drop", "new_label"] = pd.NA
        relabelled = int((change["action"] == "relabel").sum())
        dropped = int((change["action"] == "drop").sum())
        ambiguous = int((change["action"] == "ambiguous").sum())
        if relabelled + dropped == 0 and ambiguous == 0:
            raise ValueError("the decisions change no label (all keep, or relabel to the same "
                             "label): no new version made")
        key = json.dumps([ds.dataset_id, sorted(map(list, zip(
            change["line"].astype(int), change["action"],
            change["new_label"].astype("float").fillna(-1), strict=True)))], default=str)
        new_id = "ds-" + hashlib.sha256(("relabel" + key).encode()).hexdigest()[:12]
        existing = con.execute("SELECT name FROM datasets WHERE dataset_id = ?",
                               [new_id]).fetchone()
        if existing:
            raise ValueError(f"these decisions were already applied to {ds.name!r}: dataset "
                             f"{existing[0]!r} ({new_id})")
        new_name = _version_name(con, ds.name, name, suffix="relabelled")
        edits = change[["line", "query_id", "doc_id", "action", "old_label", "new_label"]]
        params = {"job_id": job_id, "decisions": len(dec)}
        stats = {"relabelled": relabelled, "dropped": dropped, "ambiguous": ambiguous,
                 "kept": int(len(hits) - len(change))}
        with db.transaction(con):
            db.register(con, "edits", edits)
            con.execute(
                "INSERT INTO pairs SELECT ?, p.line, p.query_id, p.doc_id, p.query, p.document, "
                "CASE WHEN e.action = 'relabel' THEN e.new_label ELSE p.label END, p.split_hint "
                "FROM pairs p LEFT JOIN edits e ON e.line = p.line AND e.query_id = p.query_id "
                "AND e.doc_id = p.doc_id WHERE p.dataset_id = ? AND "
                "(e.action IS NULL OR e.action <> 'drop')", [new_id, ds.dataset_id])
            con.execute(
                "INSERT INTO label_changes (dataset_id, parent_id, query_id, doc_id, line, "
                "action, old_label, new_label, changed_by, job_id) SELECT ?, ?, query_id, "
                "doc_id, line, action, old_label, new_label, ?, ? FROM edits",
                [new_id, ds.dataset_id, by, job_id])
            con.unregister("edits")
            n_pairs, n_q, n_docs, mx = con.execute(
                "SELECT count(*), count(DISTINCT query_id), count(DISTINCT doc_id), max(label) "
                "FROM pairs WHERE dataset_id = ?", [new_id]).fetchone()
            con.execute(
                "INSERT INTO datasets SELECT ?, ?, ?, ?, current_timestamp, ?, ?, 0, 0, 0, "
                "CASE WHEN ? <= 1 THEN 'binary' ELSE 'graded' END, ?, ?, ?, field_map "
                "FROM datasets WHERE dataset_id = ?",
                [new_id, new_name, f"relabelled from {ds.name} by {by}", "relabelled:" + new_id,
                 n_pairs, n_pairs, mx, mx, n_q, n_docs, ds.dataset_id])
            copy_split(con, sid, new_id, f"copied from {sid} of {ds.name} (relabelled)")
            con.execute("INSERT INTO dataset_versions VALUES (?, ?, NULL, 'relabelled', ?, ?, "
                        "current_timestamp)",
                        [new_id, ds.dataset_id, json.dumps(params), json.dumps(stats)])
    return RelabelReport(dataset_id=new_id, name=new_name, parent_id=ds.dataset_id,
                         relabelled=relabelled, dropped=dropped, ambiguous=ambiguous,
                         kept=int(len(hits) - len(change)), changed=relabelled + dropped)


def change_log(ws: Workspace, dataset: str) -> pd.DataFrame:
    """Every change a relabelled version made against its parent."""
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        return con.execute(
            "SELECT c.query_id, c.doc_id, c.line, c.action, c.old_label, c.new_label, "
            "c.changed_by, c.changed_at, c.job_id, p.name AS parent FROM label_changes c "
            "LEFT JOIN datasets p ON p.dataset_id = c.parent_id WHERE c.dataset_id = ? "
            "ORDER BY c.line", [ds.dataset_id]).df()


# ---- decisions recorded while reviewing a noise job ---------------------------------------------
def decide(ws: Workspace, job_id: str, keys: list[tuple[str, str]], decision: str,
           new_label: int | None = None, by: str | None = None) -> int:
    """Record (or replace) the decision on flagged pairs of a job; nothing is applied yet."""
    dec = parse_decisions([{"query_id": q, "doc_id": d, "decision": decision,
                            "label": new_label} for q, d in keys])
    if dec.empty:
        return 0
    with db.connect(ws) as con, db.transaction(con):
        db.register(con, "dec_df", dec)
        con.execute("DELETE FROM noise_decisions WHERE job_id = ? AND (query_id, doc_id) IN "
                    "(SELECT query_id, doc_id FROM dec_df)", [job_id])
        con.execute("INSERT INTO noise_decisions (job_id, query_id, doc_id, decision, "
                    "new_label, decided_by) SELECT ?, query_id, doc_id, decision, new_label, ? "
                    "FROM dec_df", [job_id, by or current_user()])
        con.unregister("dec_df")
    return len(dec)


def job_decisions(ws: Workspace, job_id: str) -> pd.DataFrame:
    with db.connect(ws) as con:
        return con.execute("SELECT query_id, doc_id, decision, new_label, decided_by, "
                           "decided_at FROM noise_decisions WHERE job_id = ? ORDER BY "
                           "decided_at", [job_id]).df()


def relabel_from_job(ws: Workspace, job_id: str, *, by: str | None = None,
                     name: str | None = None) -> RelabelReport:
    """The job's recorded decisions applied to the dataset it scored."""
    with db.connect(ws) as con:
        row = con.execute("SELECT dataset_id FROM noise_jobs WHERE job_id = ?",
                          [job_id]).fetchone()
    if row is None:
        raise LookupError(f"no noise job {job_id!r}")
    dec = job_decisions(ws, job_id)
    if dec.empty:
        raise ValueError("no decisions recorded for this job yet")
    dec = dec.astype({"new_label": "object"})
    rows = [{"query_id": r.query_id, "doc_id": r.doc_id, "decision": r.decision,
             "label": None if pd.isna(r.new_label) else int(r.new_label)}
            for r in dec.itertuples(index=False)]
    return relabel(ws, row[0], rows, by=by, name=name, job_id=job_id)


# ---- retraining on the cleaned version ----------------------------------------------------------
def source_run(ws: Workspace, dataset: str, job_id: str | None = None) -> str | None:
    """The run whose config a retrain copies: the run a dynamics job's flags came from (the
    cleaned version should be compared with exactly that run), else the newest finished run
    on `dataset`."""
    if job_id:
        try:
            opts = json.loads((noise.job_dir(ws, job_id) / noise.OPTIONS).read_text(
                encoding="utf-8"))
        except (OSError, ValueError):
            opts = {}
        if opts.get("source") == "dynamics" and opts.get("run_id"):
            return str(opts["run_id"])
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        row = con.execute("SELECT run_id FROM runs WHERE dataset_id = ? AND status = 'finished' "
                          "ORDER BY created_at DESC LIMIT 1", [ds.dataset_id]).fetchone()
    return row[0] if row else None


LINEAGE_FILE = "lineage.json"  # in a retrain's run dir: which run it repeats on cleaned labels


def check_retrain_source(ws: Workspace, from_run: str) -> Path:
    """The run dir whose config a retrain copies; LookupError when there is none."""
    from lib.training import jobs

    run_dir = jobs.run_dir_of(ws, from_run)
    if not (run_dir / "config.json").is_file():
        raise LookupError(f"no run {from_run!r}: nothing to copy the config from")
    return run_dir


def retrain(ws: Workspace, version: str, from_run: str) -> str:
    """Queue (and start when a device is free) a run on `version` with `from_run`'s config;
    the run dir records `from_run`, so the Experiments page pairs the two."""
    from lib.training import jobs
    from lib.training.config import read_config

    run_dir = check_retrain_source(ws, from_run)
    created = jobs.create_run(ws, version, read_config(run_dir))
    (created.run_dir / LINEAGE_FILE).write_text(json.dumps(
        {"retrain_of": from_run, "dataset": version}), encoding="utf-8")
    jobs.tick(ws)
    return created.run_id


def retrain_of(run_dir: Path) -> str | None:
    """The run a retrain repeats (None for any other run)."""
    try:
        return json.loads((run_dir / LINEAGE_FILE).read_text(encoding="utf-8"))["retrain_of"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
