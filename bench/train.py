"""Training throughput: our worker vs a minimal plain CrossEncoderTrainer script, same run.

Both train the same model on the same pairs with the same arguments, each in a fresh process,
without the database (pairs come from a JSONL file or the bundled demo file, cycled to --pairs).
Ours is the real `python -m lib.training.worker RUN_DIR`. "ratio" (ours / plain) compares the
training loops: our samples/s leave out the time spent validating and writing checkpoints (work
the plain script does not do, timed and printed apart) but include everything else ours adds:
the progress callbacks, JSONL and status writes, the stop check every step. "ratio_all_included"
counts validation and checkpoint writes too. The last line is a JSON object.

  python bench/train.py                                   # CPU, tiny BERT, seconds
  python bench/train.py --model default --pairs 400 --max-length 128
  python bench/train.py --model default --max-length 256 --precision bf16 --batch-size 64 \
      --pairs 20000 --device cuda                          # GPU: also peak GPU memory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny",
                   help="'tiny' (built locally), 'default' (bundled MiniLM) or a model dir")
    p.add_argument("--data", help="JSONL of query/document/label (default: data/cranfield.jsonl)")
    p.add_argument("--pairs", type=int, default=2000, help="training pairs (cycled if fewer)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--learning-rate", type=float, default=3e-5)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--plain-precision", choices=["auto", "fp32", "fp16", "bf16"],
                   help="the plain script's precision (default: --precision); e.g. fp32, as a "
                   "user's script runs on CPU, against ours in auto (bf16 on AMX CPUs)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--cpu-threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--validation-queries", type=int, default=20,
                   help="held-out queries our worker validates on (start and end)")
    p.add_argument("--repeats", type=int, default=1, help="alternate plain/ours N times, seeds "
                   "12, 13, ...: medians of the rates, means of the final validation NDCG@10")
    p.add_argument("--stock", action="store_true",
                   help="ours without pre-tokenising and length bucketing (the old path)")
    p.add_argument("--plain", metavar="RUN_DIR", help=argparse.SUPPRESS)  # the plain script
    return p.parse_args(argv)


# ---- the minimal plain script (runs in its own process) -------------------------------------
def plain_main(run_dir: Path) -> None:
    import pandas as pd
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    spec = json.loads((run_dir / "plain.json").read_text())
    if spec["cpu_threads"]:
        torch.set_num_threads(spec["cpu_threads"])
    train = pd.read_json(run_dir / "data" / "train.jsonl", lines=True)
    from transformers import set_seed

    set_seed(spec["seed"])  # the new classifier head starts as ours does (the worker seeds first)
    model = CrossEncoder(spec["model_path"], num_labels=1, max_length=spec["max_length"],
                         device=spec["device"], local_files_only=True)
    dataset = Dataset.from_dict({"query": list(train["query"]),
                                 "document": list(train["document"]),
                                 "label": [x / spec["max_label"] for x in train["label"]]})
    args = CrossEncoderTrainingArguments(
        output_dir=str(run_dir / "plain-out"), num_train_epochs=spec["epochs"],
        per_device_train_batch_size=spec["batch_size"], learning_rate=spec["learning_rate"],
        warmup_steps=spec["warmup"], weight_decay=spec["weight_decay"], seed=spec["seed"],
        bf16=spec["precision"] == "bf16", fp16=spec["precision"] == "fp16",
        use_cpu=spec["device"] == "cpu", eval_strategy="no", save_strategy="no",
        logging_steps=spec["logging_steps"], report_to="none", disable_tqdm=True,
    )
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset,
                                  loss=BinaryCrossEntropyLoss(model))
    out = trainer.train()
    model.save(str(run_dir / "plain-model"))
    peak = (torch.cuda.max_memory_allocated() / 2**20) if spec["device"] == "cuda" else None
    print("PLAIN_RESULT " + json.dumps({
        "samples_per_second": out.metrics["train_samples_per_second"],
        "runtime_s": out.metrics["train_runtime"], "peak_gpu_mem_mb": peak}), flush=True)


# ---- the benchmark ------------------------------------------------------------------------------
def load_pairs(path: Path, n: int, n_val_queries: int):
    import pandas as pd

    df = pd.read_json(path, lines=True, dtype={"query_id": str, "doc_id": str})
    if "query_id" not in df:
        df["query_id"] = df["query"].factorize()[0].astype(str)
    if "doc_id" not in df:
        df["doc_id"] = [f"d{i}" for i in range(len(df))]
    qids = sorted(df["query_id"].unique())
    val_ids = set(qids[-n_val_queries:])
    val = df[df["query_id"].isin(val_ids)]
    pool = df[~df["query_id"].isin(val_ids)].sample(frac=1.0, random_state=0)
    reps = -(-n // len(pool))
    train = pd.concat([pool] * reps, ignore_index=True).iloc[:n]
    cols = ["query_id", "doc_id", "query", "document", "label"]
    return train[cols], val[cols], int(df["label"].max() or 1)


def resolve_model(spec: str, tmp: Path) -> str:
    if spec == "tiny":
        from lib.testing import build_tiny_cross_encoder

        return str(build_tiny_cross_encoder(tmp / "tiny-ce"))
    from lib.models import resolve_model as resolve

    return resolve(spec).path


def resolved_device_precision(device: str, precision: str) -> tuple[str, str]:
    import torch

    cuda = torch.cuda.is_available() and device != "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no GPU is visible")
    if not cuda:
        from lib.training.cpu_bf16 import cpu_precision

        return "cpu", cpu_precision(precision)
    if precision == "auto":
        return "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "cuda", precision


def run_ours(run_dir: Path, env: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lib.training.worker", str(run_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    status = json.loads((run_dir / "status.json").read_text())
    records = [json.loads(ln) for ln in (run_dir / "progress.jsonl").read_text().splitlines()
               if ln.strip()]
    start = next((r for r in records if r.get("kind") == "start"), {})
    evals = [r for r in records if r.get("kind") == "eval"]
    if proc.returncode != 0 or status.get("state") != "finished":
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"our worker failed: {status.get('error')}")
    return {"samples_per_second": status["train_samples_per_second"],
            "wall_samples_per_second": status.get("wall_samples_per_second"),
            "validation_seconds": status.get("validation_seconds"),
            "checkpoint_seconds": status.get("checkpoint_seconds"),
            "peak_gpu_mem_mb": status.get("peak_gpu_mem_mb"), "process_wall_s": round(wall, 1),
            "padding_share": start.get("padding_share"),
            "padding_share_random": start.get("padding_share_random"),
            "validation_pairs_per_s": max((r.get("eval_pairs_per_s") or 0.0) for r in evals)
            if evals else None}


def run_plain(run_dir: Path, env: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--plain", str(run_dir)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PLAIN_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit("the plain script failed")
    return json.loads(line.removeprefix("PLAIN_RESULT "))


def final_ndcg(model_path: str, val, max_length: int, device: str) -> float:
    """Validation NDCG@10 of a trained model, scored by the stock CrossEncoder.predict for both
    sides alike."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from lib.metrics import evaluate_rankings

    model = CrossEncoder(model_path, max_length=max_length, device=device,
                         local_files_only=True)
    scores = model.predict(list(zip(val["query"], val["document"], strict=True)), batch_size=32,
                           show_progress_bar=False)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return float(evaluate_rankings(val.reset_index(drop=True), scores, ("ndcg@10",),
                                   name="validation").means["ndcg@10"])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.plain:
        plain_main(Path(args.plain))
        return
    import shutil
    import statistics

    from lib.training.config import build_config, save_config

    data = Path(args.data) if args.data else ROOT / "data" / "cranfield.jsonl"
    train, val, max_label = load_pairs(data, args.pairs, args.validation_queries)
    device, precision = resolved_device_precision(args.device, args.precision)
    plain_precision = (precision if args.plain_precision is None else
                       resolved_device_precision(args.device, args.plain_precision)[1])
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model_path = resolve_model(args.model, tmp)
    n_steps = -(-len(train) // args.batch_size) * args.epochs
    cfg = build_config({
        "base_model": model_path, "learning_rate": args.learning_rate,
        "batch_size": args.batch_size, "epochs": args.epochs, "max_length": args.max_length,
        "precision": precision, "device": device, "eval_steps": n_steps + 1,
        "logging_steps": max(1, n_steps // 20), "cpu_threads": args.cpu_threads,
        "eval_batch_size": max(32, args.batch_size),
        "pretokenize": not args.stock, "length_bucketing": not args.stock,
    })
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))
    env.setdefault("HF_HUB_OFFLINE", "1")
    print(f"{len(train)} training pairs, {n_steps} steps, model {args.model}, {device} "
          f"{precision} (plain script: {plain_precision}), max length {args.max_length}, "
          f"batch {args.batch_size}; our worker also "
          f"validates on {val['query_id'].nunique()} queries (time excluded)", flush=True)
    ours, plain = [], []
    try:
        for i in range(args.repeats):
            run_dir = tmp / f"run-{i}"
            (run_dir / "data").mkdir(parents=True)
            cfg_i = cfg.model_copy(update={"seed": cfg.seed + i})
            save_config(cfg_i, run_dir)
            train.to_json(run_dir / "data" / "train.jsonl", orient="records", lines=True)
            val.to_json(run_dir / "data" / "validation.jsonl", orient="records", lines=True)
            (run_dir / "data" / "meta.json").write_text(json.dumps({"max_label": max_label}))
            (run_dir / "plain.json").write_text(json.dumps({
                "model_path": model_path, "max_length": args.max_length, "device": device,
                "max_label": max_label, "epochs": args.epochs, "batch_size": args.batch_size,
                "learning_rate": args.learning_rate, "warmup": cfg.warmup,
                "weight_decay": cfg.weight_decay, "seed": cfg_i.seed, "precision": plain_precision,
                "logging_steps": cfg.logging_steps, "cpu_threads": args.cpu_threads}))
            p = run_plain(run_dir, env)
            o = run_ours(run_dir, env)
            p["ndcg@10"] = final_ndcg(str(run_dir / "plain-model"), val, args.max_length, device)
            o["ndcg@10"] = final_ndcg(str(run_dir / "model"), val, args.max_length, device)
            plain.append(p)
            ours.append(o)
            print(f"[{i + 1}/{args.repeats}] seed {cfg_i.seed}: plain "
                  f"{p['samples_per_second']:.2f} pairs/s, NDCG@10 {p['ndcg@10']:.4f}; ours "
                  f"{o['samples_per_second']:.2f} pairs/s, NDCG@10 {o['ndcg@10']:.4f}, padding "
                  f"{o['padding_share']} (random batches {o['padding_share_random']}); "
                  f"ratio {o['samples_per_second'] / p['samples_per_second']:.2f} (all included "
                  f"{o['wall_samples_per_second']:.1f}: validation {o['validation_seconds']} s, "
                  f"checkpoint writes {o['checkpoint_seconds']} s)"
                  + (f"; peak GPU memory plain {p['peak_gpu_mem_mb']:.0f} MiB, ours "
                     f"{o['peak_gpu_mem_mb']:.0f} MiB" if device == "cuda" else ""), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ours_sps = statistics.median(o["samples_per_second"] for o in ours)
    plain_sps = statistics.median(p["samples_per_second"] for p in plain)
    ours_wall = statistics.median(o["wall_samples_per_second"] for o in ours)
    best_ratio = (max(o["samples_per_second"] for o in ours)
                  / max(p["samples_per_second"] for p in plain))
    print(json.dumps({
        "ratio": round(ours_sps / plain_sps, 4),
        "ratio_of_best": round(best_ratio, 4),  # fastest of each: robust on a busy machine
        "ratio_all_included": round(ours_wall / plain_sps, 4),
        "ours_samples_per_s": round(ours_sps, 2), "plain_samples_per_s": round(plain_sps, 2),
        "ours_samples_per_s_all_included": round(ours_wall, 2),
        "pairs": len(train), "steps": n_steps, "model": args.model, "device": device,
        "precision": precision, "plain_precision": plain_precision,
        "max_length": args.max_length, "batch_size": args.batch_size, "repeats": args.repeats,
        "stock": args.stock,
        "ndcg@10_ours": round(statistics.mean(o["ndcg@10"] for o in ours), 4),
        "ndcg@10_plain": round(statistics.mean(p["ndcg@10"] for p in plain), 4),
        "ndcg@10_diff": round(statistics.mean(o["ndcg@10"] for o in ours)
                              - statistics.mean(p["ndcg@10"] for p in plain), 4),
        "validation_pairs_per_s_ours": round(statistics.median(
            o["validation_pairs_per_s"] for o in ours), 2),
        "peak_gpu_mem_mb": {"ours": ours[-1]["peak_gpu_mem_mb"],
                            "plain": plain[-1]["peak_gpu_mem_mb"]},
    }))


if __name__ == "__main__":
    main()
