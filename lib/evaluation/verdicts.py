"""Honest verdicts: when a fine-tuned reranker loses to BM25 or the bi-encoder, say so and why.

One function builds the verdict from numbers the caller already has (a run's validation figures
and bar to beat, or an evaluation's means); the Train page, the Evaluate page, the CLI and the
HTML report only render it. Causes are the likely ones we can check: an untrained reranker head,
too little training data, little movement from the start, truncation and leakage findings of the
Checks step; next steps are concrete (fusion, distillation, more epochs / a higher head LR).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

FIRST_STAGE = {"bm25": "BM25", "biencoder": "the zero-shot bi-encoder"}
FEW_PAIRS = 10_000  # below this, a cross-encoder from an untrained head rarely beats a first stage
FEW_QUERIES = 500
LITTLE_MOVEMENT = 0.02  # NDCG@10 gained over the untrained start


@dataclass
class Verdict:
    """What to tell the user; `loses_to` empty means the model beat every first stage."""

    model: str
    metric: str
    value: float
    where: str  # "validation split (100 queries)", "test split"...
    loses_to: dict[str, float] = field(default_factory=dict)  # baseline -> its value
    beats: dict[str, float] = field(default_factory=dict)
    causes: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    win_caveat: str = ""  # what a win's figure does not show (selection, significance)

    @property
    def lost(self) -> bool:
        return bool(self.loses_to)

    @property
    def headline(self) -> str:
        def names(d: dict[str, float]) -> str:
            return " and ".join(f"{FIRST_STAGE.get(k, k)} ({v:.4f})" for k, v in d.items())

        if not self.loses_to:
            return (f"{self.model} beats {names(self.beats)} on {self.metric} "
                    f"({self.value:.4f}, {self.where})." + (f" {self.win_caveat}"
                                                           if self.win_caveat else ""))
        return (f"{self.model} LOSES to {names(self.loses_to)} on {self.metric}: {self.value:.4f} "
                f"on the {self.where}. Serving it would make rankings worse than "
                f"{'what you already have' if len(self.loses_to) > 1 else 'that first stage'}.")

    def to_json(self) -> dict:
        return {**asdict(self), "lost": self.lost, "headline": self.headline}

    def as_text(self) -> str:
        """Plain text (no markup): headline, causes, next steps."""
        lines = [self.headline]
        if self.causes:
            lines.append("Likely causes:")
            lines += [f"- {c}" for c in self.causes]
        if self.next_steps:
            lines.append("Next to try:")
            lines += [f"- {s}" for s in self.next_steps]
        return "\n".join(lines)


def build_verdict(
    model: str,
    value: float | None,
    baselines: dict[str, float | None],
    *,
    metric: str = "ndcg@10",
    where: str = "validation split",
    untrained_head: bool = False,
    start_value: float | None = None,
    train_pairs: int | None = None,
    train_queries: int | None = None,
    epochs: float | None = None,
    check_findings: list[str] | None = None,
    fusion_spec: str | None = None,
    win_caveat: str = "",
) -> Verdict | None:
    """The verdict for `model` (its `metric` value) against first-stage `baselines`
    ({"bm25": x, "biencoder": y}); None when there is nothing to compare. `win_caveat` is said
    after a win: e.g. that the figure was picked on the queries it is reported on."""
    known = {k: float(v) for k, v in baselines.items() if v is not None}
    if value is None or not known:
        return None
    v = float(value)
    loses = {k: b for k, b in known.items() if v < b}
    wins = {k: b for k, b in known.items() if v >= b}
    verdict = Verdict(model, metric, v, where, loses_to=loses, beats=wins, win_caveat=win_caveat)
    if not loses:
        return verdict
    causes, steps = verdict.causes, verdict.next_steps
    if untrained_head:
        causes.append("the base model had no trained reranker head (the bundled all-MiniLM-L6-v2 "
                      "is a sentence encoder): the head starts random and must be learned from "
                      "your pairs alone")
    if start_value is not None and v - float(start_value) < LITTLE_MOVEMENT:
        causes.append(f"training barely moved the model ({float(start_value):.4f} at the start, "
                      f"{v:.4f} at best): the learning rate or the number of steps is too low "
                      "for a new head")
    if (train_pairs is not None and train_pairs < FEW_PAIRS) or (
            train_queries is not None and train_queries < FEW_QUERIES):
        size = ", ".join(x for x in (
            f"{train_pairs:,} pairs" if train_pairs is not None else "",
            f"{train_queries:,} queries" if train_queries is not None else "") if x)
        causes.append(f"little training data ({size}): a first stage needs none")
    for finding in check_findings or []:
        low = finding.lower()
        if "truncat" in low or "leakage" in low or "checks have not been run" in low:
            causes.append(f"Checks: {finding}")
    if not causes:
        causes.append("none of the usual suspects (head, data size, truncation, leakage) was "
                      "found: the first stage may simply suit this domain well")
    if not model.startswith("fuse:"):
        best_first = max(known, key=lambda k: known[k])
        steps.append(
            "fuse the reranker with the first stage, e.g. ranker "
            f"`{fusion_spec or f'fuse:{model}+{best_first}'}` on the Evaluate page (weight chosen "
            "on validation, reported on test): fusion often beats both")
    if untrained_head or (train_pairs is not None and train_pairs < FEW_PAIRS):
        steps.append("train with the distillation preset (the bi-encoder as teacher on many "
                     "more (query, document) pairs than you have labels for), or start from a "
                     "trained cross-encoder (e.g. cross-encoder/ms-marco-MiniLM-L6-v2 with a "
                     "model hub)")
    if epochs is not None and epochs <= 2:
        steps.append(f"more epochs ({epochs:g} now) with early stopping on validation NDCG@10, "
                     "and a higher learning rate for the new head")
    if any(c.startswith("Checks:") and "truncat" in c.lower() for c in causes):
        steps.append("raise the max length or score with windows (MaxP) on the Evaluate page")
    if any(c.startswith("Checks:") and "leakage" in c.lower() for c in causes):
        steps.append("re-split without leakage on the Checks page before trusting any figure")
    if not steps:
        steps.append("serve the first stage as it is, or fuse it with a stronger reranker "
                     "(a trained cross-encoder, or one trained with the distillation preset)")
    return verdict


def evaluation_verdict(result) -> Verdict | None:
    """The verdict of a saved evaluation (an EvaluationResult) for its model under test, against
    the first stages (BM25, bi-encoder) among its baselines; None when it has none of them, or
    the model under test is itself a first stage."""
    by_name = {rk["name"]: rk for rk in result.rankers}
    model = by_name.get(result.model) or {}
    kind = model.get("kind")
    if kind not in ("cross-encoder", "fusion"):
        return None
    primary = result.primary_metric
    firsts = {by_name[b]["kind"]: result.means[b][primary] for b in result.baselines
              if by_name.get(b, {}).get("kind") in FIRST_STAGE}
    if not firsts:
        return None
    training = model.get("training") or {}
    cfg, data = training.get("config") or {}, training.get("data") or {}
    untrained = bool(model.get("untrained_head")) or (
        bool(cfg) and cfg.get("base_model", "default") == "default")
    findings = [w.message for w in result.warnings if w.kind in ("leakage", "truncation")]
    best_first = max(firsts, key=lambda k: firsts[k])
    return build_verdict(
        result.model, result.means[result.model][primary], firsts, metric=primary,
        where=f"{result.split_label} split ({result.n_queries} queries)",
        untrained_head=untrained, train_pairs=data.get("train_pairs"),
        train_queries=data.get("train_queries"), epochs=cfg.get("epochs"),
        check_findings=findings,
        fusion_spec=None if kind == "fusion" else f"fuse:{model.get('spec')}+{best_first}",
    )
