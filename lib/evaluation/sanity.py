"""Sanity warnings on an evaluation: things that make its numbers misleading if left unsaid.

- constant or near-constant scores (a broken or untrained model ranks by tie-breaking only);
- a fine-tuned model that scores below its base;
- evaluation queries that also occur in the training data (the Checks' leakage code: exact,
  normalised and near-duplicate query text);
- the untrained head of the bundled default model, validation queries that picked the checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lib.evaluation.compare import Comparison, metric_label
from lib.evaluation.rankers import CROSS_ENCODER, UNTRAINED_HEAD_NOTE, Ranker
from lib.workspace import Workspace

NEAR_CONSTANT_REL_STD = 1e-4
TIED_QUERY_SHARE = 0.5
LEAK_EXAMPLES = 5


@dataclass
class SanityWarning:
    kind: str  # constant_scores | worse_than_base | leakage | untrained_head | optimistic_split ...
    severity: str  # 'warning' | 'info'
    message: str
    ranker: str | None = None
    details: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)


def score_warnings(name: str, pairs: pd.DataFrame, scores: np.ndarray) -> list[SanityWarning]:
    """Constant scores over all pairs, or within most queries (rank order = tie-break order)."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return []
    std = float(np.std(s))
    spread = float(np.ptp(s))
    scale = max(1e-12, float(np.mean(np.abs(s))))
    if spread == 0.0:
        return [SanityWarning(
            "constant_scores", "warning",
            f"{name} gives every pair the same score ({s[0]:.6g}): its ranking is only the "
            "tie-break order (doc id), so its metrics say nothing about the model.", name)]
    q = pairs["query_id"].astype(str).to_numpy()
    per_q = pd.Series(s).groupby(q).agg(lambda x: float(np.ptp(x)))
    tied_share = float((per_q == 0).mean())
    if std / scale < NEAR_CONSTANT_REL_STD:
        return [SanityWarning(
            "near_constant_scores", "warning",
            f"{name}'s scores are nearly constant (std {std:.3g} around {np.mean(s):.6g}): "
            "rankings hinge on tiny differences; check that the model loaded and is trained.",
            name, {"std": std, "mean": float(np.mean(s))})]
    if tied_share > TIED_QUERY_SHARE:
        return [SanityWarning(
            "tied_scores", "warning",
            f"{name} gives all candidates the same score in {tied_share:.0%} of the queries: "
            "those rankings are the tie-break order (doc id).", name, {"tied_share": tied_share})]
    return []


def worse_than_base_warnings(
    model: Ranker, baselines: list[Ranker], comparisons: dict[str, dict[str, Comparison]],
    primary: str,
) -> list[SanityWarning]:
    """A fine-tuned checkpoint below its own base model (or any cross-encoder baseline)."""
    if model.kind != CROSS_ENCODER or model.untrained_head:
        return []
    base_spec = ((model.training or {}).get("config") or {}).get("base_model")
    out = []
    for b in baselines:
        c = comparisons.get(b.name, {}).get(primary)
        if c is None or c.delta >= 0 or b.kind != CROSS_ENCODER:
            continue
        is_base = base_spec is not None and _same_model(base_spec, b)
        if not (is_base or model.run_id):
            continue
        what = "its base model" if is_base else "a cross-encoder baseline"
        sig = "significantly" if c.significant else "(not significantly)"
        out.append(SanityWarning(
            "worse_than_base", "warning",
            f"The fine-tuned {model.name} scores below {what} {b.name} on "
            f"{metric_label(primary)} {sig}: {c.model_mean:.3f} vs {c.baseline_mean:.3f}. "
            "Check the learning rate, the number of epochs (overfitting), the labels, and the "
            "leakage checks.", model.name, {"baseline": b.name, "delta": c.delta}))
    return out


def _same_model(spec: str, ranker: Ranker) -> bool:
    from lib.models import resolve_model

    try:
        ref = resolve_model(spec)
    except ValueError:
        return spec == ranker.spec
    return ref.path == ranker.path or (ref.kind == "default" and ranker.model_kind == "default")


def untrained_head_warnings(rankers: list[Ranker]) -> list[SanityWarning]:
    return [SanityWarning("untrained_head", "warning", f"{r.name}: {UNTRAINED_HEAD_NOTE}", r.name)
            for r in rankers if r.untrained_head]


def optimistic_split_warning(split: str, rankers: list[Ranker]) -> list[SanityWarning]:
    if split == "validation" and any(r.run_id for r in rankers):
        return [SanityWarning(
            "optimistic_split", "info",
            "Evaluated on the validation split, which training used to pick the best checkpoint: "
            "the fine-tuned figure is slightly optimistic. A test split (Data page, test fraction) "
            "gives the unbiased number.")]
    if split in ("train", "all") and any(r.run_id for r in rankers):
        return [SanityWarning(
            "train_split", "warning",
            f"Evaluated on the {split} pairs: a fine-tuned model saw (some of) these during "
            "training, so its scores are inflated.")]
    return []


# ---- leakage -------------------------------------------------------------------------------------


def _train_queries_of_run(ranker: Ranker) -> list[str]:
    train_file = (ranker.training or {}).get("train_file")
    if not train_file or not Path(train_file).is_file():
        return []
    queries: dict[str, None] = {}
    with open(train_file, encoding="utf-8") as fh:
        for line in fh:
            try:
                q = json.loads(line).get("query")
            except (ValueError, AttributeError):
                continue
            if isinstance(q, str):
                queries[q] = None
    return list(queries)


def leakage_against_texts(
    eval_queries: list[str], train_queries: list[str], threshold: float = 0.8
) -> dict[str, dict]:
    """Evaluation queries whose text matches a training query: exact, normalised or near-dup.

    Returns {eval query text: {"kind", "train_query", "similarity"}}. Uses the Checks code
    (normalize_text, MinHash near_duplicate_pairs)."""
    from lib.checks.neardup import near_duplicate_pairs, normalize_text

    train_set = set(train_queries)
    train_norm: dict[str, str] = {}
    for t in train_queries:
        train_norm.setdefault(normalize_text(t), t)
    found: dict[str, dict] = {}
    for q in dict.fromkeys(eval_queries):
        if q in train_set:
            found[q] = {"kind": "exact", "train_query": q, "similarity": 1.0}
        elif (n := normalize_text(q)) in train_norm and n:
            found[q] = {"kind": "normalized", "train_query": train_norm[n], "similarity": 1.0}
    rest = [q for q in dict.fromkeys(eval_queries) if q not in found]
    norms_eval = {normalize_text(q): q for q in rest}
    texts = sorted((set(norms_eval) | set(train_norm)) - {""})
    if len(texts) >= 2 and norms_eval:
        nd = near_duplicate_pairs(texts, threshold)
        for (i, j), sim in zip(nd.pairs, nd.similarity, strict=True):
            for a, b in ((texts[i], texts[j]), (texts[j], texts[i])):
                if a in norms_eval and b in train_norm and norms_eval[a] not in found:
                    found[norms_eval[a]] = {"kind": "near_duplicate", "train_query": train_norm[b],
                                            "similarity": round(float(sim), 4)}
    return found


def leakage_warnings(
    ws: Workspace, eval_pairs: pd.DataFrame, dataset_id: str, split: str, split_id: str | None,
    rankers: list[Ranker], threshold: float = 0.8,
) -> list[SanityWarning]:
    """Evaluation queries found in training data: each checkpoint's own training file, and the
    evaluated dataset's train split (when a held-out split of it is evaluated)."""
    out: list[SanityWarning] = []
    eval_queries = list(dict.fromkeys(eval_pairs["query"].astype(str)))
    n = len(eval_queries)
    sources: list[tuple[str, list[str], str | None]] = []
    for r in rankers:
        if r.run_id:
            train_q = _train_queries_of_run(r)
            if train_q:
                sources.append((f"the training data of {r.name}", train_q, r.name))
    if split in ("validation", "test") and split_id is not None:
        from lib import db

        with db.connect(ws) as con:
            train_q = [row[0] for row in con.execute(
                "SELECT DISTINCT p.query FROM pairs p JOIN split_assignments a "
                "ON a.query_id = p.query_id AND a.split_id = ? WHERE p.dataset_id = ? "
                "AND a.split = 'train'", [split_id, dataset_id]).fetchall()]
        if train_q:
            sources.append(("this dataset's train split", train_q, None))
    for what, train_q, ranker in sources:
        found = leakage_against_texts(eval_queries, train_q, threshold)
        if not found:
            continue
        kinds: dict[str, int] = {}
        for f in found.values():
            kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
        kind_text = ", ".join(f"{v} {k.replace('_', '-')}" for k, v in sorted(kinds.items()))
        examples = [{"eval_query": q, **f} for q, f in list(found.items())[:LEAK_EXAMPLES]]
        out.append(SanityWarning(
            "leakage", "warning",
            f"{len(found)} of {n} evaluation queries also occur in {what} ({kind_text}; "
            f"near-duplicate = character 3-shingle Jaccard >= {threshold}): scores on them "
            "overstate generalisation. The Checks page can re-split without leakage.",
            ranker, {"count": len(found), "kinds": kinds, "examples": examples,
                     "queries": sorted(found)}))
    return out
