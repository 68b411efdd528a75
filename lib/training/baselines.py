"""The bar to beat: BM25 and the zero-shot bi-encoder on exactly a run's validation pairs.

A fine-tuned reranker is only worth serving if it beats what the user already has. The worker
computes both baselines once per run, on the very pairs the trainer validates on, with the
validation evaluator's metric code (`lib.metrics.evaluate_rankings`), and caches them in
runs/<run_id>/baselines.json (reused on resume while the validation pairs are unchanged). The
worker never opens the database, so the scores are not in the score cache: the file is the cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from lib.metrics import DEFAULT_METRICS, evaluate_rankings
from lib.training import runfiles

BASELINES_FILE = "baselines.json"
BASELINE_RANKERS = ("bm25", "biencoder")
# The bi-encoder of the bar: the bundled one unless this names another model dir (tests use a
# tiny one: the bundled model takes minutes on a busy CPU) or 'none' (BM25 only).
BIENCODER_ENV = "RERANKER_STUDIO_BAR_BIENCODER"
LABELS = {"bm25": "BM25", "biencoder": "zero-shot bi-encoder"}


def pairs_fingerprint(pairs: pd.DataFrame) -> str:
    """sha1 of the (query_id, doc_id, label, text) rows in order: which pairs were measured."""
    h = hashlib.sha1()
    for row in pairs[["query_id", "doc_id", "label", "query", "document"]].itertuples(index=False):
        h.update("\x1f".join(map(str, row)).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def bar_rankers() -> list:
    """The rankers of the bar: BM25 and the zero-shot bi-encoder (see BIENCODER_ENV)."""
    import os

    from lib.evaluation.rankers import BIENCODER, Ranker, parse_ranker

    out = [parse_ranker("bm25")]
    choice = os.environ.get(BIENCODER_ENV, "").strip()
    if choice.lower() == "none":
        return out
    if choice:
        return [*out, Ranker(BIENCODER, choice, "biencoder", path=choice, model_kind="local")]
    return [*out, parse_ranker("biencoder")]


def _cache_key(pairs: pd.DataFrame) -> str:
    """The pairs and the bar's models: a cached bar is reused only when both are unchanged."""
    models = ",".join(f"{r.name}={r.path}" for r in bar_rankers())
    return pairs_fingerprint(pairs) + "|" + hashlib.sha1(models.encode()).hexdigest()[:12]


def compute_baselines(pairs: pd.DataFrame, device: str | None = None) -> dict[str, Any]:
    """{"bm25": {"ndcg@10", "mrr@10"}, "biencoder": {...}, n_queries, n_pairs, fingerprint}."""
    import torch

    from lib.evaluation.scoring import release_models, score_ranker

    pairs = pairs.reset_index(drop=True)
    out: dict[str, Any] = {"n_pairs": len(pairs), "fingerprint": _cache_key(pairs),
                           "seconds": {}}
    # the run's seeded random streams (head init, shuffling) must not depend on the bar
    with torch.random.fork_rng(devices=[]):
        try:
            for ranker in bar_rankers():
                t0 = time.perf_counter()
                scores, _ = score_ranker(None, ranker, pairs, device=device)
                res = evaluate_rankings(pairs, scores, DEFAULT_METRICS, name=ranker.name)
                out[ranker.name] = {m: round(float(v), 6) for m, v in res.means.items()}
                out[ranker.name]["model"] = ranker.path
                out["n_queries"] = res.n_queries
                out["seconds"][ranker.name] = round(time.perf_counter() - t0, 2)
        finally:
            release_models("bi")  # not kept in (GPU) memory beside the model being trained
    return out


def baselines_for_run(run_dir: Path, pairs: pd.DataFrame,
                      device: str | None = None) -> dict[str, Any]:
    """The run's cached baselines when they were measured on these very pairs, else computed
    and cached (baselines.json)."""
    path = Path(run_dir) / BASELINES_FILE
    cached = runfiles.read_json(path)
    if cached and cached.get("fingerprint") == _cache_key(pairs.reset_index(drop=True)):
        return cached
    fresh = compute_baselines(pairs, device=device)
    runfiles.write_json_atomic(path, fresh)
    return fresh


def read_baselines(run_dir: Path) -> dict[str, Any] | None:
    return runfiles.read_json(Path(run_dir) / BASELINES_FILE)


def metrics_only(baselines: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """{"bm25": {"ndcg@10": x, "mrr@10": y}, "biencoder": {...}}: the public shape."""
    return {k: {m: baselines[k].get(m) for m in DEFAULT_METRICS} for k in BASELINE_RANKERS
            if baselines and isinstance(baselines.get(k), dict)}


def beats(best_ndcg: float | None, baselines: dict[str, Any] | None) -> dict[str, bool]:
    """Per baseline: did the run's best validation NDCG@10 beat it (strictly)?"""
    if best_ndcg is None:
        return {}
    return {k: float(best_ndcg) > float(v["ndcg@10"])
            for k, v in metrics_only(baselines).items() if v.get("ndcg@10") is not None}


def beat_sentence(best_ndcg: float | None, baselines: dict[str, Any] | None) -> str | None:
    """One plain sentence: whether the run beat each baseline, with the numbers."""
    b = metrics_only(baselines)
    if best_ndcg is None or not b:
        return None
    parts = []
    for k, v in b.items():
        won = float(best_ndcg) > float(v["ndcg@10"])
        parts.append(f"{'beat' if won else 'did NOT beat'} {LABELS.get(k, k)} "
                     f"({v['ndcg@10']:.4f})")
    return f"Best validation NDCG@10 {best_ndcg:.4f}: " + ", ".join(parts) + "."


def card_section(best_ndcg: float | None, baselines: dict[str, Any] | None) -> str:
    """Markdown rows for the model card: the bar to beat on the same validation pairs."""
    b = metrics_only(baselines)
    if not b:
        return ""
    rows = "\n".join(f"| {LABELS.get(k, k)}, same validation pairs | {v['ndcg@10']:.4f} | "
                     f"{v['mrr@10']:.4f} |" for k, v in b.items())
    sentence = beat_sentence(best_ndcg, baselines) or ""
    record = json.dumps({"baselines": b, "beats": beats(best_ndcg, baselines)}, indent=2)
    return f"""

### The bar to beat

| baseline | NDCG@10 | MRR@10 |
|---|---|---|
{rows}

{sentence}

```json
{record}
```
"""


# ---- the worker's two calls -----------------------------------------------------------------


def at_run_start(run_dir: Path, pairs: pd.DataFrame, device: str | None, log) -> dict | None:
    """Measure (or reuse) the bar to beat and put it in status.json. A failure here is logged and
    reported in the status, never fatal: the run itself does not need it."""
    try:
        t0 = time.perf_counter()
        bar = baselines_for_run(run_dir, pairs, device=device)
    except Exception as exc:  # noqa: BLE001 - the bar is shown when it exists; training goes on
        log(f"bar to beat not measured: {type(exc).__name__}: {exc}")
        runfiles.update_status(run_dir, baselines_error=f"{type(exc).__name__}: {exc}"[:500])
        return None
    shown = metrics_only(bar)
    log("bar to beat on the validation pairs (" + f"{time.perf_counter() - t0:.1f} s): "
        + ", ".join(f"{LABELS[k]} NDCG@10 {v['ndcg@10']:.4f}" for k, v in shown.items()))
    runfiles.update_status(run_dir, baselines=shown)
    return bar


def at_run_end(bar: dict | None, best: dict, start: dict) -> dict[str, Any]:
    """Fields for the final status: baselines, beats (best validation NDCG@10 vs each), and the
    sentence that says so. The best is the kept checkpoint's, else the start's."""
    best_ndcg = best.get("ndcg@10") if best.get("ndcg@10") is not None else start.get("ndcg@10")
    if not bar:
        return {}
    return {"baselines": metrics_only(bar), "beats": beats(best_ndcg, bar),
            "beat_summary": beat_sentence(best_ndcg, bar)}


def append_to_card(model_dir: Path, fields: dict[str, Any], best: dict) -> None:
    """Add the bar-to-beat table to the model card (README.md) the worker just wrote."""
    if not fields.get("baselines"):
        return
    card = Path(model_dir) / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    best_ndcg = best.get("ndcg@10")
    card.write_text(text + card_section(best_ndcg, {**fields["baselines"]}), encoding="utf-8")


# A run's best checkpoint is chosen on its validation queries, and its margin over a baseline is
# not tested during training: on the demo a +0.023 "win" had p = 0.235 (README, Quality).
RUN_WIN_CAVEAT = ("The best checkpoint was chosen on these same queries and the margin is not "
                  "tested for significance here: confirm it with the paired test on the Evaluate "
                  "page, on a test split if you have one.")


def run_verdict(ws, run_dir: Path, status: dict[str, Any]):
    """The honest verdict for a finished run (lib.evaluation.verdicts.Verdict), or None while
    there is nothing to compare. Check findings (leakage, truncation) come from the Checks
    cache of the run's split, as at launch."""
    from lib.evaluation.verdicts import build_verdict
    from lib.models import resolve_model
    from lib.training.config import build_config

    bar = metrics_only(status.get("baselines"))
    best = (status.get("best") or {}).get("ndcg@10")
    if not bar or best is None:
        return None
    run_dir = Path(run_dir)
    cfg = runfiles.read_json(run_dir / runfiles.CONFIG) or {}
    meta = runfiles.read_json(run_dir / runfiles.DATA / "meta.json") or {}
    try:
        untrained = resolve_model(cfg.get("base_model", "default")).kind == "default"
    except ValueError:
        untrained = False
    findings: list[str] = []
    if meta.get("dataset_id") and meta.get("split_id"):
        try:
            from lib.training.preflight import check_warnings

            findings = check_warnings(ws, meta["dataset_id"], meta["split_id"],
                                      build_config(cfg, source="the run's config"))
        except Exception:  # noqa: BLE001 - findings are a bonus; the verdict stands without
            findings = []
    n_q = (status.get("best") or {}).get("n_queries") or meta.get("validation_queries") or "?"
    return build_verdict(
        f"checkpoint:{run_dir.name}", best,
        {k: v.get("ndcg@10") for k, v in bar.items()},
        where=f"validation split ({n_q} queries{_corpus_note(meta)})",
        untrained_head=bool(status.get("new_head", untrained)),
        start_value=(status.get("start") or {}).get("ndcg@10"),
        train_pairs=meta.get("train_pairs"), train_queries=meta.get("train_queries"),
        epochs=cfg.get("epochs"), check_findings=findings,
        win_caveat=RUN_WIN_CAVEAT,
    )


def _corpus_note(meta: dict[str, Any]) -> str:
    """Which candidates positives-only validation queries were ranked among, when it was not
    only their labelled pairs (lib.training.validation_candidates)."""
    vc = meta.get("validation_corpus")
    if not vc:
        return ""
    return (f"; {vc['queries']} of them positives-only, ranked among their BM25 top "
            f"{vc['top_k']} of corpus {vc['corpus']!r} too, unjudged = not relevant")
