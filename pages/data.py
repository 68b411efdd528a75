"""Data: bring a JSONL file in, see what was accepted and rejected, split it, look at it."""

import hashlib

import plotly.express as px
import streamlit as st

from corpus_ui import corpus_section
from lib import datasets, ingest, split
from lib.diskspace import DiskFullError
from lib.workspace import UnsafePathError, resolve_workspace
from page_guard import require_entry

require_entry()

ws = resolve_workspace()

st.title("Data")
st.caption(
    "JSON Lines, one object per line: `query` (or `question`), `document` (or `text`, `passage`, "
    "`doc`, `document_text`), `label` (or `score`, `relevance`) as 0-4 or 0/1; optional "
    "`query_id`, `doc_id` and `split` (train/validation/test)."
)

# ---- Inputs --------------------------------------------------------------------------------------
st.subheader("Add a dataset")
tab_upload, tab_path = st.tabs(["Upload", "Server-side file"])
with tab_upload:
    uploaded = st.file_uploader("JSONL or .jsonl.gz", type=["jsonl", "gz", "json", "txt"])
with tab_path:
    server_path = st.text_input(
        "Path inside the workspace",
        placeholder="imports/my_pairs.jsonl",
        help=f"For files over the upload limit: copy them under {ws.root} and give the path "
        "relative to it.",
    )
name = st.text_input("Dataset name (optional)", placeholder="from the file name")
c1, c2, c3 = st.columns(3)
val_frac = c1.number_input("Validation fraction", 0.0, 0.9, 0.2, 0.05)
test_frac = c2.number_input("Test fraction", 0.0, 0.9, 0.0, 0.05)
seed = c3.number_input("Split seed", 0, 2**31 - 1, 13)
go = st.button("Ingest and split", type="primary", disabled=not (uploaded or server_path))

# ---- Action --------------------------------------------------------------------------------------
if go:
    try:
        if uploaded is not None:
            data = uploaded.getvalue()
            suffix = ".jsonl.gz" if data[:2] == b"\x1f\x8b" else ".jsonl"
            target = ws.uploads_dir / (hashlib.sha256(data).hexdigest()[:16] + suffix)
            target.write_bytes(data)
            default_name = uploaded.name
        else:
            target = ws.child(server_path)
            default_name = target.name
        bar = st.progress(0.0, text="Reading...")

        def show(done: int, total: int) -> None:
            bar.progress(min(done / total, 1.0) if total else 1.0, text=f"Reading {done:,} bytes")

        report = ingest.ingest_file(
            ws, target, name or None, source=default_name, name_hint=default_name, progress=show
        )
        bar.empty()
        st.session_state["last_report"] = report
        if not report.already_ingested:
            split.make_split(ws, report.dataset_id, val_frac, test_frac, int(seed))
        st.session_state["selected_dataset"] = report.dataset_id
    except ingest.NothingAcceptedError as exc:
        st.session_state["last_report"] = exc.report
        st.error(str(exc))
    except (ingest.IngestFormatError, UnsafePathError, FileNotFoundError, ValueError) as exc:
        st.error(str(exc))
    except OSError as exc:  # a full disk (DiskFullError says what to do), permissions
        st.error(str(exc) if isinstance(exc, DiskFullError)
                 else f"could not write to the workspace {ws.root}: {exc}")

# ---- Result: the last validation report ----------------------------------------------------
report = st.session_state.get("last_report")
if report is not None:
    st.subheader(f"Validation report: {report.name}")
    if report.already_ingested:
        st.info("This exact content was ingested before; the existing dataset is shown.")
    cols = st.columns(5)
    for col, (label, value) in zip(
        cols,
        [("Lines read", report.lines_read), ("Accepted", report.accepted),
         ("Duplicates", report.duplicates), ("Rejected", report.rejected),
         ("Blank", report.blank)],
        strict=True,
    ):
        col.metric(label, f"{value:,}")
    st.caption(
        f"{report.lines_read:,} lines = {report.accepted:,} accepted + {report.duplicates:,} "
        f"exact duplicates (stored once) + {report.rejected:,} rejected + {report.blank:,} blank. "
        f"Labels: {report.label_scale}."
    )
    if report.errors_total:
        st.dataframe(
            [{"line": e.line, "field": e.field, "reason": e.message} for e in report.errors],
            hide_index=True,
            width="stretch",
        )
        if report.errors_total > len(report.errors):
            st.caption(f"First {len(report.errors)} of {report.errors_total:,} shown.")

corpus_section(ws)

# ---- Datasets ------------------------------------------------------------------------------------
st.subheader("Datasets")
table = datasets.list_datasets(ws)
if table.empty:
    st.info("No datasets yet.")
    st.stop()
st.dataframe(
    table[["name", "dataset_id", "accepted", "rejected", "duplicates", "n_queries", "label_scale",
           "created_at"]],
    hide_index=True,
    width="stretch",
)
ids = list(table["dataset_id"])
names = dict(zip(table["dataset_id"], table["name"], strict=True))
default = st.session_state.get("selected_dataset")
chosen = st.selectbox(
    "Dataset", ids, index=ids.index(default) if default in ids else 0,
    format_func=lambda i: f"{names[i]} ({i})",
)
ds = datasets.get_dataset(ws, chosen)

errors = datasets.ingest_errors(ws, chosen)
if len(errors):
    st.download_button(
        f"Download the {len(errors):,} rejected lines (JSONL)",
        errors.to_json(orient="records", lines=True, force_ascii=False),
        file_name=f"{ds.name}.rejected.jsonl",
        mime="application/jsonl",
    )

stats = datasets.pair_stats(ws, chosen)
active = table.loc[table["dataset_id"] == chosen, "active_split"].iloc[0]
if active:
    from lib import db

    with db.connect(ws) as con:
        counts = split.split_counts(con, active)
    st.markdown(f"**Active split** `{active}`")
    st.dataframe(
        [
            {"split": sp, "queries": c["queries"], "pairs": c["pairs"],
             **{f"label {k}": v for k, v in c["labels"].items()}}
            for sp, c in counts.items()
        ],
        hide_index=True,
    )
with st.expander("Re-split this dataset"):
    r1, r2, r3 = st.columns(3)
    v = r1.number_input("Validation", 0.0, 0.9, 0.2, 0.05, key="rs_val")
    t = r2.number_input("Test", 0.0, 0.9, 0.0, 0.05, key="rs_test")
    s = r3.number_input("Seed", 0, 2**31 - 1, 13, key="rs_seed")
    if st.button("Make this the active split"):
        summary = split.make_split(ws, chosen, v, t, int(s))
        st.success(f"Active split is now {summary.split_id}; earlier splits are kept.")
        st.rerun()

c1, c2 = st.columns(2)
fig = px.histogram(
    stats, x="label", color="split", barmode="group", title="Label distribution per split"
)
fig.update_xaxes(dtick=1)
c1.plotly_chart(fig, width="stretch")
melted = stats.melt(
    id_vars=["split"], value_vars=["query_words", "document_words"], var_name="text",
    value_name="words",
)
fig = px.histogram(melted, x="words", color="text", nbins=60, title="Length in words",
                   barmode="overlay", opacity=0.7)
c2.plotly_chart(fig, width="stretch")

with st.expander("Delete this dataset"):
    st.warning(f"Deletes {ds.name}: {ds.accepted:,} pairs, its splits and its error log.")
    confirm = st.text_input("Type the dataset name to confirm", key="confirm_delete")
    if st.button("Delete", disabled=confirm != ds.name):
        datasets.delete_dataset(ws, chosen)
        st.session_state.pop("selected_dataset", None)
        st.session_state.pop("last_report", None)
        st.rerun()
