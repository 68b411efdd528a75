"""Noise flags from a finished run's training dynamics, alone or merged with out-of-fold flags.

A run that recorded dynamics (lib.dynamics) needs no worker: its files are read here and turned
into a noise job like the out-of-fold finder's (same tables, same review and relabel path), with
one ranked list in which every flag names its source. Strengths are put on one scale, in units of
each source's "strong" threshold (out of fold: 1 sd, lib.noise.STRONG; dynamics:
lib.dynamics.STRONG), and a pair flagged by both sources gets the sum: two independent kinds of
evidence agreeing weigh more than either.

Per pair, the job directory keeps `cartography.jsonl` (confidence, variability, correctness,
source) for the confidence/variability scatter; the noise tables keep what the review needs.
For a pair only the run scored, `oof_score` holds the run's mean probability of relevance over
its validations (NOT out of fold: the run trained on it) and `fold` is -1.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import numpy as np
import pandas as pd

from lib import db, dynamics, noise
from lib.datasets import resolve_dataset
from lib.training import jobs, runfiles
from lib.workspace import Workspace

CARTOGRAPHY = noise.CARTOGRAPHY
OOF, DYN = "out-of-fold", "training dynamics"
COLS = ["query_id", "doc_id", "line", "label", "fold", "oof_score", "baseline_score",
        "rank_in_query", "strength", "reason", "flag_rank", "neighbour_score", "source"]


def _run_row(ws: Workspace, run_id: str) -> tuple[str, str, str]:
    with db.connect(ws) as con:
        row = con.execute("SELECT r.dataset_id, r.split_id, d.name FROM runs r LEFT JOIN "
                          "datasets d USING (dataset_id) WHERE r.run_id = ?",
                          [run_id]).fetchone()
    if row is None:
        raise LookupError(f"no run {run_id!r} in this workspace")
    return row[0], row[1], row[2]


def runs_with_dynamics(ws: Workspace, dataset: str | None = None) -> list[str]:
    """Run ids (newest first) whose run directory holds recorded dynamics."""
    table = jobs.list_runs(ws)
    if table.empty:
        return []
    if dataset:
        table = table[table["dataset"] == dataset]
    return [r for r in table["run_id"] if dynamics.has_dynamics(jobs.run_dir_of(ws, str(r)))]


def _with_lines(ws: Workspace, dataset_id: str, pairs: pd.DataFrame) -> pd.DataFrame:
    """Runs exported before the line was written: the pair's first line in the dataset."""
    if "line" in pairs and pairs["line"].notna().all():
        return pairs.assign(line=pairs["line"].astype("int64"))
    with db.connect(ws) as con:
        lines = con.execute("SELECT query_id, doc_id, min(line) AS line FROM pairs WHERE "
                            "dataset_id = ? GROUP BY ALL", [dataset_id]).df()
    return pairs.drop(columns=["line"], errors="ignore").merge(
        lines, on=["query_id", "doc_id"], how="inner")


def run_flags(ws: Workspace, run_id: str,
              max_confidence: float = dynamics.MAX_CONFIDENCE) -> pd.DataFrame:
    """Every recorded pair of the run with its cartography and (maybe) a dynamics flag."""
    dataset_id, _sid, _name = _run_row(ws, run_id)
    dyn = dynamics.read_dynamics(jobs.run_dir_of(ws, run_id))
    carto = dynamics.cartography(dyn.pairs, dyn.probs)
    flags = dynamics.flag_dynamics(carto, max_confidence)
    return _with_lines(ws, dataset_id, flags)


def merge_flags(dyn: pd.DataFrame, oof: pd.DataFrame | None) -> pd.DataFrame:
    """One ranked list: out-of-fold rows (if any) outer-joined with the dynamics rows; strength
    in units of each source's strong threshold, summed where both flag; source named."""
    d = dyn.rename(columns={"strength": "dyn_strength", "reason": "dyn_reason"})
    d = d.assign(dyn_score=d["relevance_prob"],
                 dyn_rank=d.groupby("query_id")["relevance_prob"].rank(
                     ascending=False, method="first").astype(int))
    keys = ["query_id", "doc_id", "line"]
    d_cols = [*keys, "label", "dyn_score", "dyn_rank", "dyn_strength", "dyn_reason",
              "confidence", "variability", "correctness"]
    if oof is None or oof.empty:
        out = d[d_cols].assign(fold=-1, oof_score=d["dyn_score"], baseline_score=np.nan,
                               rank_in_query=d["dyn_rank"], oof_strength=np.nan,
                               oof_reason=None)
    else:
        o = oof.rename(columns={"strength": "oof_strength", "reason": "oof_reason",
                                "source": "oof_source"})
        if "oof_source" not in o:
            o["oof_source"] = None
        o["oof_source"] = o["oof_source"].fillna(OOF)  # rows of jobs made before sources
        o = o[[*keys, "label", "fold", "oof_score", "baseline_score", "rank_in_query",
               "oof_strength", "oof_reason", "oof_source"]]
        out = o.merge(d[d_cols].drop(columns=["label"]), on=keys,
                      how="outer", indicator=True)
        only_dyn = (out.pop("_merge") == "right_only").to_numpy()
        if only_dyn.any():
            lab = d.set_index(keys)["label"]
            out.loc[only_dyn, "label"] = [
                lab[k] for k in out.loc[only_dyn, keys].itertuples(index=False, name=None)]
            out.loc[only_dyn, "fold"] = -1
            out.loc[only_dyn, "oof_score"] = out.loc[only_dyn, "dyn_score"]
            out.loc[only_dyn, "rank_in_query"] = out.loc[only_dyn, "dyn_rank"]
    a = out["oof_strength"] / noise.STRONG
    b = out["dyn_strength"] / dynamics.STRONG
    out["strength"] = a.fillna(0) + b.fillna(0)
    out.loc[a.isna() & b.isna(), "strength"] = np.nan
    src = (out["oof_source"].fillna(OOF) if "oof_source" in out
           else pd.Series(OOF, index=out.index))
    out["source"] = np.select([a.notna() & b.notna(), a.notna(), b.notna()],
                              [src + " + " + DYN, src, DYN], default=None)
    out.loc[out["source"].isna(), "source"] = None
    out["reason"] = [  # a combined job's reasons already name their sources
        "; ".join(r if " + " in s_ else f"{s_}: {r}"
                  for s_, r in ((so, ro), (DYN, rd)) if isinstance(r, str)) or None
        for so, ro, rd in zip(src, out["oof_reason"], out["dyn_reason"], strict=True)]
    if "neighbour_score" not in out:
        out["neighbour_score"] = np.nan
    out["label"] = out["label"].astype(int)
    out["fold"] = out["fold"].astype(int)
    out["rank_in_query"] = out["rank_in_query"].astype(int)
    return noise.rank_flags(out)


def create_job_from_run(ws: Workspace, run_id: str, *, dataset: str | None = None,
                        merge_job: str | None = None,
                        max_confidence: float = dynamics.MAX_CONFIDENCE) -> str:
    """A finished noise job (no worker: the run's files are read now) from the run's dynamics,
    merged with the out-of-fold job `merge_job` when given (same dataset)."""
    dataset_id, split_id, ds_name = _run_row(ws, run_id)
    if dataset:
        with db.connect(ws) as con:
            ds = resolve_dataset(con, dataset)
        if ds.dataset_id != dataset_id:
            raise ValueError(f"run {run_id} trained on dataset {ds_name!r}, not {ds.name!r}")
    dyn = run_flags(ws, run_id, max_confidence)
    oof = None
    if merge_job:
        listed = noise.list_jobs(ws).set_index("job_id")
        if merge_job not in listed.index:
            raise LookupError(f"no noise job {merge_job!r}")
        if listed.loc[merge_job, "dataset_id"] != dataset_id:
            raise ValueError(f"noise job {merge_job} is on dataset "
                             f"{listed.loc[merge_job, 'dataset']!r}, run {run_id} on {ds_name!r}")
        if listed.loc[merge_job, "status"] != runfiles.FINISHED:
            raise ValueError(f"noise job {merge_job} is {listed.loc[merge_job, 'status']}: "
                             "only a finished job's flags can be merged")
        with db.connect(ws) as con:
            oof = con.execute(f"SELECT {', '.join(COLS)} FROM noise_pairs WHERE job_id = ?",
                              [merge_job]).df()
    merged = merge_flags(dyn, oof)
    opts: dict[str, Any] = {"source": "dynamics", "run_id": run_id, "merged_with": merge_job,
                            "max_confidence": max_confidence, "dataset_id": dataset_id,
                            "dataset_name": ds_name, "split_id": split_id,
                            "validations": int(dyn["validations"].iloc[0]) if len(dyn) else 0}
    job_id = time.strftime("noise-%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    d = noise.job_dir(ws, job_id)
    d.mkdir(parents=True)
    runfiles.write_json_atomic(d / noise.OPTIONS, opts)
    carto_cols = ["query_id", "doc_id", "line", "label", "confidence", "variability",
                  "correctness", "strength", "source"]
    merged[merged["confidence"].notna()][carto_cols].to_json(
        d / CARTOGRAPHY, orient="records", lines=True, force_ascii=False)
    n_flagged = int(merged["strength"].notna().sum())
    runfiles.update_status(d, state=runfiles.FINISHED, created_at=runfiles.now_iso(),
                           finished_at=runfiles.now_iso(), pairs_scored=len(merged),
                           flagged=n_flagged)
    table = merged[COLS]
    with db.connect(ws) as con, db.transaction(con):
        con.execute("INSERT INTO noise_jobs (job_id, dataset_id, split_id, options, status, "
                    "finished_at, pairs_scored, flagged) VALUES (?, ?, ?, ?, ?, "
                    "current_timestamp, ?, ?)",
                    [job_id, dataset_id, split_id, json.dumps(opts), runfiles.FINISHED,
                     len(table), n_flagged])
        db.register(con, "dyn_flags_df", table)
        con.execute(f"INSERT INTO noise_pairs (job_id, {', '.join(COLS)}) SELECT ?, "
                    f"{', '.join(COLS)} FROM dyn_flags_df", [job_id])
        con.unregister("dyn_flags_df")
    return job_id


def cartography_of(ws: Workspace, job_id: str) -> pd.DataFrame | None:
    """The job's per-pair confidence/variability (None for a job without dynamics)."""
    path = noise.job_dir(ws, job_id) / CARTOGRAPHY
    if not path.is_file():
        return None
    return pd.read_json(path, lines=True, dtype={"query_id": str, "doc_id": str})


def scatter(carto: pd.DataFrame):
    """Confidence vs variability, flagged pairs highlighted (plotly figure; the page shows it)."""
    import plotly.express as px

    shown = carto.assign(flagged=np.where(carto["strength"].notna(), "flagged", "not flagged"))
    fig = px.scatter(shown, x="variability", y="confidence", color="flagged",
                     symbol="label", hover_data=["query_id", "doc_id", "label", "correctness",
                                                 "source"],
                     color_discrete_map={"flagged": "#d62728", "not flagged": "#9e9e9e"},
                     title="Training dynamics: confidence vs variability per training pair")
    fig.update_layout(xaxis_title="variability (std across validations)",
                      yaxis_title="confidence (mean probability of the given label)")
    return fig
