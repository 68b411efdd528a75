"""Home: what the steps are and what is in this workspace now."""

import streamlit as st

from lib.datasets import list_datasets
from lib.workspace import resolve_workspace
from page_guard import require_entry

require_entry()

ws = resolve_workspace()

st.title("Reranker Studio")
st.write(
    "Adapt a cross-encoder reranker to your own domain: bring labelled "
    "`(query, document, label)` pairs, check them, fine-tune, and prove on held-out queries that "
    "the fine-tuned model beats its base."
)
st.markdown(
    """
1. **Data**: upload JSONL (or a server-side file), validated line by line, split 80/20 by query.
2. **Checks**: query leakage between splits, label conflicts and noise, truncation at max length.
3. **Train**: fine-tune in a background process; watch loss and validation NDCG@10 live.
4. **Evaluate**: base vs fine-tuned with significance tests, per-query wins and losses, a report.
5. **Use**: score a query against documents; the checkpoint loads with plain
   `CrossEncoder(path).predict(...)`.
"""
)

st.subheader("This workspace")
st.caption(f"`{ws.root}`")
df = list_datasets(ws)
c1, c2, c3 = st.columns(3)
c1.metric("Datasets", len(df))
c2.metric("Pairs", int(df["accepted"].sum()) if len(df) else 0)
c3.metric("Queries", int(df["n_queries"].sum()) if len(df) else 0)
if df.empty:
    st.info("No datasets yet. Open **Data** to upload one.")
else:
    st.dataframe(
        df[["name", "accepted", "rejected", "n_queries", "label_scale", "active_split"]],
        hide_index=True,
        width="stretch",
    )
