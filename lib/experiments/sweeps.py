"""A sweep: a grid over a base config, queued as ordinary training runs, tracked together."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lib import db
from lib.datasets import resolve_dataset
from lib.experiments.estimate import estimate_run_seconds, throughput
from lib.experiments.grid import QUICK_LABEL, expand_grid
from lib.split import active_split_id, load_split_pairs
from lib.training import jobs, runfiles
from lib.training.config import TrainConfig
from lib.workspace import Workspace


@dataclass
class SweepPlan:
    """What a sweep would do, shown before anything is queued."""

    points: list[tuple[dict[str, Any], TrainConfig]]
    seconds_each: list[float]
    throughput_source: str
    train_pairs: int
    validation_pairs: int
    quick: bool

    @property
    def n_runs(self) -> int:
        return len(self.points)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds_each))  # one job at a time on a device

    def to_json(self) -> dict:
        return {
            "runs": self.n_runs,
            "estimated_total_s": round(self.total_seconds),
            "estimated_s_each": [round(s) for s in self.seconds_each],
            "throughput_source": self.throughput_source,
            "quick": self.quick,
            "mode": QUICK_LABEL if self.quick else "full",
        }


@dataclass
class Sweep:
    sweep_id: str
    run_ids: list[str]
    plan: SweepPlan
    warnings: list[str] = field(default_factory=list)


def plan_sweep(
    ws: Workspace, dataset: str, base: TrainConfig, grid: dict[str, list], quick: bool = False
) -> SweepPlan:
    points = expand_grid(base, grid, quick)
    pairs = load_split_pairs(ws, dataset)
    n_train = int((pairs["split"] == "train").sum())
    n_val = int((pairs["split"] == "validation").sum())
    estimates, sources = [], set()
    for _, cfg in points:
        ref = throughput(ws, cfg)
        sources.add(ref.source)
        estimates.append(estimate_run_seconds(cfg, n_train, n_val, ref))
    return SweepPlan(points, estimates, "; ".join(sorted(sources)), n_train, n_val, quick)


def launch_sweep(
    ws: Workspace, dataset: str, base: TrainConfig, grid: dict[str, list], quick: bool = False,
    plan: SweepPlan | None = None,
) -> Sweep:
    """Queue one run per grid point (the queue runs them one per device); nothing starts twice."""
    plan = plan or plan_sweep(ws, dataset, base, grid, quick)
    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
        split_id = active_split_id(con, ds.dataset_id)
    sweep_id = "sw-" + uuid.uuid4().hex[:10]
    run_ids, warnings = [], []
    with db.connect(ws) as con:
        con.execute(
            "INSERT INTO sweeps (sweep_id, dataset_id, split_id, base_config, grid, quick, "
            "estimate_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [sweep_id, ds.dataset_id, split_id, json.dumps(base.to_json()), json.dumps(grid),
             quick, plan.total_seconds],
        )
    for params, cfg in plan.points:
        created = jobs.create_run(ws, ds.dataset_id, cfg, split_id=split_id)
        run_ids.append(created.run_id)
        warnings.extend(w for w in created.warnings if w not in warnings)
        with db.connect(ws) as con:
            con.execute("INSERT INTO sweep_runs VALUES (?, ?, ?)",
                        [sweep_id, created.run_id, json.dumps(params)])
    return Sweep(sweep_id, run_ids, plan, warnings)


def cancel_sweep(ws: Workspace, sweep_id: str, wait: bool = False) -> dict[str, str]:
    """Queued runs are cancelled first (so none starts meanwhile), then a running one is stopped
    gracefully (it keeps its checkpoint and can be resumed); finished runs are kept as they are.
    With `wait`, return once the stopped runs have ended."""
    run_ids = sweep_run_ids(ws, sweep_id)
    with db.connect(ws) as con:
        con.execute("UPDATE sweeps SET cancelled = true WHERE sweep_id = ?", [sweep_id])
    states = {r: jobs.run_status(ws, r).get("state") for r in run_ids}
    outcome = {r: s or "unknown" for r, s in states.items()}
    for run_id, state in states.items():
        if state == runfiles.QUEUED:
            outcome[run_id] = jobs.request_stop(ws, run_id)
    for run_id, state in states.items():
        if state in runfiles.ACTIVE:
            outcome[run_id] = jobs.request_stop(ws, run_id)
            if wait:
                outcome[run_id] = jobs.wait_for(ws, run_id, jobs.STOP_TIMEOUT_S + 30).get(
                    "state", "unknown")
    jobs.tick(ws)  # ingest the new states
    return outcome


def sweep_run_ids(ws: Workspace, sweep_id: str) -> list[str]:
    with db.connect(ws) as con:
        rows = con.execute(
            "SELECT s.run_id FROM sweep_runs s JOIN runs r USING (run_id) WHERE s.sweep_id = ? "
            "ORDER BY r.created_at", [sweep_id]).fetchall()
    if not rows:
        raise LookupError(f"no sweep {sweep_id!r}")
    return [r[0] for r in rows]


def list_sweeps(ws: Workspace) -> pd.DataFrame:
    with db.connect(ws) as con:
        return con.execute(
            "SELECT s.sweep_id, d.name AS dataset, s.grid, s.quick, s.estimate_s, s.created_at, "
            "s.cancelled, count(*) AS runs, "
            "count(*) FILTER (WHERE r.status = 'finished') AS finished "
            "FROM sweeps s JOIN sweep_runs sr USING (sweep_id) JOIN runs r USING (run_id) "
            "LEFT JOIN datasets d ON d.dataset_id = s.dataset_id "
            "GROUP BY ALL ORDER BY s.created_at DESC"
        ).df()


def sweep_done(ws: Workspace, sweep_id: str) -> bool:
    with db.connect(ws) as con:
        rows = con.execute(
            "SELECT r.status FROM sweep_runs s JOIN runs r USING (run_id) WHERE s.sweep_id = ?",
            [sweep_id]).fetchall()
    return all(r[0] in runfiles.TERMINAL for r in rows)
