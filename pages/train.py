"""Train: configure a run, launch it in the background, watch it live, stop, resume or queue it.

The run lives on disk and in the database, not in this page: closing the tab, refreshing or
restarting the app re-attaches to the running worker.
"""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import lib.training.baselines as baselines
from lib import corpora, datasets, db, ray_backend, split
from lib.models import DEFAULT_MODEL_LABEL, app_model_spec
from lib.textsafe import escape_markdown as esc
from lib.training import jobs, runfiles
from lib.training.config import (
    LOSSES,
    PRESET_NOTES,
    PRESETS,
    ConfigError,
    TrainConfig,
    build_config,
    config_warnings,
)
from lib.training.preflight import check_warnings
from lib.training.recipe import recipe_summary
from lib.training.tokenized import batching_caption
from lib.workspace import resolve_workspace
from page_guard import require_entry

require_entry()

ws = resolve_workspace()
FIELDS = TrainConfig.model_fields

st.title("Train")
st.caption(
    "Fine-tune a cross-encoder on the train split of a dataset. Every few steps it is validated "
    "on the validation queries (NDCG@10, MRR@10, the same code as the Evaluate step) and the best "
    "checkpoint is kept. Runs continue in the background when you close this tab."
)


def fmt_duration(seconds) -> str:
    if seconds is None or pd.isna(seconds):
        return "unknown"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def fmt_metric(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.4f}"


# ---- Inputs --------------------------------------------------------------------------------------
table = datasets.list_datasets(ws)
if table.empty:
    st.info("No datasets yet. Open **Data** to upload one.")
    st.stop()

st.subheader("New run")
ids = list(table["dataset_id"])
names = dict(zip(table["dataset_id"], table["name"], strict=True))
c1, c2 = st.columns([2, 1])
dataset_id = c1.selectbox("Dataset", ids, format_func=lambda i: f"{names[i]} ({i})")
default_preset = jobs.default_preset()
preset_name = c2.selectbox("Preset", list(PRESETS), index=list(PRESETS).index(default_preset))
st.caption(f"**{preset_name}**: {PRESET_NOTES[preset_name]}")

ds = datasets.get_dataset(ws, dataset_id)
with db.connect(ws) as con:
    active_split = split.active_split_id(con, dataset_id)
    counts = split.split_counts(con, active_split) if active_split else {}
train_pairs = counts.get("train", {}).get("pairs", 0)
val_queries = counts.get("validation", {}).get("queries", 0)
st.caption(
    f"Active split `{active_split}`: {train_pairs:,} training pairs "
    f"({counts.get('train', {}).get('queries', 0)} queries), {val_queries} validation queries."
    if active_split else "This dataset has no split yet: make one on the Data page."
)

base = build_config(PRESETS[preset_name])
k = f"{preset_name}:"  # widget keys per preset, so picking a preset resets the fields
base_model = st.text_input(
    "Base model", value=base.base_model, key=k + "model",
    help=f"'default' = {DEFAULT_MODEL_LABEL}; or a local model directory; or a hub id such as "
    "cross-encoder/ms-marco-MiniLM-L6-v2 (needs the model hub).",
)
c = st.columns(4)
lr = c[0].number_input("Learning rate", 1e-7, 1e-2, base.learning_rate, format="%.1e",
                       step=1e-5, key=k + "lr")
batch = c[1].number_input("Batch size", 1, 4096, base.batch_size, key=k + "bs",
                          help=FIELDS["batch_size"].description)
epochs = c[2].number_input("Epochs", 1, 100, base.epochs, key=k + "ep")
max_length = c[3].number_input("Max length (tokens)", 16, 8192, base.max_length, key=k + "ml")
with st.expander("More settings"):
    c = st.columns(4)
    eval_steps = c[0].number_input("Validate every N steps", 1, 100_000, base.eval_steps,
                                   key=k + "es")
    warmup = c[1].number_input("Warmup (fraction of steps)", 0.0, 0.99, base.warmup, 0.05,
                               key=k + "wu")
    weight_decay = c[2].number_input("Weight decay", 0.0, 0.99, base.weight_decay, 0.01,
                                     key=k + "wd")
    accum = c[3].number_input("Gradient accumulation", 1, 1024, base.gradient_accumulation,
                              key=k + "ga")
    c = st.columns(4)
    loss = c[0].selectbox("Loss", LOSSES, index=LOSSES.index(base.loss), key=k + "loss",
                          help=FIELDS["loss"].description)
    pos_weight = c[1].number_input("BCE pos_weight (0 = none)", 0.0, 1000.0,
                                   base.pos_weight or 0.0, key=k + "pw")
    patience = c[2].number_input("Early-stopping patience (0 = off)", 0, 1000,
                                 base.early_stopping_patience or 0, key=k + "pat",
                                 help=FIELDS["early_stopping_patience"].description)
    seed = c[3].number_input("Seed", 0, 2**31 - 1, base.seed, key=k + "seed")
    c = st.columns(4)
    precision = c[0].selectbox("Precision", ["auto", "fp32", "fp16", "bf16"],
                               index=["auto", "fp32", "fp16", "bf16"].index(base.precision),
                               key=k + "prec", help=FIELDS["precision"].description)
    device = c[1].selectbox("Device", ["auto", "cpu", "cuda"],
                            index=["auto", "cpu", "cuda"].index(base.device), key=k + "dev")
    max_pairs = c[2].number_input("Max training pairs (0 = all)", 0, 10**9,
                                  base.max_train_pairs or 0, key=k + "mtp",
                                  help=FIELDS["max_train_pairs"].description)
    num_gpus = c[3].number_input("GPUs per run (0 = all visible)", 0, 64, base.num_gpus,
                                 key=k + "ng", help=FIELDS["num_gpus"].description)
    ray_workers = 0
    if ray_backend.configured(ws) is not None:  # DDP across the cluster's machines
        ray_workers = st.number_input("Ray Train workers (0 = off)", 0, 1024,
                                      base.ray_train_workers, key=k + "rtw",
                                      help=FIELDS["ray_train_workers"].description)
    c = st.columns(4)
    cpu_threads = c[0].number_input("CPU threads (0 = auto)", 0, 1024, base.cpu_threads,
                                    key=k + "thr", help=FIELDS["cpu_threads"].description)
    cold_start = c[1].selectbox("Cold-start recipe", ["auto", "on", "off"],
                                index=["auto", "on", "off"].index(base.cold_start),
                                key=k + "cold", help=FIELDS["cold_start"].description)
    head_lr = c[2].number_input("Head learning rate (0 = 1e-3)", 0.0, 0.5,
                                base.head_learning_rate or 0.0, format="%.1e", key=k + "hlr",
                                help=FIELDS["head_learning_rate"].description)
    teacher = c[3].text_input("Distil from (empty = off, auto = bi-encoder if new head)",
                              base.distill_teacher or "", key=k + "teach",
                              help=FIELDS["distill_teacher"].description)
    c = st.columns(4)
    distill_epochs = c[0].number_input("Distillation epochs", 1, 20, base.distill_epochs,
                                       key=k + "dep")
    distill_docs = c[1].number_input("Sampled documents per query", 0, 1000,
                                     base.distill_docs_per_query, key=k + "ddq",
                                     help=FIELDS["distill_docs_per_query"].description)
    dynamics = c[2].number_input("Training dynamics pairs (0 = off)", 0, 1_000_000,
                                 base.dynamics_max_pairs, key=k + "dyn",
                                 help=FIELDS["dynamics_max_pairs"].description)
    corpus_names = ["(none)", jobs.AUTO_CORPUS, *corpora.list_corpora(ws)["name"].tolist()]
    if base.distill_corpus and base.distill_corpus not in corpus_names:
        corpus_names.append(base.distill_corpus)  # a preset's or CLI's value stays visible
    distill_corpus = c[3].selectbox("Distillation corpus", corpus_names,
                                    index=corpus_names.index(base.distill_corpus or "(none)"),
                                    key=k + "dco", help=FIELDS["distill_corpus"].description,
                                    format_func=lambda c: "auto (mined-from corpus, else own docs)"
                                    if c == jobs.AUTO_CORPUS else c)
    c = st.columns(4)
    distill_top_k = c[0].number_input("Corpus documents per query", 1, 1000,
                                      base.distill_corpus_top_k, key=k + "dtk",
                                      help=FIELDS["distill_corpus_top_k"].description)
    distill_retriever = c[1].text_input("Corpus first stage", base.distill_corpus_retriever,
                                        key=k + "dre",
                                        help=FIELDS["distill_corpus_retriever"].description)
    distill_pseudo = c[2].number_input("Pseudo-queries from the corpus", 0, 1_000_000,
                                       base.distill_pseudo_queries, key=k + "dpq",
                                       help=FIELDS["distill_pseudo_queries"].description)

values = {
    "base_model": base_model.strip() or "default", "learning_rate": lr, "batch_size": batch,
    "epochs": epochs, "max_length": max_length, "eval_steps": eval_steps, "warmup": warmup,
    "weight_decay": weight_decay, "gradient_accumulation": accum, "loss": loss,
    "pos_weight": pos_weight or None, "early_stopping_patience": patience or None, "seed": seed,
    "precision": precision, "device": device, "max_train_pairs": max_pairs or None,
    "num_gpus": num_gpus, "ray_train_workers": ray_workers, "cpu_threads": cpu_threads,
    "logging_steps": base.logging_steps,
    "cold_start": cold_start, "head_learning_rate": head_lr or None,
    "distill_teacher": teacher.strip() or None, "distill_epochs": distill_epochs,
    "distill_docs_per_query": distill_docs, "dynamics_max_pairs": dynamics,
    "distill_corpus": None if distill_corpus == "(none)" else distill_corpus,
    "distill_corpus_top_k": distill_top_k,
    "distill_corpus_retriever": distill_retriever.strip() or "bm25",
    "distill_pseudo_queries": distill_pseudo,
}
cfg, problem = None, None
try:
    values["base_model"] = app_model_spec(values["base_model"], ws)  # in the workspace only
    cfg = build_config(values, source="these settings")
except (ConfigError, ValueError) as exc:
    problem = str(exc)
if problem:
    st.error(esc(problem))
elif cfg is not None:
    # Findings of the Checks step (leakage, truncation, memory) join these as `extra`.
    gpus = bool(jobs.visible_gpus())
    extra = check_warnings(ws, dataset_id, active_split, cfg, gpu_available=gpus)
    for w in config_warnings(cfg, train_pairs, extra=extra, gpu_available=gpus):
        st.warning(esc(w), icon=":material/warning:")
    with st.expander("This config as YAML (for `reranker-studio train --config FILE`)"):
        import yaml

        st.code(yaml.safe_dump(cfg.to_json(), sort_keys=False), language="yaml")

with st.expander("Ray cluster (optional): run training on other machines"):
    # Shown, not edited, here: whoever can open the app could otherwise send the workspace's
    # training data and commands to any host. The server's shell sets it.
    ray_now = ray_backend.settings(ws)
    if ray_now.address:
        origin = ("--ray / RERANKER_STUDIO_RAY_ADDRESS" if ray_now.source == "env"
                  else "the workspace setting")
        open_ok = "; unauthenticated cluster allowed" if ray_now.allow_unauthenticated else ""
        st.markdown(f"Runs go to the Ray cluster at `{esc(ray_now.address)}` as Ray jobs "
                    f"(set by {origin}{open_ok}).")
    else:
        st.markdown("Runs train on this machine.")
    st.caption(
        "Set on the server: `reranker-studio ray set http://HEAD:8265` (or `--ray`, or "
        "RERANKER_STUDIO_RAY_ADDRESS); `reranker-studio ray clear` to train here. The cluster's "
        "nodes must see this workspace's runs/ at the same path; clusters without token "
        "authentication are refused unless allowed. The app never proxies the Ray dashboard. "
        "See the README, 'Training on a Ray cluster'.")
    if ray_now.address and st.button("Check cluster"):
        try:
            with st.spinner("Connecting, probing shared storage on every node..."):
                report = ray_backend.check(ws)
            st.success(f"{len(report['nodes'])} node(s), token authentication "
                       f"{'on' if report['token_auth'] else 'OFF'}; every node sees "
                       f"{esc(report['runs_dir'])}")
        except ValueError as exc:
            st.error(esc(exc))

go_clicked = st.button("Launch", type="primary", disabled=cfg is None or not active_split,
                       help="Queued; starts at once when the device is free.")

# ---- Action --------------------------------------------------------------------------------------
if go_clicked and cfg is not None:
    try:
        created = jobs.create_run(ws, dataset_id, cfg, extra_warnings=extra)
        jobs.tick(ws)
        st.session_state["train_run"] = created.run_id
        st.success(
            f"Run `{created.run_id}` queued: {created.train_pairs:,} training pairs "
            f"({created.train_queries} queries), validation {created.validation_queries} queries."
        )
    except (ConfigError, ValueError, LookupError, FileNotFoundError) as exc:
        st.error(esc(exc))

# ---- Result: runs, queue, the selected run live ------------------------------------------------
st.subheader("Runs")
try:  # a run that ended while the app was away is shown as it ended, not as last seen
    jobs.tick(ws)
except ray_backend.RayBackendError:
    pass  # the queued run keeps the error in its status: shown below
runs = jobs.list_runs(ws)
if runs.empty:
    st.info("No runs yet.")
    st.stop()
shown = runs[["run_id", "status", "dataset", "queue_position", "global_step", "max_steps",
              "start_ndcg10", "best_ndcg10", "bm25_ndcg10", "biencoder_ndcg10", "best_mrr10",
              "validation_queries", "device", "created_at"]].rename(columns={
                  "start_ndcg10": "NDCG@10 start", "best_ndcg10": "NDCG@10 best",
                  "bm25_ndcg10": "NDCG@10 BM25", "biencoder_ndcg10": "NDCG@10 bi-encoder",
                  "best_mrr10": "MRR@10 best", "validation_queries": "val queries",
                  "queue_position": "queue"})
st.dataframe(shown, hide_index=True, width="stretch")
st.caption("NDCG@10 / MRR@10 on each run's validation queries (their labelled candidates "
           "re-ranked); 'start' is the model at step 0 (untrained, or just distilled), 'best' "
           "the kept model (a checkpoint, or the distilled start when no checkpoint beat it); "
           "BM25 and the zero-shot bi-encoder on the same pairs are the bar to beat.")

run_ids = list(runs["run_id"])
live_states = (runfiles.QUEUED, runfiles.STARTING, runfiles.RUNNING)
wanted = st.session_state.get("train_run")
if wanted not in run_ids:
    active = runs[runs["status"].isin(live_states[1:])]
    wanted = active["run_id"].iloc[0] if len(active) else run_ids[0]
run_id = st.selectbox("Run", run_ids, index=run_ids.index(wanted), key="train_run_select")
st.session_state["train_run"] = run_id
any_live = runs["status"].isin(live_states).any()


def charts(metrics: pd.DataFrame, start_ndcg, distilled: bool = False) -> None:
    train = metrics[metrics["kind"] == "train"]
    evals = metrics[metrics["kind"] == "eval"]
    c1, c2 = st.columns(2)
    fig = go.Figure(go.Scatter(x=train["step"], y=train["loss"], mode="lines", name="loss"))
    fig.update_layout(title="Training loss", xaxis_title="step", height=300,
                      margin=dict(t=40, b=30, l=40, r=10))
    c1.plotly_chart(fig, width="stretch")
    fig = go.Figure()
    fig.add_scatter(x=evals["step"], y=evals["ndcg10"], mode="lines+markers", name="NDCG@10")
    fig.add_scatter(x=evals["step"], y=evals["mrr10"], mode="lines+markers", name="MRR@10")
    if start_ndcg is not None and not pd.isna(start_ndcg):
        fig.add_hline(y=start_ndcg, line_dash="dot", annotation_position="bottom left",
                      annotation_text=("NDCG@10 after distilling (step 0)" if distilled
                                       else "NDCG@10 untrained"))  # the bar's labels: right
    # the bar to beat, measured by the worker on the same validation pairs (status.json)
    bar = baselines.metrics_only(
        runfiles.read_status(jobs.run_dir_of(ws, run_id)).get("baselines"))
    for key, colour in (("bm25", "#c62828"), ("biencoder", "#6a1b9a")):
        value = (bar.get(key) or {}).get("ndcg@10")
        if value is not None:
            fig.add_hline(y=value, line_dash="dash", line_color=colour,
                          annotation_text=f"NDCG@10 {baselines.LABELS[key]} (bar to beat)",
                          annotation_position="bottom right")
    fig.update_layout(title="Validation per eval step", xaxis_title="step", height=300,
                      margin=dict(t=40, b=30, l=40, r=10))
    c2.plotly_chart(fig, width="stretch")
    if len(train):
        fig = go.Figure(go.Scatter(x=train["step"], y=train["samples_per_s"], mode="lines"))
        fig.update_layout(title="Throughput (training samples/s, validation time excluded)",
                          xaxis_title="step", height=250, margin=dict(t=40, b=30, l=40, r=10))
        st.plotly_chart(fig, width="stretch")


def bar_to_beat(state: str, status: dict) -> None:
    """While it is measured, say so; at the end, whether the run beat it (and if not, why)."""
    if status.get("baselines_error"):
        st.text(f"The bar to beat was not measured: {status['baselines_error']}")
    elif not status.get("baselines") and state in runfiles.ACTIVE:
        st.caption("Measuring the bar to beat (BM25, zero-shot bi-encoder) on the validation "
                   "pairs first.")
    if state in runfiles.TERMINAL:
        show_verdict(status)


def show_verdict(status: dict) -> None:
    """The words at the end: did the run beat the bar, and if not, why and what next."""
    verdict = baselines.run_verdict(ws, jobs.run_dir_of(ws, run_id), status)
    if verdict is None:
        return
    box = st.error if verdict.lost else st.success
    box(verdict.headline, icon=":material/gavel:")
    if verdict.lost:
        # plain text: the causes quote Checks findings and model names (user text)
        st.text("Likely causes:\n" + "\n".join(f"- {c}" for c in verdict.causes)
                + "\n\nNext to try:\n" + "\n".join(f"- {x}" for x in verdict.next_steps))


def controls(state: str, status: dict) -> None:
    c = st.columns(4)
    if state in runfiles.ACTIVE and not status.get("stopping"):
        if c[0].button("Stop", help="Graceful: saves a checkpoint, then ends (killed after "
                       f"{jobs.STOP_TIMEOUT_S:.0f} s). Resume continues from it."):
            jobs.request_stop(ws, run_id)
            st.rerun(scope="fragment")
    if state == runfiles.QUEUED:
        if c[0].button("Cancel"):
            jobs.request_stop(ws, run_id)
            st.rerun(scope="app")
        if c[1].button("Move up"):
            jobs.move_in_queue(ws, run_id, "up")
            st.rerun(scope="app")
        if c[2].button("Move down"):
            jobs.move_in_queue(ws, run_id, "down")
            st.rerun(scope="app")
    if state in runfiles.RESUMABLE:
        if c[0].button("Resume", help="Continue from the last checkpoint (weights, optimizer, "
                       "scheduler and step count)."):
            jobs.resume_run(ws, run_id)
            try:
                jobs.tick(ws)
            except ray_backend.RayBackendError:
                pass  # kept queued; the live panel shows why
            st.rerun(scope="app")


@st.fragment(run_every="2s" if any_live else None)
def live_panel() -> None:
    try:
        jobs.tick(ws)
    except ray_backend.RayBackendError:
        pass  # the queued run keeps the error in its status: shown below
    status = jobs.run_status(ws, run_id)
    if status.get("state") == runfiles.QUEUED and status.get("submit_error"):
        st.error("Not submitted to the Ray cluster: " + esc(status["submit_error"]))
    if status.get("ray_unreachable"):
        st.warning("Ray cluster not answering: " + esc(status["ray_unreachable"]))
    state = status.get("state", "unknown")
    if status.get("stopping"):
        state_label = f"stopping (waiting {status.get('stop_waited_s', 0):.0f} s)"
    else:
        state_label = state
    metrics = jobs.run_metrics(ws, run_id)
    meta = runfiles.read_json(jobs.run_dir_of(ws, run_id) / runfiles.DATA / "meta.json") or {}
    st.markdown(f"**{esc(run_id)}**: `{state_label}` · dataset "
                f"{esc(meta.get('dataset_name'))} · device "
                f"{status.get('device') or 'not started'} · {status.get('precision') or ''}")
    step, max_steps = status.get("step") or 0, status.get("max_steps") or 0
    evals = metrics[metrics["kind"] == "eval"]
    if max_steps:
        eta = "" if state not in runfiles.ACTIVE else f" · ETA {fmt_duration(status.get('eta_s'))}"
        if state in runfiles.ACTIVE and evals.empty and not status.get("resumed"):
            eta = " · validating the untrained model first (step 0)"
        st.progress(min(1.0, step / max_steps),
                    text=f"step {step}/{max_steps} · epoch {status.get('epoch') or 0:.2f}{eta}")
    start_row = evals[evals["step"] == 0]
    start = start_row["ndcg10"].iloc[0] if len(start_row) else None
    latest = evals.iloc[-1] if len(evals) else None
    best = (status.get("best") or {}).get("ndcg@10")
    if best is None and len(evals):
        best = evals["ndcg10"].max()
    train = metrics[metrics["kind"] == "train"]
    c = st.columns(5)
    c[0].metric("Loss", fmt_metric(train["loss"].iloc[-1]) if len(train) else "–")
    c[1].metric("Samples/s", f"{train['samples_per_s'].iloc[-1]:.1f}" if len(train) else "–")
    c[2].metric("NDCG@10 latest", fmt_metric(latest["ndcg10"]) if latest is not None else "–",
                delta=None if latest is None or start is None
                else f"{latest['ndcg10'] - start:+.4f} vs start")
    c[3].metric("NDCG@10 best", fmt_metric(best))
    gpu = train["gpu_mem_mb"].dropna() if len(train) else pd.Series(dtype=float)
    c[4].metric("GPU memory (peak)", f"{gpu.iloc[-1]:,.0f} MiB" if len(gpu) else "–",
                help="torch.cuda.max_memory_allocated of the worker; none on a CPU run")
    st.caption(
        f"Validation: {meta.get('validation_queries', '?')} queries "
        f"({meta.get('validation_pairs', '?')} labelled candidates) of split "
        f"`{meta.get('split_id')}`; training {meta.get('train_pairs', '?')} pairs "
        f"({meta.get('train_queries', '?')} queries)."
    )
    if batching := batching_caption(status.get("batching")):
        st.caption(batching)
    controls(state, status)
    if state == runfiles.FAILED:
        st.error(esc(status.get("error") or "the run failed"))
        if status.get("advice"):
            st.warning(esc(status["advice"]), icon=":material/lightbulb:")
    if status.get("note"):
        st.info(esc(status["note"]))
    if status.get("recipe"):
        st.caption("Recipe: " + esc(recipe_summary(status["recipe"], status.get("distillation"))))
    if metrics["kind"].isin(["train", "eval"]).any():
        charts(metrics, start, distilled=bool(status.get("distillation")))
    model_path = status.get("model_path")
    bar_to_beat(state, status)
    if model_path and state in runfiles.TERMINAL:
        kept = ("the distilled start: no checkpoint beat it on validation"
                if (status.get("best") or {}).get("step") == 0 and status.get("distillation")
                else "best checkpoint")
        st.markdown(f"**Model** ({kept}, native sentence-transformers format)")
        st.code(f'from sentence_transformers.cross_encoder import CrossEncoder\n'
                f'CrossEncoder("{model_path}").predict([("query text", "document text")])',
                language="python")
        st.download_button(
            "Download the model (zip)",
            data=lambda: jobs.zip_model(ws, run_id).read_bytes(),
            file_name=f"{run_id}-model.zip", mime="application/zip",
        )
    with st.expander("Worker log (last 40 lines)", expanded=state == runfiles.FAILED):
        st.code(status.get("log_tail") if state == runfiles.FAILED and status.get("log_tail")
                else jobs.log_tail(ws, run_id) or "(empty)", language="text")
    if any_live and state in runfiles.TERMINAL and st.session_state.get("_was_live") == run_id:
        st.session_state.pop("_was_live", None)
        st.rerun(scope="app")  # refresh the table and stop polling
    if state not in runfiles.TERMINAL:
        st.session_state["_was_live"] = run_id


live_panel()
