"""Label-noise finder on the demo data with planted flips, against the zero-shot baseline.

The first N queries of the Cranfield demo (all their pairs), 5% of the pairs flipped (seeded:
relevant -> 0, 0 -> 2). Reported per flip seed, in the same run:
  - baseline: the bundled bi-encoder's cosine, through the same within-query flag logic;
  - finder: out-of-fold cross-encoders (lib.noise_worker.oof_scores, k folds grouped by query;
    with --teacher biencoder each fold model first distils the bi-encoder on its training folds);
  - fused: per-query z-scores of both, 50/50 (the finder with the bi-encoder as a prior).
  - neighbours (every method): lib.noise_neighbours, is each document like its query's other
    relevant or non-relevant documents (bundled bi-encoder embeddings, no training);
  - models+neighbours_wW (finder): lib.noise_neighbours.combine of the finder's and the
    neighbours' flags, model strengths weighted W (the shipped `--evidence both` is W = 1).
  - cartography (with --method cartography or both): ONE normal training run on the same noisy
    pairs (the real worker, in-process; validation on the next 10 demo queries, never flipped)
    recording training dynamics for every pair; flagged by lib.dynamics.flag_dynamics (low
    confidence, variability at or below the median), and "low_confidence": every pair ranked by
    confidence alone.
Precision among the top N flags (N = flipped pairs) and recall among the top 3N; chance is
the flip rate (0.05) and 3N / pairs.

  nice -n 5 python bench/noise.py --queries 40 --model default --epochs 2 --folds 2
  nice -n 5 python bench/noise.py --method cartography --epochs 2 --eval-every 10
  nice -n 5 python bench/noise.py --method neighbours --queries 80 --seeds 0,1,2,3,4
Results go to stdout and are appended to bench/results/noise.log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _NoStop:
    signal_name = None

    def is_set(self) -> bool:
        return False


def cartography_run(noisy, val, args, work: Path):
    """Train once on `noisy` (all training queries) with dynamics on; the run's cartography."""
    import numpy as np
    import pandas as pd

    from lib import dynamics, split
    from lib.ingest import ingest_file
    from lib.training import jobs
    from lib.training.config import build_config
    from lib.training.worker import train
    from lib.workspace import resolve_workspace

    os.environ.setdefault("RERANKER_STUDIO_BAR_BIENCODER", "none")  # the bar is not measured here
    ws = resolve_workspace(work / "ws")
    path = work / "noisy.jsonl"
    both = [noisy.assign(split="train"), val.assign(split="validation")]
    cols = ["query_id", "doc_id", "query", "document", "label", "split"]
    pd.concat([b[cols] for b in both]).to_json(path, orient="records", lines=True,
                                               force_ascii=False)
    ingest_file(ws, path, "bench-noisy")
    split.make_split(ws, "bench-noisy", val_frac=0.0)
    cfg = build_config({"base_model": args.model, "max_length": args.max_length,
                        "epochs": args.epochs, "learning_rate": args.lr, "batch_size": 16,
                        "eval_steps": args.eval_every, "logging_steps": 10, "seed": 13,
                        "device": args.device, "dynamics_max_pairs": len(noisy) + 1,
                        "max_train_pairs": None})
    created = jobs.create_run(ws, "bench-noisy", cfg, enqueue=False)
    t = time.time()
    train(created.run_dir, False, _NoStop())
    seconds = time.time() - t
    dyn = dynamics.read_dynamics(created.run_dir)
    carto = dynamics.cartography(dyn.pairs, dyn.probs)
    lines = (created.run_dir / "progress.jsonl").read_text().splitlines()
    dyn_s = sum(json.loads(r).get("dynamics_seconds") or 0 for r in lines)
    return carto, {"run_seconds": round(seconds), "dynamics_seconds": round(dyn_s, 1),
                   "validations": len(dyn.steps), "recorded": len(carto),
                   "flags": int(np.isfinite(dynamics.flag_dynamics(carto)["strength"]).sum())}


def main() -> int:
    import numpy as np
    import pandas as pd

    from lib import noise
    from lib import noise_neighbours as nb
    from lib.demo_data import DEMO_DATASET_PATH
    from lib.noise_worker import oof_scores

    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--model", default="default")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--method", choices=("finder", "neighbours", "cartography", "both"),
                    default="finder", help="finder: out-of-fold models AND neighbours (each "
                    "alone and combined); neighbours: only the neighbour evidence (seconds)")
    ap.add_argument("--teacher", help="finder: each fold model distils this teacher first "
                    "(e.g. biencoder), as `reranker-studio noise --teacher`")
    ap.add_argument("--distill-epochs", type=int, default=3)
    ap.add_argument("--distill-docs", type=int, default=30,
                    help="with --teacher: documents sampled per training query")
    ap.add_argument("--cpu-threads", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=10,
                    help="cartography: validation (and dynamics) every N steps")
    args = ap.parse_args()
    rows = pd.read_json(DEMO_DATASET_PATH, lines=True, dtype={"query_id": str, "doc_id": str})
    all_q = sorted(rows["query_id"].unique())
    qids = all_q[:args.queries]
    pairs = rows[rows["query_id"].isin(qids)].reset_index(drop=True)
    pairs["line"] = np.arange(1, len(pairs) + 1)
    val = rows[rows["query_id"].isin(all_q[args.queries:args.queries + 10])]
    t0 = time.time()
    cosine = noise.biencoder_scores(pairs)  # label-independent: once for every seed
    t_bi = time.time() - t0
    t0 = time.time()
    doc_emb = nb.document_embeddings(list(pairs["document"]))  # so are the documents' vectors
    t_emb = time.time() - t0

    def z(frame, col):
        return frame.groupby("query_id")[col].transform(
            lambda x: (x - x.mean()) / (x.std(ddof=0) + 1e-9))

    out = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        noisy, truth = noise.plant_flips(pairs.assign(cosine=cosine), 0.05, seed=seed)
        noisy["fold"] = noisy["query_id"].map(noise.assign_folds(noisy["query_id"], args.folds,
                                                                 13))
        n = len(truth)
        res = {"seed": seed, "pairs": len(noisy), "flipped": n, "method": args.method,
               "biencoder_seconds": round(t_bi)}
        baseline = noise.flag_pairs(noisy.assign(oof_score=noisy["cosine"]))
        p, r = noise.precision_recall(baseline, truth, n, 3 * n)
        res["baseline"] = {"precision@N": round(p, 3), "recall@3N": round(r, 3)}
        keys = ["query_id", "doc_id", "line"]
        neigh = nb.neighbour_flags(pd.concat([noisy, nb.consistency(noisy, doc_emb)], axis=1))
        p, r = noise.precision_recall(neigh, truth, n, 3 * n)
        res["neighbours"] = {"precision@N": round(p, 3), "recall@3N": round(r, 3),
                             "embedding_seconds": round(t_emb)}
        if args.method in ("finder", "both"):
            t = time.time()
            sc = oof_scores(noisy, dict(folds=args.folds, base_model=args.model,
                                        learning_rate=args.lr, batch_size=16,
                                        epochs=args.epochs, max_length=args.max_length, seed=13,
                                        device=args.device, cpu_threads=args.cpu_threads,
                                        distill_teacher=args.teacher,
                                        distill_epochs=args.distill_epochs,
                                        distill_docs_per_query=args.distill_docs))
            res["oof_seconds"] = round(time.time() - t)
            m = sc.merge(noisy[["query_id", "doc_id", "line", "cosine"]],
                         on=["query_id", "doc_id", "line"])
            models = noise.flag_pairs(m)
            ranked = {"finder": models,
                      "fused": noise.flag_pairs(m.assign(
                          oof_score=0.5 * z(m, "oof_score") + 0.5 * z(m, "cosine")))}
            for w in (1.0, 0.5):  # what the shipped 'both' evidence does, at two model weights
                ranked[f"models+neighbours_w{w:g}"] = nb.combine(
                    {nb.MODELS: models, nb.NEIGHBOURS: neigh.merge(
                        m[keys], on=keys)}, {nb.MODELS: w})
            for name, flags in ranked.items():
                p, r = noise.precision_recall(flags, truth, n, 3 * n)
                res[name] = {"precision@N": round(p, 3), "recall@3N": round(r, 3)}
        if args.method in ("cartography", "both"):
            import tempfile

            from lib import dynamics

            with tempfile.TemporaryDirectory() as tmp:
                carto, info = cartography_run(noisy, val, args, Path(tmp))
            res["cartography_run"] = info
            ranked = {"cartography": dynamics.flag_dynamics(carto),
                      "low_confidence": carto.assign(strength=1.0 - carto["confidence"])
                      .sort_values("strength", ascending=False)}
            for name, flags in ranked.items():
                p, r = noise.precision_recall(flags, truth, n, 3 * n)
                res[name] = {"precision@N": round(p, 3), "recall@3N": round(r, 3)}
        out.append(res)
        print(json.dumps(res), flush=True)
    summary = {"args": vars(args), "runs": out, "at": time.strftime("%Y-%m-%d %H:%M")}
    path = ROOT / "bench" / "results" / "noise.log"
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
