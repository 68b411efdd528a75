"""Review: mine hard negatives from a corpus, then accept, drop or mark them relevant."""

import streamlit as st

from decision_ui import decision_buttons, pick_pairs
from lib import corpora, datasets, mining, review
from lib.models import app_model_spec
from lib.textsafe import escape_markdown as esc
from lib.workspace import resolve_workspace
from page_guard import require_entry

require_entry()

ws = resolve_workspace()
st.title("Review")
st.caption("Mined negatives can be false negatives: relevant documents nobody judged. The most "
           "suspicious come first (a guard score, else a retriever score close to or above the "
           "query's positive). Decisions change the mined version only; its parent stays as is.")

# ---- Mine ----------------------------------------------------------------------------------------
all_ds = datasets.list_datasets(ws)
corpus_table = corpora.list_corpora(ws)
with st.expander("Mine hard negatives", expanded=False):
    if all_ds.empty or corpus_table.empty:
        st.info("Needs a dataset and a corpus: add a corpus on the Data page.")
    else:
        c1, c2, c3 = st.columns(3)
        ds_name = c1.selectbox("Dataset (its training queries)", list(all_ds["name"]),
                               key="mine_ds")
        corpus_name = c2.selectbox("Corpus", list(corpus_table["name"]), key="mine_corpus")
        retriever = c3.selectbox("Retriever", ["bm25", "biencoder"], key="mine_retriever")
        c1, c2, c3, c4 = st.columns(4)
        n_neg = c1.number_input("Negatives per query", 1, 100, 5)
        r_min = c2.number_input("Skip top ranks", 0, 1000, 0)
        r_max = c3.number_input("Look up to rank", 1, 10000, 50)
        margin = c4.number_input("Margin below the positive (relative)", 0.0, 0.99, 0.05, 0.01)
        c1, c2, c3, c4 = st.columns(4)
        guard = c1.text_input("Guard cross-encoder (optional)", placeholder="checkpoint:RUN_ID")
        max_score = c2.number_input("Guard: drop at score >=", value=0.9)
        sampling = c3.selectbox("Sampling", mining.SAMPLING)
        share = c4.number_input("Share of random negatives", 0.0, 1.0, 0.0, 0.1)
        if st.button("Mine", type="primary", key="mine_go"):
            bar = st.progress(0.0, text="Retrieving...")
            try:
                rep = mining.mine(ws, ds_name, mining.MineOptions(
                    corpus=corpus_name, retriever=retriever, negatives=int(n_neg),
                    range_min=int(r_min), range_max=int(r_max), margin=float(margin),
                    guard=app_model_spec(guard, ws) if guard.strip() else None,
                    max_score=float(max_score) if guard.strip() else None,
                    sampling=sampling, random_share=float(share)),
                    progress=lambda d, t: bar.progress(min(d / t, 1.0) if t else 1.0,
                                                       text=f"{d:,} of {t:,}"))
                st.session_state["review_version"] = rep.name
                st.success(f"{rep.mined:,} negatives mined for {rep.queries:,} training queries "
                           f"into the new dataset {esc(rep.name)}.")
            except (ValueError, LookupError, FileNotFoundError) as exc:
                st.error(esc(exc))
            bar.empty()

# ---- Review --------------------------------------------------------------------------------------
versions = review.mined_versions(ws)
if versions.empty:
    st.info("No mined dataset yet: mine one above or with `reranker-studio mine`.")
    st.stop()
names = list(versions["name"])
default = st.session_state.get("review_version")
version = st.selectbox(
    "Mined dataset", names, index=names.index(default) if default in names else 0,
    format_func=lambda n: f"{n} (from {versions.set_index('name').loc[n, 'parent']}, corpus "
    f"{versions.set_index('name').loc[n, 'corpus']})", key="review_select")
st.session_state["review_version"] = version

counts = review.review_counts(ws, version)
labels = [("Mined", "mined"), ("Skipped: labelled", "skipped_labelled"),
          ("Filtered: margin", "dropped_by_margin"), ("Vetoed: guard", "dropped_by_guard"),
          ("Pending", "pending"), ("Accepted", "accepted"), ("Dropped", "dropped"),
          ("Relevant", "relevant")]
for col, (label, key) in zip(st.columns(len(labels)), labels, strict=True):
    col.metric(label, f"{counts[key]:,}")

table = review.review_table(ws, version)
keys = pick_pairs(table, ["query_id", "query", "doc_id", "rank", "score", "positive_score",
                          "guard_score", "suspicion", "decision", "document"],
                  key="review", noun="mined", order="most suspicious")
decision_buttons(
    list(zip(st.columns(4), ["Accept", "Drop", "Mark relevant", "Reset"],
             ["accepted", "dropped", "relevant", "pending"],
             ["review_accept", "review_drop", "review_relevant", "review_reset"], strict=True)),
    keys, lambda k, d: f"{review.decide(ws, version, k, d)} pairs set to {d}.", key="review")

st.subheader("One query")
qids = list(dict.fromkeys(table["query_id"]))
qtext = dict(zip(table["query_id"], table["query"], strict=True))
qid = st.selectbox("Query", qids, key="review_query", format_func=lambda q: f"{q}: {qtext[q]}")
if qid:
    st.markdown("**Positives**")
    st.dataframe(review.positives(ws, version, qid), hide_index=True, width="stretch")
    st.markdown("**Mined negatives**")
    st.dataframe(table[table["query_id"] == qid][["doc_id", "rank", "score", "positive_score",
                                                  "guard_score", "decision", "document"]],
                 hide_index=True, width="stretch")
