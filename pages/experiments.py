"""Experiments: every run side by side, overlaid curves, config diffs, and hyperparameter sweeps."""

import json

import pandas as pd
import plotly.express as px
import streamlit as st

from lib import datasets
from lib.experiments import sweeps
from lib.experiments.grid import QUICK_LABEL
from lib.experiments.table import (
    best_run,
    config_diff,
    curves,
    retrain_pairs,
    run_configs,
    runs_table,
)
from lib.models import app_model_spec
from lib.textsafe import escape_markdown as esc
from lib.training import jobs
from lib.training.config import LOSSES, PRESETS, ConfigError, build_config
from lib.workspace import resolve_workspace
from page_guard import require_entry

require_entry()

ws = resolve_workspace()

st.title("Experiments")
st.caption(
    "All training runs with their settings and validation NDCG@10 / MRR@10 (the best checkpoint "
    "of each, on that run's validation queries). Quick what-if runs train on fewer pairs and "
    "shorter inputs: they rank settings, their numbers are not final."
)

# ---- Sweep: inputs ---
ds_table = datasets.list_datasets(ws)
all_runs = runs_table(ws)  # built once per render: the sweep form and the retrain pairing use it
with st.expander("New sweep", expanded=ds_table.empty is False and all_runs.empty):
    if ds_table.empty:
        st.info("No datasets yet. Open **Data** to upload one.")
    else:
        names = dict(zip(ds_table["dataset_id"], ds_table["name"], strict=True))
        c1, c2 = st.columns(2)
        dataset = c1.selectbox("Dataset (its active split)", list(names), format_func=names.get)
        preset_name = c2.selectbox("Base settings", list(PRESETS),
                                   index=list(PRESETS).index(jobs.default_sweep_preset()))
        base_model = st.text_input("Base model", "default",
                                   help="'default' (bundled, offline), a local path or a hub id")
        g1, g2, g3 = st.columns(3)
        lrs = g1.multiselect("Learning rate", [1e-5, 2e-5, 3e-5, 5e-5, 1e-4], [2e-5, 5e-5])
        epochs = g2.multiselect("Epochs", [1, 2, 3, 4], [1, 2])
        batches = g3.multiselect("Batch size", [4, 8, 16, 32, 64], [])
        g4, g5 = st.columns(2)
        lengths = g4.multiselect("Max length", [64, 128, 256, 384, 512], [])
        losses = g5.multiselect("Loss", list(LOSSES), [])
        quick = st.checkbox("Quick what-if", value=True, help=QUICK_LABEL)
        grid = {k: v for k, v in {"learning_rate": lrs, "epochs": epochs, "batch_size": batches,
                                  "max_length": lengths, "loss": losses}.items() if v}
        plan = None
        try:
            base = build_config({**PRESETS[preset_name],
                                 "base_model": app_model_spec(base_model, ws)},
                                source="base settings")
            if grid:
                with st.spinner("Estimating from measured throughput on this machine..."):
                    plan = sweeps.plan_sweep(ws, dataset, base, grid, quick)
        except (ConfigError, ValueError, LookupError) as exc:
            st.error(esc(exc))
        if plan is not None:
            st.markdown(
                f"**{plan.n_runs} runs**, estimated **{plan.total_seconds / 60:.1f} min** one "
                f"after another on this machine ({plan.train_pairs:,} training / "
                f"{plan.validation_pairs:,} validation pairs; throughput from "
                f"{esc(plan.throughput_source)})."
                + (f" Mode: {QUICK_LABEL}." if quick else "")
            )
            if st.button("Launch sweep", type="primary"):
                sweep = sweeps.launch_sweep(ws, dataset, base, grid, quick, plan)
                jobs.tick(ws)
                for w in sweep.warnings:
                    st.warning(esc(w))
                st.success(f"Sweep {sweep.sweep_id}: {len(sweep.run_ids)} runs queued. They run "
                           "one at a time; this page and the Train page follow them.")

# ---- Sweeps in progress ---
sw = sweeps.list_sweeps(ws)
if not sw.empty:
    st.subheader("Sweeps")
    for _, row in sw.iterrows():
        grid_text = ", ".join(f"{k} {v}" for k, v in json.loads(row["grid"]).items())
        mode = "quick what-if" if row["quick"] else "full"
        left, right = st.columns([4, 1])
        left.markdown(
            f"`{row['sweep_id']}` on {esc(row['dataset'])}: {esc(grid_text)} ({mode}); "
            f"{row['finished']}/{row['runs']} finished"
            + (" (cancelled)" if row["cancelled"] else "")
        )
        if not row["cancelled"] and not sweeps.sweep_done(ws, row["sweep_id"]):
            if right.button("Cancel", key=f"cancel-{row['sweep_id']}"):
                sweeps.cancel_sweep(ws, row["sweep_id"])
                st.rerun()


# ---- Runs table ---
@st.fragment(run_every="5s")
def runs_section() -> None:
    jobs.tick(ws)
    table = runs_table(ws)
    st.subheader("Runs")
    if table.empty:
        st.info("No training runs yet: start one on the Train page or launch a sweep above.")
        return
    f1, f2, f3 = st.columns(3)
    ds_pick = f1.multiselect("Dataset", sorted(table["dataset"].dropna().unique()))
    st_pick = f2.multiselect("Status", sorted(table["status"].unique()))
    mode_pick = f3.multiselect("Mode", sorted(table["mode"].unique()))
    if ds_pick:
        table = table[table["dataset"].isin(ds_pick)]
    if st_pick:
        table = table[table["status"].isin(st_pick)]
    if mode_pick:
        table = table[table["mode"].isin(mode_pick)]
    cols = ["run_id", "status", "mode", "dataset", "base_model", "learning_rate", "epochs",
            "batch_size", "max_length", "loss", "best_ndcg10", "best_mrr10", "start_ndcg10",
            "validation_queries", "train_pairs", "duration_s", "train_samples_per_second",
            "device", "sweep_id"]
    st.dataframe(
        table[cols], hide_index=True, width="stretch",
        column_config={
            "best_ndcg10": st.column_config.NumberColumn("val NDCG@10", format="%.4f"),
            "best_mrr10": st.column_config.NumberColumn("val MRR@10", format="%.4f"),
            "start_ndcg10": st.column_config.NumberColumn("untrained NDCG@10", format="%.4f"),
            "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
            "train_samples_per_second": st.column_config.NumberColumn("pairs/s", format="%.1f"),
        },
    )
    st.session_state["experiments_table"] = table


runs_section()
table = st.session_state.get("experiments_table")
if table is None:
    table = all_runs
if table is None or table.empty:
    st.stop()

# ---- Compare selected runs ---
st.subheader("Compare runs")
default = list(table["run_id"][:2])
chosen = st.multiselect("Runs", list(table["run_id"]), default)
if chosen:
    cv = curves(ws, chosen)
    c1, c2 = st.columns(2)
    loss = cv[cv["kind"] == "train"].dropna(subset=["loss"])
    if not loss.empty:
        c1.plotly_chart(px.line(loss, x="step", y="loss", color="run_id",
                                title="Training loss"), width="stretch")
    ev = cv[cv["kind"] == "eval"].dropna(subset=["ndcg10"])
    if not ev.empty:
        c2.plotly_chart(px.line(ev, x="step", y="ndcg10", color="run_id", markers=True,
                                title="Validation NDCG@10 (step 0 = untrained start)"),
                        width="stretch")
    only_diff = st.toggle("Only settings that differ", value=True)
    st.dataframe(config_diff(run_configs(ws, chosen), only_diff).astype(str), width="stretch")

# ---- Retrains on cleaned labels, beside the runs they repeat ---
pairs = retrain_pairs(ws, all_runs)  # unfiltered: an original may be hidden by the filters
if not pairs.empty:
    st.subheader("Cleaned labels vs the original")
    st.caption("Each run retrained on a relabelled version (Label noise page) with the config of "
               "the run it repeats, on the same validation queries. Validation labels changed "
               "by the cleaning make the two numbers measure different judgments.")
    st.dataframe(pairs, hide_index=True, width="stretch", column_config={
        "original_ndcg10": st.column_config.NumberColumn("original val NDCG@10", format="%.4f"),
        "retrain_ndcg10": st.column_config.NumberColumn("cleaned val NDCG@10", format="%.4f"),
        "delta_ndcg10": st.column_config.NumberColumn("difference", format="%+.4f"),
    })
    done_pairs = pairs[(pairs["status"] == "finished") & (pairs["original_status"] == "finished")]
    if not done_pairs.empty:
        pick = st.selectbox("Retrain", list(done_pairs["retrain_run"]), key="retrain_pick")
        row = done_pairs[done_pairs["retrain_run"] == pick].iloc[0]
        if st.button("Evaluate both on the original dataset, with significance",
                     key="retrain_eval"):
            from lib.evaluation.pipeline import EvaluationSpec, evaluate

            bar = st.progress(0.0, text="Scoring...")
            spec = EvaluationSpec(
                dataset=str(row["original_dataset"]), model=f"checkpoint:{pick}",
                baselines=[f"checkpoint:{row['original_run']}"],
                title=f"Cleaned-label retrain {pick} vs {row['original_run']}")
            try:
                result = evaluate(ws, spec,
                                  progress=lambda f, msg: bar.progress(min(f, 1.0), msg))
            except (ValueError, LookupError, FileNotFoundError) as exc:
                st.error(esc(exc))
            else:
                bar.empty()
                st.markdown(f"On the original's **{esc(result.split)}** split "
                            f"({result.n_queries} queries; candidates: "
                            f"{esc(result.candidates)}).")
                for verdict in result.verdicts:
                    st.info(esc(verdict))
                st.caption(f"Full report: Evaluate page, evaluation {result.eval_id}.")

# ---- Hyperparameters vs NDCG@10 ---
done = table.dropna(subset=["best_ndcg10"]).copy()
if len(done) >= 2:
    st.subheader("Hyperparameters vs validation NDCG@10")
    modes = sorted(done["mode"].unique())
    st.caption(f"{len(done)} runs with a validation score ({', '.join(modes)}). Runs on different "
               "datasets or splits are not comparable: filter the table above.")
    dims = [c for c in ["learning_rate", "epochs", "batch_size", "max_length"]
            if done[c].nunique() > 1]
    if dims:
        fig = px.parallel_coordinates(
            done, dimensions=[*dims, "best_ndcg10"], color="best_ndcg10",
            color_continuous_scale="Viridis", labels={"best_ndcg10": "val NDCG@10"},
        )
        st.plotly_chart(fig, width="stretch")
        x = st.selectbox("Scatter against", dims)
        best = best_run(done)
        done["best run"] = done["run_id"] == best["run_id"]
        fig = px.scatter(done, x=x, y="best_ndcg10", color="best run", symbol="mode",
                         hover_data=["run_id", *dims], log_x=x == "learning_rate",
                         labels={"best_ndcg10": "val NDCG@10"})
        st.plotly_chart(fig, width="stretch")

# ---- The best run, one click from a full evaluation ---
best = best_run(table)
if best is not None:
    st.subheader("Best run")
    st.markdown(
        f"`{best['run_id']}` ({best['mode']}): validation NDCG@10 **{best['best_ndcg10']:.4f}** "
        f"(untrained start {best['start_ndcg10']:.4f}) over {best['validation_queries']} "
        "validation queries. Validation picked this checkpoint, so its validation number is "
        "optimistic: evaluate it on held-out test queries."
    )
    if st.button("Evaluate the best run against its base"):
        from lib.evaluation.pipeline import EvaluationSpec, evaluate

        bar = st.progress(0.0, text="Scoring...")
        spec = EvaluationSpec(dataset=str(best["dataset"]), model=f"checkpoint:{best['run_id']}",
                              baselines=[str(best["base_model"])],
                              title=f"Best run {best['run_id']} vs its base")
        try:
            result = evaluate(ws, spec, progress=lambda f, msg: bar.progress(min(f, 1.0), msg))
        except (ValueError, LookupError, FileNotFoundError) as exc:
            st.error(esc(exc))
        else:
            bar.empty()
            st.markdown(f"On the **{esc(result.split)}** split ({result.n_queries} queries, "
                        f"{result.n_excluded} excluded; candidates: {esc(result.candidates)}).")
            for verdict in result.verdicts:
                st.success(esc(verdict))
            st.dataframe(pd.DataFrame(result.means).T, width="stretch")
            if result.split != "test":
                st.warning("This split has no test queries: the evaluation used the validation "
                           "queries that also chose the checkpoint. Re-split with a test "
                           "fraction on the Data page for an unbiased number.")
            st.caption(f"Full report: Evaluate page, evaluation {result.eval_id}.")
