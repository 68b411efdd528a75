"""Quality on the demo data: baselines, the guide recipe, cold-start pieces, distillation, fusion.

Everything runs on the bundled Cranfield demo's active split (lib.bootstrap.load_demo: 20% of the
queries for validation, no test split) with the bundled all-MiniLM-L6-v2 base, through the real
worker (`lib.training.worker.train`, in this process) at the CPU quick sizes. Validation NDCG@10 and
MRR@10 are the run's best checkpoint's (picked on those same validation queries, so slightly
optimistic, as for any run); a test column appears when the split has one. Fusion (reranker + BM25
or bi-encoder, per-query z-scores) reports a 5-fold query cross-validated estimate: each fold's
weight is chosen on the other folds (lib.evaluation.fusion.cross_validate).

  nice -n 5 python bench/quality.py                       # all variants, ~15-20 min on 2 busy cores
  python bench/quality.py --only guide,recipe --pairs 400 # a subset, smaller
The table goes to stdout and bench/results/quality.log; the last line is a JSON object.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))

DATASET = "cranfield-demo"
LOG = ROOT / "bench" / "results" / "quality.log"

CORPUS = "demo-docs"  # the demo's own documents as a distillation corpus (made when needed)

# name -> (what it is, config overrides on top of the shared CPU sizes)
VARIANTS: dict[str, tuple[str, dict]] = {
    "guide": ("guide recipe: one lr for all, no pos_weight, 1 epoch (cold_start off)",
              {"cold_start": "off", "epochs": 1}),
    "recipe": ("full cold-start recipe: head lr 1e-3, pos_weight from balance, 2 epochs, "
               "early stopping", {"cold_start": "auto", "epochs": 2}),
    "recipe-no-head-lr": ("recipe without the head learning rate (head lr = encoder lr)",
                          {"cold_start": "auto", "epochs": 2, "head_learning_rate": None}),
    "recipe-no-pos-weight": ("recipe without pos_weight (1.0)",
                             {"cold_start": "auto", "epochs": 2, "pos_weight": 1.0}),
    "recipe-1-epoch": ("recipe with 1 epoch instead of 2",
                       {"cold_start": "auto", "epochs": 1}),
    "guide+head-lr": ("guide with only the head learning rate added (no pos_weight), 1 epoch",
                      {"cold_start": "on", "epochs": 1, "pos_weight": 1.0}),
    "recipe+distill": ("recipe after distilling the bi-encoder (1 epoch, 10 sampled docs/query)",
                       {"cold_start": "auto", "epochs": 2, "distill_teacher": "biencoder",
                        "distill_epochs": 1, "distill_docs_per_query": 10}),
    "distill-2-epochs": ("recipe (2 epochs on the labels) after distilling the bi-encoder's "
                         "per-query z-scores (1 epoch, own candidates + 5 sampled docs/query)",
                         {"cold_start": "auto", "epochs": 2, "distill_teacher": "biencoder",
                          "distill_epochs": 1, "distill_docs_per_query": 5}),
    # exactly what a user gets by default on a CPU: the Train page's default CPU preset, none of
    # the shared sizes above (only the thread count and --seed), so --pairs/--max-length do not
    # apply
    "default": ("the default CPU recipe: the Train page's default CPU preset as it ships", {}),
    "quick": ("the 'CPU quick' preset as it ships (the few-minute what-if)", {}),
    "distill-1-epoch": ("recipe (1 epoch on the labels) after distilling the bi-encoder's "
                        "per-query z-scores (1 epoch, own candidates + 5 sampled docs/query)",
                        {"cold_start": "auto", "epochs": 1, "distill_teacher": "biencoder",
                         "distill_epochs": 1, "distill_docs_per_query": 5}),
    "distill-corpus": ("recipe (1 epoch on the labels) after distilling the bi-encoder for 3 "
                       "epochs on each training query's candidates, 5 sampled docs and its BM25 "
                       "top 30 of the dataset's own documents as a corpus (minus every document "
                       "of a validation query)",
                       {"cold_start": "auto", "epochs": 1, "distill_teacher": "biencoder",
                        "distill_epochs": 3, "distill_docs_per_query": 5,
                        "distill_corpus": CORPUS, "distill_corpus_top_k": 30}),
    # the default CPU preset's distillation without pseudo-queries, 3 epochs instead of 1 (what
    # the preset was before pseudo-queries; the same as distill-corpus above)
    "default-no-pseudo": ("the default CPU preset without pseudo-queries and 3 distillation "
                          "epochs instead of 1", {"distill_pseudo_queries": 0,
                                                  "distill_epochs": 3}),
}
PRESET_VARIANTS = {"default", "quick", "default-no-pseudo"}  # a shipped preset + overrides


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated variants (default: all): " + ", ".join(VARIANTS))
    p.add_argument("--pairs", type=int, default=800, help="max_train_pairs of every run")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--eval-steps", type=int, default=25)
    p.add_argument("--cpu-threads", type=int, default=0)
    p.add_argument("--seed", type=int, help="training seed of every run (default: the config's)")
    p.add_argument("--base", default="default", help="base model (a smoke test: a tiny model dir)")
    p.add_argument("--workspace", help="reuse a workspace dir (default: a temporary one)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the baselines and fusion (another process measures them)")
    p.add_argument("--log", default=str(LOG))
    return p.parse_args(argv)


def metrics_of(pairs, scores) -> dict:
    from lib.metrics import evaluate_rankings

    res = evaluate_rankings(pairs, scores, ("ndcg@10", "mrr@10"))
    return {k: round(float(v), 4) for k, v in res.means.items()}


def score_model(model_dir: str, pairs, max_length: int):
    from lib.models import load_cross_encoder, resolve_model

    model = load_cross_encoder(resolve_model(model_dir), max_length=max_length, device="cpu")
    return model.predict(list(zip(pairs["query"], pairs["document"], strict=True)),
                         batch_size=64, convert_to_numpy=True, show_progress_bar=False)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from lib.bootstrap import load_demo
    from lib.evaluation import fusion
    from lib.evaluation.scoring import cached_bi_encoder, score_bi_encoder, score_bm25
    from lib.models import resolve_model
    from lib.split import load_split_pairs
    from lib.training import jobs, worker
    from lib.training.callbacks import StopFlag
    from lib.training.config import DEFAULT_CPU_PRESET, PRESETS, build_config
    from lib.workspace import resolve_workspace

    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    root = Path(args.workspace) if args.workspace else Path(tempfile.mkdtemp(prefix="quality-"))
    ws = resolve_workspace(root / "ws")
    load_demo(ws)
    if any(VARIANTS[n][1].get("distill_corpus") == CORPUS for n in names):
        from lib import corpora

        if CORPUS not in set(corpora.list_corpora(ws)["name"]):
            corpora.corpus_from_dataset(ws, DATASET, CORPUS)
    pairs = load_split_pairs(ws, DATASET)
    splits = {s: pairs[pairs["split"] == s].reset_index(drop=True)
              for s in ("validation", "test") if (pairs["split"] == s).any()}
    log_lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        log_lines.append(line)
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        Path(args.log).write_text("\n".join(log_lines) + "\n", encoding="utf-8")

    t_all = time.time()
    out(f"# bench/quality.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
        f"torch threads {torch.get_num_threads()}, load avg {os.getloadavg()[0]:.1f}")
    out(f"demo split: {', '.join(f'{s} {d.query_id.nunique()} queries / {len(d)} pairs' for s, d in splits.items())}; "  # noqa: E501
        f"train pairs used {args.pairs}, max length {args.max_length}, batch {args.batch_size}, "
        f"lr {args.learning_rate:g}")
    rows: list[dict] = []
    base_scores: dict[str, dict] = {}
    bi = None if args.no_baselines else cached_bi_encoder(resolve_model("default"), device="cpu")
    for split, df in splits.items():
        q, d = list(df["query"]), list(df["document"])
        base_scores[split] = {"bm25": score_bm25(df)[0],
                              "biencoder": (np.zeros(len(df)) if args.no_baselines
                                            else score_bi_encoder(None, bi, "", q, d)[0])}
    bar = float("nan")
    if args.no_baselines:
        out("baselines and fusion: measured by another process")
    else:
        for name in ("bm25", "biencoder"):
            row = {"variant": name, "what": "zero-shot baseline on the same candidates"}
            for split, df in splits.items():
                row[split] = metrics_of(df, base_scores[split][name])
            rows.append(row)
        bar = rows[1]["validation"]["ndcg@10"]
        out(f"baselines: bm25 {rows[0]['validation']}, biencoder {rows[1]['validation']}")
    shared = {"base_model": args.base, "learning_rate": args.learning_rate,
              "batch_size": args.batch_size, "max_length": args.max_length,
              "max_train_pairs": args.pairs, "eval_steps": args.eval_steps, "device": "cpu",
              "precision": "fp32", "logging_steps": 5, "cpu_threads": args.cpu_threads,
              "save_total_limit": 1, **({"seed": args.seed} if args.seed is not None else {})}
    models: dict[str, str] = {}
    lengths: dict[str, int] = {}
    for name in names:
        what, overrides = VARIANTS[name]
        values = {**shared, **overrides}
        if name in PRESET_VARIANTS:
            values = {**PRESETS["CPU quick" if name == "quick" else DEFAULT_CPU_PRESET],
                      **overrides, "base_model": args.base, "cpu_threads": args.cpu_threads,
                      "save_total_limit": 1,
                      **({"seed": args.seed} if args.seed is not None else {})}
        if name == "recipe-no-head-lr":
            values["head_learning_rate"] = args.learning_rate
        cfg = build_config(values)
        t0 = time.time()
        created = jobs.create_run(ws, DATASET, cfg, enqueue=False)
        threads = torch.get_num_threads()
        try:
            result = worker.train(created.run_dir, resume=False, flag=StopFlag(created.run_dir))
        finally:
            torch.set_num_threads(threads)
        best = result.get("best") or {}
        status = json.loads((created.run_dir / "status.json").read_text())
        row = {"variant": name, "what": what, "seconds": round(time.time() - t0),
               "steps": result.get("global_step"), "best_step": best.get("step"),
               "start_ndcg@10": (result.get("start") or {}).get("ndcg@10"),
               "recipe": status.get("recipe"), "distillation": status.get("distillation"),
               "validation": {"ndcg@10": best.get("ndcg@10"), "mrr@10": best.get("mrr@10")}}
        models[name] = result["model_path"]
        lengths[name] = cfg.max_length
        if "test" in splits:
            row["test"] = metrics_of(splits["test"], score_model(models[name], splits["test"],
                                                                 lengths[name]))
        rows.append(row)
        out(f"{name}: {row['validation']} (start {row['start_ndcg@10']}), {row['seconds']} s, "
            f"{row['steps']} steps, best at {row['best_step']}")
    # fusion of the best trained variant with each first stage
    trained = [r for r in rows if r["variant"] in models and r["validation"]["ndcg@10"]]
    if trained and not args.no_baselines:
        top = max(trained, key=lambda r: r["validation"]["ndcg@10"])
        val = splits["validation"]
        rr = score_model(models[top["variant"]], val, lengths[top["variant"]])
        for stage in ("bm25", "biencoder"):
            row = {"variant": f"fuse:{top['variant']}+{stage}",
                   "what": f"z-score fusion of {top['variant']} with {stage}"}
            if "test" in splits:
                fit = fusion.fit_and_report(val, rr, base_scores["validation"][stage],
                                            splits["test"],
                                            score_model(models[top["variant"]], splits["test"],
                                                        lengths[top["variant"]]),
                                            base_scores["test"][stage])
                row["test"] = {"ndcg@10": round(fit.estimate, 4)}
            fit, fused = fusion.cross_validate(val, rr, base_scores["validation"][stage],
                                               label="validation")
            row["validation"] = metrics_of(val, fused)
            row["validation"]["ndcg@10"] = round(float(fit.estimate), 4)
            row["weight"] = fit.weight
            row["fold_weights"] = fit.fold_weights
            rows.append(row)
            out(f"{row['variant']}: cross-validated {row['validation']}, served weight "
                f"{fit.weight}, fold weights {fit.fold_weights}")
    out()
    cols = ["validation"] + (["test"] if "test" in splits else [])
    head = "| variant | " + " | ".join(f"{c} NDCG@10 | {c} MRR@10" for c in cols) + \
        " | beats bi-encoder (val) | train s | what |"
    out(head)
    out("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        cells = []
        for c in cols:
            m = r.get(c) or {}
            cells += [f"{m['ndcg@10']:.4f}" if m.get("ndcg@10") is not None else "n/a",
                      f"{m['mrr@10']:.4f}" if m.get("mrr@10") is not None else "n/a"]
        v = (r.get("validation") or {}).get("ndcg@10")
        beats = "-" if r["variant"] == "biencoder" or v is None else ("yes" if v > bar else "no")
        out(f"| {r['variant']} | " + " | ".join(cells) + f" | {beats} | "
            f"{r.get('seconds', '')} | {r['what']} |")
    out()
    out(f"total {time.time() - t_all:.0f} s")
    out(json.dumps({"rows": rows, "bar_biencoder_val_ndcg@10": bar,
                    "args": vars(args)}, default=lambda o: np.asarray(o).tolist()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
