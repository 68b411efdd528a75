"""Evaluation subcommands: `evaluate` (the Evaluate page as one command) and `reports`."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from lib.cli import print_json
from lib.workspace import Workspace

APP_URL = "http://127.0.0.1:8501"


def register(sub, common: argparse.ArgumentParser) -> None:
    from lib.evaluation.compare import DEFAULT_BOOTSTRAP, DEFAULT_PERMUTATIONS, STAT_TESTS
    from lib.evaluation.evalset import EVAL_SPLITS
    from lib.evaluation.rankers import RANKER_HELP

    p = sub.add_parser(
        "evaluate", parents=[common],
        help="compare a reranker with baselines on held-out queries (metrics, significance, "
        "report)",
        description="Score every labelled pair of the evaluation set with each ranker, compute "
        "ranx metrics per query, test the model against each baseline, write an HTML report. "
        f"A ranker is {RANKER_HELP}.",
    )
    p.add_argument("--model", required=True, help="the ranker under test")
    p.add_argument("--baseline", action="append", default=[], metavar="B",
                   help="a ranker to compare with (repeatable; default: the training run's base "
                   "model if known, else bm25)")
    p.add_argument("--dataset", required=True, metavar="FILE_OR_ID",
                   help="dataset id or name, or a JSONL file (ingested like training data)")
    p.add_argument("--split", choices=EVAL_SPLITS,
                   help="default: test if the active split has one, else validation; 'all' for a "
                   "file")
    p.add_argument("--metric", action="append", default=[], metavar="M",
                   help="repeatable or comma-separated: ndcg@10 (first = headline), mrr@10, "
                   "map@100, recall@10, recall@100, p@5, ... (default: all of these)")
    p.add_argument("--rel-threshold", type=int, default=1,
                   help="label >= this counts as relevant for binary metrics (default 1)")
    p.add_argument("--stat-test", choices=STAT_TESTS, default="fisher")
    p.add_argument("--max-p", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--permutations", type=int, default=DEFAULT_PERMUTATIONS)
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--max-length", type=int,
                   help="tokens per pair for every cross-encoder (default: the model under "
                   "test's own, so base and fine-tuned see the same text)")
    p.add_argument("--window-stride", type=int, metavar="TOKENS",
                   help="score long documents as overlapping windows (max over windows)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: automatic)")
    p.add_argument("--corpus", metavar="NAME",
                   help="retrieve-then-rerank: candidates = each query's top-k from this corpus "
                   "(unjudged = not relevant) instead of its labelled pairs")
    p.add_argument("--first-stage", default="bm25", metavar="R",
                   help="with --corpus: bm25, biencoder[:MODEL] or run:FILE (default bm25)")
    p.add_argument("--top-k", type=int, default=100, help="with --corpus: candidates per query")
    p.add_argument("--report", metavar="OUT.html", help="also copy the HTML report here")
    p.add_argument("--no-save", action="store_true",
                   help="do not keep the evaluation in the workspace (no report)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("reports", parents=[common], help="list saved evaluations")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reports)


def _progress(enabled: bool):
    if not enabled:
        return None
    last = [""]

    def show(frac: float, msg: str) -> None:
        line = f"\r  {100 * frac:5.1f}%  {msg}"[:160]
        if line != last[0]:
            pad = max(0, len(last[0]) - len(line))
            print(line + " " * pad, end="", file=sys.stderr, flush=True)
            last[0] = line
        if frac >= 1.0:
            print(file=sys.stderr)

    return show


def _default_baselines(ws: Workspace, model: str) -> list[str]:
    from lib.evaluation.rankers import parse_ranker

    ranker = parse_ranker(model, ws)
    if ranker.kind == "fusion":  # a fusion must beat both first stages to be worth serving
        return ["bm25", "biencoder"]
    base = ((ranker.training or {}).get("config") or {}).get("base_model")
    return [base] if base else ["bm25"]


def cmd_evaluate(args, ws: Workspace) -> int:
    from lib.evaluation import EvaluationSpec, evaluate
    from lib.metrics import configure_numba_cache

    configure_numba_cache(ws.cache_dir / "numba")
    baselines = args.baseline or _default_baselines(ws, args.model)
    if not args.baseline and not args.json:
        print(f"baseline: {', '.join(baselines)} (pass --baseline to choose)", file=sys.stderr)
    spec = EvaluationSpec(
        dataset=args.dataset, model=args.model, baselines=baselines, split=args.split,
        metrics=args.metric or None, rel_threshold=args.rel_threshold,
        stat_test=args.stat_test, max_p=args.max_p, n_permutations=args.permutations,
        n_bootstrap=args.bootstrap, seed=args.seed, max_length=args.max_length,
        window_stride=args.window_stride, batch_size=args.batch_size, device=args.device,
        save=not args.no_save or bool(args.report),
        corpus=args.corpus, first_stage=args.first_stage, top_k=args.top_k,
    )
    result = evaluate(ws, spec, progress=_progress(not args.json and sys.stderr.isatty()))
    if args.report:
        target = Path(args.report).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ws.root / result.files["html"], target)
    if args.json:
        print_json(result.to_json())
        return 0
    _print_result(result, args.report, ws)
    return 0


def _print_result(r, copied: str | None, ws: Workspace) -> None:
    from lib.evaluation.compare import format_p, metric_label
    from lib.evaluation.verdicts import evaluation_verdict

    print(f"dataset {r.dataset['name']} ({r.dataset['dataset_id']}), split {r.split_label}: "
          f"{r.n_queries} queries evaluated, {r.n_excluded} excluded (no relevant candidate), "
          f"{r.n_pairs} pairs")
    print(f"{r.candidates}")
    width = max(len(n) for n in r.ranker_names) + 2
    judged = " judged@10" if r.first_stage else ""
    print("\n" + "ranker".ljust(width) + "".join(f"{metric_label(m):>12}" for m in r.metrics)
          + judged)
    for name in r.ranker_names:
        print(name.ljust(width) + "".join(f"{r.means[name][m]:>12.4f}" for m in r.metrics)
              + (f"{r.means[name].get('judged@10', float('nan')):>10.3f}" if judged else ""))
    for b in r.baselines:
        print(f"\n{r.model} vs {b} ({r.spec['stat_test']}):")
        for m in r.metrics:
            c = r.comparisons[b][m]
            print(f"  {metric_label(m):<11} delta {c.delta:+.4f}  "
                  f"95% CI {c.ci_low:+.4f}..{c.ci_high:+.4f}  {format_p(c.p_value):<11} "
                  f"W/T/L {c.wins}/{c.ties}/{c.losses}"
                  + ("  *" if c.significant else ""))
    for rk in r.rankers:
        if (rk.get("stats") or {}).get("fusion"):
            print(f"\nfusion {rk['name']}: {rk['stats']['note']}")
    print()
    for v in r.verdicts:
        print(v)
    honest = evaluation_verdict(r)
    if honest is not None and honest.lost:
        print("\n" + honest.as_text() + "\n")
    for w in r.warnings:
        print(f"{w.severity}: {w.message}")
    if r.report_dir:
        print(f"\nreport: {ws.root / r.files['html']}\n  in the app: "
              f"{APP_URL}/evaluate?report={r.eval_id}")
    if copied:
        print(f"report copied to {copied}")


def cmd_reports(args, ws: Workspace) -> int:
    from lib.evaluation.store import list_evaluations

    df = list_evaluations(ws)
    if args.json:
        print_json(df.to_dict(orient="records"))
    elif df.empty:
        print("no evaluations yet: `reranker-studio evaluate --model M --dataset D`")
    else:
        for row in df.itertuples():
            print(f"{row.eval_id}  {row.created_at}  {row.dataset_name} ({row.split}, "
                  f"{row.n_queries} queries)\n    {row.verdict}\n    {row.report_dir}/report.html")
    return 0
