"""Playground: type a query and a few documents (or pick a query from a dataset) and see how two
models rank them, side by side."""

import pandas as pd
import streamlit as st

from lib import datasets
from lib.evaluation.playground import rank_documents, split_documents
from lib.evaluation.rankers import UNTRAINED_HEAD_NOTE, list_checkpoints, list_export_specs
from lib.split import load_split_pairs
from lib.textsafe import escape_markdown as esc
from lib.workspace import UnsafePathError, resolve_workspace
from page_guard import require_entry

require_entry()

ws = resolve_workspace()

st.title("Playground")
st.caption("One query, a few documents, two rankers side by side. Rank 1 is the best. Scores of "
           "different models are on different scales: compare the orders, not the numbers.")

# ---- Inputs --------------------------------------------------------------------------------------
EXAMPLE_QUERY = "what is the effect of compressibility on boundary layer transition"
EXAMPLE_DOCS = (
    "experimental investigation of the effect of mach number on boundary layer transition on a "
    "flat plate at supersonic speeds.\n\n"
    "a simple method for computing the lift of a slender wing at low speed.\n\n"
    "compressibility delays transition: stability theory of the laminar boundary layer in a "
    "compressible fluid.\n\n"
    "heat transfer to a cylinder in hypersonic flow."
)
source = st.radio("Documents", ["Type them", "Pick a query from a dataset"], horizontal=True)
query, docs, labels = "", [], None
if source == "Type them":
    query = st.text_input("Query", EXAMPLE_QUERY)
    text = st.text_area("Documents (separate them with a blank line)", EXAMPLE_DOCS, height=220)
    docs = split_documents(text)
else:
    table = datasets.list_datasets(ws)
    if table.empty:
        st.info("No datasets yet.")
        st.stop()
    ids = list(table["dataset_id"])
    names = dict(zip(table["dataset_id"], table["name"], strict=True))
    c1, c2 = st.columns([1, 2])
    dataset_id = c1.selectbox("Dataset", ids, format_func=lambda i: f"{names[i]} ({i})")
    try:
        pairs = load_split_pairs(ws, dataset_id)
    except ValueError as exc:
        st.error(esc(exc))
        st.stop()
    queries = pairs.drop_duplicates("query_id")[["query_id", "query", "split"]]
    q_text = dict(zip(queries["query_id"], queries["query"], strict=True))
    q_split = dict(zip(queries["query_id"], queries["split"], strict=True))
    qid = c2.selectbox("Query", list(queries["query_id"]),
                       format_func=lambda q: f"{q} [{q_split[q]}]: {q_text[q][:90]}")
    chosen = pairs[pairs["query_id"] == qid]
    query = str(chosen["query"].iloc[0])
    docs = list(chosen["document"].astype(str))
    labels = list(chosen["label"])
    st.caption(f"**{esc(query)}**: {len(docs)} labelled candidates (labels are shown beside "
               "the ranks).")

checkpoints = list_checkpoints(ws)
options = ([f"checkpoint:{c.run_id}" for c in checkpoints]
           + [f"fuse:checkpoint:{c.run_id}+{b}" for c in checkpoints for b in ("bm25", "biencoder")]
           + list_export_specs(ws)
           + ["default", "bm25", "biencoder"])
OTHER = "other (hub id or path)"  # a fusion spec works here too: fuse:A+B[@weight]
c1, c2 = st.columns(2)
left = c1.selectbox("Ranker A", [*options, OTHER], index=0)
if left == OTHER:
    left = c1.text_input("Ranker A: hub id or path", key="left_other",
                         help="or a fusion: fuse:A+B, '@0.3' fixes the weight on A").strip()
right_options = [o for o in [*options, OTHER] if o != left]
right = c2.selectbox("Ranker B", right_options,
                     index=right_options.index("bm25") if "bm25" in right_options else 0)
if right == OTHER:
    right = c2.text_input("Ranker B: hub id or path", key="right_other",
                          help="or a fusion: fuse:A+B, '@0.3' fixes the weight on A").strip()
if "default" in (left, right):
    st.warning(UNTRAINED_HEAD_NOTE)
go = st.button("Rank", type="primary", disabled=not (query.strip() and docs and left and right))

# ---- Action and result ---------------------------------------------------------------------------
if go:
    try:
        with st.spinner("Scoring..."):
            res = rank_documents(ws, query, docs, [left, right],
                                 allow_outside_workspace=False)
        st.session_state["playground"] = (res, labels)
    except (ValueError, LookupError, FileNotFoundError, UnsafePathError, RuntimeError) as exc:
        st.error(esc(exc))
result = st.session_state.get("playground")
if result is not None:
    res, labels_shown = result
    names = [r.name for r in res.rankers]
    tbl = res.table.copy()
    if labels_shown is not None and len(labels_shown) == len(tbl):
        tbl.insert(1, "label", [labels_shown[int(d[1:]) - 1] for d in tbl["doc"]])
    a, b = names[0], names[1]
    for r in res.rankers:
        if r.kind == "fusion":  # which weight: fixed, saved with the model, or the 0.5 default
            st.text(f"{r.name}: {res.stats[r.name].note}")
    tbl["rank change"] = tbl[f"{b} rank"] - tbl[f"{a} rank"]
    st.markdown(f"**Ranked by {esc(a)}** (rank change > 0: {esc(a)} puts the document higher "
                f"than {esc(b)})")
    cols = ["doc", *(["label"] if "label" in tbl else []), f"{a} rank", f"{a} score",
            f"{b} rank", f"{b} score", "rank change", "document"]
    st.dataframe(tbl[cols], hide_index=True, width="stretch", column_config={
        f"{a} score": st.column_config.NumberColumn(format="%.4f"),
        f"{b} score": st.column_config.NumberColumn(format="%.4f"),
        "document": st.column_config.TextColumn(width="large")})
    left_col, right_col = st.columns(2)
    for col, name in ((left_col, a), (right_col, b)):
        order = tbl.sort_values(f"{name} rank")
        col.markdown(f"**{esc(name)}**")
        col.dataframe(pd.DataFrame({
            "rank": order[f"{name} rank"], "score": order[f"{name} score"],
            **({"label": order["label"]} if "label" in order else {}),
            "document": order["document"].str.slice(0, 160)}), hide_index=True)
