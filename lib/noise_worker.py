"""The label-noise worker: `python -m lib.noise_worker JOB_DIR`.

Detached like the training worker (own session, output to JOB_DIR/worker.log). It reads
options.json and pairs.jsonl; for model evidence it trains one cross-encoder per fold on the
other folds and scores the held-out fold, for neighbour evidence it embeds the documents and
compares each with its query's other labelled documents; the scores go to scores.jsonl;
status.json tells the app where it is. It never opens the database. A stop request (stop.json
or SIGTERM) ends it at the next step.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd

from lib.training import runfiles
from lib.training.config import TrainConfig
from lib.workerproc import run_worker


def _log(msg: str) -> None:
    print(f"[{runfiles.now_iso()}] {msg}", flush=True)


class Stopped(Exception):
    pass


def fold_config(opts: dict) -> TrainConfig:
    """The training config of one fold model (validated by the same model as real runs)."""
    return TrainConfig(
        base_model=opts["base_model"], learning_rate=opts["learning_rate"],
        batch_size=opts["batch_size"], epochs=opts["epochs"],
        max_length=opts.get("max_length") or (128 if opts.get("quick") else 256),
        seed=opts["seed"], device=opts.get("device", "auto"),
        cpu_threads=opts.get("cpu_threads", 0), precision="auto",
        distill_teacher=opts.get("distill_teacher") or None,
        distill_epochs=opts.get("distill_epochs") or 3,
        distill_docs_per_query=opts.get("distill_docs_per_query", 30),
    )


def train_fold(train: pd.DataFrame, cfg: TrainConfig, max_label: int, out_dir: Path, flag):
    """A cross-encoder trained in-process on `train` with the training worker's pieces (the
    cold-start recipe, distillation when the options name a teacher, the loss, label scaling); no
    validation, no checkpoints: what matters is only how it scores pairs it never saw."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoderTrainer
    from transformers import set_seed

    from lib.models import load_cross_encoder, model_max_length, resolve_model
    from lib.training import recipe as cold
    from lib.training.callbacks import GracefulStopCallback
    from lib.training.threads import choose_threads
    from lib.training.worker import (
        build_loss,
        build_train_dataset,
        resolve_device,
        training_arguments,
    )

    set_seed(cfg.seed)
    device, precision = resolve_device(cfg)
    if device == "cpu":  # the finder's figures were measured in fp32; CPU bf16 not yet
        precision = "fp32"
    n_threads, threads_line = choose_threads(cfg.cpu_threads, device)  # as training runs do
    if n_threads:
        torch.set_num_threads(n_threads)
        _log(threads_line)
    ref = resolve_model(cfg.base_model)
    limit = model_max_length(ref)
    max_length = min(cfg.max_length, limit) if limit else cfg.max_length
    model = load_cross_encoder(ref, max_length=max_length, device=device)
    recipe = cold.plan(cfg, ref, train["label"], max_label)
    lr_mapping = cold.learning_rate_mapping(recipe)
    if recipe.distill_teacher:  # only the training folds' queries reach the teacher
        from lib.training.distill import run_distillation

        out_dir.mkdir(parents=True, exist_ok=True)
        run_distillation(model, train, cfg, out_dir, teacher=recipe.distill_teacher,
                         device=device, precision=precision, learning_rate_mapping=lr_mapping,
                         log=_log)
        if flag.is_set():
            raise Stopped()
    args = training_arguments(cfg, out_dir, precision, device, resume=False,
                              learning_rate_mapping=lr_mapping)
    args.eval_strategy = "no"
    args.save_strategy = "no"
    args.eval_on_start = False
    args.load_best_model_at_end = False
    args.metric_for_best_model = None
    stopper = GracefulStopCallback(flag)
    trainer = CrossEncoderTrainer(
        model=model, args=args, train_dataset=build_train_dataset(train, cfg, max_label),
        loss=build_loss(model, cfg, recipe.pos_weight), callbacks=[stopper])
    trainer.train()
    if stopper.stopped_at is not None:
        raise Stopped()
    return model, device


class _NoFlag:
    def is_set(self) -> bool:
        return False


def oof_scores(pairs: pd.DataFrame, opts: dict, flag=None, on_fold=None,
               work_dir: Path | None = None) -> pd.DataFrame:
    """Out-of-fold scores of `pairs` (which carry a `fold` column): one model per fold, trained
    on the other folds. `on_fold(fold, k, phase, n)` reports progress; in-process (tests,
    bench) as well as in the worker."""
    import tempfile

    flag = flag or _NoFlag()
    k = int(opts["folds"])
    cfg = fold_config(opts)
    max_label = int(opts.get("max_label") or pairs["label"].max() or 1)
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        base = work_dir or Path(tmp)
        for fold in range(k):
            if flag.is_set():
                raise Stopped()
            train = pairs[pairs["fold"] != fold]
            held = pairs[pairs["fold"] == fold]
            if on_fold:
                on_fold(fold, k, "training", len(train))
            _log(f"fold {fold + 1}/{k}: training on {len(train)} pairs")
            model, _device = train_fold(train, cfg, max_label, base / f"fold-{fold}", flag)
            if on_fold:
                on_fold(fold, k, "scoring", len(held))
            scores = model.predict(list(zip(held["query"], held["document"], strict=True)),
                                   batch_size=64, show_progress_bar=False,
                                   convert_to_numpy=True, activation_fn=None)
            parts.append(held[["query_id", "doc_id", "line", "label", "fold"]].assign(
                oof_score=[float(x) for x in scores]))
            del model
    return pd.concat(parts, ignore_index=True)


def neighbour_scores(pairs: pd.DataFrame, opts: dict) -> pd.DataFrame:
    """lib.noise_neighbours.consistency of `pairs` (keys + sim_relevant, sim_nonrelevant,
    neighbour_score), documents embedded by the job's neighbour model."""
    from lib.noise_neighbours import consistency, document_embeddings

    device = None if opts.get("device", "auto") == "auto" else opts["device"]
    emb = document_embeddings(list(pairs["document"]), opts.get("neighbour_model") or "biencoder",
                              device=device)
    p = pairs.reset_index(drop=True)
    return pd.concat([p[["query_id", "doc_id", "line"]], consistency(p, emb)], axis=1)


def run(job_dir: Path, flag) -> dict:
    opts = json.loads((job_dir / "options.json").read_text(encoding="utf-8"))
    pairs = pd.read_json(job_dir / "pairs.jsonl", lines=True,
                         dtype={"query_id": str, "doc_id": str})
    k = int(opts["folds"])
    runfiles.update_status(job_dir, state=runfiles.RUNNING, pid=os.getpid(),
                           started_at=runfiles.now_iso(), fold=0, folds=k, pairs=len(pairs))
    out = job_dir / "scores.jsonl"
    partial = job_dir / "scores.partial.jsonl"
    t0 = time.time()

    def on_fold(fold: int, k: int, phase: str, n: int) -> None:
        runfiles.update_status(job_dir, fold=fold + 1, phase=phase,
                               detail=f"fold {fold + 1} of {k}: {phase} {n} pairs",
                               elapsed_s=round(time.time() - t0, 1))

    evidence = opts.get("evidence", "models")  # jobs made before neighbours: models only
    if evidence in ("models", "both"):
        scored = oof_scores(pairs, opts, flag, on_fold, work_dir=job_dir)
    else:
        scored = pairs[["query_id", "doc_id", "line", "label", "fold"]].assign(oof_score=None)
    if evidence in ("neighbours", "both"):
        runfiles.update_status(job_dir, phase="neighbours",
                               detail=f"embedding {len(pairs)} documents",
                               elapsed_s=round(time.time() - t0, 1))
        scored = scored.merge(neighbour_scores(pairs, opts), on=["query_id", "doc_id", "line"])
    bi = os.environ.get("RERANKER_STUDIO_BAR_BIENCODER", "").strip()
    if opts.get("baseline") and bi.lower() != "none":
        runfiles.update_status(job_dir, phase="baseline", detail="zero-shot bi-encoder cosine")
        from lib.noise import biencoder_scores

        merged = scored.merge(pairs[["query_id", "doc_id", "line", "query", "document"]],
                              on=["query_id", "doc_id", "line"])
        merged["baseline_score"] = biencoder_scores(merged, bi or None)
        scored = merged.drop(columns=["query", "document"])
    scored.to_json(partial, orient="records", lines=True, force_ascii=False)
    os.replace(partial, out)
    return runfiles.update_status(job_dir, state=runfiles.FINISHED, phase="done", detail=None,
                                  finished_at=runfiles.now_iso(), pairs_scored=len(scored),
                                  eta_s=0, seconds=round(time.time() - t0, 1))


def _run_or_stop(job_dir: Path, flag) -> None:
    try:
        run(job_dir, flag)
    except Stopped:
        runfiles.update_status(job_dir, state=runfiles.STOPPED, finished_at=runfiles.now_iso(),
                               note="stopped on request", eta_s=None)
        _log("stopped on request")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.noise_worker")
    parser.add_argument("job_dir")
    args = parser.parse_args(argv)
    job_dir = Path(args.job_dir).resolve()

    def failed(exc: BaseException, _trace: str) -> None:
        runfiles.update_status(job_dir, state=runfiles.FAILED, finished_at=runfiles.now_iso(),
                               error=f"{type(exc).__name__}: {exc}"[:2000],
                               log_tail=runfiles.tail(job_dir / runfiles.LOG, 30))

    return run_worker(job_dir, "options.json", lambda flag: _run_or_stop(job_dir, flag), failed)


if __name__ == "__main__":
    raise SystemExit(main())
