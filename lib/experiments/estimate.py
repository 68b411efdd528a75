"""How long will these runs take here? Measured throughput on this machine, scaled by length.

The reference is the fastest honest source available: a finished run of the same base model on
the same kind of device (its training-only samples/s), else a few timed training steps of the
model itself (cached per model, device and length). Time per pair is taken as proportional to
the max length, which over-estimates a little when documents are shorter than the cut.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from lib import db
from lib.models import model_fingerprint, resolve_model
from lib.training.config import TrainConfig
from lib.workspace import Workspace

PROCESS_OVERHEAD_S = 20.0  # worker start, imports, model load, first validation warm-up
EVAL_SPEEDUP = 3.0  # scoring a pair costs about a third of training on it (no backward pass)


@dataclass(frozen=True)
class Throughput:
    pairs_per_s: float  # at max_length
    max_length: int
    source: str  # what it was measured on, in words

    def at(self, max_length: int) -> float:
        return self.pairs_per_s * self.max_length / max_length


def run_device(cfg: TrainConfig) -> str:
    if cfg.device == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def reference_from_runs(ws: Workspace, cfg: TrainConfig, device: str) -> Throughput | None:
    """The finished run closest in max length with the same base model and device."""
    with db.connect(ws) as con:
        rows = con.execute(
            "SELECT run_id, config, train_samples_per_second FROM runs "
            "WHERE train_samples_per_second > 0 AND device = ? AND status IN "
            "('finished', 'stopped')", [device],
        ).fetchall()
    best = None
    for run_id, config, pps in rows:
        c = json.loads(config)
        if c.get("base_model") != cfg.base_model:
            continue
        gap = abs(math.log(int(c["max_length"]) / cfg.max_length))
        if best is None or gap < best[0]:
            best = (gap, Throughput(float(pps), int(c["max_length"]),
                                    f"run {run_id} ({pps:.1f} pairs/s at max length "
                                    f"{c['max_length']} on {device})"))
    return best[1] if best else None


def micro_benchmark(cfg: TrainConfig, device: str, steps: int = 3) -> float:
    """Pairs/s of a few real training steps of the model at full length (after one warm-up)."""
    import torch

    from lib.models import load_cross_encoder

    model = load_cross_encoder(cfg.base_model, max_length=cfg.max_length, device=device,
                               trust_remote_code=cfg.trust_remote_code)
    tok = model.tokenizer
    batch = min(cfg.batch_size, 16)
    words = " ".join(["aerodynamic boundary layer"] * cfg.max_length)
    features = tok([words] * batch, [words] * batch, truncation=True, padding="max_length",
                   max_length=cfg.max_length, return_tensors="pt").to(device)
    module = model.model
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-5)
    labels = torch.ones(batch, device=device)
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        logits = module(**features).logits.view(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def throughput(ws: Workspace, cfg: TrainConfig) -> Throughput:
    device = run_device(cfg)
    ref = reference_from_runs(ws, cfg, device)
    if ref is not None:
        return ref
    key = f"throughput:{model_fingerprint(resolve_model(cfg.base_model))}:{device}:{cfg.max_length}"
    with db.connect(ws) as con:
        row = con.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchall()
    if row:
        pps = float(row[0][0])
    else:
        pps = micro_benchmark(cfg, device)
        with db.connect(ws) as con:
            con.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", [key, str(pps)])
    return Throughput(pps, cfg.max_length,
                      f"a timed training step of the model here ({pps:.1f} pairs/s at max "
                      f"length {cfg.max_length} on {device})")


def estimate_run_seconds(
    cfg: TrainConfig, n_train_pairs: int, n_val_pairs: int, ref: Throughput
) -> float:
    pairs = min(n_train_pairs, cfg.max_train_pairs or n_train_pairs)
    pps = ref.at(cfg.max_length)
    steps = math.ceil(pairs / (cfg.batch_size * cfg.gradient_accumulation)) * cfg.epochs
    n_evals = 2 + steps // cfg.eval_steps  # the untrained start, every eval_steps, the end
    return PROCESS_OVERHEAD_S + pairs * cfg.epochs / pps + n_evals * n_val_pairs / (
        EVAL_SPEEDUP * pps)
