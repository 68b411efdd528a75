"""Training subcommands: train, runs, stop, resume, move.

`train` queues a run and follows the same detached worker the Train page launches, printing its
progress; Ctrl+C asks for a graceful stop (checkpoint saved, resumable), a second Ctrl+C kills.
Exit codes: 0 finished, 1 failed, 2 bad input, 3 stopped or cancelled.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from lib.cli import print_json
from lib.training import baselines, jobs, runfiles
from lib.training.config import (
    PRESETS,
    build_config,
    load_config_file,
    parse_set,
)
from lib.workspace import Workspace

EXIT = {runfiles.FINISHED: 0, runfiles.FAILED: 1, runfiles.STOPPED: 3, runfiles.CANCELLED: 3}


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="fine-tune a cross-encoder on a dataset")
    p.add_argument("--dataset", required=True, help="dataset id or name")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="start from a preset (then --config, then --set override it); without "
                        "--preset or --config, the Train page's default: 'CPU recommended' "
                        "(no GPU) or 'GPU recommended'")
    p.add_argument("--config", help="YAML or JSON file of config keys (a run's config.yaml works)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set learning_rate=2e-5 (repeatable)")
    p.add_argument("--split", help="split id (default: the dataset's active split)")
    p.add_argument("--detach", action="store_true",
                   help="queue the run and return; it runs on without this command")
    p.add_argument("--stop-timeout", type=float, default=jobs.STOP_TIMEOUT_S,
                   help="seconds a graceful stop may take before the worker is killed")
    p.add_argument("--json", action="store_true",
                   help="progress to stderr, one JSON object on stdout at the end")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", parents=[common], help="list training runs and the queue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("stop", parents=[common],
                       help="stop a run gracefully (checkpoint, resumable) or cancel a queued one")
    p.add_argument("run_id")
    p.add_argument("--timeout", type=float, default=jobs.STOP_TIMEOUT_S,
                   help="seconds before the worker is killed (SIGKILL)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("resume", parents=[common],
                       help="continue a stopped or failed run from its last checkpoint")
    p.add_argument("run_id")
    p.add_argument("--detach", action="store_true")
    p.add_argument("--stop-timeout", type=float, default=jobs.STOP_TIMEOUT_S)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("move", parents=[common], help="reorder the queue")
    p.add_argument("run_id")
    p.add_argument("direction", choices=["up", "down", "top"])
    p.set_defaults(func=cmd_move)


def config_from_args(args) -> Any:
    values: dict[str, Any] = {}
    if args.preset:
        values.update(PRESETS[args.preset])
    if args.config:
        values.update(load_config_file(args.config))
    values.update(parse_set(args.set))
    return build_config(values, source="--config/--set" if args.config or args.set else "config")


def _fmt(record: dict[str, Any], max_steps: int | None) -> str | None:
    kind = record.get("kind")
    if kind == "start":
        return (f"started on {record.get('device')} ({record.get('precision')}): "
                f"{record.get('train_pairs')} training pairs, {record.get('max_steps')} steps, "
                f"validation {record.get('validation_queries')} queries"
                + (" [resumed]" if record.get("resumed") else ""))
    if kind == "train":
        lr = record.get("lr")
        return (f"step {record.get('step')}/{max_steps or '?'} epoch {record.get('epoch') or 0:.2f}"
                f"  loss {record.get('loss') or float('nan'):.4f}"
                f"  lr {lr if lr is not None else float('nan'):.2e}"
                f"  {record.get('samples_per_s') or 0:.1f} samples/s")
    if kind == "eval":
        return (f"validation @ step {record.get('step')}: NDCG@10 {record.get('ndcg@10'):.4f}"
                f"  MRR@10 {record.get('mrr@10'):.4f}  ({record.get('n_queries')} queries, "
                f"{record.get('eval_seconds')} s)")
    return None


def follow(ws: Workspace, run_id: str, out, stop_timeout: float) -> dict[str, Any]:
    """Tick the queue, print new progress, until the run ends. Ctrl+C = graceful stop."""
    run_dir = jobs.run_dir_of(ws, run_id)
    seen, last_tick, stop_sent, said_queued = 0, 0.0, False, False
    max_steps = None
    while True:
        try:
            if time.monotonic() - last_tick >= 2.0:
                jobs.tick(ws)
                last_tick = time.monotonic()
            status = jobs.refresh_run(run_dir)
            for record in runfiles.read_progress(run_dir, skip=seen):
                seen += 1
                max_steps = record.get("max_steps", max_steps)
                line = _fmt(record, max_steps)
                if line:
                    print(line, file=out, flush=True)
            state = status.get("state")
            if state in runfiles.TERMINAL:
                jobs.tick(ws)  # ingest the end, start whatever waits
                return status
            if state == runfiles.QUEUED and not said_queued:
                print(f"run {run_id} queued: waiting for a free device", file=out, flush=True)
                said_queued = True
            time.sleep(0.5)
        except KeyboardInterrupt:
            if not stop_sent:
                print("\nstopping gracefully (checkpoint, then exit); Ctrl+C again to kill",
                      file=out, flush=True)
                jobs.request_stop(ws, run_id, stop_timeout)
                stop_sent = True
            else:
                print("\nkilling the worker", file=out, flush=True)
                jobs.request_stop(ws, run_id, 0.0)
                jobs.refresh_run(run_dir, stop_timeout_s=0.0)


def summary(run_id: str, status: dict[str, Any]) -> dict[str, Any]:
    best = status.get("best") or {}
    start = status.get("start") or {}
    bar = status.get("baselines") or {}
    best_ndcg = best.get("ndcg@10")
    return {
        "run_id": run_id,
        "status": status.get("state"),
        "model_path": status.get("model_path"),
        "best": {"ndcg@10": best.get("ndcg@10"), "mrr@10": best.get("mrr@10"),
                 "step": best.get("step")},
        "start": {"ndcg@10": start.get("ndcg@10"), "mrr@10": start.get("mrr@10")},
        "validation_queries": best.get("n_queries") or start.get("n_queries"),
        "train_samples_per_second": status.get("train_samples_per_second"),
        "global_step": status.get("global_step") or status.get("step"),
        "device": status.get("device"),
        "precision": status.get("precision"),
        "error": status.get("error"),
        "advice": status.get("advice"),
        "note": status.get("note"),
        "baselines": baselines.metrics_only(bar),
        "beats": baselines.beats(best_ndcg, bar),
        "beat_summary": baselines.beat_sentence(best_ndcg, bar),
    }


def _print_summary(s: dict[str, Any], status: dict[str, Any]) -> None:
    print(f"run {s['run_id']}: {s['status']}")
    if s["best"]["ndcg@10"] is not None:
        start = s["start"]["ndcg@10"]
        print(f"  validation NDCG@10 {s['best']['ndcg@10']:.4f} (untrained start "
              f"{start if start is None else f'{start:.4f}'}), MRR@10 {s['best']['mrr@10']:.4f}, "
              f"{s['validation_queries']} queries, best at step {s['best']['step']}")
    if s["beat_summary"]:
        print(f"  {s['beat_summary']}")
    if s["model_path"]:
        print(f"  model: {s['model_path']}")
    if s["train_samples_per_second"]:
        print(f"  {s['train_samples_per_second']:.1f} training samples/s on {s['device']}")
    for key in ("note", "error", "advice"):
        if s.get(key):
            print(f"  {key}: {s[key]}")
    if s["status"] == runfiles.FAILED and status.get("log_tail"):
        print("  log tail:\n    " + status["log_tail"].replace("\n", "\n    "))


def _finish(args, run_id: str, status: dict[str, Any]) -> int:
    s = summary(run_id, status)
    if args.json:
        print_json(s)
    else:
        _print_summary(s, status)
    return EXIT.get(status.get("state"), 1)


def cmd_train(args, ws: Workspace) -> int:
    if not args.preset and not args.config:  # the same starting point as the Train page
        args.preset = jobs.default_preset()
        print(f"preset: {args.preset} (the default here; --preset to choose another)",
              file=sys.stderr)
    cfg = config_from_args(args)
    from lib import db
    from lib.datasets import resolve_dataset
    from lib.split import active_split_id
    from lib.training.preflight import check_warnings

    with db.connect(ws) as con:
        ds = resolve_dataset(con, args.dataset)
        sid = args.split or active_split_id(con, ds.dataset_id)
    extra = check_warnings(ws, ds.dataset_id, sid, cfg, gpu_available=bool(jobs.visible_gpus()))
    created = jobs.create_run(ws, args.dataset, cfg, split_id=args.split, extra_warnings=extra)
    out = sys.stderr if args.json else sys.stdout
    print(f"run {created.run_id}: {created.train_pairs} training pairs "
          f"({created.train_queries} queries), validation {created.validation_queries} queries; "
          f"files in {created.run_dir}", file=out, flush=True)
    for w in created.warnings:
        print(f"warning: {w}", file=out, flush=True)
    jobs.tick(ws)
    if args.detach:
        status = jobs.run_status(ws, created.run_id)
        if args.json:
            print_json({"run_id": created.run_id, "status": status.get("state"),
                        "run_dir": str(created.run_dir), "warnings": created.warnings})
        return 0
    status = follow(ws, created.run_id, out, args.stop_timeout)
    return _finish(args, created.run_id, status)


def cmd_runs(args, ws: Workspace) -> int:
    jobs.tick(ws)
    df = jobs.list_runs(ws)
    if args.json:
        print_json(df.to_dict(orient="records"))
        return 0
    if df.empty:
        print("no runs yet: `reranker-studio train --dataset NAME`")
        return 0
    cols = ["run_id", "status", "dataset", "queue_position", "global_step", "max_steps",
            "start_ndcg10", "best_ndcg10", "bm25_ndcg10", "biencoder_ndcg10", "best_mrr10",
            "validation_queries", "device"]
    print(df[cols].to_string(index=False))
    return 0


def cmd_stop(args, ws: Workspace) -> int:
    status = jobs.stop_run(ws, args.run_id, args.timeout)
    jobs.tick(ws)
    if args.json:
        print_json(summary(args.run_id, status))
    else:
        print(f"run {args.run_id}: {status.get('state')}"
              + (f" ({status['note']})" if status.get("note") else ""))
    return 0 if status.get("state") in runfiles.TERMINAL else 1


def cmd_resume(args, ws: Workspace) -> int:
    status = jobs.resume_run(ws, args.run_id)
    out = sys.stderr if args.json else sys.stdout
    print(f"run {args.run_id}: queued to resume from "
          f"{status.get('resume_from') or 'step 0 (no checkpoint)'}", file=out, flush=True)
    jobs.tick(ws)
    if args.detach:
        if args.json:
            print_json({"run_id": args.run_id, "status": jobs.run_status(ws, args.run_id)
                        .get("state")})
        return 0
    return _finish(args, args.run_id, follow(ws, args.run_id, out, args.stop_timeout))


def cmd_move(args, ws: Workspace) -> int:
    jobs.move_in_queue(ws, args.run_id, args.direction)
    queued = jobs.list_runs(ws)
    queued = queued[queued["status"] == runfiles.QUEUED].sort_values("queue_position")
    print("queue: " + (", ".join(queued["run_id"]) or "empty"))
    return 0
