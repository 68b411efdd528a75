"""The training worker: `python -m lib.training.worker RUN_DIR [--resume]`.

Runs detached from the app (its own session, output to RUN_DIR/worker.log). It reads only the run
directory (config.json, data/*.jsonl exported by the launcher) and writes only files there:
status.json, progress.jsonl, checkpoints and model/. It never opens the database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from lib.diskspace import is_disk_full
from lib.training import baselines, diskfull, runfiles
from lib.training.config import TrainConfig, is_oom, oom_suggestion, read_config
from lib.training.threads import choose_threads
from lib.workerproc import run_worker


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _log(msg: str) -> None:
    if _rank() == 0:
        print(f"[{runfiles.now_iso()}] {msg}", flush=True)


def resolve_device(cfg: TrainConfig) -> tuple[str, str]:
    """(device, precision): bf16 on GPUs that support it, else fp16; on CPU bf16 where it is
    fast (AMX, lib.training.cpu_bf16), else fp32."""
    import torch

    from lib.training.cpu_bf16 import cpu_fallback_note, cpu_precision

    has_cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not has_cuda:
        raise RuntimeError("device 'cuda' was asked for but no GPU is visible to the worker")
    device = "cuda" if has_cuda and cfg.device != "cpu" else "cpu"
    if device == "cpu":
        note = cpu_fallback_note(cfg.precision)
        if note:
            _log(note)
        return device, cpu_precision(cfg.precision)
    bf16_ok = torch.cuda.is_bf16_supported()
    if cfg.precision == "auto":
        return device, "bf16" if bf16_ok else "fp16"
    if cfg.precision == "bf16" and not bf16_ok:
        _log("this GPU does not support bf16: using fp16")
        return device, "fp16"
    return device, cfg.precision


def load_pairs(path: Path):
    import pandas as pd

    frame = pd.read_json(path, lines=True, dtype={"query_id": str, "doc_id": str})
    if frame.empty:
        return pd.DataFrame(columns=["query_id", "doc_id", "query", "document", "label"])
    return frame


def build_train_dataset(train, cfg: TrainConfig, max_label: int):
    """Columns in the loss's order: (query, document, label) pointwise, or per query
    (query, [documents], [labels]) for a listwise loss."""
    from datasets import Dataset

    if cfg.listwise:
        grouped = train.groupby("query_id", sort=False)
        return Dataset.from_dict({
            "query": [g["query"].iloc[0] for _, g in grouped],
            "docs": [list(g["document"]) for _, g in grouped],
            "labels": [[float(x) for x in g["label"]] for _, g in grouped],
        })
    scale = float(max(1, max_label))
    return Dataset.from_dict({
        "query": list(train["query"]),
        "document": list(train["document"]),
        "label": [float(x) / scale for x in train["label"]],
    })


def build_loss(model, cfg: TrainConfig, pos_weight: float | None = None):
    """`pos_weight`: the cold-start recipe's (from the label balance); else the config's."""
    import torch
    from sentence_transformers.cross_encoder import losses

    if cfg.loss == "lambda":
        return losses.LambdaLoss(model)
    if cfg.loss == "listnet":
        return losses.ListNetLoss(model)
    weight = cfg.pos_weight if pos_weight is None else pos_weight
    return losses.BinaryCrossEntropyLoss(
        model, pos_weight=torch.tensor(weight) if weight is not None else None)


def training_arguments(cfg: TrainConfig, run_dir: Path, precision: str, device: str,
                       resume: bool, learning_rate_mapping: dict[str, float] | None = None):
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

    from lib.training.callbacks import BEST_METRIC_KEY

    return CrossEncoderTrainingArguments(
        output_dir=str(run_dir),
        run_name=run_dir.name,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.learning_rate,
        learning_rate_mapping=learning_rate_mapping or {},  # the cold-start head's own rate
        warmup_steps=cfg.warmup,  # a float below 1 is a fraction of the steps
        weight_decay=cfg.weight_decay,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        seed=cfg.seed,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        eval_on_start=not resume,  # the untrained starting point, once
        save_strategy="steps",
        save_steps=cfg.eval_steps,  # equal to eval_steps, as load_best_model_at_end needs
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=BEST_METRIC_KEY,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,  # the collator only pads pre-tokenised ids: workers lost here
        logging_nan_inf_filter=False,  # its NaN/Inf check syncs the GPU on every step
        torch_compile=cfg.torch_compile,
        # every parameter of a cross-encoder gets a gradient; the default (search for unused
        # ones) makes DDP fail with "Expected to mark a variable ready only once"
        ddp_find_unused_parameters=False,
    )


def _best_from_progress(run_dir: Path, best_step: int | None) -> tuple[dict, dict]:
    """(start metrics at step 0, metrics at the best step) from the eval records."""
    evals = [r for r in runfiles.read_progress(run_dir) if r.get("kind") == "eval"]
    # the last step 0: a resume without a checkpoint starts (and distils) again
    start = next((r for r in reversed(evals) if r.get("step") == 0), None)
    best = None
    if best_step is not None:
        best = next((r for r in reversed(evals) if r.get("step") == best_step), None)
    def pick(r: dict | None) -> dict:
        if not r:
            return {}
        return {k: r.get(k) for k in ("ndcg@10", "mrr@10", "step", "n_queries")}

    return pick(start), pick(best)


def write_model_card(model_dir: Path, meta: dict, cfg: TrainConfig, start: dict, best: dict,
                     precision: str, device: str, final_dir: Path | None = None,
                     recipe: str | None = None, distilled: bool = False) -> None:
    """Append what we measured to the sentence-transformers model card (README.md).
    `final_dir`: where the model will live (the card is written before the move)."""
    card = model_dir / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""

    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    start_what = "after distilling, before the labels" if distilled else "untrained start"
    section = f"""

## Reranker Studio training record

| | NDCG@10 | MRR@10 |
|---|---|---|
| validation, {start_what} (step 0) | {fmt(start.get("ndcg@10"))} | {fmt(start.get("mrr@10"))} |
| validation, this model (step {best.get("step", "n/a")}) | {fmt(best.get("ndcg@10"))} | \
{fmt(best.get("mrr@10"))} |

Validation: {best.get("n_queries") or start.get("n_queries") or "?"} queries of dataset
`{meta.get("dataset_name")}` (split `{meta.get("split_id")}`), each query's labelled candidates
re-ranked; metrics by `lib.metrics.evaluate_rankings` (ranx), graded NDCG, MRR at label >= 1.
Base model `{cfg.base_model}`; loss `{cfg.loss}`; learning rate {cfg.learning_rate:g}; batch
{cfg.batch_size}; epochs {cfg.epochs}; max length {cfg.max_length}; {precision} on {device};
{meta.get("train_pairs")} training pairs ({meta.get("train_queries")} queries).
Recipe: {recipe or "as configured"}.

```python
from sentence_transformers.cross_encoder import CrossEncoder
CrossEncoder("{final_dir or model_dir}").predict([("query text", "document text")])
```
"""
    card.write_text(text + section, encoding="utf-8")


def _save_start_model(model, run_dir: Path) -> None:
    """Keep the distilled model: when label training only makes it worse on validation, it is
    the one to ship (the trainer's best-checkpoint choice never sees step 0)."""
    target = run_dir / runfiles.START_MODEL
    shutil.rmtree(target, ignore_errors=True)
    model.save(str(target))


def start_beats_best(run_dir: Path, start: dict, best: dict) -> bool:
    """Step 0's saved model scored strictly above the best checkpoint (or there is none)."""
    if not (run_dir / runfiles.START_MODEL).is_dir() or start.get("ndcg@10") is None:
        return False
    return best.get("ndcg@10") is None or start["ndcg@10"] > best["ndcg@10"]


def train(run_dir: Path, resume: bool, flag) -> dict[str, Any]:
    cfg = read_config(run_dir)
    meta = runfiles.read_json(run_dir / runfiles.DATA / "meta.json") or {}
    rank0 = _rank() == 0
    t_wall = time.time()
    if rank0:
        runfiles.update_status(
            run_dir, state=runfiles.RUNNING, pid=os.getpid(), error=None, log_tail=None,
            advice=None, resumed=resume,
            **({"resumed_at": runfiles.now_iso()} if resume
               else {"started_at": runfiles.now_iso()}),
        )
    _log(f"run {run_dir.name}: loading libraries")
    import torch
    from transformers import EarlyStoppingCallback, set_seed
    from transformers.utils import logging as hf_logging

    from lib.models import load_cross_encoder, model_max_length, resolve_model
    from lib.training import fastpath
    from lib.training import recipe as cold
    from lib.training.callbacks import (
        GracefulStopCallback,
        ProgressCallback,
        RankingEvaluator,
    )

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()  # the log is a file: no carriage-return bars in it
    set_seed(cfg.seed)
    device, precision = resolve_device(cfg)
    n_threads, threads_line = choose_threads(cfg.cpu_threads, device)
    if n_threads:
        torch.set_num_threads(n_threads)
        _log(threads_line)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    model_device = f"cuda:{local_rank}" if device == "cuda" else "cpu"
    shown_device = model_device if world == 1 else f"{world} x {device} (DDP)"
    if rank0:
        runfiles.update_status(run_dir, device=shown_device, precision=precision)
    ref = resolve_model(cfg.base_model)
    positions = model_max_length(ref)
    max_length = min(cfg.max_length, positions) if positions else cfg.max_length
    train_df = load_pairs(run_dir / runfiles.DATA / "train.jsonl")
    val_df = load_pairs(run_dir / runfiles.DATA / "validation.jsonl")
    if train_df.empty or val_df.empty:
        raise RuntimeError(f"{run_dir / runfiles.DATA}: the train or validation file is empty")
    max_label = int(meta.get("max_label") or train_df["label"].max() or 1)
    _log(f"loading {ref.label} (max length {max_length}) on {model_device}, {precision}")
    model = load_cross_encoder(ref, max_length=max_length, device=model_device,
                               trust_remote_code=cfg.trust_remote_code)
    recipe = cold.plan(cfg, ref, train_df["label"], max_label)
    lr_mapping = cold.learning_rate_mapping(recipe)
    _log(f"recipe: {recipe.summary()}")
    if rank0:
        runfiles.update_status(run_dir, recipe=recipe.to_json())
    distilled = None
    if recipe.distill_teacher and not (resume and runfiles.last_checkpoint(run_dir)):
        from lib.training.distill import run_distillation

        distilled = run_distillation(model, train_df, cfg, run_dir, device=device,
                                     precision=precision, learning_rate_mapping=lr_mapping,
                                     teacher=recipe.distill_teacher, log=_log)
        if rank0:
            runfiles.update_status(run_dir, distillation=distilled)
            _save_start_model(model, run_dir)
    dataset = build_train_dataset(train_df, cfg, max_label)
    fast = fastpath.prepare(model, dataset, run_dir, batch_size=cfg.batch_size, seed=cfg.seed,
                            pretokenize=cfg.pretokenize, bucketing=cfg.length_bucketing, log=_log,
                            world_size=world)
    if rank0:
        runfiles.update_status(run_dir, batching=fast.info)  # padding share, for the Train page
    evaluator = RankingEvaluator(val_df, batch_size=cfg.eval_batch_size)
    samples_per_step = cfg.batch_size * cfg.gradient_accumulation * world
    dynamics = None
    if cfg.dynamics_max_pairs and rank0:
        from lib.dynamics import DynamicsRecorder

        dynamics = DynamicsRecorder(run_dir, train_df, cfg.dynamics_max_pairs, cfg.seed,
                                    batch_size=cfg.eval_batch_size)
        _log(f"training dynamics: {len(dynamics.pairs)} training pairs scored at each validation")
    progress = ProgressCallback(run_dir, evaluator, samples_per_step, dynamics=dynamics,
                                extra_start={
        "device": shown_device,
        "precision": precision, "train_rows": len(dataset), "train_pairs": len(train_df),
        "validation_pairs": len(val_df), "validation_queries": int(val_df["query_id"].nunique()),
        "resumed": resume, "max_length": max_length, "world_size": world, **fast.info,
        "recipe": recipe.to_json(), "distillation": distilled,
        "dynamics_pairs": len(dynamics.pairs) if dynamics is not None else 0,
    })
    stopper = GracefulStopCallback(flag)
    callbacks = [progress, stopper]
    patience = recipe.early_stopping_patience
    if patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    args = training_arguments(cfg, run_dir, precision, device, resume,
                              cold.label_learning_rate_mapping(recipe))
    trainer = fast.trainer(
        model=model, args=args, train_dataset=dataset,
        loss=build_loss(model, cfg, recipe.pos_weight),
        evaluator=evaluator, callbacks=callbacks,
    )
    checkpoint = runfiles.last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        _log("no checkpoint to resume from: starting from step 0")
        trainer.args.eval_on_start = True
    # the bar to beat (BM25, bi-encoder) on these validation pairs: cached in the run dir
    bar = baselines.at_run_start(run_dir, val_df, model_device, _log) if rank0 else None
    if flag.is_set():
        _log(f"stop requested ({flag.signal_name}) before training began")
        return _finish(run_dir, runfiles.STOPPED, note="stopped before the first step")
    if checkpoint is not None:
        _log(f"resuming from {checkpoint.name} (optimizer, scheduler and step count restored)")
    _log(f"training {len(dataset)} rows, {cfg.epochs} epoch(s), batch {cfg.batch_size}")
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    state = trainer.state
    stopped = stopper.stopped_at is not None
    best_step = state.best_global_step if state.best_model_checkpoint else None
    start, best = _best_from_progress(run_dir, best_step)
    start_wins = start_beats_best(run_dir, start, best)
    if start_wins:
        than = ("no checkpoint was validated" if best.get("ndcg@10") is None else
                f"above every checkpoint (best {best['ndcg@10']:.4f} at step {best.get('step')})")
        _log(f"step 0 (after distilling) scored validation NDCG@10 {start['ndcg@10']:.4f}, "
             f"{than}: the distilled model is kept")
        best_step, best = 0, dict(start)
    # validation and checkpoint writes are timed apart: the rate is the training loop's own
    train_time = max(1e-9, output.metrics.get("train_runtime", 0.0) - progress.overhead_seconds())
    samples = (state.global_step - progress.first_step) * samples_per_step
    result: dict[str, Any] = {
        "global_step": state.global_step, "max_steps": state.max_steps,
        "best": best, "start": start, "best_checkpoint": best_step,
        "train_runtime_s": round(output.metrics.get("train_runtime", 0.0), 2),
        "validation_seconds": round(evaluator.seconds_total, 2),
        "checkpoint_seconds": round(progress.save_seconds, 2),
        "train_samples_per_second": round(samples / train_time, 3),
        "wall_samples_per_second": output.metrics.get("train_samples_per_second"),
        "train_loss": output.metrics.get("train_loss"),
        "device": shown_device, "precision": precision, "max_length": max_length,
        "peak_gpu_mem_mb": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                            if device == "cuda" else None),
        **baselines.at_run_end(bar, best, start),
    }
    if rank0:
        model_dir = run_dir / runfiles.MODEL
        # written beside, then swapped in: a crash or a full disk mid-save never leaves a
        # half model/ (nor destroys the one a stopped run saved before this resume)
        partial = run_dir / runfiles.MODEL_PARTIAL
        shutil.rmtree(partial, ignore_errors=True)
        if start_wins:
            shutil.copytree(run_dir / runfiles.START_MODEL, partial)
        else:
            trainer.model.save(str(partial))  # the best checkpoint: loaded back at train end
        write_model_card(partial, meta, cfg, start, best, precision, model_device,
                         final_dir=model_dir, recipe=recipe.summary(),
                         distilled=bool(recipe.distill_teacher))
        shutil.rmtree(model_dir, ignore_errors=True)
        partial.rename(model_dir)
        result["model_path"] = str(model_dir)
        result["model_is_best"] = best_step is not None
        _log(f"saved {'best' if best_step is not None else 'last'} model to {model_dir}")
        baselines.append_to_card(model_dir, result, best)
    try:
        (run_dir / "eval").rmdir()  # the trainer makes it for evaluator files; ours writes none
    except OSError:
        pass
    state_name = runfiles.STOPPED if stopped else runfiles.FINISHED
    note = (f"stopped at step {stopper.stopped_at} ({flag.signal_name}); resume continues from "
            f"checkpoint-{stopper.stopped_at}") if stopped else None
    if not stopped and state.global_step < state.max_steps:
        note = (f"early stopping at step {state.global_step} of {state.max_steps}: "
                f"{patience} validations without a better NDCG@10")
    result["wall_seconds"] = round(time.time() - t_wall, 1)
    return _finish(run_dir, state_name, note=note, **result)


def _finish(run_dir: Path, state: str, **fields) -> dict[str, Any]:
    if _rank() == 0:
        runfiles.append_progress(run_dir, {"kind": "end", "state": state,
                                           "step": fields.get("global_step")})
        runfiles.update_status(run_dir, state=state, finished_at=runfiles.now_iso(), eta_s=0,
                               **fields)
        _log(f"{state}: {json.dumps({k: fields.get(k) for k in ('best', 'start', 'note')})}")
    return {"state": state, **fields}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.training.worker")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run's last checkpoint")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir).resolve()

    def work(flag) -> None:
        cfg = read_config(run_dir)
        if cfg.ray_train_workers and "RANK" not in os.environ:
            from lib.ray_backend import train_with_ray_train  # DDP across the Ray cluster

            train_with_ray_train(run_dir, args.resume, cfg)
        else:
            train(run_dir, args.resume, flag)

    def failed(exc: BaseException, trace: str) -> None:
        if _rank() == 0:
            report_failure(run_dir, exc, trace)

    return run_worker(run_dir, runfiles.CONFIG, work, failed)


def report_failure(run_dir: Path, exc: BaseException, trace: str = "") -> dict[str, Any]:
    """status.json says failed, why, the log's last lines and, for out-of-memory, what to try."""
    message = f"{type(exc).__name__}: {exc}"
    advice = None
    if is_disk_full(exc, trace):
        removed = diskfull.remove_partial_files(run_dir)  # also frees room for this report
        error, advice = diskfull.disk_full_message(run_dir, removed)
        message = f"{error} ({message[:300]})"
        _log(message)
    elif is_oom(message + trace):
        try:
            advice = oom_suggestion(read_config(run_dir))
        except Exception:  # noqa: BLE001 - advice is a bonus; the failure is still reported
            advice = None
    runfiles.append_progress(run_dir, {"kind": "end", "state": runfiles.FAILED})
    return runfiles.update_status(
        run_dir, state=runfiles.FAILED, finished_at=runfiles.now_iso(), eta_s=None,
        error=message[:2000], log_tail=runfiles.tail(run_dir / runfiles.LOG, 30), advice=advice,
    )


if __name__ == "__main__":
    raise SystemExit(main())
