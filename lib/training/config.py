"""The training configuration: one validated model shared by the Train page, the CLI and the worker.

A run stores its config as config.json (what the worker reads) and config.yaml (what a person
reads or passes back with `--config`). Bad values fail here, before anything is launched, with the
field, the value and the rule; doubtful values pass with a warning (`config_warnings`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

LOSSES = ("bce", "lambda", "listnet")
LISTWISE_LOSSES = ("lambda", "listnet")
GUIDE_LR_RANGE = (2e-5, 5e-5)
MIN_TRAIN_PAIRS = 500


class ConfigError(ValueError):
    """A config value is invalid; the message names the source, the field and the rule."""


class TrainConfig(BaseModel):
    """Everything that decides what a training run does. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    base_model: str = Field(
        "default", description="'default' (bundled all-MiniLM-L6-v2), a local model dir or a hub id"
    )
    learning_rate: float = Field(3e-5, gt=0, lt=1)
    batch_size: int = Field(8, ge=1, le=4096, description="pairs per device per step (queries "
                            "per step for a listwise loss)")
    epochs: int = Field(2, ge=1, le=100)
    max_length: int = Field(512, ge=16, le=8192, description="tokens of query + document")
    warmup: float = Field(0.1, ge=0, lt=1, description="fraction of the steps spent warming up")
    weight_decay: float = Field(0.01, ge=0, lt=1)
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    seed: int = Field(12, ge=0, le=2**31 - 1)
    eval_steps: int = Field(100, ge=1, description="validate (and checkpoint) every N steps")
    logging_steps: int = Field(10, ge=1)
    loss: Literal["bce", "lambda", "listnet"] = Field(
        "bce", description="bce: pointwise, graded labels scaled to label/max_label; lambda or "
        "listnet: listwise over each query's documents, grades used as they are"
    )
    pos_weight: float | None = Field(None, gt=0, description="BCE weight of positive pairs")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after N validations without a better NDCG@10"
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16; on a CPU bf16 "
        "where it has AMX (about 1.6-2x faster training), else fp32"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_gpus: int = Field(0, ge=0, le=64, description="GPUs for one run (0 = all visible); "
                          "more than one launches DDP through torchrun")
    ray_train_workers: int = Field(
        0, ge=0, le=1024, description="with a Ray cluster: DDP over this many Ray Train workers "
        "(one GPU each, or CPU processes with gloo), across machines; 0 = off"
    )
    max_train_pairs: int | None = Field(
        None, ge=1, description="train on at most this many pairs (whole queries, seeded)"
    )
    eval_batch_size: int = Field(32, ge=1, le=4096)
    save_total_limit: int = Field(2, ge=1, le=100, description="checkpoints kept: the best "
                                  "and the latest")
    cpu_threads: int = Field(0, ge=0, le=1024, description="torch CPU threads (0 = auto: "
                             "one per idle core, from the load average at the start)")
    trust_remote_code: bool = False
    pretokenize: bool = Field(True, description="tokenise every pair once per run (cached in "
                              "the run dir) instead of in every training step")
    length_bucketing: bool = Field(True, description="batches of similar length (seeded): "
                                   "far less padding at long max lengths")
    torch_compile: bool = Field(False, description="torch.compile the model (GPU; first steps "
                                "slower while it compiles)")
    cold_start: Literal["auto", "on", "off"] = Field(
        "auto", description="the recipe for a new (untrained) reranker head: a higher head "
        "learning rate, pos_weight from the label balance, early stopping. auto: on when the "
        "base model has no trained head"
    )
    head_learning_rate: float | None = Field(
        None, gt=0, lt=1, description="learning rate of the reranker head under the cold-start "
        "recipe (default 1e-3); the encoder keeps learning_rate"
    )
    label_head_learning_rate: float | None = Field(
        None, gt=0, lt=1, description="after distillation, the reranker head's learning rate "
        "in the label phase (the head is trained by then); None: head_learning_rate, as in "
        "distillation"
    )
    distill_teacher: str | None = Field(
        None, description="distil before fine-tuning: 'biencoder' (the zero-shot bi-encoder, "
        "offline), a cross-encoder path/hub id, or 'auto' (the bi-encoder when the cold-start "
        "recipe is on, i.e. the base's reranker head is new; none otherwise); None: no distillation"
    )
    # Off by default: with all-MiniLM-L6 on a CPU 1,000 pairs took 202 s of a 471 s run, and
    # on the noise bench its flags did no better than the zero-shot bi-encoder (bench/results/
    # noise.log)
    dynamics_max_pairs: int = Field(
        0, ge=0, le=1_000_000, description="training dynamics: at each validation also score "
        "this many training pairs (whole queries, seeded; 0 = off), for the label-noise page's "
        "confidence/variability map; costs about one validation pass over that many pairs "
        "(e.g. 1000)"
    )
    distill_epochs: int = Field(1, ge=1, le=20, description="epochs of the distillation phase")
    distill_corpus: str | None = Field(
        None, description="a corpus (name or id) whose top documents for each training query "
        "the teacher also scores: the hard, close candidates a deployed reranker sees; documents "
        "labelled for validation or test queries are left out. 'auto': the corpus the dataset "
        "was mined from, else the dataset's own documents (made into a corpus once). Used only "
        "when a teacher is used"
    )
    distill_corpus_top_k: int = Field(
        20, ge=1, le=1000, description="documents retrieved from the distillation corpus per "
        "training query (fewer when some are already labelled for it)"
    )
    distill_corpus_retriever: str = Field(
        "bm25", description="first stage that retrieves from the distillation corpus: bm25, "
        "biencoder or biencoder:MODEL"
    )
    distill_pseudo_queries: int = Field(
        0, ge=0, le=1_000_000, description="also distil on this many pseudo-queries: the first "
        "sentence of corpus documents drawn at random (seeded; none labelled for a validation or "
        "test query), each with its top distill_corpus_top_k corpus documents. More queries to "
        "learn the teacher from than the labels give; needs a distillation corpus (0 = off)"
    )
    validation_corpus_top_k: int = Field(
        30, ge=0, le=1000, description="a validation query with only relevant labelled pairs "
        "(positives-only data) also gets its BM25 top-k from the corpus the dataset was mined "
        "from, unjudged documents counted as not relevant, as retrieve-then-rerank evaluation "
        "scores them; otherwise its NDCG@10 only orders its positives (0 = off)"
    )
    distill_docs_per_query: int = Field(
        10, ge=0, le=1000, description="training documents sampled per training query (seeded) "
        "on top of its own candidates, scored by the teacher"
    )

    @property
    def listwise(self) -> bool:
        return self.loss in LISTWISE_LOSSES

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


PRESETS: dict[str, dict[str, Any]] = {
    # The fine-tuning guide's defaults.
    "Guide default": {
        "learning_rate": 3e-5, "batch_size": 8, "epochs": 2, "eval_steps": 100,
        "max_length": 512, "max_train_pairs": None, "precision": "auto",
    },
    # Minutes on a laptop CPU: all-MiniLM-L6 trains ~17 pairs/s on 2 idle cores at 128 tokens in
    # fp32, ~27 in bf16 where the CPU has AMX (precision auto; bench/results/train_cpu_bf16.log).
    "CPU quick": {
        "learning_rate": 5e-5, "batch_size": 16, "epochs": 1, "eval_steps": 25,
        "max_length": 128, "max_train_pairs": 1200, "device": "cpu", "precision": "auto",
        "logging_steps": 5,
    },
    # Throughput on one GPU: a batch big enough to keep the card busy, lr by scaled_lr.
    "GPU throughput": {
        "learning_rate": 8.5e-5, "batch_size": 256, "epochs": 2, "eval_steps": 50,
        "max_length": 256, "max_train_pairs": None, "device": "cuda", "precision": "auto",
        "warmup": 0.1, "eval_batch_size": 512, "early_stopping_patience": 5,
        "pretokenize": True, "length_bucketing": True, "torch_compile": False,
    },
    "GPU full": {
        "learning_rate": 3e-5, "batch_size": 32, "epochs": 2, "eval_steps": 100,
        "max_length": 512, "max_train_pairs": None, "device": "cuda", "precision": "auto",
        "early_stopping_patience": 5,
    },
}
# The Train page's default on a CPU: with a base whose reranker head is new (the bundled offline
# base) it first distils the zero-shot bi-encoder (1 epoch) on each training query's candidates,
# 5 sampled documents and its BM25 top 30 of the corpus (mined from, else the dataset's own
# documents), plus 300 pseudo-queries from that corpus with their top 30, then trains 1 epoch on
# the labels. On the demo it ends above the bi-encoder on every seed measured, and above 3 epochs
# without pseudo-queries in less time (bench/results/quality_default.log); a base with a trained
# head skips the distillation (teacher auto) and fine-tunes on all pairs.
PRESETS["CPU recommended"] = {
    "learning_rate": 5e-5, "batch_size": 16, "epochs": 1, "eval_steps": 60,
    "max_length": 128, "max_train_pairs": None, "device": "cpu", "precision": "auto",
    "logging_steps": 5, "distill_teacher": "auto", "distill_epochs": 1,
    "distill_docs_per_query": 5, "distill_corpus": "auto", "distill_corpus_top_k": 30,
    "distill_pseudo_queries": 300,
}
# The same, distilling whatever the base (set distill_teacher to a stronger cross-encoder).
PRESETS["Distil (CPU)"] = {**PRESETS["CPU recommended"], "distill_teacher": "biencoder"}
# The default on a GPU: CPU recommended's recipe with the distillation a GPU affords (1,000
# pseudo-queries, 2 epochs). On an H200, positives-only Cranfield: test NDCG@10 0.408 / 0.405
# (seeds 12, 7) where GPU full (no distillation) scored 0.162, significantly below BM25's 0.361
# (bench/results/remote_gpu_h200.json). A base with a trained head skips the distillation.
PRESETS["GPU recommended"] = {
    "learning_rate": 5e-5, "batch_size": 32, "epochs": 1, "eval_steps": 50, "logging_steps": 5,
    "max_length": 128, "max_train_pairs": None, "device": "cuda", "precision": "auto",
    "distill_teacher": "auto", "distill_epochs": 2, "distill_docs_per_query": 5,
    "distill_corpus": "auto", "distill_corpus_top_k": 30, "distill_pseudo_queries": 1000,
}
DEFAULT_CPU_PRESET = "CPU recommended"
DEFAULT_GPU_PRESET = "GPU recommended"
PRESET_NOTES = {
    "Guide default": "lr 3e-5, batch 8, 2 epochs, validate every 100 steps, max length 512.",
    "CPU quick": "max length 128, 1 epoch, at most 1,200 training pairs, batch 16, validated "
    "every 25 steps: a few minutes on an idle CPU (all-MiniLM-L6 trains about 17 pairs/s on "
    "2 cores in fp32, about 27 in bf16 on CPUs with AMX), longer when other jobs share it.",
    "GPU throughput": "batch 256, max length 256, bf16, pre-tokenised length-bucketed batches; "
    "learning rate 8.5e-5 = 3e-5 x sqrt(256 / 32) (square-root scaling from the guide's batch "
    "32) with 10% warmup. The Checks' memory estimate for all-MiniLM-L6: about 8.6 GiB (fits a "
    "16 GB card; on a bigger card raise the batch). Set torch_compile for a further gain once "
    "shapes settle. Not yet measured on a GPU here.",
    "GPU full": "batch 32, 2 epochs, max length 512, bf16/fp16, early stopping after 5 "
    "validations without improvement. No distillation: for a base with a trained reranker head "
    "(a hub cross-encoder). With the bundled base (new head) on positives-only Cranfield it "
    "scored far below BM25 (test NDCG@10 0.162 vs 0.361): use GPU recommended there.",
    "CPU recommended": "the default on a CPU. With a base whose reranker head is new (the "
    "bundled all-MiniLM-L6-v2) the cross-encoder first learns the zero-shot bi-encoder's scores "
    "(1 epoch, MSE) on each training query's candidates, 5 sampled training documents and its "
    "BM25 top 30 of the corpus the data was mined from, else of the dataset's own documents, "
    "plus 300 pseudo-queries (first sentences of that corpus's documents) with their top 30; "
    "no validation or test query's document is used. Then 1 epoch on all labelled pairs, max "
    "length 128. On the demo it ends above the zero-shot bi-encoder (not significantly) in "
    "16-19 min on a 2-core CPU; CPU quick stays below it. A base with a trained head skips "
    "the distillation.",
    "Distil (CPU)": "CPU recommended, distilling whatever the base: set distill_teacher to a "
    "cross-encoder path or hub id to distil a stronger reranker into this one.",
    "GPU recommended": "the default on a GPU: CPU recommended's recipe with more distillation "
    "(1,000 pseudo-queries, 2 epochs), batch 32, bf16/fp16, max length 128. With a base whose "
    "reranker head is new it first distils the zero-shot bi-encoder, then 1 epoch on the "
    "labels; the distilled model is kept when no checkpoint beats it on validation. On an H200 "
    "(positives-only Cranfield, 1,616 training pairs) a run took about 3 minutes and scored "
    "test NDCG@10 0.405-0.408 vs BM25 0.361 and GPU full's 0.162. A base with a trained head "
    "skips the distillation: for a hub cross-encoder GPU full's 512 tokens and 2 epochs may "
    "suit better.",
}


def scaled_lr(batch_size: int, base_lr: float = 3e-5, base_batch: int = 32) -> float:
    """Square-root learning-rate scaling from the guide's setting: a bigger batch averages away
    gradient noise, so it tolerates a larger step, but linear scaling overshoots on BERT."""
    return base_lr * math.sqrt(max(1, batch_size) / base_batch)


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return build_config({**PRESETS[name], **overrides}, source=f"preset {name!r}")


def _describe(err: dict) -> str:
    field = ".".join(str(p) for p in err.get("loc", ())) or "config"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{field}: {err.get('msg', 'invalid')}{shown}"


def build_config(values: dict[str, Any] | None, source: str = "config") -> TrainConfig:
    """A TrainConfig from a dict; every bad field is listed in one ConfigError."""
    try:
        return TrainConfig(**(values or {}))
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{source}: invalid training config: {problems}") from None


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; values are read as YAML scalars (3e-5, 8, true, null)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in TrainConfig.model_fields:
            raise ConfigError(
                f"--set {item!r}: unknown key {key!r}; known: {', '.join(TrainConfig.model_fields)}"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out[key] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of config keys (a saved run's config.yaml works as is)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML/JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    build_config(data, source=str(p))  # names the file in any error
    return data


def save_config(cfg: TrainConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    data = cfg.to_json()
    (run_dir / "config.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def read_config(run_dir: Path) -> TrainConfig:
    path = run_dir / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the run's config: {exc}") from None
    return build_config(data, source=str(path))


def check_model(cfg: TrainConfig):
    """Resolve the base model now, so a missing path fails before launch. Returns a ModelRef."""
    from lib.models import ModelNotFoundError, resolve_model

    try:
        return resolve_model(cfg.base_model)
    except ModelNotFoundError as exc:
        raise ConfigError(f"base_model: {exc}") from None


def config_warnings(
    cfg: TrainConfig,
    n_train_pairs: int | None = None,
    extra: list[str] | None = None,
    *,
    gpu_available: bool | None = None,
    model_max_positions: int | None = None,
) -> list[str]:
    """Doubtful but allowed settings, in words a user can act on. `extra` comes from the Checks
    (leakage, truncation, memory estimate) and is passed through unchanged."""
    out: list[str] = []
    lo, hi = GUIDE_LR_RANGE
    hi = max(hi, scaled_lr(cfg.batch_size * cfg.gradient_accumulation, hi))  # big batches
    if not lo <= cfg.learning_rate <= hi * 1.0001:
        out.append(
            f"learning rate {cfg.learning_rate:g} is outside the usual {lo:g}-{hi:g} for "
            "cross-encoder fine-tuning: too high forgets the pretrained model, too low barely moves"
        )
    if cfg.epochs > 3:
        out.append(
            f"{cfg.epochs} epochs: cross-encoders overfit small data fast; 1-3 is usual (the best "
            "checkpoint by validation NDCG@10 is kept either way)"
        )
    if n_train_pairs is not None:
        used = min(n_train_pairs, cfg.max_train_pairs or n_train_pairs)
        if used < MIN_TRAIN_PAIRS:
            out.append(
                f"only {used} training pairs (fewer than {MIN_TRAIN_PAIRS}): expect noisy "
                "validation numbers and little gain"
            )
        if not cfg.listwise:  # listwise steps count queries, not pairs
            steps = max(1, -(-used // (cfg.batch_size * cfg.gradient_accumulation))) * cfg.epochs
            if cfg.eval_steps > steps:
                out.append(
                    f"eval_steps {cfg.eval_steps} exceeds the {steps} training steps: validation "
                    "runs only at the start and at the end"
                )
    cpu_only = cfg.device == "cpu" or gpu_available is False
    if cpu_only:
        from lib.training.cpu_bf16 import cpu_fallback_note

        if note := cpu_fallback_note(cfg.precision):
            out.append(note)
    if cfg.device == "cuda" and gpu_available is False:
        out.append("device cuda was asked for but no GPU is visible: the run will fail to start")
    if cfg.pos_weight is not None and cfg.listwise:
        out.append(f"pos_weight applies to the BCE loss only; ignored with loss {cfg.loss}")
    if model_max_positions and cfg.max_length > model_max_positions:
        out.append(
            f"max_length {cfg.max_length} exceeds the model's {model_max_positions} positions: "
            f"the run uses {model_max_positions}"
        )
    if cfg.trust_remote_code:
        out.append("trust_remote_code is on: the model repository's own Python code will run")
    out.extend(extra or [])
    return out


_OOM_MARKERS = (
    "out of memory", "outofmemoryerror", "cuda error: out of memory", "can't allocate memory",
    "cannot allocate memory", "memoryerror", "cublas_status_alloc_failed",
)


def is_oom(text: str) -> bool:
    low = (text or "").lower()
    return any(m in low for m in _OOM_MARKERS)


def oom_suggestion(cfg: TrainConfig) -> str:
    """A concrete smaller setting to try after running out of memory."""
    tips = []
    if cfg.batch_size > 1:
        half = max(1, cfg.batch_size // 2)
        accum = cfg.gradient_accumulation * (cfg.batch_size // half)
        tips.append(
            f"batch_size={half} with gradient_accumulation={accum} (the same effective batch of "
            f"{half * accum})"
        )
    if cfg.max_length > 128:
        tips.append(f"max_length={max(128, cfg.max_length // 2)}")
    if cfg.eval_batch_size > 8:
        tips.append(f"eval_batch_size={max(8, cfg.eval_batch_size // 2)}")
    if not tips:
        return "out of memory even at batch 1 and max length 128: use a smaller base model"
    return "out of memory: try " + ", or ".join(tips)
