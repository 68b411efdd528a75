"""Neighbour evidence for the label-noise finder: is a document like the query's other relevant
documents, or like its non-relevant ones?

Why: relevant documents of one query tend to resemble each other (the cluster hypothesis), and
a query's non-relevant candidates are usually a mixed bag. So a pair labelled 0 whose document is
closer to the query's OTHER relevant documents than to its other non-relevant ones, or a relevant
pair whose document looks like the non-relevant ones, contradicts its neighbours' labels. Each
pair is compared only with the other pairs of its query, never with its own label (leave one
out), so no fold models are needed; the document embeddings come from a zero-shot bi-encoder,
seconds on a CPU. Measured on the demo with planted flips (bench/noise.py), this evidence ranks
wrong labels far better than a model's query-document score, which is what the folds give.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BIENCODER = "biencoder"  # the bar's zero-shot bi-encoder (bundled unless the env var says else)


def consistency(pairs: pd.DataFrame, embeddings: np.ndarray) -> pd.DataFrame:
    """Per pair: `sim_relevant` / `sim_nonrelevant`, the mean cosine of its document to the
    query's other documents labelled relevant / not relevant (NaN where the query has none), and
    `neighbour_score` = their difference (a missing side counts 0). `embeddings` are the
    documents' unit vectors, row i for pairs row i; labels > 0 are relevant."""
    pos_all = pairs["label"].to_numpy().astype(int) > 0
    emb = np.asarray(embeddings, dtype=np.float64)
    sim_pos = np.full(len(pairs), np.nan)
    sim_neg = np.full(len(pairs), np.nan)
    for idx in pairs.groupby("query_id", sort=False).indices.values():
        e = emb[idx]
        sim = e @ e.T
        np.fill_diagonal(sim, 0.0)
        pos = pos_all[idx]
        for mask, out in ((pos, sim_pos), (~pos, sim_neg)):
            n_other = mask.sum() - mask.astype(int)  # the pair itself never counts
            total = sim[:, mask].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[idx] = np.where(n_other > 0, total / np.maximum(n_other, 1), np.nan)
    out = pd.DataFrame({"sim_relevant": sim_pos, "sim_nonrelevant": sim_neg},
                       index=pairs.index)
    out["neighbour_score"] = np.nan_to_num(sim_pos) - np.nan_to_num(sim_neg)
    return out


def document_embeddings(documents: list[str], model: str = BIENCODER,
                        device: str | None = None, batch_size: int = 32) -> np.ndarray:
    """Unit vectors of `documents` (each distinct text embedded once) by the bar's bi-encoder
    (`biencoder`; bundled unless RERANKER_STUDIO_BAR_BIENCODER names a dir, even when it
    switches the bar off) or a sentence-transformers model dir / hub id."""
    from lib.evaluation.scoring import cached_bi_encoder
    from lib.models import resolve_model

    if model == BIENCODER:  # the bar's model dir when one is set, else the bundled model
        import os

        from lib.evaluation.rankers import parse_ranker
        from lib.models import ModelRef
        from lib.training.baselines import BIENCODER_ENV

        choice = os.environ.get(BIENCODER_ENV, "").strip()
        ref = (ModelRef(choice, choice, "local") if choice and choice.lower() != "none"
               else parse_ranker(BIENCODER).model_ref)
    else:
        ref = resolve_model(model)
    encoder = cached_bi_encoder(ref, device)
    texts = list(dict.fromkeys(documents))
    vectors = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
    row = {t: i for i, t in enumerate(texts)}
    return np.asarray(vectors, dtype=np.float32)[[row[d] for d in documents]]


MODELS, NEIGHBOURS, BOTH = "out-of-fold", "neighbours", "neighbours + out-of-fold"
# evidence 'both': the models' strengths count half. On the demo's planted flips (2 seeds) half
# weight caught 0.235 / 0.324 in the top N against 0.176 / 0.206 at full weight; the models
# alone 0.118 / 0.147, the neighbours alone 0.265 / 0.265 (bench/results/noise.log)
MODEL_WEIGHT = 0.5


def neighbour_flags(scores: pd.DataFrame, margin: float = 0.0) -> pd.DataFrame:
    """`lib.noise.flag_pairs` over `neighbour_score` (the same within-query evidence and
    agreement weight as a model's scores), with the reason said in neighbours' terms."""
    from lib.noise import flag_pairs

    flags = flag_pairs(scores, "neighbour_score", margin=margin)
    hit = flags["strength"].notna()
    flags.loc[hit, "reason"] = [
        _reason(int(r.label), r.sim_relevant, r.sim_nonrelevant, r.agreement)
        for r in flags[hit].itertuples(index=False)]
    return flags


def _reason(label: int, sim_rel: float, sim_non: float, agreement: float) -> str:
    rel = "none" if np.isnan(sim_rel) else f"{sim_rel:.2f}"
    non = "none" if np.isnan(sim_non) else f"{sim_non:.2f}"
    sims = f"mean cosine to the query's other relevant documents {rel}, to its non-relevant {non}"
    ctx = ("" if np.isnan(agreement) else
           f"; the query's other pairs follow this pattern {agreement:.0%} of the time")
    if label == 0:
        return f"labelled 0 (not relevant) but its document is like the relevant ones ({sims}{ctx})"
    if np.isnan(sim_non) or sim_rel < sim_non:
        return (f"labelled {label} (relevant) but its document is like the non-relevant ones "
                f"({sims}{ctx})")
    return (f"labelled {label} but its document is less like the relevant ones than the pairs "
            f"graded lower are ({sims}{ctx})")


def combine(flags: dict[str, pd.DataFrame], weights: dict[str, float] | None = None
            ) -> pd.DataFrame:
    """One ranked list from flag tables of the same pairs by several sources (MODELS,
    NEIGHBOURS): strength = the weighted sum of each source's strength (both are in within-query
    standard deviations times agreement); `source` names who flagged, `reason` joins theirs;
    rank_in_query comes from the models when they scored, else from the neighbours."""
    from lib.noise import rank_flags

    weights = weights or {}
    keys = ["query_id", "doc_id", "line"]
    names = list(flags)
    base = flags[MODELS] if MODELS in flags else flags[names[0]]
    out = base.drop(columns=["strength", "reason", "flag_rank", "agreement"], errors="ignore")
    strength = pd.Series(0.0, index=out.index)
    flagged_by: list[list[str]] = [[] for _ in range(len(out))]
    reasons: list[list[str]] = [[] for _ in range(len(out))]
    for name in names:
        f = out[keys].merge(flags[name][[*keys, "strength", "reason"]], on=keys, how="left")
        s = f["strength"].to_numpy(dtype=float)
        strength += np.nan_to_num(s) * float(weights.get(name, 1.0))
        for i in np.flatnonzero(~np.isnan(s)):
            flagged_by[i].append(name)
            reasons[i].append(f"{name}: {f['reason'].iloc[i]}" if len(names) > 1
                              else str(f["reason"].iloc[i]))
    any_flag = np.array([bool(b) for b in flagged_by])
    out["strength"] = np.where(any_flag, strength.to_numpy(), np.nan)
    out["source"] = [(BOTH if len(b) > 1 else b[0]) if b else None for b in flagged_by]
    out["reason"] = ["; ".join(r) if r else None for r in reasons]
    return rank_flags(out)
