"""Evaluate: base vs fine-tuned (and BM25, a bi-encoder, a production run file) on held-out queries.

Produces the one sentence stakeholders act on, the per-query evidence behind it, and a report
anyone can open offline. Every evaluation is kept in the workspace; `?report=<id>` opens one.
"""

import hashlib

import pandas as pd
import streamlit as st

from lib import datasets
from lib.evaluation import DEFAULT_METRICS, EvaluationSpec, evaluate
from lib.evaluation.compare import STAT_TEST_LABELS, format_p, metric_label
from lib.evaluation.evalset import EVAL_SPLITS, default_split
from lib.evaluation.pipeline import query_deltas, side_by_side
from lib.evaluation.rankers import UNTRAINED_HEAD_NOTE, list_checkpoints, list_export_specs
from lib.evaluation.report import delta_figure, scatter_figure
from lib.evaluation.store import (
    EvaluationNotFoundError,
    list_evaluations,
    load_evaluation,
)
from lib.evaluation.verdicts import evaluation_verdict
from lib.evaluation.warmup import warmup_state
from lib.textsafe import escape_markdown as esc
from lib.workspace import UnsafePathError, resolve_workspace, safe_name
from page_guard import require_entry

require_entry()

ws = resolve_workspace()

st.title("Evaluate")
st.caption(
    "Compare the model under test with baselines on held-out queries. Each query's candidates are "
    "its labelled pairs: rankers reorder them, nothing is retrieved. Metrics by ranx, a paired "
    "significance test per metric, a bootstrap confidence interval, and a report to share."
)
warm = warmup_state()
if warm is not None and not warm.done:
    st.caption(f"Preparing the metric code in the background ({warm.seconds:.0f} s so far; "
               "the first start compiles it once, about 30 s).")

# ---- Inputs --------------------------------------------------------------------------------------
st.subheader("What to compare")
table = datasets.list_datasets(ws)
source = st.radio("Evaluation set", ["Dataset split", "Upload a JSONL file"], horizontal=True)
dataset_id, split_choice, uploaded_set = None, None, None
if source == "Dataset split":
    if table.empty:
        st.info("No datasets yet. Open **Data** to upload one, or upload an evaluation file here.")
        st.stop()
    ids = list(table["dataset_id"])
    names = dict(zip(table["dataset_id"], table["name"], strict=True))
    c1, c2 = st.columns([2, 1])
    dataset_id = c1.selectbox("Dataset", ids, format_func=lambda i: f"{names[i]} ({i})")
    default = default_split(ws, dataset_id)
    split_choice = c2.selectbox("Split", EVAL_SPLITS, index=EVAL_SPLITS.index(default),
                                help="Default: test if the active split has one, else validation.")
else:
    uploaded_set = st.file_uploader(
        "Evaluation pairs (JSONL like training data: query, document, label; all pairs are used)",
        type=["jsonl", "gz", "json", "txt"])

checkpoints = list_checkpoints(ws)
options = [f"checkpoint:{c.run_id}" for c in checkpoints] + ["default", "bm25", "biencoder"]
labels = {f"checkpoint:{c.run_id}": f"checkpoint of run {c.label}" for c in checkpoints}
fusions = [f"fuse:checkpoint:{c.run_id}+{b}" for c in checkpoints for b in ("bm25", "biencoder")]
labels.update({f: f"{f}: the checkpoint fused with {f.rsplit('+', 1)[1]} (weight chosen on "
               "validation, reported on the evaluated split; cross-validated without one)"
               for f in fusions})
exports = list_export_specs(ws)
labels.update({e: f"{e}: the run's {e.rsplit('@', 1)[1]} export (Ship page)" for e in exports})
options = options[:len(checkpoints)] + fusions + exports + options[len(checkpoints):]
labels.update({
    "default": "default: bundled all-MiniLM-L6-v2 cross-encoder (untrained head)",
    "bm25": "bm25: lexical BM25 over the candidates",
    "biencoder": "biencoder: all-MiniLM-L6-v2 zero-shot, cosine",
})
OTHER = "other: a hub id or a local model path"  # or a fusion: fuse:A+B[@weight]
c1, c2 = st.columns(2)
model_choice = c1.selectbox("Model under test", [*options, OTHER],
                            format_func=lambda o: labels.get(o, o))
model_spec = model_choice
if model_choice == OTHER:
    model_spec = c1.text_input("Model (hub id or path)",
                               help="or a fusion: fuse:A+B, '@0.3' fixes the weight on A",
                               placeholder="cross-encoder/ms-marco-MiniLM-L-6-v2").strip()
ckpt = {f"checkpoint:{c.run_id}": c for c in checkpoints}.get(model_choice)
base_of_model = ckpt.base_model if ckpt else None
if ckpt and base_of_model in (None, "default"):
    base_default = ["default", "bm25"]  # the run's own base first: the headline comparison
elif model_choice == "default":
    base_default = ["bm25", "biencoder"]
else:
    base_default = ["bm25"]
allowed = [o for o in options if o != model_choice]
base_default = [o for o in base_default if o in allowed] or allowed[:1]
baseline_choice = c2.multiselect("Baselines (the first one is the headline comparison)", allowed,
                                 default=base_default, format_func=lambda o: labels.get(o, o))
extra = c2.text_input("More baselines (hub ids or paths, comma-separated)",
                      base_of_model if base_of_model not in (None, "default") else "",
                      key=f"extra-{model_choice}")
run_upload = c2.file_uploader("External run file as a baseline (JSONL: query_id, doc_id, score)",
                              type=["jsonl", "txt"])
if "default" in [model_spec, *baseline_choice]:
    st.warning(UNTRAINED_HEAD_NOTE)

with st.expander("Metrics and settings"):
    metric_options = list(DEFAULT_METRICS) + ["hit_rate@10", "f1@10", "r-precision", "bpref",
                                              "ndcg@5", "ndcg@20", "mrr@100"]
    metrics = st.multiselect("Metrics (the first is the headline)", metric_options,
                             default=list(DEFAULT_METRICS), format_func=metric_label)
    s1, s2, s3 = st.columns(3)
    rel_threshold = s1.number_input("Relevant = label >=", 1, 4, 1,
                                    help="For the binary metrics; NDCG uses the graded labels.")
    stat_test = s2.selectbox("Significance test", list(STAT_TEST_LABELS),
                             format_func=STAT_TEST_LABELS.get)
    max_p = s3.number_input("Significance level", 0.001, 0.2, 0.05, 0.01, format="%.3f")
    s4, s5, s6 = st.columns(3)
    max_length = s4.number_input(
        "Max length (0 = the model under test's)", 0, 8192, 0, 32,
        help="Every cross-encoder truncates at this length, so base and fine-tuned see the same "
        "text.")
    windows = s5.checkbox("Score long documents as windows (max over windows)")
    stride = s6.number_input("Window overlap (tokens)", 0, 512, 64, 16, disabled=not windows)
    batch_size = s4.number_input("Batch size", 1, 1024, 64)
    from lib.corpora import list_corpora

    _corpora = list(list_corpora(ws)["name"])
    k1, k2, k3 = st.columns(3)
    cand_corpus = k1.selectbox(
        "Candidates", ["labelled pairs", *_corpora], key="eval_candidates",
        format_func=lambda c: c if c == "labelled pairs" else f"top-k from corpus {c}",
        help="Labelled pairs: rerank each query's labelled candidates. A corpus: a first stage "
        "retrieves top-k (unjudged = not relevant), as in production.")
    first_stage_choice = k2.selectbox("First stage", ["bm25", "biencoder"],
                                      disabled=cand_corpus == "labelled pairs")
    top_k = k3.number_input("Top-k", 1, 1000, 100, disabled=cand_corpus == "labelled pairs")

go = st.button("Evaluate", type="primary",
               disabled=not (model_spec and (baseline_choice or extra or run_upload)
                             and (dataset_id or uploaded_set) and metrics))

# ---- Action --------------------------------------------------------------------------------------


def _save_upload(data: bytes, suffix: str):
    folder = ws.uploads_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(data).hexdigest()[:16] + suffix)
    path.write_bytes(data)
    return path


if go:
    try:
        baselines = list(baseline_choice) + [b.strip() for b in extra.split(",") if b.strip()]
        if run_upload is not None:  # kept under its own (sanitised) name: the ranker's name
            data = run_upload.getvalue()
            try:
                name = safe_name(run_upload.name)
            except UnsafePathError:
                name = "run.jsonl"
            folder = ws.child("uploads", "runs", hashlib.sha256(data).hexdigest()[:16])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
            baselines.append(f"run:{folder / name}")
        split_arg = split_choice
        if uploaded_set is not None:
            from lib.ingest import ingest_file

            data = uploaded_set.getvalue()
            path = _save_upload(data, ".jsonl.gz" if data[:2] == b"\x1f\x8b" else ".jsonl")
            report = ingest_file(ws, path, source=uploaded_set.name)
            dataset_id, split_arg = report.dataset_id, "all"
        bar = st.progress(0.0, text="Starting...")
        spec = EvaluationSpec(
            dataset=dataset_id, model=model_spec, baselines=baselines, split=split_arg,
            metrics=metrics, rel_threshold=int(rel_threshold), stat_test=stat_test,
            max_p=float(max_p), max_length=int(max_length) or None,
            window_stride=int(stride) if windows else None, batch_size=int(batch_size),
            corpus=None if cand_corpus == "labelled pairs" else cand_corpus,
            first_stage=first_stage_choice, top_k=int(top_k),
        )
        result = evaluate(ws, spec, progress=lambda f, m: bar.progress(min(f, 1.0), text=esc(m)),
                          allow_outside_workspace=False)
        bar.empty()
        st.query_params["report"] = result.eval_id
    except (ValueError, LookupError, FileNotFoundError, UnsafePathError, RuntimeError) as exc:
        st.error(esc(exc))

# ---- Result --------------------------------------------------------------------------------------
st.subheader("Evaluations")
saved = list_evaluations(ws)
if saved.empty:
    st.info("No evaluation yet.")
    st.stop()
listing = saved[["eval_id", "created_at", "dataset_name", "split", "n_queries", "model",
                 "verdict"]].copy()
listing.insert(0, "open", "?report=" + listing["eval_id"])
st.dataframe(listing, hide_index=True, width="stretch", column_config={
    "open": st.column_config.LinkColumn("Open", display_text="open")})
wanted = st.query_params.get("report") or saved["eval_id"].iloc[0]
ids = list(saved["eval_id"])
chosen = st.selectbox("Show evaluation", ids, index=ids.index(wanted) if wanted in ids else 0)
if chosen != st.query_params.get("report"):
    st.query_params["report"] = chosen
try:
    r = load_evaluation(ws, chosen)
except (EvaluationNotFoundError, OSError, ValueError) as exc:
    st.error(esc(f"cannot open evaluation {chosen}: {exc}"))
    st.stop()

st.markdown(f"#### {esc(r.model)} vs {esc(', '.join(r.baselines))}")
for b, v in zip(r.baselines, r.verdicts, strict=True):
    c = r.comparisons[b][r.primary_metric]
    show = st.success if c.significant and c.delta > 0 else st.error if c.significant else st.info
    show(esc(v))
for w in r.warnings:
    (st.warning if w.severity == "warning" else st.info)(esc(w.message))
st.caption(
    f"Dataset **{esc(r.dataset['name'])}**, split **{esc(r.split_label)}**"
    + (f" ({esc(r.split_id)})" if r.split_id else "")
    + f": {r.n_queries} queries evaluated, {r.n_excluded} excluded (no candidate with label >= "
    f"{r.spec['rel_threshold']}). {esc(r.candidates)}. Link: {esc('?report=' + r.eval_id)}."
)

honest = evaluation_verdict(r)
if honest is not None and honest.lost:
    st.error("Verdict: the model under test loses to a first stage you already have.",
             icon=":material/gavel:")
    st.text(honest.as_text())  # plain text: it quotes model names and Checks findings
for rk in r.rankers:
    if (rk["stats"] or {}).get("fusion"):
        st.text(f"Fusion {rk['name']}: {rk['stats']['note']}")
st.markdown("**Metrics** (mean over queries)")
st.dataframe(
    pd.DataFrame([{"ranker": n, **{metric_label(m): r.means[n][m] for m in r.metrics},
                   **({"judged@10": r.means[n].get("judged@10")} if r.first_stage else {})}
                  for n in r.ranker_names]),
    hide_index=True, width="stretch",
    column_config={metric_label(m): st.column_config.NumberColumn(format="%.4f")
                   for m in r.metrics})
rows = []
for b in r.baselines:
    for m in r.metrics:
        c = r.comparisons[b][m]
        rows.append({
            "vs": b, "metric": metric_label(m), "model": c.model_mean, "baseline": c.baseline_mean,
            "delta": c.delta,
            "relative": None if c.rel_change is None else f"{100 * c.rel_change:+.1f}%",
            "95% CI": f"{c.ci_low:+.3f} .. {c.ci_high:+.3f}", "p": format_p(c.p_value),
            "significant": c.significant, "win/tie/loss": f"{c.wins}/{c.ties}/{c.losses}",
        })
st.markdown(f"**{esc(r.model)} vs each baseline** ({STAT_TEST_LABELS[r.spec['stat_test']]}, "
            f"significant at p <= {r.spec['max_p']})")
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
    k: st.column_config.NumberColumn(format="%.4f") for k in ("model", "baseline", "delta")})
with st.expander("Rankers and how they were scored"):
    st.dataframe(pd.DataFrame([{
        "ranker": rk["name"], "what": rk["description"], "path": rk.get("path") or rk["spec"],
        "max length": rk["stats"].get("max_length"), "windows": rk["stats"].get("windowing"),
        "scored now": rk["stats"].get("n_scored"), "from cache": rk["stats"].get("n_cached"),
        "seconds": rk["stats"].get("seconds"), "note": rk["stats"].get("note"),
    } for rk in r.rankers]), hide_index=True, width="stretch")
    for rk in r.rankers:
        if rk.get("training"):
            st.markdown(f"Training run of **{esc(rk['name'])}**")
            st.json(rk["training"], expanded=False)

st.subheader("Per query")
c1, c2 = st.columns(2)
baseline = c1.selectbox("Compare with", r.baselines)
metric = c2.selectbox("Metric", r.metrics, format_func=metric_label)
st.plotly_chart(delta_figure(r, baseline, metric), width="stretch")
st.plotly_chart(scatter_figure(r, baseline, metric), width="stretch")
deltas = query_deltas(r.per_query, r.model, baseline, metric)
cols = {"baseline": baseline, "model": r.model}
c1, c2 = st.columns(2)
c1.markdown("**Most improved**")
c1.dataframe(deltas[deltas["delta"] > 0].head(10).rename(columns=cols), hide_index=True)
c2.markdown("**Most worsened**")
c2.dataframe(deltas[deltas["delta"] < 0].sort_values("delta").head(10).rename(columns=cols),
             hide_index=True)

st.markdown("**Drill-down: both rankings side by side**")
qids = list(deltas["query_id"])
text = dict(zip(deltas["query_id"], deltas["query"], strict=True))
dval = dict(zip(deltas["query_id"], deltas["delta"], strict=True))
qid = st.selectbox("Query (most improved first)", qids,
                   format_func=lambda q: f"{q} ({dval[q]:+.3f}): {text[q][:90]}")
st.caption(f"**{esc(text[qid])}**: {metric_label(metric)} of {esc(baseline)} "
           f"{deltas.loc[deltas['query_id'] == qid, 'baseline'].iloc[0]:.3f} -> {esc(r.model)} "
           f"{deltas.loc[deltas['query_id'] == qid, 'model'].iloc[0]:.3f}. Rank change > 0: the "
           "model ranks the document higher than the baseline.")
st.dataframe(
    side_by_side(r.scored, qid, r.model, baseline).rename(columns={
        "rank_model": f"{r.model} rank", "score_model": f"{r.model} score",
        "rank_base": f"{baseline} rank", "score_base": f"{baseline} score"}),
    hide_index=True, width="stretch")

st.subheader("Report")
st.caption(f"Kept in `{ws.root / (r.report_dir or '')}`: one self-contained HTML file (opens "
           "offline), the per-query CSV, the full JSON and a LaTeX table.")
d1, d2, d3, d4 = st.columns(4)
mimes = {"html": "text/html", "csv": "text/csv", "json": "application/json",
         "latex": "application/x-tex"}
for col, key in zip((d1, d2, d3, d4), ("html", "csv", "json", "latex"), strict=True):
    path = ws.root / r.files[key]
    if path.is_file():
        col.download_button(f"Download {key.upper()}", path.read_bytes(), file_name=path.name
                            if key != "html" else f"{r.eval_id}.html", mime=mimes[key],
                            key=f"dl-{key}")
