"""Trainer plug-ins of the worker: validation with our metric code, progress files, graceful stop.

The evaluator is a sentence-transformers evaluator, so the trainer's best-checkpoint logic
(`metric_for_best_model`) and our progress log see the very same NDCG@10, computed by
`lib.metrics.evaluate_rankings`, the function the Evaluate step uses.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import TrainerCallback

try:  # sentence-transformers >= 6
    from sentence_transformers.base.evaluation import BaseEvaluator
except ImportError:  # 5.x
    from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator

from lib.metrics import DEFAULT_METRICS, evaluate_rankings
from lib.training import runfiles

EVAL_NAME = "validation"
PRIMARY = "ndcg@10"
BEST_METRIC_KEY = f"eval_{EVAL_NAME}_{PRIMARY}"  # what the trainer sees after its prefixing


class PairScorer:
    """Scores of fixed (query, document) pairs during training, equal to `model.predict`'s:
    tokenised once per run (the tokenizer does not change while training), scored longest
    first, bf16 on a GPU. Shared by validation and the training-dynamics recorder."""

    def __init__(self, pairs: pd.DataFrame, batch_size: int = 32):
        self.texts = list(zip(pairs["query"], pairs["document"], strict=True))
        self.batch_size = batch_size
        self._rows = None  # pre-tokenised pairs (False: the model needs the stock predict)

    def score(self, model):
        from lib.training import tokenized

        if self._rows is None:
            try:
                self._rows = tokenized.tokenize_pairs(model, self.texts,
                                                      prompt=tokenized.predict_prompt(model))
            except tokenized.Unsupported:
                self._rows = False
        if self._rows is False:
            return model.predict(self.texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 show_progress_bar=False)
        return tokenized.score_rows(model, self._rows, self.batch_size)


class RankingEvaluator(BaseEvaluator):
    """Scores the validation pairs with model.predict and ranks each query's candidates."""

    def __init__(self, pairs: pd.DataFrame, batch_size: int = 32,
                 metrics: tuple[str, ...] = DEFAULT_METRICS, name: str = EVAL_NAME):
        super().__init__()
        need = {"query_id", "doc_id", "query", "document", "label"}
        missing = need - set(pairs.columns)
        if missing:
            raise ValueError(f"validation pairs lack columns {sorted(missing)}")
        self.pairs = pairs.reset_index(drop=True)
        self.scorer = PairScorer(self.pairs, batch_size)
        self.texts = self.scorer.texts
        self.batch_size = batch_size
        self.metrics = tuple(metrics)
        self.name = name
        self.primary_metric = PRIMARY
        self.seconds_total = 0.0  # time spent validating, kept out of training throughput
        self.last = None  # the last EvalResult
        self.last_pairs_per_s = 0.0

    def __call__(self, model, output_path: str | None = None, epoch: int = -1,
                 steps: int = -1) -> dict[str, float]:
        t0 = time.perf_counter()
        scores = self.score(model)
        result = evaluate_rankings(self.pairs, scores, self.metrics, name="validation")
        self.last = result
        self.last_seconds = time.perf_counter() - t0
        self.last_pairs_per_s = len(self.texts) / max(self.last_seconds, 1e-9)
        self.seconds_total += self.last_seconds
        metrics = self.prefix_name_to_metrics(dict(result.means), self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def score(self, model):
        return self.scorer.score(model)

    def get_config_dict(self) -> dict[str, Any]:
        return {"queries": int(self.pairs["query_id"].nunique()), "pairs": len(self.pairs),
                "metrics": list(self.metrics)}


class StopFlag:
    """Set from a signal handler (SIGTERM/SIGINT/SIGUSR1) or by a stop file; read every step.

    Once installed, a stop request also arms SIGALRM for the stop timeout (from stop.json,
    default 60 s, plus a margin): if the graceful stop hangs, the kernel ends the process even
    when no app is polling to enforce it.
    """

    def __init__(self, run_dir: Path | None = None, default_timeout_s: float = 60.0,
                 margin_s: float = 15.0):
        self.run_dir = run_dir
        self._event = threading.Event()
        self.signal_name: str | None = None
        self.default_timeout_s = default_timeout_s
        self.margin_s = margin_s  # the app's SIGKILL comes first when it is polling
        self._installed = False

    def set(self, reason: str = "request") -> None:
        first = not self._event.is_set()
        self.signal_name = self.signal_name or reason
        self._event.set()
        if first and self._installed:
            signal.alarm(max(1, round(self._timeout_s() + self.margin_s)))

    def _timeout_s(self) -> float:
        info = runfiles.read_json(self.run_dir / runfiles.STOP) if self.run_dir else None
        try:
            return max(1.0, float((info or {}).get("timeout_s", self.default_timeout_s)))
        except (TypeError, ValueError):
            return self.default_timeout_s

    def is_set(self) -> bool:
        if self._event.is_set():
            return True
        if self.run_dir is not None and (self.run_dir / runfiles.STOP).exists():
            self.set("stop file")
            return True
        return False

    def install(self) -> None:
        def handler(signum, _frame):
            self.set(signal.Signals(signum).name)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, handler)
        self._installed = True


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GracefulStopCallback(TrainerCallback):
    """On a stop request: save a checkpoint at the end of this step and end training.

    Under DDP every rank must stop at the same step, so the flag is max-reduced across ranks.
    """

    def __init__(self, flag: StopFlag):
        self.flag = flag
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.flag.is_set()
        if _distributed():
            import torch
            import torch.distributed as dist

            t = torch.tensor([1.0 if stop else 0.0], device=args.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            stop = bool(t.item() > 0)
        if stop and self.stopped_at is None:
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control


def gpu_memory_mb() -> float | None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


class ProgressCallback(TrainerCallback):
    """Writes progress.jsonl records and a status heartbeat (rank 0 only)."""

    def __init__(self, run_dir: Path, evaluator: RankingEvaluator, samples_per_step: int,
                 extra_start: dict[str, Any] | None = None, dynamics=None):
        self.run_dir = run_dir
        self.dynamics = dynamics  # a lib.dynamics.DynamicsRecorder, or None (off)
        self.evaluator = evaluator
        self.samples_per_step = samples_per_step
        self.extra_start = extra_start or {}
        self.t_start = 0.0
        self.first_step = 0
        self._last_step = 0
        self._last_time = 0.0
        self._last_eval_s = 0.0
        self.n_evals = 0
        self.save_seconds = 0.0  # writing checkpoints
        self._t_step_end = 0.0
        self._t_after_eval = 0.0

    # -- helpers -----------------------------------------------------------------------------
    def overhead_seconds(self) -> float:
        """Time spent validating (training dynamics included) and writing checkpoints: work a
        bare training loop skips."""
        dyn = self.dynamics.seconds if self.dynamics is not None else 0.0
        return self.evaluator.seconds_total + self.save_seconds + dyn

    def train_seconds(self) -> float:
        """Wall time of this process's training so far, minus validation and checkpointing."""
        return max(1e-9, time.perf_counter() - self.t_start - self.overhead_seconds())

    def samples_per_second(self, step: int) -> float:
        return (step - self.first_step) * self.samples_per_step / self.train_seconds()

    def eta_seconds(self, state) -> float | None:
        done = state.global_step - self.first_step
        if done <= 0:
            return None
        per_step = self.train_seconds() / done
        left = max(0, state.max_steps - state.global_step)
        eval_left = 0.0
        if self.n_evals and state.eval_steps:
            avg_eval = self.evaluator.seconds_total / self.n_evals
            eval_left = (left // max(1, int(state.eval_steps)) + 1) * avg_eval
        return round(left * per_step + eval_left, 1)

    def _heartbeat(self, state, **fields) -> None:
        runfiles.update_status(
            self.run_dir, step=state.global_step, max_steps=state.max_steps,
            epoch=round(float(state.epoch or 0.0), 4), eta_s=self.eta_seconds(state), **fields,
        )

    # -- trainer hooks -----------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.t_start = time.perf_counter()
        self.first_step = self._last_step = state.global_step
        self._last_time = self.t_start
        if state.is_world_process_zero:
            runfiles.append_progress(self.run_dir, {
                "kind": "start", "step": state.global_step, "max_steps": state.max_steps,
                "num_train_epochs": args.num_train_epochs, **self.extra_start,
            })
            self._heartbeat(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if not state.is_world_process_zero or "loss" not in logs:
            return
        now = time.perf_counter()
        overhead = self.overhead_seconds() - self._last_eval_s
        dt = max(1e-9, now - self._last_time - overhead)
        rate = (state.global_step - self._last_step) * self.samples_per_step / dt
        self._last_step, self._last_time = state.global_step, now
        self._last_eval_s = self.overhead_seconds()
        record = {
            "kind": "train", "step": state.global_step, "epoch": _f(state.epoch),
            "loss": _f(logs.get("loss")), "lr": _f(logs.get("learning_rate")),
            "grad_norm": _f(logs.get("grad_norm")), "samples_per_s": round(rate, 2),
            "gpu_mem_mb": gpu_memory_mb(),
        }
        runfiles.append_progress(self.run_dir, record)
        self._heartbeat(state, loss=record["loss"], samples_per_s=record["samples_per_s"])

    def on_step_end(self, args, state, control, **kwargs):
        self._t_step_end = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.save_seconds += now - max(self._t_step_end, self._t_after_eval)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        dyn_s = None
        if (self.dynamics is not None and state.global_step > 0 and state.is_world_process_zero
                and kwargs.get("model") is not None):
            # step 0 is the untrained start: its scores say nothing about the labels
            before = self.dynamics.seconds
            self.dynamics.record(kwargs["model"], state.global_step, state.epoch)
            dyn_s = round(self.dynamics.seconds - before, 2)
        self._t_after_eval = time.perf_counter()  # after the dynamics: not counted as saving
        if not state.is_world_process_zero:
            return
        self.n_evals += 1
        result = self.evaluator.last
        record = {
            "kind": "eval", "step": state.global_step, "epoch": _f(state.epoch),
            "split": "validation",
            **{m: _f(v) for m, v in (result.means.items() if result else [])},
            "n_queries": result.n_queries if result else None,
            "n_excluded": result.n_excluded if result else None,
            "eval_seconds": round(getattr(self.evaluator, "last_seconds", 0.0), 2),
            "eval_pairs_per_s": round(getattr(self.evaluator, "last_pairs_per_s", 0.0), 1),
            **({"dynamics_seconds": dyn_s} if dyn_s is not None else {}),
            "gpu_mem_mb": gpu_memory_mb(),
        }
        runfiles.append_progress(self.run_dir, record)
        best = state.best_metric if state.best_metric not in (None, float("-inf")) else None
        self._heartbeat(state, last_eval={k: record.get(k) for k in DEFAULT_METRICS},
                        best_metric=_f(best))


def _f(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else round(v, 6)
