"""`reranker-studio noise` (find likely label errors) and `relabel` (fix them in a new version)."""

from __future__ import annotations

import argparse
import sys

from lib import noise, relabel
from lib.cli import print_json
from lib.training import runfiles
from lib.workspace import Workspace


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("noise", parents=[common],
                       help="flag training pairs whose label their neighbours or out-of-fold "
                       "models disagree with")
    p.add_argument("dataset", help="dataset id or name (its active split's TRAIN queries)")
    p.add_argument("--folds", type=int, default=2, help="k folds grouped by query (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="fewer pairs (800) and max length 128: minutes on a CPU")
    p.add_argument("--model", default="default", help="base model of the fold cross-encoders")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-length", type=int)
    p.add_argument("--max-pairs", type=int, help="score at most this many pairs (whole queries)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--teacher", metavar="TEACHER",
                   help="each fold model first distils this teacher on its training folds "
                        "(the Distil recipe): 'biencoder' (offline) or a cross-encoder path/id")
    p.add_argument("--evidence", choices=noise.EVIDENCE, default=noise.NoiseOptions.evidence,
                   help="neighbours (default): is the document like the query's other "
                        "relevant or non-relevant documents (seconds, no training); models: "
                        "out-of-fold cross-encoders (--folds, --quick, --model, --teacher); "
                        "both: one ranked list")
    p.add_argument("--neighbour-model", default="biencoder",
                   help="embeds the documents for neighbour evidence: 'biencoder' (the bundled "
                        "zero-shot bi-encoder) or a sentence-transformers dir/id")
    p.add_argument("--baseline", action="store_true",
                   help="also score the zero-shot bi-encoder (cosine), shown beside the flags")
    p.add_argument("--from-run", metavar="RUN_ID",
                   help="flag from this finished run's training dynamics (confidence and "
                        "variability of its training pairs across validations) instead of "
                        "training fold models; needs dynamics_max_pairs > 0 in its config")
    p.add_argument("--merge", metavar="JOB_ID",
                   help="with --from-run: merge with this finished out-of-fold job's flags "
                        "into one ranked list")
    p.add_argument("--top", type=int, default=0, help="print only the N strongest flags")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_noise)

    r = sub.add_parser("relabel", parents=[common],
                       help="apply review decisions as a new dataset version with a change log")
    r.add_argument("dataset", help="dataset id or name (never changed)")
    r.add_argument("--decisions", required=True,
                   help="JSONL: {query_id, doc_id, decision: keep|relabel|drop|ambiguous, "
                        "label (for relabel)}")
    r.add_argument("--name", help="name of the new version (default <dataset>-relabelled)")
    r.add_argument("--by", help="who decided (default $RERANKER_STUDIO_USER or the OS user)")
    r.add_argument("--job", help="the noise job the decisions came from (logged)")
    r.add_argument("--retrain", metavar="RUN_ID",
                   help="then queue a training run on the new version with this run's config")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_relabel)


def cmd_noise_from_run(args, ws: Workspace) -> int:
    from lib import noise_dynamics

    job_id = noise_dynamics.create_job_from_run(ws, args.from_run, dataset=args.dataset,
                                                merge_job=args.merge)
    flagged = noise.flagged_json(ws, job_id)
    row = noise.list_jobs(ws).set_index("job_id").loc[job_id]
    if args.top:
        flagged = flagged[:args.top]
    if args.json:
        print_json({"job_id": job_id, "flagged": flagged, "pairs_scored": int(row.pairs_scored),
                    "run_id": args.from_run, "merged_with": args.merge})
        return 0
    print(f"noise job {job_id}: {row.pairs_scored} training pairs of run {args.from_run} "
          f"(training dynamics{', merged with ' + args.merge if args.merge else ''}), "
          f"{len(flagged)} flagged, strongest first:")
    _print_flags(flagged, args.top)
    return 0


def _print_flags(flagged: list[dict], top: int) -> None:
    for i, f in enumerate(flagged[:top or 20], 1):
        print(f"  {i:3d}. query {f['query_id']} doc {f['doc_id']} label {f['label']} "
              f"strength {f['strength']:.2f}: {f['reason']}")
    print("  review them: Noise page, or write decisions and run `reranker-studio relabel`")


def cmd_noise(args, ws: Workspace) -> int:
    if args.from_run:
        return cmd_noise_from_run(args, ws)
    if args.merge:
        raise ValueError("--merge goes with --from-run (it merges a run's dynamics flags with "
                         "an out-of-fold job's)")
    opts = noise.NoiseOptions(folds=args.folds, quick=args.quick, base_model=args.model,
                              epochs=args.epochs, max_length=args.max_length,
                              max_pairs=args.max_pairs, seed=args.seed, baseline=args.baseline,
                              distill_teacher=args.teacher, evidence=args.evidence,
                              neighbour_model=args.neighbour_model)
    job_id = noise.create_job(ws, args.dataset, opts)
    show = not args.json and sys.stderr.isatty()
    last = [None]

    def progress(status: dict) -> None:
        text = status.get("detail") or status.get("state")
        if show and text != last[0]:
            last[0] = text
            print(f"  {text}", file=sys.stderr, flush=True)

    try:
        status = noise.wait_job(ws, job_id, progress=progress)
    except KeyboardInterrupt:
        noise.request_stop(ws, job_id)
        noise.wait_job(ws, job_id, timeout_s=60)
        raise
    if status.get("state") != runfiles.FINISHED:
        raise RuntimeError(f"noise job {job_id} {status.get('state')}: "
                           f"{status.get('error') or status.get('note') or ''}".rstrip(": "))
    flagged = noise.flagged_json(ws, job_id)
    if args.top:
        flagged = flagged[:args.top]
    if args.json:
        print_json({"job_id": job_id, "flagged": flagged,
                    "pairs_scored": int(status.get("pairs_scored", 0))})
        return 0
    how = {"models": f"out of fold ({args.folds} folds)",
           "neighbours": "against their query's other documents",
           "both": f"against their query's other documents and out of fold ({args.folds} folds)"}
    print(f"noise job {job_id}: {status.get('pairs_scored')} training pairs scored "
          f"{how[args.evidence]}, {len(flagged)} flagged, strongest first:")
    _print_flags(flagged, args.top)
    return 0


def cmd_relabel(args, ws: Workspace) -> int:
    rows = relabel.read_decisions_file(args.decisions)
    if args.retrain:  # before any version is made: a typo must not leave a half-done job
        relabel.check_retrain_source(ws, args.retrain)
    rep = relabel.relabel(ws, args.dataset, rows, by=args.by, name=args.name, job_id=args.job)
    run_id = relabel.retrain(ws, rep.dataset_id, args.retrain) if args.retrain else None
    if args.json:
        print_json({**rep.to_json(), **({"run_id": run_id} if run_id else {})})
        return 0
    print(f"new dataset {rep.name} ({rep.dataset_id}) from {args.dataset}: {rep.relabelled} "
          f"relabelled, {rep.dropped} dropped, {rep.ambiguous} marked ambiguous, {rep.kept} kept; "
          "the original is unchanged")
    if run_id:
        print(f"  run {run_id} queued on {rep.name} with the config of {args.retrain}")
    return 0
