"""`reranker-studio sweep`: a hyperparameter grid queued as training runs, followed to the end."""

from __future__ import annotations

import argparse
import sys
import time

from lib.cli import print_json
from lib.cli_train import config_from_args
from lib.experiments import sweeps
from lib.experiments.grid import QUICK_LABEL, parse_grid
from lib.experiments.table import runs_table
from lib.training import jobs
from lib.training.config import PRESETS
from lib.workspace import Workspace


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sweep", parents=[common],
                       help="queue one training run per point of a hyperparameter grid")
    p.add_argument("--dataset", required=True, help="dataset id or name (its active split)")
    p.add_argument("--grid", required=True,
                   help="YAML file like `learning_rate: [2e-5, 3e-5]\\nepochs: [1, 2]`")
    p.add_argument("--quick", action="store_true", help=QUICK_LABEL)
    p.add_argument("--preset", choices=list(PRESETS), help="base config preset")
    p.add_argument("--config", help="base config file (YAML/JSON)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="base config override")
    p.add_argument("--no-wait", action="store_true", help="queue and return; the app runs them")
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimate only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args, ws: Workspace) -> int:
    if not args.preset and not args.config:  # the same base as the Experiments page
        args.preset = jobs.default_sweep_preset()
        print(f"base preset: {args.preset} (the default for sweeps here; --preset to choose "
              "another)", file=sys.stderr)
    base = config_from_args(args)
    grid = parse_grid(args.grid)
    plan = sweeps.plan_sweep(ws, args.dataset, base, grid, args.quick)
    log = sys.stderr if args.json else sys.stdout
    print(f"{plan.n_runs} runs, estimated {plan.total_seconds / 60:.1f} min one after another "
          f"(from {plan.throughput_source})" + (f"; {QUICK_LABEL}" if args.quick else ""),
          file=log)
    if args.dry_run:
        if args.json:
            print_json({"plan": plan.to_json()})
        return 0
    sweep = sweeps.launch_sweep(ws, args.dataset, base, grid, args.quick, plan)
    for w in sweep.warnings:
        print(f"warning: {w}", file=log)
    print(f"sweep {sweep.sweep_id}: queued {', '.join(sweep.run_ids)}", file=log)
    if not args.no_wait:
        try:
            _follow(ws, sweep.sweep_id, log)
        except KeyboardInterrupt:
            print("\ncancelling the sweep (finished runs are kept)", file=log)
            sweeps.cancel_sweep(ws, sweep.sweep_id, wait=True)
            return 130
    table = runs_table(ws)
    table = table[table["run_id"].isin(sweep.run_ids)]
    rows = []
    for _, r in table.iterrows():
        rows.append({
            "run_id": r["run_id"], "status": r["status"],
            "params": {k: _plain(r[k]) for k in grid},
            "best": {"ndcg@10": _plain(r["best_ndcg10"]), "mrr@10": _plain(r["best_mrr10"])},
            "start_ndcg@10": _plain(r["start_ndcg10"]),
        })
    if args.json:
        print_json({"sweep_id": sweep.sweep_id, "mode": "quick" if args.quick else "full",
                    "plan": plan.to_json(), "runs": rows})
    else:
        for row in rows:
            ndcg = row["best"]["ndcg@10"]
            print(f"{row['run_id']}  {row['status']:<9} {row['params']}  validation NDCG@10 "
                  f"{'-' if ndcg is None else f'{ndcg:.4f}'}")
    return 0 if all(r["status"] == "finished" for r in rows) or args.no_wait else 1


def _plain(value):
    if value is None:
        return None
    try:
        import math

        if isinstance(value, float) and math.isnan(value):
            return None
    except TypeError:
        pass
    return value.item() if hasattr(value, "item") else value


def _follow(ws: Workspace, sweep_id: str, out) -> None:
    seen: dict[str, str] = {}
    while True:
        jobs.tick(ws)
        for _, r in runs_table(ws).iterrows():
            if r["sweep_id"] == sweep_id and seen.get(r["run_id"]) != r["status"]:
                seen[r["run_id"]] = r["status"]
                print(f"  {r['run_id']}: {r['status']}", file=out, flush=True)
        if sweeps.sweep_done(ws, sweep_id):
            return
        time.sleep(1.0)
