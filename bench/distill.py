"""Distillation phase speed: pre-tokenised (what the worker runs now) vs the stock path.

Both sides run `lib.training.distill.run_distillation` (the worker's distillation phase) on the
same pairs, seed, teacher and arguments, each in a fresh process; only `pretokenize` differs. The
batches are the same on both sides (the stock sampler's), so the distilled model should be too:
the MSE against the teacher after distilling is printed for each side. Rates are the trainer's
own train_samples_per_second (the teacher's scoring, cached per run folder, is left out).

  python bench/distill.py                                  # CPU, bundled MiniLM, 800 pairs
  python bench/distill.py --pairs 20000 --batch-size 32 --device cuda    # GPU
The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default", help="student: 'default', 'tiny' or a model dir")
    p.add_argument("--teacher", default="biencoder", help="'biencoder' or a cross-encoder")
    p.add_argument("--pairs", type=int, default=800, help="about this many distillation pairs")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--cpu-threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="alternate stock/ours N times")
    p.add_argument("--side", choices=["stock", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def training_rows(n_pairs: int):
    """Whole demo queries, in id order, until about `n_pairs` pairs (cycled if fewer)."""
    import pandas as pd

    from lib.demo_data import DEMO_DATASET_PATH

    rows = pd.read_json(DEMO_DATASET_PATH, lines=True, dtype={"query_id": str, "doc_id": str})
    out, total, rep = [], 0, 0
    while total < n_pairs:
        for qid, group in rows.groupby("query_id", sort=True):
            if total >= n_pairs:
                break
            out.append(group.assign(query_id=f"{qid}#{rep}"))
            total += len(group)
        rep += 1
    return pd.concat(out, ignore_index=True)


def side_main(args) -> None:
    import torch
    from transformers import set_seed

    from lib.models import load_cross_encoder, resolve_model
    from lib.training.config import build_config
    from lib.training.distill import run_distillation
    from lib.training.worker import resolve_device

    cfg = build_config({"max_length": args.max_length, "batch_size": args.batch_size,
                        "distill_epochs": args.epochs, "distill_docs_per_query": 0,
                        "device": args.device, "precision": args.precision,
                        "cpu_threads": args.cpu_threads, "logging_steps": 50,
                        "pretokenize": args.side == "ours"})
    device, precision = resolve_device(cfg)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    set_seed(cfg.seed)
    model = load_cross_encoder(resolve_model(args.model), max_length=args.max_length,
                               device="cuda:0" if device == "cuda" else "cpu")
    rec = run_distillation(model, training_rows(args.pairs), cfg, Path(args.run_dir),
                           teacher=args.teacher, device=device, precision=precision,
                           log=lambda msg: print(msg, file=sys.stderr, flush=True))
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    print("SIDE_RESULT " + json.dumps({
        "pairs_per_second": rec["pairs_per_second"], "seconds": rec["seconds"],
        "pairs": rec["pairs"], "mse_before": rec["mse_before"], "mse_after": rec["mse_after"],
        "device": device, "precision": precision, "peak_gpu_mem_mb": peak,
        "batching": rec["batching"]}), flush=True)


def run_side(args, side: str, run_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--run-dir", str(run_dir)]
    for key in ("model", "teacher", "pairs", "max_length", "batch_size", "epochs", "device",
                "precision", "cpu_threads"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("SIDE_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"the {side} side failed")
    return json.loads(line.removeprefix("SIDE_RESULT "))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.side:
        side_main(args)
        return
    if args.model == "tiny":
        from lib.testing import build_tiny_cross_encoder

        args.model = str(build_tiny_cross_encoder(Path(tempfile.mkdtemp()) / "tiny"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-distill-"))
    sides: dict[str, list[dict]] = {"stock": [], "ours": []}
    for r in range(args.repeats):
        for side in ("stock", "ours"):
            res = run_side(args, side, tmp / f"{side}-{r}")
            sides[side].append(res)
            print(f"[{r + 1}/{args.repeats}] {side}: {res['pairs_per_second']:.1f} pairs/s "
                  f"({res['pairs']} pairs, {res['seconds']} s), MSE against the teacher "
                  f"{res['mse_before']} -> {res['mse_after']}", flush=True)
    rate = {s: statistics.median(x["pairs_per_second"] for x in v) for s, v in sides.items()}
    first = sides["ours"][0]
    print(json.dumps({
        "ratio": round(rate["ours"] / rate["stock"], 4),
        "ours_pairs_per_s": round(rate["ours"], 2), "stock_pairs_per_s": round(rate["stock"], 2),
        "mse_after": {s: [x["mse_after"] for x in v] for s, v in sides.items()},
        "pairs": first["pairs"], "device": first["device"], "precision": first["precision"],
        "max_length": args.max_length, "batch_size": args.batch_size, "epochs": args.epochs,
        "repeats": args.repeats, "model": args.model, "teacher": args.teacher,
        "peak_gpu_mem_mb": {s: v[0]["peak_gpu_mem_mb"] for s, v in sides.items()},
        "padding_share_ours": first["batching"].get("padding_share")}))


if __name__ == "__main__":
    main()
