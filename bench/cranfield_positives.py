"""Positives-only end to end on a real collection: Cranfield without its label-0 rows, its 1,400
abstracts as the corpus, BM25-mined negatives, a short fine-tune, then retrieve-then-rerank
evaluation (BM25 top-k from the corpus, unjudged = not relevant) of the checkpoint against BM25.

    python bench/cranfield_positives.py [--top-k 30] [--preset "CPU quick"] [--set KEY=VALUE]
        [--mine KEY=VALUE]
        [--fuse bm25] [--workspace DIR --run-id RUN] [--folds N --fold K]
    python bench/cranfield_positives.py --pool W1 W2 W3     # pool the folds' test queries

`--fuse B` also evaluates `fuse:checkpoint:RUN+B` (weight chosen on the validation queries' top-k
from the corpus, reported on the test queries) against BM25, the bi-encoder and `fuse:biencoder+B`,
the same fusion without fine-tuning. `--run-id` evaluates a finished run of `--workspace` again
instead of mining and training. `--folds N --fold K` makes the K-th of N query folds (seeded,
0-based) the test queries, 20% of the rest validation; `--pool` then reads each fold's workspace
and tests the fine-tune against BM25 and the bi-encoder over all folds' test queries together
(each query is a test query exactly once), with the same paired test as `evaluate`.

Uses the same lib functions and CLI as the app, in a fresh temporary workspace. The LAST line is
a JSON object: mining counts, the training run, and the evaluation's metrics and verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
RAW = ROOT.parent / "shared" / "data" / "cranfield"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", default=str(RAW), help="folder with cran.all.1400")
    ap.add_argument("--top-k", type=int, default=30)
    ap.add_argument("--preset", default="CPU quick")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--baseline", action="append", default=[],
                    help="rankers to compare with (default: bm25 and default, the untrained "
                    "start)")
    ap.add_argument("--workspace", help="default: a new temporary folder")
    ap.add_argument("--fuse", action="append", default=[], metavar="B",
                    help="also evaluate the checkpoint fused with this first stage")
    ap.add_argument("--run-id", help="skip mining and training: evaluate this run of --workspace")
    ap.add_argument("--mine", action="append", default=[], metavar="KEY=VALUE",
                    help="a mining option (lib.mining.MineOptions), e.g. negatives=15")
    ap.add_argument("--folds", type=int, default=0, help="cross-validation: N query folds")
    ap.add_argument("--fold", type=int, default=0, help="the fold that is the test split")
    ap.add_argument("--pool", nargs="+", metavar="WORKSPACE", help="pool the folds' results")
    args = ap.parse_args()
    if args.pool:
        print(json.dumps(pool(args.pool)))
        return

    from lib.workspace import resolve_workspace

    if args.run_id and not args.workspace:
        raise SystemExit("--run-id needs --workspace")
    ws = resolve_workspace(args.workspace or tempfile.mkdtemp(prefix="cran-pos-"))
    t0 = time.perf_counter()
    if args.run_id:
        mined, trained = None, {"run_id": args.run_id}
        dataset = _run_dataset(ws, args.run_id)
    else:
        mined = _mine(ws, args.raw, _mine_options(args.mine), folds=(args.folds, args.fold))
        dataset = mined.name
        trained = _train(ws, dataset, args.preset, args.set)
    run_id = trained["run_id"]
    ev = _evaluate(ws, f"checkpoint:{run_id}", args.baseline or ["bm25", "default"], dataset,
                   args.top_k)
    (ws.root / "eval.json").write_text(json.dumps(ev))
    result = {"mined": mined.to_json() if mined else None, "run_id": run_id,
              "folds": {"n": args.folds, "test_fold": args.fold} if args.folds else None,
              "top_k": args.top_k,
              "train": {k: trained.get(k) for k in ("best", "start", "train_samples_per_second",
                                                    "global_step")},
              "first_stage": ev.get("first_stage"), "metrics": ev.get("metrics"),
              "verdicts": ev.get("verdicts")}
    for b in args.fuse:
        fe = _evaluate(ws, f"fuse:checkpoint:{run_id}+{b}",
                       ["bm25", "biencoder", f"fuse:biencoder+{b}"], dataset, args.top_k)
        result.setdefault("fused", {})[b] = {
            "metrics": fe.get("metrics"), "verdicts": fe.get("verdicts"),
            "fusion": [r["stats"].get("fusion") for r in fe.get("rankers", [])
                       if r.get("stats", {}).get("fusion")]}
    result["seconds"] = round(time.perf_counter() - t0)
    result["workspace"] = str(ws.root)
    print(json.dumps(result, default=str))


def _mine_options(pairs: list[str]) -> dict:
    """KEY=VALUE strings as MineOptions fields, each cast to its default's type ('none': None)."""
    from lib.mining import MineOptions

    defaults = MineOptions(corpus="")
    out = {}
    for kv in pairs:
        key, _, value = kv.partition("=")
        if not hasattr(defaults, key):
            raise SystemExit(f"--mine {kv}: MineOptions has no field {key!r}")
        default = getattr(defaults, key)
        out[key] = (None if value.lower() == "none"
                    else type(default)(value) if default is not None else value)
    return out


def fold_of(query_ids, n: int, seed: int = 13) -> dict[str, int]:
    """Each query's fold: sorted ids shuffled with `seed`, dealt round-robin into `n` folds."""
    import numpy as np

    ids = sorted(set(query_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[j]: i % n for i, j in enumerate(order)}


def _mine(ws, raw: str, options: dict | None = None, folds: tuple[int, int] = (0, 0)):
    from lib import corpora, mining, split
    from lib.demo_data import DEMO_DATASET_PATH, document_text, parse_documents
    from lib.ingest import ingest_file

    tmp = ws.root / "inputs"
    tmp.mkdir(exist_ok=True)
    rows = [json.loads(line) for line in open(DEMO_DATASET_PATH, encoding="utf-8")]
    positives = [r for r in rows if r["label"] > 0]
    n_folds, test_fold = folds
    if n_folds:  # the fold's queries are the test split (a `split` field wins over the seed)
        fold = fold_of([r["query_id"] for r in positives], n_folds)
        positives = [{**r, "split": "test"} if fold[r["query_id"]] == test_fold else r
                     for r in positives]
    (tmp / "positives.jsonl").write_text("".join(json.dumps(r) + "\n" for r in positives))
    docs = parse_documents(Path(raw) / "cran.all.1400")
    (tmp / "corpus.jsonl").write_text("".join(
        json.dumps({"doc_id": f"cran-d{int(i):04d}", "text": document_text(d)}) + "\n"
        for i, d in docs.items() if document_text(d)))
    ingest_file(ws, tmp / "positives.jsonl", "cran-pos")
    split.make_split(ws, "cran-pos", val_frac=0.2, test_frac=0.0 if n_folds else 0.2, seed=13)
    c = corpora.add_corpus(ws, tmp / "corpus.jsonl", "cran-docs")
    mined = mining.mine(ws, "cran-pos", mining.MineOptions(corpus="cran-docs", **(options or {})))
    print(f"positives {len(positives)}, corpus {c.accepted} docs, mined {mined.to_json()}",
          file=sys.stderr, flush=True)
    return mined


def pool(workspaces: list[str]) -> dict:
    """The folds' test queries together: each workspace's saved evaluation (per_query.csv) of its
    fine-tune against BM25 and the bi-encoder, the fine-tune's column renamed alike."""
    import pandas as pd

    from lib.evaluation.compare import compare_pair, verdict

    frames, folds = [], []
    for w in workspaces:
        ev = json.loads((Path(w) / "eval.json").read_text())
        report = Path(ev["report_dir"])
        report = report if report.is_absolute() else Path(w) / report
        per_query = pd.read_csv(report / "per_query.csv", dtype={"query_id": str})
        per_query = per_query.rename(columns=_as_fine_tune)
        frames.append(per_query.assign(fold=w))
        folds.append({"workspace": w, "n_queries": len(per_query),
                      "metrics": ev.get("metrics")})
    allq = pd.concat(frames, ignore_index=True)
    if allq["query_id"].duplicated().any():
        raise SystemExit("a query is a test query in more than one fold: not a partition")
    out = {"n_queries": len(allq), "folds": folds, "means": {}, "comparisons": {}}
    for metric in ("ndcg@10", "mrr@10"):
        out["means"][metric] = {r: round(float(allq[f"{r}|{metric}"].mean()), 6)
                                for r in ("fine-tune", "bm25", "biencoder")}
        for base in ("bm25", "biencoder"):
            c = compare_pair(allq, "fine-tune", base, metric)
            out["comparisons"][f"{metric} vs {base}"] = {
                **{k: v for k, v in c.to_json().items()
                   if k in ("delta", "ci_low", "ci_high", "p_value", "wins", "ties", "losses")},
                "verdict": verdict(c, 0, "pooled test")}
    return out


def _as_fine_tune(column: str) -> str:
    """'<the evaluated model>|<metric>' -> 'fine-tune|<metric>'; baselines and info unchanged."""
    ranker, bar, metric = column.partition("|")
    return f"fine-tune|{metric}" if bar and ranker not in ("bm25", "biencoder") else column


def _cli_json(argv: list[str]) -> tuple[int, str]:
    from lib.cli import main as cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(argv)
    return rc, buf.getvalue()


def _train(ws, dataset: str, preset: str, settings: list[str]) -> dict:
    argv = ["train", "--dataset", dataset, "--preset", preset, "--workspace", str(ws.root),
            "--json"]
    for kv in settings:
        argv += ["--set", kv]
    rc, out = _cli_json(argv)
    if rc != 0:
        raise SystemExit(f"training failed (exit {rc}): {out[-2000:]}")
    trained = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(trained), file=sys.stderr, flush=True)
    return trained


def _run_dataset(ws, run_id: str) -> str:
    meta = json.loads((ws.root / "runs" / run_id / "data" / "meta.json").read_text(
        encoding="utf-8"))
    return meta["dataset_id"]


def _evaluate(ws, model: str, baselines: list[str], dataset: str, top_k: int) -> dict:
    bases = [x for b in baselines for x in ("--baseline", b)]
    rc, out = _cli_json(["evaluate", "--model", model, *bases, "--dataset", dataset, "--split",
                         "test", "--corpus", "cran-docs", "--first-stage", "bm25", "--top-k",
                         str(top_k), "--workspace", str(ws.root), "--json"])
    if rc != 0:
        raise SystemExit(f"evaluation of {model} failed (exit {rc}): {out[-2000:]}")
    print(f"{model}: {json.dumps(json.loads(out).get('metrics'))}", file=sys.stderr, flush=True)
    return json.loads(out)

if __name__ == "__main__":
    main()
