"""`reranker-studio export RUN|DIR --format F`: export, prove on held-out pairs, print the proof."""

from __future__ import annotations

import argparse
import sys

from lib.cli import print_json
from lib.workspace import Workspace


def register(sub, common: argparse.ArgumentParser) -> None:
    from lib.export import FORMATS
    from lib.export_proof import DEFAULT_BATCH, DEFAULT_REPEATS

    p = sub.add_parser(
        "export", parents=[common],
        help="export a run's model (or a model folder) to ONNX/OpenVINO and prove it ranks alike",
        description="Export to ONNX (plain, O2/O3 optimised, dynamic int8) or OpenVINO (fp32, "
        "static int8 calibrated on the training pairs), then score the proof pairs (the run's "
        "validation split by default) with the original and the export in this process: "
        "NDCG@10/MRR@10 with a paired test, Spearman, top-10 agreement, pairs/s, latency.",
    )
    p.add_argument("target", metavar="RUN|DIR", help="a training run id or a model folder")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--dataset", metavar="ID_OR_NAME",
                   help="prove on this dataset's split (needed for a folder; a run uses its own)")
    p.add_argument("--split", choices=["validation", "test", "train", "all"],
                   help="default: the run's validation pairs (a dataset: test, else validation)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                   help=f"throughput batch size (default {DEFAULT_BATCH})")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help="latency repeats of one query x 100 candidates")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)


def cmd_export(args, ws: Workspace) -> int:
    from lib.export import ExportError, MissingExtraError
    from lib.metrics import configure_numba_cache
    from lib.ship import ShipError, export_and_prove, resolve_target

    configure_numba_cache(ws.cache_dir / "numba")
    try:
        target = resolve_target(ws, args.target)
        if not args.json:
            print(f"exporting {target.label} to {args.fmt} ...", file=sys.stderr)
        proof = export_and_prove(ws, target, args.fmt, dataset=args.dataset, split=args.split,
                                 batch_size=args.batch_size, repeats=args.repeats)
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (ShipError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json(proof.cli_json())
        return 0
    n, lat = proof.ndcg, proof.latency_ms
    print(f"{proof.format} export: {proof.path}")
    print(f"proof on {proof.split}: {proof.n_queries} queries, {proof.n_pairs} pairs")
    print(f"  NDCG@10  original {n['original']:.4f}  export {n['export']:.4f}  "
          f"delta {n['delta']:+.4f}  (p = {proof.p_value:.3g})")
    print(f"  Spearman {proof.spearman:.4f}  max |diff| {proof.max_abs_diff:.2e}  "
          f"identical top 10: {100 * proof.top10_agreement:.1f}% of queries")
    print(f"  pairs/s  original {proof.pairs_per_s['original']:.1f}  export "
          f"{proof.pairs_per_s['export']:.1f}  speedup {proof.speedup:.2f}x "
          f"(batch {proof.batch_size})")
    print(f"  1 query x 100 candidates: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms "
          f"(original p50 {lat['original_p50']:.1f} ms)")
    for note in proof.notes:
        print(f"  note: {note}")
    return 0
