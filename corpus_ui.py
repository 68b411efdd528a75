"""The Data page's corpus section (kept here so the shared Data page gains one call only)."""

from __future__ import annotations

import hashlib

import streamlit as st

from lib import corpora, datasets, first_stage
from lib.textsafe import escape_markdown as esc
from lib.workspace import UnsafePathError, Workspace


def corpus_section(ws: Workspace) -> None:
    """Add a corpus (upload, server-side path, or a dataset's documents); list the corpora."""
    st.subheader("Corpora")
    st.caption("A document collection to mine hard negatives from (Review page) and to retrieve "
               "top-k candidates from (Evaluate, CLI `--corpus`): JSON Lines with `doc_id` and "
               "`text`, optional `title`; or the documents of a dataset.")
    # keyed and tracked: an upload inside reruns the page, and an untracked expander whose place
    # in the page shifted (the Ingest run above adds a progress slot) came back collapsed
    with st.expander("Add a corpus", key="corpus_adder", on_change="rerun"):
        up = st.file_uploader("Corpus JSONL or .jsonl.gz", type=["jsonl", "gz", "json", "txt"],
                              key="corpus_upload")
        path = st.text_input("...or a path inside the workspace", key="corpus_path",
                             placeholder="imports/corpus.jsonl")
        table = datasets.list_datasets(ws)
        from_ds = st.selectbox("...or the documents of a dataset",
                               ["", *table["name"]] if not table.empty else [""],
                               key="corpus_from_ds")
        name = st.text_input("Corpus name (optional)", key="corpus_name")
        if st.button("Add corpus", key="corpus_add", disabled=not (up or path or from_ds)):
            try:
                if from_ds:
                    rep = corpora.corpus_from_dataset(ws, from_ds, name or None)
                else:
                    if up is not None:
                        data = up.getvalue()
                        target = ws.uploads_dir / (hashlib.sha256(data).hexdigest()[:16]
                                                   + (".jsonl.gz" if data[:2] == b"\x1f\x8b"
                                                      else ".jsonl"))
                        target.write_bytes(data)
                        fallback = up.name.split(".")[0]
                    else:
                        target = ws.child(path)
                        fallback = None
                    bar = st.progress(0.0, text="Reading...")
                    rep = corpora.add_corpus(ws, target, name or fallback, progress=lambda d, t:
                                             bar.progress(min(d / t, 1.0) if t else 1.0))
                    bar.empty()
                corpus = corpora.get_corpus(ws, rep.corpus_id)
                bar = st.progress(0.0, text="Building the BM25 index...")
                first_stage.load_bm25(ws, corpus, lambda d, t: bar.progress(
                    min(d / t, 1.0) if t else 1.0, text=f"BM25: {d:,} of {t:,} documents"))
                bar.empty()
                st.success(f"Corpus {esc(rep.name)}: {rep.lines_read:,} lines = {rep.accepted:,} "
                           f"accepted + {rep.rejected:,} rejected + {rep.blank:,} blank.")
                if rep.errors:
                    st.dataframe([{"line": e.line, "field": e.field, "reason": e.message}
                                  for e in rep.errors], hide_index=True)
            except (ValueError, LookupError, FileNotFoundError, UnsafePathError) as exc:
                st.error(esc(exc))
    listing = corpora.list_corpora(ws)
    if not listing.empty:
        st.dataframe(listing[["name", "corpus_id", "n_docs", "rejected", "source",
                              "created_at"]], hide_index=True, width="stretch")
