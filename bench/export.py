"""Export benchmark: every format vs PyTorch fp32, proven on the demo's validation queries.

    nice -n 5 python bench/export.py [--model RUN_MODEL_DIR] [--formats onnx,openvino-int8]

The model: --model (a fine-tuned run's model/ folder), else the bundled all-MiniLM-L6-v2
converted to a cross-encoder with the seeded new head a training run starts from, that head then
fitted on --head-pairs training pairs with the encoder frozen (no fine-tuned demo model ships,
and full fine-tuning does not fit a benchmark on 2 busy cores; an untrained head gives
near-constant scores that any rounding reorders). It is laid out as a training run in a
temporary workspace (the demo's active split: train pairs for the int8 calibration, validation
pairs for the proof) and goes through lib.ship.export_and_prove, the code of `reranker-studio
export`. Each format's proof re-measures the PyTorch original in the same process right before
the export, so drifting load on a shared machine hits both sides alike. Target (issue 14):
OpenVINO int8 >= 2.5x pairs/s with |delta NDCG@10| <= 0.01. Table to stdout and
bench/results/export.log; last line JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))

LOG = ROOT / "bench" / "results" / "export.log"


def parse_args(argv=None):
    from lib.export import FORMATS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a fine-tuned cross-encoder folder (default: bundled base, "
                   "seeded new head)")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--max-length", type=int, default=256,
                   help="with the default model: its max length (default 256)")
    p.add_argument("--head-pairs", type=int, default=400,
                   help="with the default model: fit its new head on this many training pairs "
                   "first (0 = leave it untrained)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5, help="latency repeats")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for torch, onnxruntime and OpenVINO alike (0 = each default)")
    p.add_argument("--queries", type=int, default=0,
                   help="prove on the first N validation queries only (0 = all)")
    return p.parse_args(argv)


def build_default_model(out: Path, max_length: int) -> str:
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import set_seed

    from lib.evaluation.rankers import DEFAULT_HEAD_SEED
    from lib.models import default_model_path

    set_seed(DEFAULT_HEAD_SEED)
    CrossEncoder(default_model_path(), num_labels=1, max_length=max_length,
                 local_files_only=True).save(str(out))
    return (f"bundled all-MiniLM-L6-v2 as a cross-encoder, new head seeded {DEFAULT_HEAD_SEED} "
            f"(NOT fine-tuned), max length {max_length}")


def train_head(model_dir: Path, train, n_pairs: int, seed: int = 13) -> str:
    """Fit only the classification head (encoder frozen) on n training pairs, BCE on
    label / max label: cheap on a busy CPU (one forward pass per pair), and the scores then
    spread like a reranker's instead of the near-constant ones of an untrained head."""
    import numpy as np
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    ce = CrossEncoder(str(model_dir), num_labels=1, device="cpu", local_files_only=True)
    hf = ce.model.eval()
    sample = train.sample(n=min(n_pairs, len(train)), random_state=seed)
    pooled = []
    with torch.inference_mode():
        for lo in range(0, len(sample), 32):
            part = sample.iloc[lo:lo + 32]
            feats = ce.tokenizer(list(zip(part["query"], part["document"], strict=True)),
                                 padding=True, truncation=True, max_length=ce.max_seq_length,
                                 return_tensors="pt")
            pooled.append(hf.bert(**feats).pooler_output)
    x = torch.cat(pooled).clone()
    y = torch.tensor((sample["label"] / max(1, sample["label"].max())).to_numpy(np.float32))
    head = hf.classifier
    pos = float((y > 0).sum())
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - pos) / max(pos, 1)))
    torch.manual_seed(seed)
    for _ in range(300):
        opt.zero_grad()
        loss = loss_fn(head(x).squeeze(-1), y)
        loss.backward()
        opt.step()
    ce.save(str(model_dir))
    return f"head-only fine-tuned on {len(sample)} training pairs (encoder frozen, BCE)"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from lib.bootstrap import load_demo
    from lib.export_proof import recommend
    from lib.models import load_cross_encoder
    from lib.ship import export_and_prove, resolve_target
    from lib.split import load_split_pairs
    from lib.workspace import resolve_workspace

    if args.threads:
        torch.set_num_threads(args.threads)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    try:
        ws = resolve_workspace(tmp / "ws")
        ds_id = load_demo(ws)["dataset_id"]
        pairs = load_split_pairs(ws, ds_id)
        run = ws.runs_dir / "demo"
        (run / "data").mkdir(parents=True)
        cols = ["query_id", "doc_id", "query", "document", "label"]
        val = pairs[pairs["split"] == "validation"][cols]
        if args.queries:
            keep = list(dict.fromkeys(val["query_id"]))[: args.queries]
            val = val[val["query_id"].isin(keep)]
        pairs[pairs["split"] == "train"][cols].to_json(
            run / "data" / "train.jsonl", orient="records", lines=True)
        val.to_json(run / "data" / "validation.jsonl", orient="records", lines=True)
        if args.model:
            shutil.copytree(args.model, run / "model")
            what = f"fine-tuned model {args.model}"
        else:
            what = build_default_model(run / "model", args.max_length)
            if args.head_pairs:
                what += "; " + train_head(run / "model", pairs[pairs["split"] == "train"],
                                          args.head_pairs)
        target = resolve_target(ws, "demo")
        say(f"# bench/export.py  {time.strftime('%Y-%m-%d %H:%M:%S')}  model: {what}")
        say(f"# proof: demo validation split, {val['query_id'].nunique()} queries, {len(val)} "
            f"pairs; threads {args.threads or 'runtime defaults'} "
            f"(torch {torch.get_num_threads()}), batch {args.batch_size}, "
            f"latency = 1 query x 100 candidates x {args.repeats} repeats; "
            f"load average at start {os.getloadavg()[0]:.2f}")
        original = load_cross_encoder(str(target.model_dir), device="cpu")
        head = (f"{'format':14} {'NDCG orig':>9} {'NDCG exp':>9} {'delta':>8} {'p':>6} "
                f"{'spearman':>8} {'max|d|':>8} {'top10=':>6} {'pps orig':>8} {'pps exp':>8} "
                f"{'speedup':>7} {'p50ms':>7} {'p95ms':>7} {'orig p50':>8} {'load':>5}")
        say(head)
        proofs = []
        for fmt in formats:
            t0 = time.perf_counter()
            p = export_and_prove(ws, target, fmt, batch_size=args.batch_size,
                                 repeats=args.repeats, original=original,
                                 threads=args.threads or None)
            proofs.append(p)
            lat = p.latency_ms
            say(f"{fmt:14} {p.ndcg['original']:9.4f} {p.ndcg['export']:9.4f} "
                f"{p.ndcg['delta']:+8.4f} {p.p_value:6.3f} {p.spearman:8.4f} "
                f"{p.max_abs_diff:8.1e} {p.top10_agreement:6.2f} "
                f"{p.pairs_per_s['original']:8.1f} {p.pairs_per_s['export']:8.1f} "
                f"{p.speedup:6.2f}x {lat['p50']:7.1f} {lat['p95']:7.1f} "
                f"{lat['original_p50']:8.1f} {os.getloadavg()[0]:5.2f}"
                f"   ({time.perf_counter() - t0:.0f} s)")
        pick = recommend(proofs, 0.005)
        ov = next((p for p in proofs if p.format == "openvino-int8"), None)
        verdict = None
        if ov is not None:
            ok = ov.speedup >= 2.5 and abs(ov.ndcg["delta"]) <= 0.01
            verdict = (f"target OpenVINO int8 >= 2.5x with |delta NDCG@10| <= 0.01: "
                       f"{'MET' if ok else 'NOT MET'} ({ov.speedup:.2f}x, "
                       f"delta {ov.ndcg['delta']:+.4f})")
            say(verdict)
        say(f"recommended (fastest within 0.005 NDCG@10): {pick['format'] if pick else 'none'}"
            f"; load average at end {os.getloadavg()[0]:.2f}")
        summary = {"model": what, "n_queries": int(val["query_id"].nunique()),
                   "n_pairs": len(val), "recommended": pick["format"] if pick else None,
                   "results": {p.format: p.cli_json() | {"p_value": p.p_value,
                               "max_abs_diff": p.max_abs_diff} for p in proofs}}
        say(json.dumps(summary))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
