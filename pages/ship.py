"""Ship: export a trained reranker to ONNX / OpenVINO, see each export's proof side by side,
pick the fastest within a quality tolerance, download it as a zip with a serving snippet."""

import streamlit as st

from lib import datasets
from lib.evaluation.rankers import list_checkpoints
from lib.export import FORMATS, MissingExtraError
from lib.export_proof import DEFAULT_MIN_SPEARMAN, DEFAULT_TOLERANCE, recommend
from lib.ship import (
    card_section,
    export_and_prove,
    list_proofs,
    proofs_table,
    resolve_target,
    serving_snippet,
    zip_export,
)
from lib.textsafe import escape_markdown as esc
from lib.workspace import resolve_workspace
from page_guard import require_entry

require_entry()
ws = resolve_workspace()

st.title("Ship")
st.caption("Export a reranker for CPU serving and prove it ranks like the original: NDCG@10 and "
           "MRR@10 with a paired test, score agreement, throughput and latency, measured in one "
           "process on this machine. The int8 OpenVINO model is calibrated on the run's own "
           "training pairs.")

OTHER = "other (model folder in the workspace)"
runs = list_checkpoints(ws)
labels = {c.run_id: c.label for c in runs}
choice = st.selectbox("Model", [*labels, OTHER], format_func=lambda r: labels.get(r, r))
dataset = None
try:
    if choice == OTHER:
        folder = st.text_input("Model folder (relative to the workspace)")
        table = datasets.list_datasets(ws)
        if not folder.strip() or table.empty:
            st.info("Type a model folder inside the workspace; a dataset is needed for the proof.")
            st.stop()
        names = dict(zip(table["dataset_id"], table["name"], strict=True))
        dataset = st.selectbox("Prove and calibrate on dataset", list(names),
                               format_func=lambda i: f"{names[i]} ({i})")
        target = resolve_target(ws, folder, allow_outside_workspace=False)
    else:
        target = resolve_target(ws, choice)
except ValueError as exc:
    st.error(esc(exc))
    st.stop()

tolerance = st.number_input("Quality tolerance: NDCG@10 an export may lose", min_value=0.0,
                            max_value=1.0, value=DEFAULT_TOLERANCE, step=0.001, format="%.3f")
min_spearman = st.number_input(
    "Minimum Spearman correlation with the original's scores", min_value=0.0, max_value=1.0,
    value=DEFAULT_MIN_SPEARMAN, step=0.005, format="%.3f",
    help="Equal NDCG@10 on a few queries can hide a model that orders pairs differently.")

# ---- Action --------------------------------------------------------------------------------------
with st.form("export"):
    fmts = st.multiselect("Formats to export", FORMATS, default=["onnx-int8", "openvino-int8"])
    go = st.form_submit_button("Export and prove")
if go:
    for fmt in fmts:
        with st.spinner(f"exporting {fmt} and scoring the proof pairs with both models..."):
            try:
                export_and_prove(ws, target, fmt, dataset=dataset)
            except MissingExtraError as exc:
                st.error(esc(exc))
                break
            except (ValueError, RuntimeError) as exc:
                st.error(f"{fmt}: {esc(exc)}")

# ---- Result --------------------------------------------------------------------------------------
proofs = list_proofs(target)
if not proofs:
    st.info(f"No exports of {esc(target.label)} yet.")
    st.stop()
pick = recommend(proofs, tolerance, min_spearman)
st.subheader("Exports side by side")
st.dataframe(proofs_table(proofs, tolerance, min_spearman), hide_index=True)
first = proofs[0]
st.caption(f"Proof pairs: {esc(first['split'])} ({first['n_queries']} queries, "
           f"{first['n_pairs']} pairs). Speed: pairs/s at batch {first['batch_size']}; latency "
           "of one query with 100 candidates. Each row re-measured the original beside its "
           "export.")
if pick:
    st.success(f"Recommended: **{esc(pick['format'])}**, {pick['speedup']:.2f}x the PyTorch "
               f"original's pairs/s with NDCG@10 {pick['ndcg']['delta']:+.4f} (tolerance "
               f"{tolerance:.3f}), Spearman {pick['spearman']:.3f}.")
else:
    st.warning("No export is faster than the original, within the NDCG@10 tolerance and at the "
               "minimum Spearman: see 'not recommended because' in the table.")

by_format = {p["format"]: p for p in proofs}
default = list(by_format).index(pick["format"]) if pick else 0
fmt = st.selectbox("Download", list(by_format), index=default)
proof = by_format[fmt]
st.download_button(f"Download {fmt} (zip)", data=zip_export(proof["path"]),
                   file_name=f"{target.label.replace(':', '-')}-{fmt}.zip",
                   mime="application/zip")
with st.expander("Serving snippet"):
    st.code(serving_snippet(fmt), language="markdown")
with st.expander("Model card section (in the export's README.md)"):
    st.code(card_section(proof, target.label), language="markdown")
