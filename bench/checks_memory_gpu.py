"""Calibrate lib/checks/memory.py against real training steps on a CUDA GPU.

    python bench/checks_memory_gpu.py

For BERT-shaped cross-encoders (random weights, the real shapes) it runs AdamW training steps
at several batch sizes, max lengths and precisions, and compares torch's peak reserved memory
(+ the CUDA context) with `estimate_training_memory`. Needs only torch and transformers (it loads
memory.py by path, so DuckDB and the rest of lib are not needed). Last line: a JSON object with
the rows and the worst ratio estimate / measured.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("memory", ROOT / "lib" / "checks" / "memory.py")
memory = importlib.util.module_from_spec(spec)
sys.modules["memory"] = memory
spec.loader.exec_module(memory)

SHAPES = {
    "MiniLM-L6-H384": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                           intermediate_size=1536),
    "BERT-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
    "MiniLM-L12-H384": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=1536),
    "ELECTRA-small": dict(hidden_size=256, num_hidden_layers=12, num_attention_heads=4,
                          intermediate_size=1024),
}
RUNS = [
    ("MiniLM-L6-H384", 16, 256, "fp32"), ("MiniLM-L6-H384", 16, 512, "fp32"),
    ("MiniLM-L6-H384", 64, 512, "fp32"), ("MiniLM-L6-H384", 64, 512, "bf16"),
    ("BERT-base", 16, 256, "fp32"), ("BERT-base", 32, 512, "fp32"),
    ("BERT-base", 32, 512, "bf16"), ("BERT-base", 64, 512, "bf16"),
    ("MiniLM-L12-H384", 32, 384, "fp32"), ("ELECTRA-small", 128, 256, "bf16"),
    ("BERT-base", 8, 128, "fp32"), ("MiniLM-L6-H384", 32, 256, "fp16"),
    ("MiniLM-L6-H384", 16, 512, "fp32", "eager"), ("BERT-base", 16, 512, "bf16", "eager"),
]


def measure(shape: str, batch: int, length: int, precision: str, attention: str = "sdpa") -> dict:
    torch.cuda.empty_cache()
    cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, num_labels=1,
                     attn_implementation=attention, **SHAPES[shape])
    model = BertForSequenceClassification(cfg).cuda().train()
    n_params = sum(p.numel() for p in model.parameters())
    attn = getattr(model.config, "_attn_implementation", None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(1000, 30000, (batch, length), device="cuda")
    labels = torch.rand(batch, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        with torch.autocast("cuda", dtype=dtype, enabled=precision != "fp32"):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak_alloc = torch.cuda.max_memory_allocated()
    peak_reserved = torch.cuda.max_memory_reserved()
    est = memory.estimate_training_memory(n_params, cfg.hidden_size, cfg.num_hidden_layers,
                                          batch, length, precision, cfg.num_attention_heads,
                                          attention)
    del model, opt, ids, labels
    measured = peak_reserved + memory.CUDA_OVERHEAD_BYTES  # context is outside torch's pools
    return {"model": shape, "batch": batch, "max_length": length, "precision": precision,
            "n_params": n_params, "attn": attn,
            "peak_allocated_gib": round(peak_alloc / 2**30, 2),
            "peak_reserved_gib": round(peak_reserved / 2**30, 2),
            "estimate_gib": round(est.total_bytes / 2**30, 2),
            "ratio": round(est.total_bytes / measured, 2)}


def main() -> None:
    print(torch.cuda.get_device_name(0), torch.__version__, flush=True)
    rows = []
    for run in RUNS:
        row = measure(*run)
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratios = [r["ratio"] for r in rows]
    print(json.dumps({"min_ratio": min(ratios), "max_ratio": max(ratios), "rows": rows}))


if __name__ == "__main__":
    main()
