"""Data subcommands: ingest, split, datasets, errors, delete, demo, app."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from lib import datasets, ingest, split
from lib.cli import print_json, progress_printer
from lib.diskspace import DiskFullError
from lib.workspace import Workspace


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ingest", parents=[common], help="validate and store a JSONL file")
    p.add_argument("file", help="JSONL or .jsonl.gz with query, document and label per line")
    p.add_argument("--name", help="dataset name (default: from the file name)")
    p.add_argument("--max-line-bytes", type=int, default=ingest.DEFAULT_MAX_LINE_BYTES)
    p.add_argument("--no-split", action="store_true", help="do not create the default split")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("split", parents=[common], help="query-level train/validation/test split")
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("--val", type=float, default=0.2, help="validation fraction (default 0.2)")
    p.add_argument("--test", type=float, default=0.0, help="test fraction (default 0)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("datasets", parents=[common], help="list datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("errors", parents=[common], help="export a dataset's rejected lines")
    p.add_argument("dataset")
    p.add_argument("--out", help="write JSONL here (default: stdout)")
    p.set_defaults(func=cmd_errors)

    p = sub.add_parser("delete", parents=[common], help="delete a dataset and its splits")
    p.add_argument("dataset")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("demo", parents=[common], help="load the bundled Cranfield demo dataset")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("app", parents=[common], help="start the web app (127.0.0.1 by default)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 shares it")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_app)


def cmd_ingest(args, ws: Workspace) -> int:
    try:
        report = ingest.ingest_file(
            ws, args.file, args.name, max_line_bytes=args.max_line_bytes,
            progress=progress_printer("reading", not args.json and sys.stderr.isatty()),
        )
    except ingest.NothingAcceptedError as exc:
        if args.json:
            print_json(exc.report.to_json())
        else:
            _print_report(exc.report)
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ingest.IngestFormatError, DiskFullError) as exc:
        if args.json:
            print_json({"error": str(exc), "accepted": 0})
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = None
    if not args.no_split and not report.already_ingested:
        summary = split.make_split(ws, report.dataset_id)
    if args.json:
        out = report.to_json()
        if summary:
            out["split"] = summary.to_json()
        print_json(out)
    else:
        _print_report(report)
        if summary:
            _print_split(summary)
    return 0


def _print_report(r: ingest.IngestReport) -> None:
    if r.already_ingested:
        print(f"already ingested as dataset {r.name} ({r.dataset_id}); nothing new stored")
    print(
        f"dataset {r.name} ({r.dataset_id}): {r.lines_read} lines read = {r.accepted} accepted + "
        f"{r.duplicates} duplicates + {r.rejected} rejected + {r.blank} blank; "
        f"labels {r.label_scale}; {r.n_queries} queries"
    )
    for e in r.errors[:20]:
        print(f"  line {e.line}: {e.field}: {e.message}")
    if r.errors_total > 20:
        print(f"  ... {r.errors_total - 20} more: `reranker-studio errors {r.name}`")


def _print_split(s: split.SplitSummary) -> None:
    print(f"split {s.split_id} (seed {s.seed}, {s.method}):")
    for name, c in s.counts.items():
        labels = ", ".join(f"{k}: {v}" for k, v in c["labels"].items())
        print(f"  {name:<10} {c['queries']:>6} queries {c['pairs']:>8} pairs  labels {labels}")
    if s.conflicting_hints:
        print(f"  note: {s.conflicting_hints} queries had rows naming different splits")


def cmd_split(args, ws: Workspace) -> int:
    summary = split.make_split(ws, args.dataset, args.val, args.test, args.seed)
    if args.json:
        print_json(summary.to_json())
    else:
        _print_split(summary)
    return 0


def cmd_datasets(args, ws: Workspace) -> int:
    df = datasets.list_datasets(ws)
    if args.json:
        print_json(df.to_dict(orient="records"))
    elif df.empty:
        print("no datasets yet: `reranker-studio ingest FILE` or `reranker-studio demo`")
    else:
        cols = ["name", "dataset_id", "accepted", "rejected", "n_queries", "label_scale"]
        print(df[cols].to_string(index=False))
    return 0


def cmd_errors(args, ws: Workspace) -> int:
    df = datasets.ingest_errors(ws, args.dataset)
    text = df.to_json(orient="records", lines=True, force_ascii=False)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"{len(df)} rejected lines written to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_delete(args, ws: Workspace) -> int:
    ds = datasets.get_dataset(ws, args.dataset)
    if not args.yes:
        answer = input(f"delete dataset {ds.name} ({ds.accepted} pairs)? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("kept")
            return 1
    datasets.delete_dataset(ws, ds.dataset_id)
    print(f"deleted {ds.name}")
    return 0


def cmd_demo(args, ws: Workspace) -> int:
    from lib.bootstrap import load_demo

    result = load_demo(ws, force=True)
    if args.json:
        print_json(result)
    else:
        print(result["message"])
    return 0


def cmd_app(args, ws: Workspace) -> int:
    app = Path(__file__).resolve().parent.parent / "streamlit_app.py"
    env = dict(os.environ, RERANKER_STUDIO_HOME=str(ws.root))
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", args.host, "--server.port", str(args.port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]
    from lib.auth import configured_hash

    if args.host not in {"127.0.0.1", "localhost", "::1"} and not configured_hash(ws):
        print(
            f"warning: serving on {args.host} to the network WITHOUT a password; "
            "run `reranker-studio set-password` first for a shared server",
            file=sys.stderr,
        )
    print(f"Reranker Studio on http://{args.host}:{args.port}  (workspace {ws.root})")
    return subprocess.call(cmd, env=env)
