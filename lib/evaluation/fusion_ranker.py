"""Scoring a `fuse:A+B` ranker: both parts scored (cached as usual), then fused with a weight
that was never chosen on the queries it is reported on, and saved beside a checkpoint to serve.

Where the weight comes from, in order: fixed by the user (`@w`); chosen on the dataset's
validation split when another split (test) is evaluated; else K-fold query cross-validation on
the evaluated split itself. A weight chosen for a checkpoint is written to
runs/<run_id>/model/fusion.json (per first stage B) so the Playground, and any serving code,
fuse with it (`load_saved`); with none saved, they use 0.5 and say so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lib.evaluation import fusion
from lib.evaluation.rankers import FUSION, Ranker
from lib.evaluation.scoring import ScoreStats, score_ranker
from lib.workspace import Workspace

FUSION_FILE = "fusion.json"
UNFITTED_WEIGHT = 0.5


def _model_dir(ranker: Ranker) -> Path | None:
    a = ranker.parts[0]
    return Path(a.path) if a.run_id and a.path else None


def first_stage_key(ranker: Ranker) -> str:
    """How B is named in fusion.json: its spec, lower-cased ('bm25', 'biencoder', ...)."""
    return ranker.parts[1].spec.strip().lower()


def load_saved(ranker: Ranker) -> dict | None:
    """The fit saved with A's model for this B, if any."""
    model_dir = _model_dir(ranker)
    if model_dir is None:
        return None
    try:
        data = json.loads((model_dir / FUSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fit = (data.get("first_stages") or {}).get(first_stage_key(ranker))
    return fit if isinstance(fit, dict) and isinstance(fit.get("weight"), int | float) else None


def save_fit(ranker: Ranker, fit: fusion.FusionFit, context: dict) -> Path | None:
    """Write the chosen weight and normalisation beside A's model (a checkpoint) for serving."""
    model_dir = _model_dir(ranker)
    if model_dir is None or not model_dir.is_dir():
        return None
    path = model_dir / FUSION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    stages = data.get("first_stages") if isinstance(data.get("first_stages"), dict) else {}
    stages[first_stage_key(ranker)] = {
        **fit.to_json(), **context, "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "how": "score = weight * norm(A) + (1 - weight) * norm(B), norm per query over its "
               "candidates (lib.evaluation.fusion.fuse)",
    }
    data = {"a": ranker.parts[0].spec, "first_stages": stages}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def _score_parts(ws, ranker: Ranker, pairs: pd.DataFrame, **kw) -> tuple[np.ndarray, np.ndarray]:
    a, b = ranker.parts
    sa, _ = score_ranker(ws, a, pairs, **kw)
    sb, _ = score_ranker(ws, b, pairs, **kw)
    return sa, sb


def score_fusion_plain(ws: Workspace | None, ranker: Ranker, pairs: pd.DataFrame,
                       **kw) -> tuple[np.ndarray, ScoreStats]:
    """No labelled split at hand (Playground, serving): the fixed weight, else the saved one,
    else 0.5, and the note says which."""
    t0 = time.perf_counter()
    sa, sb = _score_parts(ws, ranker, pairs, **kw)
    saved = load_saved(ranker) if ranker.fusion_weight is None else None
    if ranker.fusion_weight is not None:
        w, norm, note = ranker.fusion_weight, fusion.DEFAULT_NORMALISATION, "weight fixed"
    elif saved:
        w, norm = float(saved["weight"]), saved.get("normalisation", "zscore")
        note = f"saved weight, chosen on {saved.get('chosen_on')}"
    else:
        w, norm = UNFITTED_WEIGHT, fusion.DEFAULT_NORMALISATION
        note = ("no weight saved for this pair (evaluate it on a labelled dataset first): "
                f"{UNFITTED_WEIGHT}")
    scores = fusion.fuse(sa, sb, pairs["query_id"], w, norm)
    stats = ScoreStats(ranker.name, len(pairs), n_unique=len(pairs), n_scored=len(pairs),
                       seconds=time.perf_counter() - t0,
                       note=f"weight {w:g} on {ranker.parts[0].name} ({norm}): {note}")
    return scores, stats


def same_candidates(ws: Workspace, other, es, rel_threshold: int = 1):
    """`other` (an EvalSet) with the candidates `es` was evaluated on: in retrieve-then-rerank,
    the same corpus, first stage and k. A weight chosen on labelled pairs alone would be chosen
    for another task (and on a positives-only dataset, on candidates that are all relevant)."""
    if not es.first_stage:
        return other
    from lib.evaluation.candidates import corpus_candidates

    fs = es.first_stage
    return corpus_candidates(ws, other, fs["corpus_id"], fs["first_stage"], int(fs["top_k"]),
                             rel_threshold)


def score_fusion_eval(ws: Workspace, ranker: Ranker, es, *, k: int = fusion.DEFAULT_FOLDS,
                      seed: int = 13, rel_threshold: int = 1,
                      **kw) -> tuple[np.ndarray, ScoreStats, fusion.FusionFit]:
    """Fused scores of the evaluation set `es` (an EvalSet) with an honestly chosen weight."""
    from lib.evaluation.evalset import load_eval_set

    assert ranker.kind == FUSION
    t0 = time.perf_counter()
    a, b = ranker.parts
    pairs = es.pairs
    sa, sb = _score_parts(ws, ranker, pairs, **kw)
    fs = es.first_stage  # retrieve-then-rerank: the weight is fitted for this first stage's top-k
    where = f", top-{fs['top_k']} of corpus {fs['corpus']} by {fs['first_stage']}" if fs else ""
    context = {"dataset_id": es.dataset.dataset_id, "split_id": es.split_id,
               "candidates": ({k: fs[k] for k in ("corpus", "first_stage", "top_k")} if fs
                              else "labelled pairs")}
    if ranker.fusion_weight is not None:
        w = ranker.fusion_weight
        fused = fusion.fuse(sa, sb, pairs["query_id"], w)
        from lib.metrics import evaluate_rankings

        res = evaluate_rankings(pairs, fused, (fusion.DEFAULT_METRIC,), rel_threshold,
                                extra_qrels=es.missed)
        fit = fusion.FusionFit(
            weight=w, normalisation=fusion.DEFAULT_NORMALISATION, metric=fusion.DEFAULT_METRIC,
            chosen_on="fixed by the user (@weight)",
            reported_on=f"{es.split_label} split{where} ({res.n_queries} queries)",
            estimate=res.means[fusion.DEFAULT_METRIC] if res.n_queries else None)
    else:
        val = None
        if es.split in ("test", "train"):
            try:
                val = load_eval_set(ws, es.dataset.dataset_id, "validation")
            except ValueError:
                val = None
        if val is not None:
            val = same_candidates(ws, val, es, rel_threshold)
            va, vb = _score_parts(ws, ranker, val.pairs, **kw)
            fit, fused = fusion.fit_and_report(
                val.pairs, va, vb, pairs, sa, sb, rel_threshold=rel_threshold,
                chosen_label=f"validation split{where}",
                reported_label=f"{es.split_label} split{where}",
                choose_missed=val.missed, report_missed=es.missed)
            context["chosen_split"] = "validation"
        else:
            fit, fused = fusion.cross_validate(pairs, sa, sb, k=k, seed=seed,
                                               rel_threshold=rel_threshold,
                                               label=f"the {es.split_label} split{where}",
                                               extra_qrels=es.missed)
            context["chosen_split"] = es.split
        fit.a, fit.b = a.name, b.name
        saved = save_fit(ranker, fit, context)
        if saved is not None:
            context["saved_to"] = str(saved)
    fit.a, fit.b = a.name, b.name
    stats = ScoreStats(ranker.name, len(pairs), n_unique=len(pairs), n_scored=len(pairs),
                       seconds=time.perf_counter() - t0, note=fit.sentence)
    return fused, stats, fit
