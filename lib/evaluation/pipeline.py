"""`evaluate(ws, spec)`: the one evaluation used by the Evaluate page and the CLI alike.

Evaluation set -> every ranker's scores (cached) -> per-query metrics (lib.metrics, ranx) ->
paired comparisons of the model against each baseline -> sanity warnings -> saved report.
"""

from __future__ import annotations

import re
import secrets
import time
import warnings as _warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from lib.evaluation.compare import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_PERMUTATIONS,
    STAT_TESTS,
    Comparison,
    compare_pair,
    verdict,
)
from lib.evaluation.evalset import EvalSet, load_eval_set
from lib.evaluation.rankers import CROSS_ENCODER, FUSION, Ranker, parse_ranker, unique_names
from lib.evaluation.sanity import (
    SanityWarning,
    leakage_warnings,
    optimistic_split_warning,
    score_warnings,
    untrained_head_warnings,
    worse_than_base_warnings,
)
from lib.evaluation.scoring import DEFAULT_BATCH_SIZE, ProgressFn, ScoreStats, score_ranker
from lib.metrics import evaluate_rankings
from lib.workspace import Workspace

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "map@100", "recall@10", "recall@100", "precision@5")
_METRIC_ALIASES = {"ndcg": "ndcg@10", "mrr": "mrr@10", "map": "map@100", "recall": "recall@100",
                   "precision": "precision@5", "p": "precision@5"}
_METRIC_RE = re.compile(
    r"^(ndcg|ndcg_burges|dcg|dcg_burges|mrr|map|precision|recall|f1|hits|hit_rate|"
    r"r-precision|bpref)(@[1-9][0-9]{0,4})?$"
)
SNIPPET_CHARS = 400
# ranx's ndcg kernel casts uint64 -> int64 (harmless here); numba says so at every compile
_warnings.filterwarnings("ignore", message="unsafe cast from uint64 to int64")


def normalize_metrics(metrics: list[str] | tuple[str, ...] | None) -> list[str]:
    """'ndcg' -> ndcg@10, 'p@5' -> precision@5, 'r@100' -> recall@100; unknown names refused."""
    out: list[str] = []
    for raw in metrics or DEFAULT_METRICS:
        for part in str(raw).split(","):
            m = part.strip().lower()
            if not m:
                continue
            m = _METRIC_ALIASES.get(m, m)
            if m.startswith("p@"):
                m = "precision@" + m[2:]
            elif m.startswith("r@"):
                m = "recall@" + m[2:]
            if not _METRIC_RE.match(m):
                raise ValueError(
                    f"unknown metric {part.strip()!r}: use e.g. ndcg@10, mrr@10, map@100, "
                    "recall@100, precision@5 (p@5), hit_rate@10, f1@10, r-precision, bpref")
            if m not in out:
                out.append(m)
    if not out:
        raise ValueError("no metric given")
    return out


@dataclass
class EvaluationSpec:
    dataset: str  # dataset id or name, or a JSONL file (ingested like training data)
    model: str  # the ranker under test (see rankers.RANKER_HELP)
    baselines: list[str] = field(default_factory=list)
    split: str | None = None  # None: test if the active split has one, else validation
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    rel_threshold: int = 1
    stat_test: str = "fisher"
    max_p: float = 0.05
    n_permutations: int = DEFAULT_PERMUTATIONS
    n_bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = 13
    max_length: int | None = None  # None: the model under test's own, for every cross-encoder
    window_stride: int | None = None  # None: truncate; else MaxP over overlapping windows
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str | None = None
    title: str | None = None
    save: bool = True
    corpus: str | None = None  # retrieve-then-rerank: candidates = top-k of this corpus
    first_stage: str = "bm25"  # 'bm25' | 'biencoder[:MODEL]' | 'run:FILE'
    top_k: int = 100

    def validated(self) -> EvaluationSpec:
        if not self.baselines:
            raise ValueError("give at least one baseline to compare the model with")
        if self.stat_test not in STAT_TESTS:
            raise ValueError(f"stat_test must be one of {', '.join(STAT_TESTS)}")
        if not 0 < self.max_p < 1:
            raise ValueError(f"max_p must be in (0, 1), got {self.max_p}")
        if self.rel_threshold < 1:
            raise ValueError("the relevance threshold must be at least 1 (label >= threshold)")
        if self.window_stride is not None and self.window_stride < 0:
            raise ValueError("window stride must be >= 0 tokens")
        self.metrics = normalize_metrics(self.metrics)
        return self


@dataclass
class EvaluationResult:
    eval_id: str
    created_at: str
    spec: dict
    dataset: dict
    split: str
    split_id: str | None
    n_queries: int
    n_excluded: int
    excluded: list[str]
    n_pairs: int
    candidates: str
    label_counts: dict[str, int]
    rankers: list[dict]  # Ranker.to_json() + "stats"
    model: str
    baselines: list[str]
    metrics: list[str]
    means: dict[str, dict[str, float]]
    comparisons: dict[str, dict[str, Comparison]]
    verdicts: list[str]
    warnings: list[SanityWarning]
    per_query: pd.DataFrame  # query_id, query, n_candidates, n_relevant, '<ranker>|<metric>'...
    scored: pd.DataFrame  # query_id, doc_id, query, snippet, label, one score column per ranker
    seconds: float = 0.0
    report_dir: str | None = None  # relative to the workspace root
    files: dict[str, str] = field(default_factory=dict)
    first_stage: dict | None = None  # retrieve-then-rerank setting, recall@k, judged@10

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def verdict(self) -> str:
        return self.verdicts[0] if self.verdicts else ""

    @property
    def split_label(self) -> str:
        return "(all pairs)" if self.split == "all" else self.split

    @property
    def ranker_names(self) -> list[str]:
        return [self.model, *self.baselines]

    def honest_verdict_json(self) -> dict | None:
        """lib.evaluation.verdicts: versus BM25 / the bi-encoder, with causes when it loses."""
        from lib.evaluation.verdicts import evaluation_verdict

        v = evaluation_verdict(self)
        return v.to_json() if v is not None else None

    def to_json(self) -> dict:
        """The CLI's --json contract first (metrics, comparison, n_queries, n_excluded)."""
        first = self.baselines[0]
        keys = ("delta", "ci_low", "ci_high", "p_value", "wins", "ties", "losses")
        return {
            "metrics": {r: {m: _num(v) for m, v in ms.items()} for r, ms in self.means.items()},
            "comparison": {
                m: {k: c.to_json()[k] for k in keys} for m, c in self.comparisons[first].items()
            },
            "n_queries": self.n_queries,
            "n_excluded": self.n_excluded,
            "eval_id": self.eval_id,
            "created_at": self.created_at,
            "model": self.model,
            "baseline": first,
            "baselines": self.baselines,
            "comparisons": {b: {m: c.to_json() for m, c in cs.items()}
                            for b, cs in self.comparisons.items()},
            "verdict": self.verdict,
            "verdicts": self.verdicts,
            "honest_verdict": self.honest_verdict_json(),
            "dataset": self.dataset,
            "split": self.split,
            "split_id": self.split_id,
            "excluded": self.excluded,
            "n_pairs": self.n_pairs,
            "candidates": self.candidates,
            "label_counts": self.label_counts,
            "rankers": self.rankers,
            "primary_metric": self.primary_metric,
            "warnings": [w.to_json() for w in self.warnings],
            "spec": self.spec,
            "seconds": round(self.seconds, 2),
            "report_dir": self.report_dir,
            "files": self.files,
            "first_stage": self.first_stage,
        }


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def new_eval_id() -> str:
    return time.strftime("ev-%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _stage(progress: ProgressFn | None, lo: float, hi: float) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda f, msg: progress(lo + (hi - lo) * min(max(f, 0.0), 1.0), msg)


def evaluate(
    ws: Workspace, spec: EvaluationSpec, progress: ProgressFn | None = None,
    *, allow_outside_workspace: bool = True,
) -> EvaluationResult:
    """Score, measure, compare and (when spec.save) store one evaluation with its report.
    The app passes allow_outside_workspace=False: typed run files and model folders must then
    lie in the workspace (see parse_ranker)."""
    t0 = time.perf_counter()
    spec = spec.validated()
    rankers = align_base_heads(unique_names([
        parse_ranker(s, ws, allow_outside_workspace=allow_outside_workspace)
        for s in [spec.model, *spec.baselines]]))
    if progress:
        progress(0.0, "loading the evaluation set")
    es = load_eval_set(ws, spec.dataset, spec.split)
    if spec.corpus:
        from lib.evaluation.candidates import corpus_candidates

        if progress:
            progress(0.01, f"retrieving top-{spec.top_k} from corpus {spec.corpus}")
        es = corpus_candidates(ws, es, spec.corpus, spec.first_stage, spec.top_k,
                               spec.rel_threshold)
    pairs = es.pairs
    max_length = shared_max_length(rankers, spec)
    scores: dict[str, np.ndarray] = {}
    stats: dict[str, ScoreStats] = {}
    n = len(rankers)
    for i, r in enumerate(rankers):
        kw = dict(max_length=max_length.get(r.name), window_stride=spec.window_stride,
                  batch_size=spec.batch_size, device=spec.device,
                  progress=_stage(progress, 0.02 + 0.88 * i / n, 0.02 + 0.88 * (i + 1) / n))
        if r.kind == FUSION:  # the weight is chosen on other queries than these (fusion_ranker)
            from lib.evaluation.fusion_ranker import score_fusion_eval

            s, st, fit = score_fusion_eval(ws, r, es, rel_threshold=spec.rel_threshold,
                                           seed=spec.seed, **kw)
            st.fusion = fit.to_json()
        else:
            s, st = score_ranker(ws, r, pairs, **kw)
        scores[r.name], stats[r.name] = s, st
    if progress:
        progress(0.9, "computing metrics and significance")
    result = assemble(ws, es, spec, rankers, scores, stats)
    result.seconds = time.perf_counter() - t0
    if spec.save:
        from lib.evaluation.store import save_evaluation

        if progress:
            progress(0.95, "writing the report")
        save_evaluation(ws, result)
    if progress:
        progress(1.0, "done")
    return result


def align_base_heads(rankers: list[Ranker]) -> list[Ranker]:
    """When the model under test is a run fine-tuned from the bundled default, give 'default'
    baselines that run's seed: their random head is then the run's exact starting point."""
    from lib.models import resolve_model

    cfg = (rankers[0].training or {}).get("config") or {}
    seed, base = cfg.get("seed"), cfg.get("base_model", "default")
    try:
        from_default = resolve_model(base).kind == "default"
    except ValueError:
        from_default = False
    if seed is None or not from_default:
        return rankers
    return [replace(r, head_seed=int(seed)) if r.untrained_head else r for r in rankers]


def shared_max_length(rankers: list[Ranker], spec: EvaluationSpec) -> dict[str, int | None]:
    """One truncation length for every cross-encoder, so base and fine-tuned see the same text:
    the given max length, else the model under test's own (a checkpoint trained at 128 tokens
    is compared with its base at 128, not 512); capped by each model's position limit."""
    from lib.evaluation.scoring import effective_max_length, ranker_model
    from lib.models import model_max_length

    target = spec.max_length
    if target is None and rankers[0].kind == CROSS_ENCODER:
        model = ranker_model(rankers[0], None, spec.device)
        target = effective_max_length(model)
    out: dict[str, int | None] = {}
    for r in rankers:
        if r.kind == CROSS_ENCODER and target is not None:
            limit = model_max_length(r.model_ref) if r.model_kind != "hub" else None
            out[r.name] = min(target, limit) if limit else target
        else:
            out[r.name] = None
    return out


def assemble(
    ws: Workspace, es: EvalSet, spec: EvaluationSpec, rankers: list[Ranker],
    scores: dict[str, np.ndarray], stats: dict[str, ScoreStats],
) -> EvaluationResult:
    """Metrics, comparisons, verdicts and warnings from the scores (no model needed)."""
    pairs = es.pairs
    model, baselines = rankers[0], rankers[1:]
    means: dict[str, dict[str, float]] = {}
    per_query = None
    excluded: list[str] = []
    n_queries = 0
    for r in rankers:
        res = evaluate_rankings(pairs, scores[r.name], spec.metrics, spec.rel_threshold,
                                name=r.name, extra_qrels=es.missed)
        means[r.name] = dict(res.means)
        if "judged" in pairs.columns:  # retrieve-then-rerank: how much of the top 10 is judged
            from lib.evaluation.candidates import JUDGED_AT, judged_at

            means[r.name][f"judged@{JUDGED_AT}"] = judged_at(pairs, scores[r.name])
        excluded, n_queries = res.excluded, res.n_queries
        frame = res.per_query.rename(columns={m: f"{r.name}|{m}" for m in spec.metrics})
        per_query = frame if per_query is None else per_query.merge(frame, on="query_id")
    if n_queries == 0:
        raise ValueError(
            f"no evaluation query has a candidate with label >= {spec.rel_threshold}: "
            "nothing to measure (lower the relevance threshold?)")
    qinfo = pairs.groupby("query_id").agg(
        query=("query", "first"), n_candidates=("doc_id", "size"),
        n_relevant=("label", lambda s: int((s >= spec.rel_threshold).sum())),
    ).reset_index()
    per_query = qinfo.merge(per_query, on="query_id", how="inner")
    comparisons: dict[str, dict[str, Comparison]] = {}
    for b in baselines:
        comparisons[b.name] = {
            m: compare_pair(per_query, model.name, b.name, m, stat_test=spec.stat_test,
                            max_p=spec.max_p, n_permutations=spec.n_permutations,
                            n_bootstrap=spec.n_bootstrap, seed=spec.seed)
            for m in spec.metrics
        }
    primary = spec.metrics[0]
    verdicts = [verdict(comparisons[b.name][primary], len(excluded), es.split_label)
                for b in baselines]
    warnings: list[SanityWarning] = []
    if es.duplicate_ids_dropped:
        warnings.append(SanityWarning(
            "duplicate_ids", "warning",
            f"{es.duplicate_ids_dropped:,} pairs repeat a (query_id, doc_id) of an earlier line "
            "with another text or label; the first line's was used."))
    warnings += untrained_head_warnings(rankers)
    for r in rankers:
        warnings += score_warnings(r.name, pairs, scores[r.name])
        if stats[r.name].note and r.kind == "run":
            warnings.append(SanityWarning("run_file_coverage", "warning",
                                          f"{r.name}: {stats[r.name].note}", r.name))
    warnings += worse_than_base_warnings(model, baselines, comparisons, primary)
    warnings += optimistic_split_warning(es.split, rankers)
    try:
        warnings += leakage_warnings(ws, pairs, es.dataset.dataset_id, es.split, es.split_id,
                                     rankers)
    except ImportError:  # pragma: no cover - the Checks package ships with the app
        pass
    scored = pairs[["query_id", "doc_id", "query", "label"]].copy()
    scored["snippet"] = [d if len(d) <= SNIPPET_CHARS else d[:SNIPPET_CHARS] + "..."
                         for d in pairs["document"].astype(str)]
    for r in rankers:
        scored[r.name] = scores[r.name]
    label_counts = {str(k): int(v) for k, v in pairs["label"].value_counts().sort_index().items()}
    ds = es.dataset
    return EvaluationResult(
        eval_id=new_eval_id(), created_at=time.strftime("%Y-%m-%d %H:%M:%S"),
        spec=asdict(spec),
        dataset={"dataset_id": ds.dataset_id, "name": ds.name, "source": ds.source,
                 "label_scale": ds.label_scale, "max_label": ds.max_label,
                 "ingested_from": es.ingested_from},
        split=es.split, split_id=es.split_id, n_queries=n_queries, n_excluded=len(excluded),
        excluded=excluded, n_pairs=len(pairs), candidates=es.candidates_note,
        label_counts=label_counts,
        rankers=[{**r.to_json(), "stats": stats[r.name].to_json()} for r in rankers],
        model=model.name, baselines=[b.name for b in baselines], metrics=list(spec.metrics),
        means=means, comparisons=comparisons, verdicts=verdicts, warnings=warnings,
        per_query=per_query, scored=scored, first_stage=es.first_stage,
    )


# ---- per-query views (page and report) -------------------------------------------------------


def ranking(scored: pd.DataFrame, query_id: str, ranker: str) -> pd.DataFrame:
    """One query's candidates as `ranker` orders them (score desc, doc id asc: ranx's order)."""
    q = scored[scored["query_id"] == str(query_id)]
    q = q.sort_values([ranker, "doc_id"], ascending=[False, True], kind="stable")
    return pd.DataFrame({
        "rank": np.arange(1, len(q) + 1), "doc_id": q["doc_id"].to_numpy(),
        "score": q[ranker].to_numpy(), "label": q["label"].to_numpy(),
        "snippet": q["snippet"].to_numpy(),
    })


def side_by_side(scored: pd.DataFrame, query_id: str, model: str, baseline: str) -> pd.DataFrame:
    """Both rankings of one query, in the model's order; rank_change > 0 = the model moved it up."""
    a = ranking(scored, query_id, model)
    b = ranking(scored, query_id, baseline)
    merged = a.merge(b[["doc_id", "rank", "score"]], on="doc_id", suffixes=("", "_base"))
    merged = merged.rename(columns={"rank": "rank_model", "score": "score_model"})
    merged["rank_change"] = merged["rank_base"] - merged["rank_model"]
    cols = ["rank_model", "score_model", "rank_base", "score_base", "rank_change", "label",
            "doc_id", "snippet"]
    return merged[cols].sort_values("rank_model", ignore_index=True)


def query_deltas(per_query: pd.DataFrame, model: str, baseline: str, metric: str) -> pd.DataFrame:
    """Per query: both values and the difference, sorted from most improved to most worsened."""
    out = per_query[["query_id", "query", "n_candidates", "n_relevant"]].copy()
    out["baseline"] = per_query[f"{baseline}|{metric}"]
    out["model"] = per_query[f"{model}|{metric}"]
    out["delta"] = out["model"] - out["baseline"]
    return out.sort_values(["delta", "query_id"], ascending=[False, True], ignore_index=True)
