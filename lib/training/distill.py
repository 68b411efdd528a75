"""Distillation phase: teach the cross-encoder a teacher's scores before fine-tuning on labels.

Labels are few (a few thousand pairs); a teacher can score many more (query, document) pairs: each
training query against its own candidates plus documents sampled (seeded) from the training split.
Only the training split is exported to the run, so no validation or test query reaches the teacher;
with a distillation corpus (lib.training.distill_corpus) the training queries' top corpus documents
join them, minus any document labelled for a validation or test query. The teacher is the
zero-shot bi-encoder (offline, cosine) or any cross-encoder. Its scores are cached in the run
directory, so a resumed or repeated run does not score them again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.training import runfiles

BIENCODER_TEACHER = "biencoder"
DISTILL_DIR = "distill"
SCORES_FILE = "teacher_scores.jsonl"
INFO_FILE = "teacher.json"


def distill_pairs(train: pd.DataFrame, docs_per_query: int, seed: int,
                  corpus: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each training query x (its own candidates + its `corpus` documents, when the run has a
    distillation corpus + `docs_per_query` other training documents)."""
    cols = ["query_id", "doc_id", "query", "document"]
    own = train[cols]
    if corpus is not None and len(corpus):
        own = pd.concat([own, corpus[cols]], ignore_index=True)
    own = own.drop_duplicates(["query_id", "doc_id"])
    if docs_per_query <= 0:
        return own.reset_index(drop=True)
    pool = train[["doc_id", "document"]].drop_duplicates("doc_id").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    extra = []
    for qid, group in own.groupby("query_id", sort=True):
        taken = set(group["doc_id"])
        free = pool[~pool["doc_id"].isin(taken)]
        if free.empty:
            continue
        pick = free.iloc[rng.choice(len(free), size=min(docs_per_query, len(free)), replace=False)]
        extra.append(pd.DataFrame({"query_id": qid, "doc_id": pick["doc_id"].to_numpy(),
                                   "query": group["query"].iloc[0],
                                   "document": pick["document"].to_numpy()}))
    return pd.concat([own, *extra], ignore_index=True)


def teacher_scorer(teacher: str, device: str) -> Callable[[list[str], list[str]], np.ndarray]:
    """A function (queries, documents) -> scores for the teacher spec."""
    from lib.models import DEFAULT_MODEL, resolve_model

    if teacher.strip().lower() == BIENCODER_TEACHER:
        from lib.evaluation.scoring import cached_bi_encoder, score_bi_encoder

        ref = resolve_model(DEFAULT_MODEL)
        model = cached_bi_encoder(ref, device=device)

        def bi(queries: list[str], documents: list[str]) -> np.ndarray:
            return score_bi_encoder(None, model, "", queries, documents)[0]

        return bi
    from lib.models import load_cross_encoder

    ce = load_cross_encoder(resolve_model(teacher), device=device)

    def cross(queries: list[str], documents: list[str]) -> np.ndarray:
        return np.asarray(ce.predict(list(zip(queries, documents, strict=True)),
                                     convert_to_numpy=True, show_progress_bar=False),
                          dtype=np.float64)

    return cross


def teacher_scores(run_dir: Path, pairs: pd.DataFrame, teacher: str, device: str,
                   log: Callable[[str], None] = print) -> np.ndarray:
    """The teacher's score of every pair, from the run's cache when it holds these pairs."""
    out = run_dir / DISTILL_DIR
    info = {"teacher": teacher, "n_pairs": len(pairs),
            "keys": int(pd.util.hash_pandas_object(pairs[["query", "document"]], index=False)
                        .sum() % (2**61))}
    cached = runfiles.read_json(out / INFO_FILE)
    if cached == info and (out / SCORES_FILE).is_file():
        frame = pd.read_json(out / SCORES_FILE, lines=True)
        log(f"teacher scores: {len(frame)} from the run's cache")
        return frame["teacher_score"].to_numpy(dtype=np.float64)
    log(f"teacher {teacher!r}: scoring {len(pairs)} pairs")
    scores = teacher_scorer(teacher, device)(list(pairs["query"]), list(pairs["document"]))
    out.mkdir(parents=True, exist_ok=True)
    frame = pairs[["query_id", "doc_id"]].assign(teacher_score=scores)
    frame.to_json(out / SCORES_FILE, orient="records", lines=True)
    runfiles.write_json_atomic(out / INFO_FILE, info)
    return np.asarray(scores, dtype=np.float64)


def standardise(scores: np.ndarray, query_ids=None) -> np.ndarray:
    """z-scores: a bi-encoder's cosines sit in a narrow band and a cross-encoder's logits on any
    scale; unit-scale targets keep the distilled logits where BCE fine-tuning starts well. With
    `query_ids`, each query's scores are standardised on their own: only the order within a
    query matters for reranking, so the student need not spend capacity on the teacher's
    per-query offsets (a long query's cosines all sit lower, say)."""
    if query_ids is not None:
        from lib.evaluation.fusion import normalise

        return normalise(scores, query_ids, "zscore")
    std = float(scores.std()) or 1.0
    return (scores - float(scores.mean())) / std


def mse_against(model, pairs: pd.DataFrame, targets: np.ndarray, batch_size: int = 64) -> float:
    """Mean squared error of the model's raw scores against the (standardised) teacher targets."""
    import torch

    pred = model.predict(list(zip(pairs["query"], pairs["document"], strict=True)),
                         batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False,
                         activation_fn=torch.nn.Identity())
    return float(np.mean((np.asarray(pred, dtype=np.float64) - targets) ** 2))


def run_distillation(model, train: pd.DataFrame, cfg, run_dir: Path, *, teacher: str,
                     device: str, precision: str,
                     learning_rate_mapping: dict[str, float] | None = None,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Phase 1: fit the model to the teacher's scores with sentence-transformers' MSELoss.
    `teacher` is the recipe's resolved spec (never `auto`), not the config's.
    Returns what happened (pairs, teacher, MSE before/after), also appended to progress.jsonl."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MSELoss
    from transformers import TrainerCallback

    from lib.training import distill_corpus, fastpath

    from_corpus = distill_corpus.read(run_dir / runfiles.DATA)
    pairs = distill_pairs(train, cfg.distill_docs_per_query, cfg.seed, from_corpus)
    raw = teacher_scores(run_dir, pairs, teacher, device, log=log)
    targets = standardise(raw, pairs["query_id"])
    probe = pairs.sample(n=min(len(pairs), 256), random_state=cfg.seed)
    probe_targets = targets[probe.index.to_numpy()]
    before = mse_against(model, probe, probe_targets, cfg.eval_batch_size)
    dataset = Dataset.from_dict({"query": list(pairs["query"]), "document": list(pairs["document"]),
                                 "label": [float(x) for x in targets]})

    class _Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                runfiles.append_progress(run_dir, {"kind": "distill", "step": state.global_step,
                                                   "loss": logs["loss"],
                                                   "lr": logs.get("learning_rate")})

    args = CrossEncoderTrainingArguments(
        output_dir=str(run_dir / DISTILL_DIR / "trainer"), num_train_epochs=cfg.distill_epochs,
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        learning_rate_mapping=learning_rate_mapping or {}, warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay, gradient_accumulation_steps=cfg.gradient_accumulation,
        seed=cfg.seed, eval_strategy="no", save_strategy="no", logging_steps=cfg.logging_steps,
        logging_first_step=True, bf16=precision == "bf16", fp16=precision == "fp16",
        use_cpu=device == "cpu", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        logging_nan_inf_filter=False,  # as in the label phase: its check syncs the GPU every step
    )
    # Pre-tokenised once (the label phase's fast path, when the config pre-tokenises): this phase
    # has 10-20x the label phase's pairs, so tokenising in every step cost most here. The stock
    # sampler's batches are kept (no length bucketing), so the distilled model is the one the
    # stock path trains and the quality figures measured with it stand.
    fast = fastpath.prepare(model, dataset, run_dir / DISTILL_DIR, batch_size=cfg.batch_size,
                            seed=cfg.seed, pretokenize=cfg.pretokenize, bucketing=False, log=log,
                            world_size=int(os.environ.get("WORLD_SIZE", "1")))
    log(f"distilling {len(pairs)} pairs from {teacher!r}, "
        f"{cfg.distill_epochs} epoch(s)")
    trainer = fast.trainer(model=model, args=args, train_dataset=dataset, loss=MSELoss(model),
                           evaluator=None, callbacks=[_Log()])
    output = trainer.train()
    after = mse_against(model, probe, probe_targets, cfg.eval_batch_size)
    pseudo = pairs["query_id"].astype(str).str.startswith(distill_corpus.PSEUDO_PREFIX)
    result = {"teacher": teacher, "pairs": len(pairs),
              "queries": int(pairs["query_id"].nunique()), "epochs": cfg.distill_epochs,
              "corpus_pairs": 0 if from_corpus is None else len(from_corpus),
              "pseudo_queries": int(pairs.loc[pseudo, "query_id"].nunique()),
              "pseudo_pairs": int(pseudo.sum()),
              "pseudo_corpus_pairs": 0 if from_corpus is None else int(
                  from_corpus["query_id"].astype(str)
                  .str.startswith(distill_corpus.PSEUDO_PREFIX).sum()),
              "mse_before": round(before, 4), "mse_after": round(after, 4),
              "train_loss": output.metrics.get("train_loss"),
              "seconds": round(output.metrics.get("train_runtime", 0.0), 1),
              "pairs_per_second": output.metrics.get("train_samples_per_second"),
              "batching": fast.info}
    runfiles.append_progress(run_dir, {"kind": "distill_end", **result})
    log(f"distillation: MSE against the teacher {before:.3f} -> {after:.3f}")
    return result

