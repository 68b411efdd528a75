"""Data-checks benchmark: every check on 1,000,000 pairs over 200,000 queries, and near-duplicate
detection (MinHash + LSH, verified) against the naive all-pairs baseline on a 5,000-query sample.

    python bench/checks.py [--pairs 1000000] [--queries 200000] [--sample 5000] [--keep]

Queries are 6-10 words drawn from the Cranfield vocabulary, 5 candidates each, every document
distinct (the worst case for tokenising). Planted leaks, each a training query with a validation
twin: exact copies, case/punctuation variants and one-letter near-duplicates. The checks run in a
fresh process (spawn) so its peak RSS is its own. The LAST line is a JSON object with "total_s",
"peak_rss_mb", "neardup_ratio" (naive time / ours) and what was found versus what was planted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PLANTED_PER_KIND = 300
CANDIDATES = 5


def vocabulary() -> list[str]:
    words = set()
    with open(ROOT / "data" / "cranfield.jsonl", encoding="utf-8") as fh:
        for line in fh:
            words.update(w for w in json.loads(line)["document"].split()
                         if w.isalpha() and len(w) >= 3)
    return sorted(words)


def near_variant(text: str, rng: random.Random) -> str:
    """One word gets an extra letter: a typical near-duplicate (typo, plural)."""
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = words[i] + "s"
    return " ".join(words)


def generate(path: Path, n_queries: int, seed: int = 0) -> dict:
    """Write the JSONL; returns the planted leaks as {kind: [(train_qid, validation_qid)]}."""
    rng = random.Random(seed)
    vocab = vocabulary()
    n_twins = 3 * PLANTED_PER_KIND
    n_base = n_queries - n_twins
    texts = [" ".join(rng.choices(vocab, k=rng.randint(6, 10))) for _ in range(n_base)]
    hints = [None] * n_base
    planted: dict[str, list[tuple[str, str]]] = {"exact": [], "normalized": [],
                                                  "near_duplicate": []}
    for k, kind in enumerate(planted):
        for j in range(PLANTED_PER_KIND):
            src = k * PLANTED_PER_KIND + j
            text = texts[src]
            twin = (text if kind == "exact" else
                    text.title() + "?" if kind == "normalized" else near_variant(text, rng))
            hints[src] = "train"
            texts.append(twin)
            hints.append("validation")
            planted[kind].append((f"q{src}", f"q{len(texts) - 1}"))
    doc_no = 0
    with open(path, "w", encoding="utf-8") as fh:
        for qi, (text, hint) in enumerate(zip(texts, hints, strict=True)):
            for _ in range(CANDIDATES):
                row = {"query_id": f"q{qi}", "query": text, "doc_id": f"d{doc_no}",
                       "document": " ".join(rng.choices(vocab, k=rng.randint(30, 80))),
                       "label": rng.choices((0, 1, 2, 3, 4), (6, 1, 1, 1, 1))[0]}
                if hint:
                    row["split"] = hint
                fh.write(json.dumps(row) + "\n")
                doc_no += 1
    return {"planted": planted, "texts": {f"q{i}": t for i, t in enumerate(texts)}}


def _ingest(path: str, ws_dir: str, out: mp.Queue) -> None:
    from lib import split
    from lib.ingest import ingest_file
    from lib.workspace import resolve_workspace

    ws = resolve_workspace(ws_dir)
    t0 = time.perf_counter()
    report = ingest_file(ws, path, "bench")
    split.make_split(ws, report.dataset_id, 0.2, 0.0, 13)
    out.put({"seconds": time.perf_counter() - t0, "accepted": report.accepted})


def _checks(ws_dir: str, out: mp.Queue) -> None:
    from lib.checks import run_checks
    from lib.workspace import resolve_workspace

    t0 = time.perf_counter()
    res = run_checks(resolve_workspace(ws_dir), "bench", model="default", max_length=256,
                     use_cache=False)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = [(f["kind"], sorted(m["query_id"] for m in f["queries"]))
             for f in res.leakage["findings"]]
    out.put({"seconds": seconds, "sections": res.seconds, "rss_mb": rss, "found": found,
             "truncated_share": res.truncation["overall"]["truncated_share"],
             "counted_by": res.truncation["counted_by"],
             "label_issues": {i["kind"]: i["count"] for i in res.labels["issues"]}})


def _in_child(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def _neardup_compare(texts: list[str], threshold: float) -> dict:
    from lib.checks.neardup import naive_near_duplicate_pairs, near_duplicate_pairs

    t0 = time.perf_counter()
    ours = near_duplicate_pairs(texts, threshold)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = naive_near_duplicate_pairs(texts, threshold)
    naive_s = time.perf_counter() - t0
    same = set(map(tuple, ours.pairs.tolist())) == set(map(tuple, naive.pairs.tolist()))
    return {"ours_s": ours_s, "naive_s": naive_s, "same": same, "pairs": len(naive.pairs),
            "candidates": ours.candidates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=None, help="default: pairs / 5")
    ap.add_argument("--sample", type=int, default=5000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--keep", action="store_true", help="keep the generated file and workspace")
    args = ap.parse_args()
    n_queries = args.queries or args.pairs // CANDIDATES
    tmp = Path(tempfile.mkdtemp(prefix="bench-checks-"))
    path = tmp / "pairs.jsonl"

    t0 = time.perf_counter()
    gen = generate(path, n_queries)
    print(f"generated {n_queries * CANDIDATES:,} pairs over {n_queries:,} queries "
          f"({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
    ing = _in_child(_ingest, str(path), str(tmp / "ws"))
    print(f"ingest + split (not part of the checks): {ing['seconds']:.1f} s", flush=True)

    res = _in_child(_checks, str(tmp / "ws"))
    print(f"all checks: {res['seconds']:.1f} s ({res['sections']}), peak RSS "
          f"{res['rss_mb']:.0f} MB; tokens {res['counted_by']}", flush=True)

    from lib.checks.neardup import normalize_text

    expected = {(kind, tuple(sorted(p))) for kind, pairs in gen["planted"].items()
                for p in pairs}
    found = {(kind, tuple(ids)) for kind, ids in res["found"]}
    by_kind = {k: sum(1 for f in found if f[0] == k) for k in gen["planted"]}
    # a near variant whose Jaccard falls under the threshold is correctly NOT leakage
    from lib.checks.neardup import naive_near_duplicate_pairs

    below = set()
    for a, b in gen["planted"]["near_duplicate"]:
        pair = [normalize_text(gen["texts"][a]), normalize_text(gen["texts"][b])]
        if len(naive_near_duplicate_pairs(pair, args.threshold).pairs) == 0:
            below.add(("near_duplicate", tuple(sorted((a, b)))))
    expected -= below
    print(f"findings by kind {by_kind}; planted {len(expected)} (+{len(below)} near variants "
          f"under the threshold); found {len(found & expected)}; unexpected "
          f"{len(found - expected)}; label issues {res['label_issues']}", flush=True)

    rng = random.Random(1)
    norms = sorted({normalize_text(t) for t in gen["texts"].values()})
    sample_ids = set(rng.sample(range(len(norms)), min(args.sample, len(norms))))
    for a, b in gen["planted"]["near_duplicate"][:100]:  # some true positives in the sample
        for q in (a, b):
            sample_ids.add(norms.index(normalize_text(gen["texts"][q])))
    sample = [norms[i] for i in sorted(sample_ids)][: args.sample]
    nd = _neardup_compare(sample, args.threshold)
    print(f"near-duplicates on {len(sample):,} queries: ours {nd['ours_s']:.3f} s, naive "
          f"all-pairs {nd['naive_s']:.1f} s, {nd['pairs']} pairs, same results: {nd['same']}",
          flush=True)
    if not args.keep:
        shutil.rmtree(tmp)
    print(json.dumps({
        "pairs": n_queries * CANDIDATES,
        "queries": n_queries,
        "distinct_documents": n_queries * CANDIDATES,
        "total_s": round(res["seconds"], 2),
        "sections_s": res["sections"],
        "peak_rss_mb": round(res["rss_mb"]),
        "ingest_s": round(ing["seconds"], 2),
        "tokens_counted_by": res["counted_by"],
        "planted": len(expected),
        "planted_found": len(found & expected),
        "unexpected_findings": len(found - expected),
        "neardup_sample": len(sample),
        "neardup_pairs": nd["pairs"],
        "neardup_same_results": nd["same"],
        "neardup_ours_s": round(nd["ours_s"], 3),
        "neardup_naive_s": round(nd["naive_s"], 2),
        "neardup_ratio": round(nd["naive_s"] / nd["ours_s"], 1),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
