"""`reranker-studio mine`: hard negatives for a dataset's training queries, as a new version."""

from __future__ import annotations

import argparse
import sys

from lib import mining
from lib.cli import print_json, progress_printer
from lib.workspace import Workspace


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("mine", parents=[common],
                       help="mine hard negatives from a corpus into a new dataset version")
    p.add_argument("dataset", help="dataset id or name (its active split's TRAIN queries)")
    p.add_argument("--corpus", required=True, help="corpus name or id")
    p.add_argument("--retriever", default="bm25", help="bm25, biencoder or biencoder:MODEL")
    p.add_argument("--negatives", type=int, default=5, help="negatives per query (default 5)")
    p.add_argument("--range-min", type=int, default=0, help="skip this many top ranks")
    p.add_argument("--range-max", type=int, default=50, help="look no deeper than this rank")
    p.add_argument("--margin", type=float, default=0.05,
                   help="relative margin below the query's strongest positive (negative: off)")
    p.add_argument("--guard", help="cross-encoder that vetoes likely false negatives")
    p.add_argument("--max-score", type=float, help="guard score at or above which to drop")
    p.add_argument("--sampling", choices=mining.SAMPLING, default="top")
    p.add_argument("--random-share", type=float, default=0.0,
                   help="share of negatives drawn at random from the whole corpus")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--name", help="name of the new dataset version")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_mine)


def cmd_mine(args, ws: Workspace) -> int:
    opts = mining.MineOptions(
        corpus=args.corpus, retriever=args.retriever, negatives=args.negatives,
        range_min=args.range_min, range_max=args.range_max,
        margin=None if args.margin < 0 else args.margin, guard=args.guard,
        max_score=args.max_score, sampling=args.sampling, random_share=args.random_share,
        seed=args.seed, name=args.name)
    report = mining.mine(ws, args.dataset, opts, progress=progress_printer(
        "retrieving", not args.json and sys.stderr.isatty()))
    if args.json:
        print_json(report.to_json())
        return 0
    print(f"new dataset {report.name} ({report.dataset_id}) from {args.dataset}: "
          f"{report.mined} negatives mined for {report.queries} training queries "
          f"in {report.seconds:.1f} s")
    print(f"  skipped (labelled for the query): {report.skipped_labelled}; dropped by margin: "
          f"{report.dropped_by_margin}; dropped by guard: {report.dropped_by_guard}; random: "
          f"{report.random_negatives}")
    if report.queries_short:
        print(f"  {report.queries_short} queries got fewer than {args.negatives} negatives "
              "(widen --range-max or lower --margin)")
    if report.queries_without_positive:
        print(f"  {report.queries_without_positive} training queries have no positive: "
              "not mined")
    print(f"  review them: Review page, dataset {report.name}")
    return 0
