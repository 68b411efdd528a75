"""Checks: leakage, label quality, truncation and memory, visible and fixable before training."""

import streamlit as st

from lib import datasets
from lib.checks import last_settings, load_cached_checks, present, resplit_grouped, run_checks
from lib.checks.memory import PRECISIONS
from lib.checks.runner import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD
from lib.models import app_model_spec
from lib.textsafe import escape_markdown as esc
from lib.workspace import resolve_workspace
from page_guard import require_entry

require_entry()

ws = resolve_workspace()

st.title("Checks")
st.caption(
    "Before training: are validation/test queries also in the training data (leakage inflates "
    "every metric), are labels consistent and evaluable, and do the pairs fit the model's max "
    "length? Results are cached per dataset split, model and max length."
)

table = datasets.list_datasets(ws)
if table.empty:
    st.info("No datasets yet: add one on the Data page.")
    st.stop()

# ---- Inputs --------------------------------------------------------------------------------------
ids = list(table["dataset_id"])
names = dict(zip(table["dataset_id"], table["name"], strict=True))
default_ds = st.session_state.get("selected_dataset")
chosen = st.selectbox(
    "Dataset", ids, index=ids.index(default_ds) if default_ds in ids else 0,
    format_func=lambda i: f"{names[i]} ({i})",
)
last = last_settings(ws, chosen) or {}
lengths = [None, 128, 256, 384, 512]
if last.get("max_length") and last["max_length"] not in lengths:
    lengths.append(int(last["max_length"]))
others = [None] + [i for i in ids if i != chosen]

c1, c2, c3 = st.columns(3)
model = c1.text_input(
    "Model (its tokenizer counts the tokens)", value=last.get("model_spec") or "default",
    key=f"chk_model_{chosen}",
    help="'default' = the bundled all-MiniLM-L6-v2; or a local model directory, or a hub id.",
)
max_length = c2.selectbox(
    "Max length", lengths, index=lengths.index(last.get("max_length")) if last.get("max_length")
    in lengths else 0, key=f"chk_len_{chosen}",
    format_func=lambda v: "the model's limit" if v is None else str(v),
)
threshold = c3.slider(
    "Near-duplicate threshold (Jaccard)", 0.5, 1.0, float(last.get("threshold")
                                                          or DEFAULT_THRESHOLD), 0.05,
    key=f"chk_thr_{chosen}",
    help="Queries whose character 3-shingle sets overlap at least this much count as "
    "near-duplicates.",
)
c4, c5, c6 = st.columns(3)
eval_ds = c4.selectbox(
    "Evaluation dataset (optional)", others,
    index=others.index(last.get("eval_dataset_id")) if last.get("eval_dataset_id") in others
    else 0, key=f"chk_eval_{chosen}",
    format_func=lambda i: "none: check this dataset's own splits" if i is None else names[i],
    help="Check another dataset's queries against this dataset's TRAIN split.",
)
batch_size = c5.number_input("Training batch size (memory estimate)", 1, 4096,
                             int(last.get("batch_size") or DEFAULT_BATCH_SIZE),
                             key=f"chk_bs_{chosen}")
precision = c6.selectbox("Training precision", [None, *PRECISIONS], key=f"chk_prec_{chosen}",
                         format_func=lambda p: "auto (bf16 on a GPU, else fp32)" if p is None
                         else p)
recompute = st.checkbox("Recompute even if cached", value=False)
go = st.button("Run checks", type="primary")

try:  # a model folder typed here must lie in the workspace; hub ids pass
    model = app_model_spec(model, ws)
except ValueError as exc:
    st.error(esc(exc))
    st.stop()
settings = dict(model=model, max_length=max_length, threshold=threshold, eval_dataset=eval_ds,
                batch_size=int(batch_size), precision=precision)


def _run(**extra):
    bar = st.progress(0.0, text="Starting...")

    def show(text: str, frac: float) -> None:
        bar.progress(min(max(frac, 0.0), 1.0), text=esc(text))

    out = run_checks(ws, chosen, progress=show, **settings, **extra)
    bar.empty()
    return out


# ---- Action --------------------------------------------------------------------------------------
res = None
try:
    if go:
        res = _run(use_cache=not recompute)
    else:
        res = load_cached_checks(ws, chosen, **settings)
except (ValueError, LookupError, RuntimeError, OSError) as exc:
    st.error(esc(exc))
    st.stop()

if st.session_state.get("chk_resplit_msg"):
    st.success(st.session_state.pop("chk_resplit_msg"))
if res is None:
    st.info("Not checked yet with these settings: press **Run checks**.")
    st.stop()

# ---- Result --------------------------------------------------------------------------------------
leak, labels, trunc, memory = res.leakage, res.labels, res.truncation, res.memory
where = (f"evaluation dataset {res.eval_dataset_name} against the train split"
         if res.eval_dataset_id else f"split {res.split_id}")
st.markdown(f"**Results for** {esc(res.dataset_name)}, {esc(where)}" +
            (" (from cache)" if all(res.cached.values()) else ""))

m1, m2, m3, m4 = st.columns(4)
held = leak["summary"]["held_out"]
m1.metric("Leaked held-out queries",
          f"{sum(s['leaked_queries'] for s in held.values()):,} of "
          f"{sum(s['queries'] for s in held.values()):,}")
m2.metric("Label issues", f"{sum(1 for i in labels['issues'] if i['kind'] != 'skew'):,}")
if trunc:
    m3.metric(f"Pairs truncated at {trunc['max_length']}",
              f"{trunc['overall']['truncated_share']:.1%}")
if memory and memory.get("available"):
    m4.metric("Training memory (est.)", f"{memory['total_gib']:.1f} GiB")

# Leakage
st.subheader("Leakage")
if not leak["findings"]:
    st.success(
        "No query in " + ", ".join(f"{sp} ({s['queries']:,} queries)" for sp, s in held.items())
        + f" matches a training query exactly, after normalisation, or at Jaccard >= "
        f"{res.threshold}."
    )
else:
    for sp, s in held.items():
        if s["leaked_queries"]:
            st.error(
                f"{s['leaked_queries']:,} of {s['queries']:,} {sp} queries "
                f"({s['leaked_share']:.0%}; {s['leaked_pairs']:,} of {s['pairs']:,} pairs) have "
                "a twin in the training data: metrics on this split are inflated, because the "
                "model is scored on what it trained on."
            )
    st.caption(" · ".join(present.kind_explanations(leak["findings"])))
    st.dataframe(present.findings_table(leak["findings"]), hide_index=True, width="stretch")
    pick = st.selectbox("Example rows of finding", range(min(len(leak["findings"]), 200)),
                        format_func=lambda i: f"#{i + 1} {leak['findings'][i]['kind']}")
    st.dataframe(present.examples_table(leak["findings"][pick]), hide_index=True,
                 width="stretch")
    if res.eval_dataset_id:
        st.info("These leaks are between two datasets: a re-split cannot fix them. Remove the "
                "listed queries from the training dataset, or evaluate on other queries.")
    else:
        st.markdown(
            "**Fix:** make a new split in which every group of identical, normalised-identical "
            "or near-duplicate queries lands in one split. The current split is kept, so "
            "results computed on it stay explainable."
        )
        if st.button("Re-split keeping near-duplicate groups together"):
            old = res.split_id
            summary = resplit_grouped(ws, chosen, res.threshold)
            after = _run()
            n = len(after.leakage["findings"])
            st.session_state["chk_resplit_msg"] = (
                f"New active split {summary.split_id} ({summary.method}); the old split {old} is "
                f"kept. Leakage findings now: {n}."
                + (" Some remain because rows carry their own 'split' field, which the split "
                   "keeps." if n else "")
            )
            st.rerun()

# Labels
st.subheader("Labels")
st.plotly_chart(present.label_figure(labels["distribution"]), width="stretch")
if not labels["issues"]:
    st.success(f"No conflicting labels, and every query in every split has both a relevant "
               f"(label >= {labels['rel_threshold']}) and an irrelevant candidate.")
for issue in labels["issues"]:
    show = st.warning if issue["kind"] in ("skew", "single_candidate", "only_positive") \
        else st.error
    show(esc(issue["message"]))
    if issue.get("examples"):
        with st.expander(f"{issue['kind']}: examples"):
            st.dataframe(issue["examples"], hide_index=True, width="stretch")

# Truncation
if trunc:
    st.subheader("Truncation")
    st.caption(
        f"Tokenizer of {esc(trunc['model'])}; {trunc['special_tokens']} special tokens per pair; "
        f"model limit {trunc['model_limit']} tokens; {trunc['distinct_queries']:,} distinct "
        f"queries and {trunc['distinct_documents']:,} distinct documents."
    )
    st.dataframe(present.truncation_table(trunc), hide_index=True, width="stretch")
    c1, c2 = st.columns(2)
    c1.plotly_chart(present.length_figure(trunc), width="stretch")
    if trunc["overall"]["truncated"]:
        c2.plotly_chart(present.lost_figure(trunc), width="stretch")
    cov = ", ".join(f"{k}: {v:.0%}" for k, v in trunc["coverage"].items())
    st.markdown(f"**Suggested max length: {trunc['suggested_max_length']}** (shortest standard "
                f"length covering 95% of pairs). Pairs that fit at each length: {cov}.")
    st.info(esc(trunc["remedy"]))
    if trunc["examples"]:
        with st.expander("Most-truncated pairs (relevant first): the document end never read"):
            st.dataframe(trunc["examples"], hide_index=True, width="stretch")

# Memory
if memory:
    st.subheader("GPU memory to train")
    if not memory.get("available"):
        st.info(esc(memory["message"]))
    else:
        (st.error if memory.get("fits") is False else st.info)(esc(memory["message"]))
        st.caption(
            f"{memory['n_params']:,} parameters, hidden {memory['hidden']}, {memory['layers']} "
            f"layers; batch {memory['batch_size']}, max length {memory['max_length']}, "
            f"{memory['precision']}, AdamW. An estimate: within about 20% of measured peaks "
            "for BERT-shaped models on an H100."
        )
        st.dataframe(present.memory_table(memory), hide_index=True)
