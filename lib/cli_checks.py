"""Check subcommands: `check` (leakage, labels, truncation, memory) and `resplit` (the leakage fix).

`check` exits 1 when leakage is found, so a pipeline can stop before training on a leaky split.
"""

from __future__ import annotations

import argparse
import sys

from lib.checks import resplit_grouped, run_checks
from lib.checks.leakage import KIND_TEXT
from lib.checks.memory import PRECISIONS
from lib.checks.runner import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD
from lib.cli import print_json
from lib.workspace import Workspace

SHOWN = 20


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "check", parents=[common],
        help="find query leakage, label problems and truncation before training",
        description="Checks the dataset's active split. Exit code 1 when leakage is found.",
    )
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("--model", default="default",
                   help="model whose tokenizer counts tokens: 'default', a local dir or a hub id")
    p.add_argument("--max-length", type=int, default=None,
                   help="max tokens per (query, document) pair (default: the model's limit)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"near-duplicate Jaccard threshold (default {DEFAULT_THRESHOLD})")
    p.add_argument("--eval", dest="eval_dataset", default=None,
                   help="an evaluation dataset to check against this dataset's training split")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="training batch size for the memory estimate")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="training precision for the memory estimate (default: bf16 on a GPU)")
    p.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "resplit", parents=[common],
        help="new split keeping duplicate and near-duplicate queries together (the leakage fix)",
    )
    p.add_argument("dataset", help="dataset id or name")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    p.add_argument("--seed", type=int, default=None, help="default: the active split's seed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_resplit)


def _progress(enabled: bool):
    if not enabled:
        return None
    last = [""]

    def show(text: str, frac: float) -> None:
        line = f"\r  {int(100 * frac):3d}% {text[:70]:<70}"
        if line != last[0]:
            last[0] = line
            print(line, end="", file=sys.stderr, flush=True)
            if frac >= 1:
                print(file=sys.stderr)

    return show


def cmd_check(args, ws: Workspace) -> int:
    res = run_checks(
        ws, args.dataset, model=args.model, max_length=args.max_length,
        threshold=args.threshold, eval_dataset=args.eval_dataset, batch_size=args.batch_size,
        precision=args.precision, use_cache=not args.no_cache,
        progress=_progress(not args.json and sys.stderr.isatty()),
    )
    if args.json:
        print_json(res.to_json())
    else:
        _print(res)
    return 1 if res.has_leakage else 0


def _print(res) -> None:
    against = f" against evaluation dataset {res.eval_dataset_name}" if res.eval_dataset_id else ""
    print(f"checks of {res.dataset_name} (split {res.split_id}){against}")
    leak = res.leakage
    print(f"\nLEAKAGE ({len(leak['findings'])} findings; near-duplicate threshold "
          f"{res.threshold})")
    for sp, s in leak["summary"]["held_out"].items():
        print(f"  {sp}: {s['leaked_queries']} of {s['queries']} queries "
              f"({s['leaked_share']:.0%}) and {s['leaked_pairs']} of {s['pairs']} pairs have a "
              "twin in train")
    for f in leak["findings"][:SHOWN]:
        print(f"  [{f['kind']}] similarity {f['similarity']:.2f}, {f['pairs']} held-out pairs, "
              f"{f['identical_pairs']} identical (query, document) pairs: {KIND_TEXT[f['kind']]}")
        for m in f["queries"]:
            print(f"      {m['split']:<10} {m['query_id']}: {m['query'][:90]}")
    if len(leak["findings"]) > SHOWN:
        print(f"  ... {len(leak['findings']) - SHOWN} more (use --json)")
    if leak["findings"]:
        print("  fix: `reranker-studio resplit DATASET` makes a new split keeping these together")

    print(f"\nLABELS (relevant = label >= {res.labels['rel_threshold']})")
    for sp, d in res.labels["distribution"].items():
        dist = ", ".join(f"{k}: {v}" for k, v in d["labels"].items())
        print(f"  {sp:<10} {d['pairs']:>8} pairs, {d['relevant_share']:.1%} relevant  ({dist})")
    for issue in res.labels["issues"]:
        print(f"  [{issue['kind']}] {issue['message']}")
    if not res.labels["issues"]:
        print("  no label issues")

    t = res.truncation
    if t:
        print(f"\nTRUNCATION at max length {t['max_length']} ({t['model']}, limit "
              f"{t['model_limit']})")
        for sp, s in t["splits"].items():
            print(f"  {sp:<10} {s['truncated']} of {s['pairs']} pairs cut "
                  f"({s['truncated_share']:.1%}); relevant: {s['relevant_truncated']} of "
                  f"{s['relevant_pairs']} ({s['relevant_truncated_share']:.1%}); tokens lost "
                  f"median {s['tokens_lost']['p50']}, max {s['tokens_lost']['max']}")
        print(f"  suggested max length: {t['suggested_max_length']}. {t['remedy']}")
    if res.memory:
        print(f"\nMEMORY: {res.memory['message']}")


def cmd_resplit(args, ws: Workspace) -> int:
    summary = resplit_grouped(ws, args.dataset, args.threshold, args.seed)
    if args.json:
        out = summary.to_json()
        print_json(out)
    else:
        from lib.cli_data import _print_split

        _print_split(summary)
        print("  previous split kept; this one is now active")
    return 0
