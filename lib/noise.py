"""Label-noise finder: training pairs whose label their neighbours (lib.noise_neighbours: the
query's other labelled documents) or out-of-fold cross-encoders confidently disagree with.

Why out-of-fold: a model that trained on a pair has memorised its label, so its score says
nothing about whether the label is wrong. The training queries are split into k folds (grouped
by query: a query's pairs are never scored by a model that saw any of them); a cross-encoder is
trained on k-1 folds and scores the held-out one. The scores are then read as RANKING evidence
inside each query (`flag_pairs`): a pair labelled not relevant that the model ranks above the
query's positives, a relevant one it ranks below the negatives, grades out of order. Flags are a
ranked list with a reason in words and a strength, for a person to review: published audits find
only about half of automatic flags are really wrong, so nothing is ever changed automatically.

The scoring runs as a detached worker (`python -m lib.noise_worker JOB_DIR`, the training
worker's process handling, status and stop files); it writes files only, `ingest_job` loads
them into the database.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib import db
from lib.datasets import resolve_dataset
from lib.split import active_split_id
from lib.training import jobs, runfiles
from lib.workspace import Workspace, safe_name

SCORES = "scores.jsonl"  # written by the worker: one line per held-out pair
OPTIONS = "options.json"
PAIRS = "pairs.jsonl"  # exported by the launcher: the training pairs with their fold
CARTOGRAPHY = "cartography.jsonl"  # a dynamics job: per-pair confidence/variability
EVIDENCE = ("neighbours", "both", "models")
STRONG = 1.0  # strength (in within-query standard deviations) from which a flag is "strong"


@dataclass(frozen=True)
class NoiseOptions:
    folds: int = 2
    quick: bool = False  # fewer pairs, short max length: minutes on a CPU
    base_model: str = "default"
    epochs: int = 1
    max_length: int | None = None  # None: 128 quick, 256 otherwise
    max_pairs: int | None = None  # None: 800 quick, all otherwise (whole queries, seeded)
    batch_size: int = 16
    learning_rate: float = 5e-5
    seed: int = 13
    margin: float = 0.0  # flag when the evidence exceeds this many standard deviations
    baseline: bool = False  # also score the zero-shot bi-encoder (cosine) for comparison
    cpu_threads: int = 0
    device: str = "auto"
    # each fold model first learns this teacher's scores on its own training folds' pairs (the
    # Distil recipe: 'biencoder', or a cross-encoder path/id); None: labels only
    distill_teacher: str | None = None
    # a fold holds few queries: more sampled documents and epochs than a training run's Distil
    # preset, or the fold model barely moves towards the teacher (measured: 36 steps took the
    # MSE from 1.12 to 1.10 on 20 demo queries)
    distill_epochs: int = 3
    distill_docs_per_query: int = 30
    # what the flags rest on: 'neighbours' (is the document like the query's other relevant or
    # non-relevant documents; seconds, no training), 'models' (out-of-fold cross-encoders), or
    # 'both' (one ranked list, the models' strengths at half weight). Neighbours by default: on
    # the demo with planted flips they caught about twice what the fold models did, and adding
    # the models did not raise the catch reliably (bench/noise.py, bench/results/noise.log)
    evidence: str = "neighbours"
    neighbour_model: str = "biencoder"  # embeds the documents: the bar's bi-encoder, or an id

    def validated(self) -> NoiseOptions:
        if not 2 <= self.folds <= 20:
            raise ValueError(f"folds must be between 2 and 20, got {self.folds}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.distill_epochs < 1 or self.distill_docs_per_query < 0:
            raise ValueError("distill_epochs must be at least 1 and distill_docs_per_query at "
                             "least 0")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.evidence not in EVIDENCE:
            raise ValueError(f"evidence must be one of {', '.join(EVIDENCE)}, got "
                             f"{self.evidence!r}")
        return self

    @property
    def uses_models(self) -> bool:
        return self.evidence in ("models", "both")

    @property
    def uses_neighbours(self) -> bool:
        return self.evidence in ("neighbours", "both")

    @property
    def effective_max_length(self) -> int:
        return self.max_length or (128 if self.quick else 256)

    @property
    def effective_max_pairs(self) -> int | None:
        return self.max_pairs or (800 if self.quick else None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---- folds and flags (pure) ---------------------------------------------------------------------
def assign_folds(query_ids, k: int, seed: int) -> dict[str, int]:
    """Seeded round robin over the sorted, shuffled query ids: folds differ by at most one
    query, and the same data and seed always give the same folds."""
    qids = sorted({str(q) for q in query_ids})
    order = np.random.default_rng(seed).permutation(len(qids))
    return {qids[j]: i % k for i, j in enumerate(order)}


def _z(scores: pd.Series) -> pd.Series:
    sd = float(scores.std(ddof=0))
    return (scores - scores.mean()) / (sd if sd > 1e-9 else 1.0)


def _loo_agreement(z: np.ndarray, is_pos: np.ndarray) -> np.ndarray:
    """Per pair: the share of the query's OTHER (relevant, non-relevant) pairs the scores order
    correctly (leave-one-out AUC); NaN where no such pair is left. One wrong label in a query the
    model otherwise orders well is strong evidence; in a query it orders badly it is not."""
    p, n = z[is_pos], z[~is_pos]
    conc = (p[:, None] > n[None, :]) + 0.5 * (p[:, None] == n[None, :])
    total = conc.sum()
    out = np.full(len(z), np.nan)
    if len(n) > 1:
        out[~is_pos] = (total - conc.sum(axis=0)) / (len(p) * (len(n) - 1))
    if len(p) > 1:
        out[is_pos] = (total - conc.sum(axis=1)) / ((len(p) - 1) * len(n))
    return out


def flag_pairs(frame: pd.DataFrame, score_col: str = "oof_score",
               margin: float = 0.0) -> pd.DataFrame:
    """Per pair: rank_in_query, agreement, strength (NaN = not flagged), reason; strongest first.

    `frame` needs query_id, doc_id, label and the score column. Scores are compared only inside
    a query (z-scored there), so folds whose models score on different scales stay comparable:
    - label 0: how far (in the query's standard deviations) it scores above the mean of the
      query's positives;
    - label > 0: how far it scores below the mean of the query's negatives; with grades, also
      how far it scores below the mean of the pairs graded lower than it (grades out of order,
      counted at half weight);
    - that gap is weighted by how well the scores order the query's other pairs (`agreement`,
      leave-one-out AUC): the model must know the query to contradict one of its labels;
    - a query with only one kind of label: its pairs against the same statistic over every
      query of the same fold, at agreement 0.5 (so a relevant pair flipped to 0 in a
      one-positive query is still seen, but ranks below well-supported flags).
    """
    out = frame.copy().reset_index(drop=True)
    out["label"] = out["label"].astype(int)
    s = out[score_col].astype(float)
    out["rank_in_query"] = s.groupby(out["query_id"]).rank(ascending=False, method="first"
                                                             ).astype(int)
    z_q = s.groupby(out["query_id"]).transform(_z).to_numpy()
    group = out["fold"] if "fold" in out else pd.Series(0, index=out.index)
    z_g = s.groupby(group).transform(_z).to_numpy()
    labels = out["label"].to_numpy()
    strength = np.full(len(out), np.nan)
    agreement = np.full(len(out), np.nan)
    reasons: list[str | None] = [None] * len(out)
    fold_pos = {f: z_g[(group == f).to_numpy() & (labels > 0)].mean() if
                ((group == f).to_numpy() & (labels > 0)).any() else np.nan
                for f in group.unique()}
    fold_neg = {f: z_g[(group == f).to_numpy() & (labels == 0)].mean() if
                ((group == f).to_numpy() & (labels == 0)).any() else np.nan
                for f in group.unique()}
    for _qid, idx in out.groupby("query_id", sort=False).indices.items():
        lab = labels[idx]
        is_pos = lab > 0
        n = len(idx)
        one_sided = is_pos.all() or not is_pos.any()
        if one_sided:
            z = z_g[idx]
            f = group.iloc[idx[0]]
            ref_pos, ref_neg = fold_pos[f], fold_neg[f]
            agree = np.full(n, 0.5)
            where = ("its query has only " + ("negatives" if not is_pos.any() else "positives")
                     + ", so it is compared with every query of its fold")
        else:
            z = z_q[idx]
            ref_pos, ref_neg = z[is_pos].mean(), z[~is_pos].mean()
            agree = _loo_agreement(z, is_pos)
            where = None
        agreement[idx] = agree
        for k, i in enumerate(idx):
            w = 0.5 if np.isnan(agree[k]) else float(agree[k])
            r = int(out.at[i, "rank_in_query"])
            ctx = where or (f"the model ranks it {r} of {n} in its query and orders the "
                            f"query's other pairs right {w:.0%} of the time")
            if lab[k] == 0:
                gap = z[k] - ref_pos
                if not np.isnan(gap) and gap > margin:
                    strength[i] = gap * w
                    reasons[i] = (f"labelled 0 (not relevant) but scored {gap:.2f} sd above "
                                  f"the mean of the relevant pairs; {ctx}")
                continue
            gap = ref_neg - z[k] if not np.isnan(ref_neg) else -np.inf
            lower = (~one_sided) & is_pos & (lab < lab[k])
            order_gap = z[lower].mean() - z[k] if lower.any() else -np.inf
            if gap > margin and gap >= 0.5 * order_gap:
                strength[i] = gap * w
                reasons[i] = (f"labelled {lab[k]} (relevant) but scored {gap:.2f} sd below "
                              f"the mean of the non-relevant pairs; {ctx}")
            elif order_gap > margin:
                strength[i] = 0.5 * order_gap * w
                reasons[i] = (f"labelled {lab[k]} but scored {order_gap:.2f} sd below the "
                              f"mean of the pairs graded lower; {ctx}")
    out["agreement"] = agreement
    out["strength"] = strength
    out["reason"] = reasons
    return rank_flags(out)


def rank_flags(out: pd.DataFrame) -> pd.DataFrame:
    """Strongest first (ties: query, then the model's order); flag_rank 1..n, NA unflagged."""
    out = out.sort_values(["strength", "query_id", "rank_in_query"],
                          ascending=[False, True, True], na_position="last", ignore_index=True)
    flagged = out["strength"].notna().to_numpy()
    out["flag_rank"] = pd.array(np.where(flagged, np.arange(1, len(out) + 1), None),
                                dtype="Int64")
    return out


def precision_recall(flags: pd.DataFrame, truth: set[tuple[str, str]], n: int,
                     recall_at: int) -> tuple[float, float]:
    """Precision among the top n flags and recall of `truth` among the top `recall_at`."""
    ranked = flags[flags["strength"].notna()]
    keys = list(zip(ranked["query_id"].astype(str), ranked["doc_id"].astype(str), strict=True))
    top_n = set(keys[:n])
    top_r = set(keys[:recall_at])
    return len(top_n & truth) / max(1, n), len(top_r & truth) / max(1, len(truth))


def biencoder_scores(pairs: pd.DataFrame, model: str | None = None,
                     device: str | None = None) -> np.ndarray:
    """Zero-shot baseline: cosine of the bundled bi-encoder (or `model`, a local dir)."""
    from lib.evaluation.rankers import BIENCODER, Ranker, parse_ranker
    from lib.evaluation.scoring import score_ranker

    ranker = (Ranker(BIENCODER, model, "biencoder", path=model, model_kind="local") if model
              else parse_ranker("biencoder"))
    return score_ranker(None, ranker, pairs.reset_index(drop=True), device=device)[0]


# ---- jobs ---------------------------------------------------------------------------------------
def jobs_dir(ws: Workspace) -> Path:
    return ws.child("noise")


def job_dir(ws: Workspace, job_id: str) -> Path:
    return ws.child("noise", safe_name(job_id))


def _training_pairs(ws: Workspace, dataset: str) -> tuple[Any, str, pd.DataFrame]:
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        sid = active_split_id(con, ds.dataset_id)
        if sid is None:
            raise ValueError(f"dataset {ds.name!r} has no split: run `reranker-studio split` "
                             "first (the finder scores the training queries)")
        pairs = con.execute(
            "SELECT p.line, p.query_id, p.doc_id, p.query, p.document, p.label FROM pairs p "
            "JOIN split_assignments a ON a.query_id = p.query_id AND a.split_id = ? "
            "WHERE p.dataset_id = ? AND a.split = 'train' ORDER BY p.line",
            [sid, ds.dataset_id]).df()
    if pairs.empty:
        raise ValueError(f"dataset {ds.name!r} has no training queries in its active split")
    return ds, sid, pairs


def create_job(ws: Workspace, dataset: str, options: NoiseOptions | None = None, *,
               launch: bool = True) -> str:
    """Export the training pairs with their folds, record the job, start the worker."""
    opt = (options or NoiseOptions()).validated()
    ds, sid, pairs = _training_pairs(ws, dataset)
    if opt.effective_max_pairs and opt.uses_models:  # neighbours alone score every pair
        pairs = jobs.subsample_queries(pairs, opt.effective_max_pairs, opt.seed)
    if pairs["query_id"].nunique() < opt.folds:
        raise ValueError(f"{pairs['query_id'].nunique()} training queries cannot make "
                         f"{opt.folds} folds")
    folds = assign_folds(pairs["query_id"], opt.folds, opt.seed)
    pairs = pairs.assign(fold=pairs["query_id"].astype(str).map(folds))
    job_id = time.strftime("noise-%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    d = job_dir(ws, job_id)
    d.mkdir(parents=True)
    runfiles.write_json_atomic(d / OPTIONS, {**opt.to_json(), "dataset_id": ds.dataset_id,
                                             "dataset_name": ds.name, "split_id": sid,
                                             "max_label": int(ds.max_label)})
    pairs.to_json(d / PAIRS, orient="records", lines=True, force_ascii=False)
    runfiles.update_status(d, state=runfiles.QUEUED, created_at=runfiles.now_iso(),
                           pairs=len(pairs), folds=opt.folds, fold=0)
    with db.connect(ws) as con:
        con.execute("INSERT INTO noise_jobs (job_id, dataset_id, split_id, options, status) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [job_id, ds.dataset_id, sid, json.dumps(opt.to_json()), runfiles.QUEUED])
    if launch:
        launch_job(ws, job_id)
    return job_id


def launch_job(ws: Workspace, job_id: str) -> dict[str, Any]:
    """Detached (own session, output to worker.log), pid + start time recorded, as training."""
    d = job_dir(ws, job_id)
    (d / runfiles.STOP).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "lib.noise_worker", str(d)]
    opts = json.loads((d / OPTIONS).read_text(encoding="utf-8"))
    # one GPU when there is one (the fold models are small jobs), none for a CPU job
    gpus = [] if opts.get("device") == "cpu" else list(jobs.visible_gpus()[:1])
    runfiles.update_status(d, state=runfiles.STARTING, launched_at=runfiles.now_iso())
    with open(d / runfiles.LOG, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(jobs.PROJECT_ROOT), env=jobs.worker_env(ws, gpus),
                                close_fds=True)
    jobs._children[proc.pid] = proc  # reaped by jobs.process_alive, as training workers are
    info = {"pid": proc.pid, "pgid": proc.pid, **jobs.process_identity(proc.pid), "argv": argv,
            "gpus": gpus, "launcher": "python", "launched_at": runfiles.now_iso()}
    runfiles.write_json_atomic(d / runfiles.PID, info)
    _set_status(ws, job_id, runfiles.STARTING)
    return info


def _set_status(ws: Workspace, job_id: str, state: str, **fields: Any) -> None:
    with db.connect(ws) as con:
        con.execute("UPDATE noise_jobs SET status = ? WHERE job_id = ?", [state, job_id])
        for k, v in fields.items():
            con.execute(f"UPDATE noise_jobs SET {k} = ? WHERE job_id = ?", [v, job_id])


def job_status(ws: Workspace, job_id: str) -> dict[str, Any]:
    """status.json corrected as training's (a dead worker is failed, an overdue stop killed),
    and, once the worker has finished, its scores ingested (idempotent)."""
    d = job_dir(ws, job_id)
    if not (d / OPTIONS).is_file():
        raise LookupError(f"no noise job {job_id!r} in {jobs_dir(ws)}")
    status = jobs.refresh_run(d)
    state = status.get("state")
    with db.connect(ws) as con:
        row = con.execute("SELECT status FROM noise_jobs WHERE job_id = ?", [job_id]).fetchone()
    known = row[0] if row else None
    if state == runfiles.FINISHED and known != runfiles.FINISHED:
        ingest_job(ws, job_id)
    elif state != known and state is not None:
        _set_status(ws, job_id, state, error=status.get("error"))
    return status


def request_stop(ws: Workspace, job_id: str, timeout_s: float = 30.0) -> str:
    """Stop file + SIGTERM; the worker stops at its next step (enforced by `job_status`)."""
    import os
    import signal

    d = job_dir(ws, job_id)
    status = jobs.refresh_run(d)
    if status.get("state") not in runfiles.ACTIVE:
        raise ValueError(f"noise job {job_id} is {status.get('state')}: nothing to stop")
    runfiles.write_json_atomic(d / runfiles.STOP, {"requested_at": time.time(),
                                                   "timeout_s": timeout_s})
    info = jobs.read_pid(d)
    if info and jobs.process_alive(info):
        try:
            os.kill(int(info["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    return "stopping"


def wait_job(ws: Workspace, job_id: str, timeout_s: float | None = None,
             poll_s: float = 0.5, progress=None) -> dict[str, Any]:
    deadline = None if timeout_s is None else time.time() + timeout_s
    while True:
        status = job_status(ws, job_id)
        if progress is not None:
            progress(status)
        if status.get("state") in runfiles.TERMINAL:
            return status
        if deadline is not None and time.time() > deadline:
            return status
        time.sleep(poll_s)


def ingest_job(ws: Workspace, job_id: str) -> int:
    """Load the worker's scores, compute the flags and store them; returns the flag count."""
    d = job_dir(ws, job_id)
    opts = json.loads((d / OPTIONS).read_text(encoding="utf-8"))
    scores = pd.read_json(d / SCORES, lines=True, dtype={"query_id": str, "doc_id": str})
    flags = job_flags(scores, float(opts.get("margin", 0.0)))
    for col in ("baseline_score", "neighbour_score", "oof_score"):
        if col not in flags:
            flags[col] = np.nan
    cols = ["query_id", "doc_id", "line", "label", "fold", "oof_score", "baseline_score",
            "rank_in_query", "strength", "reason", "flag_rank", "neighbour_score", "source"]
    table = flags[cols]
    n_flagged = int(table["strength"].notna().sum())
    with db.connect(ws) as con, db.transaction(con):
        con.execute("DELETE FROM noise_pairs WHERE job_id = ?", [job_id])
        db.register(con, "flags_df", table)
        con.execute(f"INSERT INTO noise_pairs (job_id, {', '.join(cols)}) SELECT ?, "
                    f"{', '.join(cols)} FROM flags_df", [job_id])
        con.unregister("flags_df")
        con.execute("UPDATE noise_jobs SET status = ?, finished_at = current_timestamp, "
                    "pairs_scored = ?, flagged = ?, error = NULL WHERE job_id = ?",
                    [runfiles.FINISHED, len(table), n_flagged, job_id])
    return n_flagged


def job_flags(scores: pd.DataFrame, margin: float = 0.0) -> pd.DataFrame:
    """The flags of a job's scores: out-of-fold model evidence where `oof_score` was computed,
    neighbour evidence where `neighbour_score` was, one ranked list when both."""
    from lib import noise_neighbours as nb

    sources = {}
    if "oof_score" in scores and scores["oof_score"].notna().all():
        sources[nb.MODELS] = flag_pairs(scores, "oof_score", margin=margin)
    if "neighbour_score" in scores and scores["neighbour_score"].notna().all():
        sources[nb.NEIGHBOURS] = nb.neighbour_flags(scores, margin=margin)
    if not sources:
        raise ValueError("the job's scores hold neither out-of-fold nor neighbour scores")
    return nb.combine(sources, {nb.MODELS: nb.MODEL_WEIGHT})


def list_jobs(ws: Workspace, dataset: str | None = None) -> pd.DataFrame:
    with db.connect(ws) as con:
        sql = ("SELECT j.job_id, d.name AS dataset, j.dataset_id, j.status, j.created_at, "
               "j.finished_at, j.pairs_scored, j.flagged, j.options, j.error FROM noise_jobs j "
               "LEFT JOIN datasets d USING (dataset_id)")
        params: list[Any] = []
        if dataset:
            ds = resolve_dataset(con, dataset)
            sql += " WHERE j.dataset_id = ?"
            params.append(ds.dataset_id)
        return con.execute(sql + " ORDER BY j.created_at DESC", params).df()


def flags_table(ws: Workspace, job_id: str, only_flagged: bool = True) -> pd.DataFrame:
    """The job's pairs with query and document text and the current decision; strongest first.
    `source` names where each flag came from; a job built from training dynamics adds the
    pairs' confidence and variability."""
    with db.connect(ws) as con:
        table = con.execute(
            "SELECT n.flag_rank, n.query_id, p.query, n.doc_id, p.document, n.label, "
            "n.oof_score, n.neighbour_score, n.baseline_score, n.rank_in_query, n.strength, "
            "n.reason, n.source, "
            "coalesce(x.decision, 'pending') AS decision, x.new_label "
            "FROM noise_pairs n JOIN noise_jobs j USING (job_id) "
            "JOIN pairs p ON p.dataset_id = j.dataset_id AND p.line = n.line "
            "AND p.query_id = n.query_id AND p.doc_id = n.doc_id "
            "LEFT JOIN noise_decisions x ON x.job_id = n.job_id AND x.query_id = n.query_id "
            "AND x.doc_id = n.doc_id WHERE n.job_id = ? "
            + ("AND n.strength IS NOT NULL " if only_flagged else "")
            + "ORDER BY n.flag_rank NULLS LAST, n.query_id, n.rank_in_query", [job_id]).df()
    old = table["source"].isna() & table["strength"].notna()  # flagged before sources were kept
    table.loc[old, "source"] = "out-of-fold"
    carto = job_dir(ws, job_id) / CARTOGRAPHY
    if not carto.is_file():
        return table
    extra = pd.read_json(carto, lines=True, dtype={"query_id": str, "doc_id": str})
    extra = extra.drop_duplicates(["query_id", "doc_id"])[["query_id", "doc_id", "confidence",
                                                           "variability"]]
    return table.merge(extra, on=["query_id", "doc_id"], how="left")


def query_pairs(ws: Workspace, job_id: str, query_id: str) -> pd.DataFrame:
    """All of one query's scored pairs (the context of a flag), in the job's order: the fold
    models' when they scored, else the neighbour score's."""
    with db.connect(ws) as con:
        return con.execute(
            "SELECT n.rank_in_query, n.doc_id, n.label, n.oof_score, n.neighbour_score, "
            "n.baseline_score, n.strength IS NOT NULL AS flagged, n.source, p.document "
            "FROM noise_pairs n "
            "JOIN noise_jobs j USING (job_id) JOIN pairs p ON p.dataset_id = j.dataset_id "
            "AND p.line = n.line AND p.query_id = n.query_id AND p.doc_id = n.doc_id "
            "WHERE n.job_id = ? AND n.query_id = ? ORDER BY n.rank_in_query",
            [job_id, query_id]).df()


def flagged_json(ws: Workspace, job_id: str) -> list[dict[str, Any]]:
    """The CLI's `flagged` list: the keys the issue names, plus `source` and `neighbour_score`
    (`oof_score` is None when no fold model scored)."""
    t = flags_table(ws, job_id)
    dyn = "confidence" in t  # a job built from training dynamics: the map too

    def num(x, digits: int = 6):
        return None if pd.isna(x) else round(float(x), digits)

    return [{"query_id": r.query_id, "doc_id": r.doc_id, "label": int(r.label),
             "oof_score": num(r.oof_score), "rank_in_query": int(r.rank_in_query),
             "reason": r.reason, "strength": round(float(r.strength), 4), "source": r.source,
             "neighbour_score": num(r.neighbour_score),
             **({"confidence": num(r.confidence, 4), "variability": num(r.variability, 4)}
                if dyn else {})}
            for r in t.itertuples(index=False)]


def plant_flips(pairs: pd.DataFrame, share: float, seed: int,
                relevant_label: int = 2) -> tuple[pd.DataFrame, set[tuple[str, str]]]:
    """Known label errors for measuring a finder: `share` of the pairs (seeded) flipped,
    relevant -> 0 and 0 -> `relevant_label`. Returns the noisy pairs and the flipped keys."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(share * len(pairs))))
    idx = rng.choice(len(pairs), size=n, replace=False)
    out = pairs.copy().reset_index(drop=True)
    old = out.loc[idx, "label"].astype(int)
    out.loc[idx, "label"] = np.where(old > 0, 0, relevant_label)
    truth = set(zip(out.loc[idx, "query_id"].astype(str), out.loc[idx, "doc_id"].astype(str),
                    strict=True))
    return out, truth
