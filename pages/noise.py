"""Noise: pairs their neighbours or out-of-fold models disagree with, reviewed and fixed in a
new version."""

import streamlit as st

from decision_ui import decision_buttons, pick_pairs
from lib import datasets, noise, noise_dynamics, relabel
from lib.models import app_model_spec
from lib.textsafe import escape_markdown as esc
from lib.training import runfiles
from lib.workspace import resolve_workspace
from page_guard import require_entry

require_entry()

ws = resolve_workspace()
st.title("Label noise")
st.caption("Two kinds of evidence, each read inside a query: its NEIGHBOURS (a pair labelled "
           "not relevant whose document is like the query's other relevant documents, or a "
           "relevant one that looks like the non-relevant ones) and out-of-fold MODELS "
           "(cross-encoders trained on the other folds rank a pair they never saw against its "
           "label). Flagged pairs are listed strongest first. Flags are suggestions: about half "
           "of automatic flags turn out to be right labels. Decisions make a NEW dataset "
           "version with a change log; the original stays as it is.")

# ---- Find ----------------------------------------------------------------------------------------
all_ds = datasets.list_datasets(ws)
with st.expander("Find likely label errors", expanded=False):
    if all_ds.empty:
        st.info("No dataset yet: add one on the Data page.")
    else:
        c1, c2, c3, c4 = st.columns(4)
        ds_name = c1.selectbox("Dataset (its training queries)", list(all_ds["name"]),
                               key="noise_ds")
        folds = c2.number_input("Folds", 2, 10, 2, key="noise_folds")
        quick = c3.toggle("Quick (800 pairs, max length 128)", value=True, key="noise_quick")
        model = c4.text_input("Base model", value="default", key="noise_model")
        evidence = st.selectbox(
            "Evidence", list(noise.EVIDENCE), key="noise_evidence",
            format_func={"neighbours": "neighbours (seconds, no training)",
                         "both": "neighbours + out-of-fold models",
                         "models": "out-of-fold models only"}.get,
            help="Neighbours: the documents are embedded by the bundled zero-shot bi-encoder "
                 "and each pair is compared with its query's other labelled documents. On the "
                 "demo with 5% planted flips it ranked them far better than the models "
                 "(bench/noise.py). Folds, quick, base model and teacher apply to the models.")
        teacher = st.selectbox(
            "Fold models distil first", ["none", "biencoder"], key="noise_teacher",
            help="biencoder: each fold model first learns the zero-shot bi-encoder's scores on "
                 "its own training folds' pairs (the Distil recipe), then their labels. Other "
                 "teachers: `reranker-studio noise --teacher`.")
        if st.button("Start", type="primary", key="noise_go"):
            try:
                job = noise.create_job(ws, ds_name, noise.NoiseOptions(
                    folds=int(folds), quick=bool(quick), base_model=app_model_spec(model, ws),
                    distill_teacher=None if teacher == "none" else teacher,
                    evidence=evidence))
                st.session_state["noise_job"] = job
                st.success(f"Started noise job {esc(job)}.")
            except (ValueError, LookupError, FileNotFoundError) as exc:
                st.error(esc(exc))

with st.expander("Flags from a training run's dynamics", expanded=False):
    st.caption("A run with `dynamics_max_pairs` > 0 scored a sample of its training pairs at "
               "each validation. Pairs whose given label it kept giving low probability, "
               "steadily (low confidence, low variability: 'hard to learn'), are flagged; "
               "optionally merged with an out-of-fold job's flags into one ranked list.")
    dyn_runs = noise_dynamics.runs_with_dynamics(ws)
    if not dyn_runs:
        st.info("No run has recorded training dynamics yet: set 'Training dynamics pairs' "
                "(e.g. 1000) under More settings on the Train page; it is off by default (on "
                "a CPU it costs about one validation pass per validation).")
    else:
        d1, d2 = st.columns(2)
        dyn_run = d1.selectbox("Run", dyn_runs, key="noise_dyn_run")
        oof_jobs = noise.list_jobs(ws)
        oof_jobs = oof_jobs[(oof_jobs["status"] == runfiles.FINISHED)
                            & ~oof_jobs["options"].str.contains('"source": "dynamics"')]
        merge = d2.selectbox("Merge with out-of-fold job", ["(none)", *oof_jobs["job_id"]],
                             key="noise_dyn_merge")
        if st.button("Flag from dynamics", key="noise_dyn_go"):
            try:
                job = noise_dynamics.create_job_from_run(
                    ws, dyn_run, merge_job=None if merge == "(none)" else merge)
                st.session_state["noise_job"] = job
                st.success(f"Noise job {esc(job)} made from run {esc(dyn_run)}.")
            except (ValueError, LookupError, FileNotFoundError) as exc:
                st.error(esc(exc))

jobs_table = noise.list_jobs(ws)
if jobs_table.empty:
    st.info("No noise job yet: start one above or with `reranker-studio noise DATASET`.")
    st.stop()
ids = list(jobs_table["job_id"])
default = st.session_state.get("noise_job")
info = jobs_table.set_index("job_id")
job_id = st.selectbox("Noise job", ids, index=ids.index(default) if default in ids else 0,
                      format_func=lambda j: f"{j} ({info.loc[j, 'dataset']}, "
                      f"{info.loc[j, 'status']})", key="noise_select")
st.session_state["noise_job"] = job_id
dataset_name = info.loc[job_id, "dataset"]


@st.fragment(run_every="2s" if info.loc[job_id, "status"] in
             (runfiles.QUEUED, *runfiles.ACTIVE) else None)
def job_progress() -> None:
    status = noise.job_status(ws, job_id)
    state = status.get("state")
    if state in runfiles.ACTIVE or state == runfiles.QUEUED:
        folds_n = int(status.get("folds") or 1)
        done = max(0, int(status.get("fold") or 1) - 1) / folds_n
        st.progress(min(done, 1.0), text=esc(status.get("detail") or state))
        if state in runfiles.ACTIVE and st.button("Stop", key="noise_stop"):
            noise.request_stop(ws, job_id)
            st.rerun(scope="fragment")
    elif state == runfiles.FINISHED and info.loc[job_id, "status"] != runfiles.FINISHED:
        st.rerun()  # ingested just now: show the flags
    elif state in (runfiles.FAILED, runfiles.STOPPED):
        st.warning(f"Job {esc(state)}: {esc(status.get('error') or status.get('note') or '')}")


job_progress()
if info.loc[job_id, "status"] != runfiles.FINISHED:
    st.stop()

# ---- Review --------------------------------------------------------------------------------------
table = noise.flags_table(ws, job_id)
c1, c2, c3 = st.columns(3)
c1.metric("Pairs scored", f"{int(info.loc[job_id, 'pairs_scored'] or 0):,}")
c2.metric("Flagged", f"{len(table):,}")
c3.metric("Decided", f"{int((table['decision'] != 'pending').sum()):,}")
carto = noise_dynamics.cartography_of(ws, job_id)
if carto is not None and not carto.empty:
    st.plotly_chart(noise_dynamics.scatter(carto), width="stretch", key="noise_scatter")
    st.caption("Each recorded training pair of the run: bottom left (low confidence, low "
               "variability) is 'hard to learn', where mislabelled pairs gather; top left is "
               "easy; the right-hand side is ambiguous. For pairs only the run scored, "
               "oof_score is the run's mean probability of relevance (not out of fold).")
keys = pick_pairs(table, ["flag_rank", "query_id", "doc_id", "label", "source", "oof_score",
                          "neighbour_score", "rank_in_query", "strength",
                          *(["confidence", "variability"] if "confidence" in table else []),
                          "reason", "decision", "new_label", "query", "document"],
                  key="noise", noun="flagged", order="strongest")
b1, b2, b3, b4, b5 = st.columns(5)
new_label = b2.number_input("New label", 0, 4, 0, key="noise_new_label")


def _apply(picked: list[tuple[str, str]], decision: str) -> str:
    label = int(st.session_state.get("noise_new_label", new_label))
    n = relabel.decide(ws, job_id, picked, decision, label if decision == "relabel" else None)
    return f"{n} pairs: {decision}."


decision_buttons([(b1, "Keep", "keep", "noise_keep"), (b3, "Relabel", "relabel", "noise_relabel"),
                  (b4, "Drop", "drop", "noise_drop"),
                  (b5, "Ambiguous", "ambiguous", "noise_ambiguous")],
                 keys, _apply, key="noise")

st.subheader("One query")
qids = list(dict.fromkeys(table["query_id"]))
if qids:
    qtext = dict(zip(table["query_id"], table["query"], strict=True))
    qid = st.selectbox("Query", qids, key="noise_query",
                       format_func=lambda q: f"{q}: {qtext[q][:120]}")
    st.markdown(f"**{esc(qtext[qid])}** - every scored pair of this query, in the order of the "
                "fold models (or, without them, of the neighbour score)")
    st.dataframe(noise.query_pairs(ws, job_id, qid), hide_index=True, width="stretch")

# ---- Apply ---------------------------------------------------------------------------------------
st.subheader("Make the cleaned version")
decided = relabel.job_decisions(ws, job_id)
st.caption(f"{len(decided)} decisions recorded. Applying them copies {esc(dataset_name)} into a "
           "new version (same split) with the changes and a change log.")
version_name = st.text_input("New version name (optional)", key="noise_version_name")
if st.button("Create cleaned version", key="noise_apply", disabled=decided.empty):
    try:
        rep = relabel.relabel_from_job(ws, job_id, name=version_name.strip() or None)
        st.session_state["noise_version"] = rep.name
        st.success(f"New dataset {esc(rep.name)}: {rep.relabelled} relabelled, {rep.dropped} "
                   f"dropped, {rep.ambiguous} marked ambiguous.")
    except (ValueError, LookupError) as exc:
        st.error(esc(exc))

version = st.session_state.get("noise_version")
if version:
    st.markdown(f"**Change log of {esc(version)}**")
    st.dataframe(relabel.change_log(ws, version), hide_index=True, width="stretch")
    source = relabel.source_run(ws, dataset_name, job_id)
    if source is None:
        st.info(f"No finished run on {esc(dataset_name)} to copy a config from: train the new "
                "version on the Train page.")
    elif st.button(f"Retrain on {version} with the config of {source}", key="noise_retrain"):
        try:
            run_id = relabel.retrain(ws, version, source)
            st.success(f"Run {esc(run_id)} queued on {esc(version)}: follow it on the Train "
                       "page, compare it with the original on Experiments.")
        except (ValueError, LookupError, FileNotFoundError) as exc:
            st.error(esc(exc))
