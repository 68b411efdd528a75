"""Positives-only end to end on a real collection: Cranfield without its label-0 rows, its 1,400
abstracts as the corpus, BM25-mined negatives, a short fine-tune, then retrieve-then-rerank
evaluation (BM25 top-k from the corpus, unjudged = not relevant) of the checkpoint against BM25.

    python bench/cranfield_positives.py [--top-k 30] [--preset "CPU quick"] [--set KEY=VALUE]

Uses the same lib functions and CLI as the app, in a fresh temporary workspace. The LAST line is
a JSON object: mining counts, the training run, and the evaluation's metrics and verdict.
"""

from __future__ import annotations

import argparse
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
    args = ap.parse_args()

    from lib import corpora, mining, split
    from lib.cli import main as cli
    from lib.demo_data import DEMO_DATASET_PATH, document_text, parse_documents
    from lib.ingest import ingest_file
    from lib.workspace import resolve_workspace

    ws = resolve_workspace(args.workspace or tempfile.mkdtemp(prefix="cran-pos-"))
    tmp = ws.root / "inputs"
    tmp.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    rows = [json.loads(line) for line in open(DEMO_DATASET_PATH, encoding="utf-8")]
    positives = [r for r in rows if r["label"] > 0]
    (tmp / "positives.jsonl").write_text("".join(json.dumps(r) + "\n" for r in positives))
    docs = parse_documents(Path(args.raw) / "cran.all.1400")
    (tmp / "corpus.jsonl").write_text("".join(
        json.dumps({"doc_id": f"cran-d{int(i):04d}", "text": document_text(d)}) + "\n"
        for i, d in docs.items() if document_text(d)))
    ingest_file(ws, tmp / "positives.jsonl", "cran-pos")
    split.make_split(ws, "cran-pos", val_frac=0.2, test_frac=0.2, seed=13)
    c = corpora.add_corpus(ws, tmp / "corpus.jsonl", "cran-docs")
    mined = mining.mine(ws, "cran-pos", mining.MineOptions(corpus="cran-docs"))
    print(f"positives {len(positives)}, corpus {c.accepted} docs, mined {mined.to_json()}",
          file=sys.stderr, flush=True)
    train_args = ["train", "--dataset", mined.name, "--preset", args.preset, "--workspace",
                  str(ws.root), "--json"]
    for kv in args.set:
        train_args += ["--set", kv]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(train_args)
    if rc != 0:
        raise SystemExit(f"training failed (exit {rc}): {buf.getvalue()[-2000:]}")
    trained = json.loads(buf.getvalue().strip().splitlines()[-1])
    run_id = trained["run_id"]
    print(json.dumps(trained), file=sys.stderr, flush=True)
    out = ws.root / "eval.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        bases = [x for b in (args.baseline or ["bm25", "default"]) for x in ("--baseline", b)]
        rc = cli(["evaluate", "--model", f"checkpoint:{run_id}", *bases, "--dataset",
                  mined.name, "--split", "test", "--corpus", "cran-docs", "--first-stage",
                  "bm25", "--top-k", str(args.top_k), "--workspace", str(ws.root), "--json"])
    out.write_text(buf.getvalue())
    ev = json.loads(buf.getvalue())
    result = {"mined": mined.to_json(), "run_id": run_id, "top_k": args.top_k,
              "train": {k: trained.get(k) for k in ("best", "start", "train_samples_per_second",
                                                    "global_step")},
              "first_stage": ev.get("first_stage"), "metrics": ev.get("metrics"),
              "verdicts": ev.get("verdicts"), "seconds": round(time.perf_counter() - t0),
              "workspace": str(ws.root)}
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
