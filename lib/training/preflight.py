"""Findings of the Checks step that bear on a training launch, as warnings in plain words.

Leakage and truncation come from the Checks cache for the split being trained (the Checks page or
`reranker-studio check` computes them; we never recompute a possibly slow check on every page
render), and say so when the checks have not been run. The memory estimate is cheap and is
always computed when a GPU will be used.
"""

from __future__ import annotations

import json

from lib import db
from lib.checks.memory import memory_check
from lib.models import ModelNotFoundError, model_fingerprint, resolve_model
from lib.training.config import TrainConfig
from lib.workspace import Workspace


def _cached(ws: Workspace, dataset_id: str, split_id: str, section: str) -> list[tuple[str, dict]]:
    with db.connect(ws) as con:
        rows = con.execute(
            "SELECT params_key, result FROM check_cache WHERE dataset_id = ? AND split_id = ? "
            "AND section = ? ORDER BY created_at DESC", [dataset_id, split_id, section],
        ).fetchall()
    return [(k, json.loads(r)) for k, r in rows]


def check_warnings(
    ws: Workspace, dataset_id: str, split_id: str | None, cfg: TrainConfig,
    gpu_available: bool = False,
) -> list[str]:
    out: list[str] = []
    if split_id:
        leak = [r for k, r in _cached(ws, dataset_id, split_id, "leakage") if "eval=|" in k]
        if not leak:
            out.append("the Checks have not been run on this split: leakage between train and "
                       "validation would inflate validation NDCG@10 (Checks page)")
        elif leak[0].get("findings"):
            n = len(leak[0]["findings"])
            out.append(f"Checks found {n} leakage finding(s) between train and held-out queries "
                       "of this split: validation numbers will be optimistic; re-split on the "
                       "Checks page first")
        try:
            fp = model_fingerprint(resolve_model(cfg.base_model))
        except ModelNotFoundError:
            fp = None
        for key, res in _cached(ws, dataset_id, split_id, "truncation"):
            if fp and f"model={fp}" in key and res.get("max_length") == cfg.max_length:
                overall = res.get("overall", {})
                share = overall.get("relevant_truncated_share") or 0.0
                if share > 0.05:
                    out.append(
                        f"at max length {cfg.max_length}, {share:.0%} of relevant pairs are "
                        f"truncated (Checks); {res.get('remedy', '')}".strip()
                    )
                break
    if gpu_available and cfg.device != "cpu":
        try:
            ref = resolve_model(cfg.base_model)
        except ModelNotFoundError:
            return out
        precision = "bf16" if cfg.precision == "auto" else cfg.precision
        mem = memory_check(ref.path, cfg.batch_size, cfg.max_length, precision)
        if mem.get("fits") is False:
            out.append(mem["message"])
    return out
