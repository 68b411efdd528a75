"""GPU memory needed to fine-tune a cross-encoder, estimated before a launch runs out of memory.

Training with AdamW keeps, per parameter: fp32 weights (4 B), fp32 gradients (4 B) and two fp32
optimizer moments (8 B); mixed precision adds a 16-bit copy of the weights (2 B). Activations are
ACT_BYTES[precision] * s * b * h per layer (s = max length, b = batch size, h = hidden size), the
34*s*b*h-bytes-per-layer term of Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models") re-fitted on an H100 with PyTorch SDPA attention, which stores no s x s
attention matrix (bench/checks_memory_gpu.py; BERT shapes, 0.99-1.18x the measured peak). With
eager attention the matrix term 5*a*s^2*b (a = heads) is added. A fixed allowance covers the CUDA
context and allocator fragmentation.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
CUDA_OVERHEAD_BYTES = int(0.5 * GIB)
FRAGMENTATION = 0.10
PRECISIONS = ("fp32", "fp16", "bf16")
# activation bytes per (token x layer x hidden unit), measured with SDPA attention
ACT_BYTES = {"fp32": 72, "fp16": 48, "bf16": 48}
ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class ModelDims:
    n_params: int
    hidden: int
    layers: int
    heads: int
    source: str  # 'safetensors' (exact count) or 'config' (estimated from the architecture)


@dataclass
class MemoryEstimate:
    total_bytes: int
    parts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"total_bytes": self.total_bytes, "total_gib": round(self.total_bytes / GIB, 2),
                "parts": self.parts}


def estimate_training_memory(
    n_params: int,
    hidden: int,
    layers: int,
    batch_size: int,
    max_length: int,
    precision: str = "fp32",
    heads: int | None = None,
    attention: str = "sdpa",
) -> MemoryEstimate:
    """Peak training memory (bytes) of an encoder with AdamW at this batch size and max length."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, got {attention!r}")
    if min(n_params, hidden, layers, batch_size, max_length) <= 0:
        raise ValueError("parameters, hidden size, layers, batch size and max length must be > 0")
    heads = heads or max(1, hidden // 64)
    s, b, h = max_length, batch_size, hidden
    elem = 4 if precision == "fp32" else 2
    per_layer = ACT_BYTES[precision] * s * b * h
    if attention == "eager":  # scores, softmax and dropout mask of every head are kept
        per_layer += 5 * heads * s * s * b * elem // 2
    embeddings = 4 * s * b * h * elem
    parts = {
        "weights": 4 * n_params,
        "gradients": 4 * n_params,
        "optimizer": 8 * n_params,
        "weights_16bit_copy": 0 if precision == "fp32" else 2 * n_params,
        "activations": layers * per_layer + embeddings,
    }
    subtotal = sum(parts.values())
    parts["cuda_context_and_fragmentation"] = CUDA_OVERHEAD_BYTES + int(FRAGMENTATION * subtotal)
    return MemoryEstimate(sum(parts.values()), parts)


def gpu_free_bytes() -> int | None:
    """Free memory on the current CUDA device, or None without a GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    except Exception:  # a broken driver must not break the checks page
        return None


def _safetensors_params(path: Path) -> int | None:
    """Exact parameter count from the safetensors header (no weights are read)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in meta["shape"]:
                count *= dim
            total += count
    return total


def _config_params(cfg: dict) -> int:
    """BERT-style parameter count from the config, when no weights file is at hand."""
    h = cfg["hidden_size"]
    i = cfg.get("intermediate_size", 4 * h)
    layers = cfg["num_hidden_layers"]
    emb = (cfg.get("vocab_size", 30522) + cfg.get("max_position_embeddings", 512)
           + cfg.get("type_vocab_size", 2) + 2) * h
    layer = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h
    return emb + layers * layer + h * h + h + h + 1


def model_dims(model_path: str | Path) -> ModelDims | None:
    """Size and shape of a local model directory; None when it has no readable config."""
    p = Path(model_path)
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        return None
    cfg = json.loads(cfg_file.read_text())
    if "hidden_size" not in cfg or "num_hidden_layers" not in cfg:
        return None
    exact = _safetensors_params(p)
    return ModelDims(
        n_params=exact if exact else _config_params(cfg),
        hidden=int(cfg["hidden_size"]),
        layers=int(cfg["num_hidden_layers"]),
        heads=int(cfg.get("num_attention_heads", max(1, cfg["hidden_size"] // 64))),
        source="safetensors" if exact else "config",
    )


def memory_check(
    model_path: str | Path,
    batch_size: int,
    max_length: int,
    precision: str = "fp32",
    free_bytes: int | None = None,
    query_gpu: bool = True,
) -> dict:
    """The estimate against the GPU's free memory, with a verdict the UI can show as is."""
    dims = model_dims(model_path)
    if dims is None:
        return {"available": False,
                "message": f"cannot read the model's config at {model_path}: no memory estimate"}
    est = estimate_training_memory(dims.n_params, dims.hidden, dims.layers, batch_size,
                                   max_length, precision, dims.heads)
    if free_bytes is None and query_gpu:
        free_bytes = gpu_free_bytes()
    out = {"available": True, "n_params": dims.n_params, "params_source": dims.source,
           "hidden": dims.hidden, "layers": dims.layers, "heads": dims.heads,
           "batch_size": batch_size, "max_length": max_length, "precision": precision,
           **est.to_json(), "gpu_free_bytes": free_bytes}
    need = est.total_bytes / GIB
    if free_bytes is None:
        out["fits"] = None
        out["message"] = (f"Training needs about {need:.1f} GiB of GPU memory; no GPU here, so "
                          "training would run on the CPU (slow).")
    else:
        out["fits"] = bool(est.total_bytes <= free_bytes)
        free = free_bytes / GIB
        out["message"] = (
            f"Training needs about {need:.1f} GiB; the GPU has {free:.1f} GiB free."
            if out["fits"] else
            f"Training needs about {need:.1f} GiB but the GPU has only {free:.1f} GiB free: it "
            "would run out of memory. Lower the batch size or max length, or use bf16/fp16."
        )
    return out
