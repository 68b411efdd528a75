"""Mining benchmark: BM25 hard-negative mining for 10,000 queries over a generated 1,000,000-doc
corpus, against bm25s as shipped (index the whole token lists, retrieve, filter) in the same run.

    python bench/mine.py [--docs 1000000] [--queries 10000] [--words 40] [--skip-baseline]

Documents are --words words drawn Zipf-like from the Cranfield vocabulary; each query is 4 words
of one document, which is its (only, labelled) positive. Ours = `corpus add` (streamed into
DuckDB) + `mine` (BM25 index built batch by batch into numpy arrays, top-50 per query, labelled
documents skipped, 5 negatives per query, stored as a new dataset version). The baseline reads
the same JSONL into memory, `bm25s.tokenize` + `BM25.index` + `retrieve(k=50)`, drops each query's
positive and keeps 5. Each side runs in a fresh process (spawn) so its peak RSS is its own. The
LAST line is a JSON object: seconds and peak RSS of both sides and the time ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

NEGATIVES, RANGE_MAX = 5, 50


def vocabulary() -> list[str]:
    words = set()
    with open(ROOT / "data" / "cranfield.jsonl", encoding="utf-8") as fh:
        for line in fh:
            words.update(w.lower() for w in json.loads(line)["document"].split()
                         if w.isalpha() and len(w) >= 3)
    return sorted(words)


def generate(out: Path, n_docs: int, n_queries: int, n_words: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = np.array(vocabulary())
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    perm = rng.permutation(len(vocab))
    chosen_docs = rng.choice(n_docs, size=n_queries, replace=False)
    want = {int(d): i for i, d in enumerate(chosen_docs)}
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fc, \
            open(out / "train.jsonl", "w", encoding="utf-8") as fq:
        for lo in range(0, n_docs, 100_000):
            hi = min(n_docs, lo + 100_000)
            ids = perm[rng.choice(len(vocab), size=(hi - lo, n_words), p=p)]
            for k in range(hi - lo):
                text = " ".join(vocab[ids[k]])
                fc.write(json.dumps({"doc_id": f"d{lo + k}", "text": text}) + "\n")
                if (lo + k) in want:
                    words = rng.choice(vocab[ids[k]], size=4, replace=False)
                    fq.write(json.dumps({"query_id": f"q{want[lo + k]}",
                                         "query": " ".join(words), "doc_id": f"d{lo + k}",
                                         "document": text, "label": 1,
                                         "split": "train"}) + "\n")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(data: str, q) -> None:
    from lib import mining, split
    from lib.corpora import add_corpus
    from lib.ingest import ingest_file
    from lib.workspace import resolve_workspace

    ws = resolve_workspace(Path(data) / "ws")
    ingest_file(ws, Path(data) / "train.jsonl", "train")
    split.make_split(ws, "train", val_frac=0.0)
    t0 = time.perf_counter()
    add_corpus(ws, Path(data) / "corpus.jsonl", "bench")
    t_add = time.perf_counter() - t0
    t1 = time.perf_counter()
    rep = mining.mine(ws, "train", mining.MineOptions(
        corpus="bench", negatives=NEGATIVES, range_max=RANGE_MAX, margin=None))
    t_mine = time.perf_counter() - t1
    q.put({"add_s": round(t_add, 1), "mine_s": round(t_mine, 1),
           "total_s": round(t_add + t_mine, 1), "peak_rss_mb": round(_peak_mb()),
           "mined": rep.mined, "queries": rep.queries, "queries_short": rep.queries_short,
           "skipped_labelled": rep.skipped_labelled})


def run_baseline(data: str, q) -> None:
    import bm25s

    t0 = time.perf_counter()
    ids, texts = [], []
    with open(Path(data) / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            ids.append(obj["doc_id"])
            texts.append(obj["text"])
    queries = [json.loads(line) for line in open(Path(data) / "train.jsonl", encoding="utf-8")]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False),
                    show_progress=False)
    del texts
    q_tok = bm25s.tokenize([x["query"] for x in queries], stopwords="en", return_ids=False,
                           show_progress=False)
    docs, _ = retriever.retrieve(q_tok, k=RANGE_MAX, show_progress=False)
    mined = 0
    for x, row in zip(queries, docs, strict=True):
        negs = [ids[i] for i in row if ids[i] != x["doc_id"]][:NEGATIVES]
        mined += len(negs)
    q.put({"total_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(_peak_mb()),
           "mined": mined})


def in_child(fn, data: str) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(data, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--words", type=int, default=40)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mine-"))
    try:
        t0 = time.perf_counter()
        generate(tmp, args.docs, args.queries, args.words)
        gen_s = time.perf_counter() - t0
        size_mb = (tmp / "corpus.jsonl").stat().st_size / 2**20
        print(f"generated {args.docs:,} docs ({size_mb:.0f} MB), {args.queries:,} queries "
              f"in {gen_s:.0f} s", flush=True)
        ours = in_child(run_ours, str(tmp))
        print(f"ours: {ours}", flush=True)
        base = None if args.skip_baseline else in_child(run_baseline, str(tmp))
        if base:
            print(f"baseline (bm25s as shipped): {base}", flush=True)
        result = {"docs": args.docs, "queries": args.queries, "words": args.words,
                  "corpus_mb": round(size_mb), "cpus": os.cpu_count(), "ours": ours,
                  "baseline": base,
                  "time_ratio_baseline_over_ours": round(base["total_s"] / ours["total_s"], 2)
                  if base else None,
                  "rss_ratio_baseline_over_ours": round(base["peak_rss_mb"] /
                                                        ours["peak_rss_mb"], 2)
                  if base else None}
        out = ROOT / "bench" / "results" / "mine.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result))
    finally:
        if args.keep:
            print(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
