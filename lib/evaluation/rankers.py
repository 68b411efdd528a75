"""What the user typed as a ranker, turned into one validated description.

A ranker is a cross-encoder (hub id, local path, 'default', or `checkpoint:<run_id>` = the best
checkpoint a training run saved in runs/<run_id>/model/; `checkpoint:<run_id>@<format>` = its
export to ONNX/OpenVINO made by lib.ship, e.g. checkpoint:RUN@openvino-int8), 'bm25',
'biencoder' (the bundled all-MiniLM-L6-v2 as a zero-shot bi-encoder, cosine) or `run:FILE` (an
external run file, e.g. today's production ranking, as JSONL with query_id, doc_id and score).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from lib.models import ModelRef, default_model_path, resolve_model
from lib.workspace import UnsafePathError, Workspace, safe_name

BM25 = "bm25"
BIENCODER = "biencoder"
CROSS_ENCODER = "cross-encoder"
RUN_FILE = "run"
RUN_PREFIX = "run:"
CHECKPOINT_PREFIX = "checkpoint:"
FUSION = "fusion"
FUSE_PREFIX = "fuse:"
_FUSE_WEIGHT = re.compile(r"@\s*([0-9]*\.?[0-9]+)\s*$")
_BM25_ALIASES = {"bm25", "bm-25"}
_BI_ALIASES = {"biencoder", "bi-encoder", "bi_encoder"}
RANKER_HELP = (
    "a hub id, a local model path, 'default' (bundled all-MiniLM-L6-v2, untrained reranker head), "
    "'checkpoint:RUN_ID' (a training run's best checkpoint; 'checkpoint:RUN_ID@openvino-int8' "
    "or @onnx, @onnx-o2, @onnx-int8, @openvino: its export), 'bm25', 'biencoder', 'run:FILE' "
    "(JSONL with query_id, doc_id, score), or 'fuse:A+B' (A's and B's per-query normalised "
    "scores mixed, e.g. fuse:checkpoint:RUN_ID+bm25; '@0.3' fixes the weight on A)"
)
UNTRAINED_HEAD_NOTE = (
    "the bundled all-MiniLM-L6-v2 has no trained reranker head: as a cross-encoder its scores are "
    "meaningless (a random new head, seeded like the training run's, so 'default' is exactly "
    "where fine-tuning started). It shows what fine-tuning added, not a real zero-shot "
    "baseline: compare against bm25 or biencoder for that."
)


DEFAULT_HEAD_SEED = 12  # TrainConfig's default seed: 'default' = where such a run starts


class RankerSpecError(ValueError):
    """The ranker text names nothing usable; the message says what was expected."""


class RunFileError(ValueError):
    """A run file line is invalid; the message names the file, line and field."""


@dataclass(frozen=True)
class Ranker:
    kind: str  # CROSS_ENCODER | BM25 | BIENCODER | RUN_FILE | FUSION
    spec: str  # what the user typed
    name: str  # short display name (unique within an evaluation)
    path: str | None = None  # model dir / hub id, or the run file
    model_kind: str | None = None  # ModelRef.kind: 'default' | 'local' | 'hub'
    run_id: str | None = None  # training run, when a checkpoint of one
    training: dict | None = field(default=None, compare=False, hash=False)
    head_seed: int | None = None  # seeds the untrained head of the bundled default model
    parts: tuple[Ranker, ...] = ()  # FUSION: (A, B)
    fusion_weight: float | None = None  # FUSION: the weight on A when the user fixed it
    export_format: str | None = None  # CROSS_ENCODER: an ONNX/OpenVINO export (lib.export)

    @property
    def untrained_head(self) -> bool:
        return self.kind == CROSS_ENCODER and self.model_kind == "default"

    @property
    def model_ref(self) -> ModelRef:
        if self.kind not in (CROSS_ENCODER, BIENCODER) or self.path is None:
            raise TypeError(f"ranker {self.name} has no model")
        return ModelRef(self.spec, self.path, self.model_kind or "local")

    @property
    def description(self) -> str:
        if self.kind == BM25:
            return ("BM25 (bm25s, Lucene k1=1.5 b=0.75, English stop words) over each query's "
                    "candidates")
        if self.kind == BIENCODER:
            return "bi-encoder all-MiniLM-L6-v2 (bundled, zero-shot), cosine similarity"
        if self.kind == RUN_FILE:
            return f"external run file {Path(self.path or '').name}"
        if self.kind == FUSION:
            a, b = self.parts
            w = ("weight chosen on held-out queries" if self.fusion_weight is None
                 else f"weight {self.fusion_weight:g} on A, fixed")
            return (f"fusion of A = {a.name} and B = {b.name}: per-query normalised scores, "
                    f"{w}")
        if self.model_kind == "default":
            return "cross-encoder all-MiniLM-L6-v2 (bundled; UNTRAINED reranker head)"
        if self.export_format:
            of = f"training run {self.run_id}" if self.run_id else Path(self.path or "").name
            return f"cross-encoder, {self.export_format} export of {of} (lib.export)"
        if self.run_id:
            base = (self.training or {}).get("config", {}).get("base_model")
            return f"cross-encoder, best checkpoint of training run {self.run_id}" + (
                f" (base {base})" if base else ""
            )
        return f"cross-encoder {self.spec} ({'hub' if self.model_kind == 'hub' else 'local'})"

    def to_json(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "spec": self.spec, "path": self.path,
            "model_kind": self.model_kind, "run_id": self.run_id,
            "description": self.description, "untrained_head": self.untrained_head,
            "head_seed": self.head_seed if self.untrained_head else None,
            "training": self.training, "export_format": self.export_format,
            **({"parts": [p.to_json() for p in self.parts], "fusion_weight": self.fusion_weight}
               if self.kind == FUSION else {}),
        }


def parse_ranker(
    text: str, ws: Workspace | None = None, *, allow_outside_workspace: bool = True
) -> Ranker:
    """One ranker from its string form (see RANKER_HELP). The app passes
    allow_outside_workspace=False: run files and model folders must then lie in `ws`."""
    s = (text or "").strip()
    low = s.lower()
    if low.startswith(FUSE_PREFIX):
        return _fusion_ranker(s, ws, allow_outside_workspace)
    if low in _BM25_ALIASES:
        return Ranker(BM25, s, BM25)
    if low in _BI_ALIASES:
        return Ranker(BIENCODER, s, BIENCODER, path=default_model_path(), model_kind="default")
    if low.startswith(RUN_PREFIX):
        raw = s[len(RUN_PREFIX):].strip()
        if allow_outside_workspace:
            path = Path(raw).expanduser()
        elif ws is None:
            raise RankerSpecError(f"{s!r}: run files typed in the app need a workspace")
        else:
            path = ws.user_path(raw)  # outside: refused before it is touched
        if not path.is_file():
            raise RankerSpecError(f"run file {str(path)!r} does not exist (ranker {s!r})")
        return Ranker(RUN_FILE, s, f"run:{path.name}", path=str(path.resolve()))
    if low.startswith(CHECKPOINT_PREFIX):
        if ws is None:
            raise RankerSpecError(f"{s!r}: checkpoints need a workspace")
        body, at, fmt = s[len(CHECKPOINT_PREFIX):].partition("@")
        run_id = safe_name(body)
        model_dir = ws.child("runs", run_id, "model")
        if not (model_dir / "config.json").is_file():
            known = ", ".join(c.run_id for c in list_checkpoints(ws)) or "none"
            raise RankerSpecError(
                f"training run {run_id!r} has no saved model in {model_dir}; runs with one: {known}"
            )
        if at:
            return _export_ranker(s, ws, run_id, fmt)
        return _checkpoint_ranker(s, run_id, model_dir)
    try:
        ref = resolve_model(s, ws, allow_outside_workspace=allow_outside_workspace)
    except UnsafePathError:
        raise
    except ValueError as exc:
        raise RankerSpecError(f"ranker {s!r}: {exc}. A ranker is {RANKER_HELP}") from None
    if ref.kind == "local" and (Path(ref.path) / "export.json").is_file():
        from lib.export import read_export

        info = read_export(ref.path)
        if info is None:
            raise RankerSpecError(f"ranker {s!r}: unreadable export.json in {ref.path}")
        return Ranker(CROSS_ENCODER, s, f"{Path(ref.path).name}@{info.format}", path=ref.path,
                      model_kind="local", export_format=info.format)
    if ref.kind == "local" and ws is not None:
        run_dir = Path(ref.path).parent
        if run_dir.parent == ws.runs_dir.resolve() and Path(ref.path).name == "model":
            return _checkpoint_ranker(s, run_dir.name, Path(ref.path))
    if ref.kind == "default":
        return Ranker(CROSS_ENCODER, s, "default", path=ref.path, model_kind=ref.kind,
                      head_seed=DEFAULT_HEAD_SEED)
    name = Path(ref.path).name if ref.kind == "local" else ref.path
    return Ranker(CROSS_ENCODER, s, name, path=ref.path, model_kind=ref.kind)


def _fusion_ranker(spec: str, ws: Workspace | None, allow_outside_workspace: bool) -> Ranker:
    """fuse:A+B[@w]: B is split off at the last '+', so A may be any ranker but a fusion."""
    body = spec[len(FUSE_PREFIX):].strip()
    weight = None
    m = _FUSE_WEIGHT.search(body)
    if m:
        weight = float(m.group(1))
        if not 0.0 <= weight <= 1.0:
            raise RankerSpecError(f"{spec!r}: the fusion weight must be in [0, 1], got {weight:g}")
        body = body[:m.start()].strip()
    a_text, plus, b_text = body.rpartition("+")
    if not plus or not a_text.strip() or not b_text.strip():
        raise RankerSpecError(f"{spec!r}: a fusion is 'fuse:A+B' (e.g. fuse:checkpoint:RUN_ID+"
                              "bm25), optionally '@0.3' for a fixed weight on A")
    a, b = (parse_ranker(t, ws, allow_outside_workspace=allow_outside_workspace)
            for t in (a_text, b_text))
    if FUSION in (a.kind, b.kind):
        raise RankerSpecError(f"{spec!r}: a fusion fuses two plain rankers, not fusions")
    name = f"fuse:{a.name}+{b.name}" + (f"@{weight:g}" if weight is not None else "")
    return Ranker(FUSION, spec, name, parts=(a, b), fusion_weight=weight, run_id=a.run_id,
                  training=a.training)


def _checkpoint_ranker(spec: str, run_id: str, model_dir: Path) -> Ranker:
    return Ranker(
        CROSS_ENCODER, spec, f"{CHECKPOINT_PREFIX}{run_id}", path=str(model_dir.resolve()),
        model_kind="local", run_id=run_id, training=run_info(model_dir.parent),
    )


def _export_ranker(spec: str, ws: Workspace, run_id: str, fmt: str) -> Ranker:
    from lib.export import FORMATS

    f = fmt.strip().lower()
    if f not in FORMATS:
        raise RankerSpecError(f"{spec!r}: unknown export format {fmt!r}; one of "
                              f"{', '.join(FORMATS)}")
    run_dir = ws.child("runs", run_id)
    export_dir = run_dir / "exports" / f
    if not (export_dir / "export.json").is_file():
        raise RankerSpecError(
            f"training run {run_id!r} has no {f} export: make it with `reranker-studio export "
            f"{run_id} --format {f}` or on the Ship page")
    return Ranker(CROSS_ENCODER, spec, f"{CHECKPOINT_PREFIX}{run_id}@{f}",
                  path=str(export_dir.resolve()), model_kind="local", run_id=run_id,
                  training=run_info(run_dir), export_format=f)


def unique_names(rankers: list[Ranker]) -> list[Ranker]:
    """ranx collapses runs with the same name: make each name distinct (#2, #3...)."""
    seen: dict[str, int] = {}
    out = []
    for r in rankers:
        n = seen.get(r.name, 0) + 1
        seen[r.name] = n
        if n > 1:
            r = replace(r, name=f"{r.name}#{n}")
        out.append(r)
    return out


# ---- training runs ----------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_info(run_dir: Path) -> dict:
    """What a training run left beside its model: config, data meta, final status (all optional)."""
    status = _read_json(run_dir / "status.json") or {}
    keep = ("state", "best", "start", "best_checkpoint", "max_length", "finished_at",
            "global_step", "train_runtime_s", "device", "precision")
    return {
        "run_id": run_dir.name,
        "config": _read_json(run_dir / "config.json") or {},
        "data": _read_json(run_dir / "data" / "meta.json") or {},
        "status": {k: status[k] for k in keep if k in status},
        "train_file": str(run_dir / "data" / "train.jsonl")
        if (run_dir / "data" / "train.jsonl").is_file() else None,
    }


@dataclass(frozen=True)
class CheckpointInfo:
    run_id: str
    path: str
    base_model: str | None
    dataset: str | None
    state: str | None
    best_ndcg: float | None
    modified: float

    @property
    def label(self) -> str:
        bits = [self.run_id]
        if self.base_model:
            bits.append(f"base {self.base_model}")
        if self.dataset:
            bits.append(f"data {self.dataset}")
        if self.best_ndcg is not None:
            bits.append(f"val NDCG@10 {self.best_ndcg:.3f}")
        return ", ".join(bits)


def list_checkpoints(ws: Workspace) -> list[CheckpointInfo]:
    """Every runs/<run_id>/model/ that holds a loadable model, newest first (read from disk)."""
    out = []
    if not ws.runs_dir.is_dir():
        return out
    for run_dir in ws.runs_dir.iterdir():
        model = run_dir / "model"
        if not (model / "config.json").is_file():
            continue
        info = run_info(run_dir)
        best = (info["status"].get("best") or {}).get("ndcg@10")
        out.append(CheckpointInfo(
            run_id=run_dir.name, path=str(model), base_model=info["config"].get("base_model"),
            dataset=info["data"].get("dataset_name") or info["data"].get("dataset_id"),
            state=info["status"].get("state"),
            best_ndcg=float(best) if isinstance(best, int | float) else None,
            modified=(model / "config.json").stat().st_mtime,
        ))
    return sorted(out, key=lambda c: -c.modified)


def list_export_specs(ws: Workspace) -> list[str]:
    """`checkpoint:RUN@FORMAT` of every export a run has (lib.ship), newest run first."""
    from lib.export import FORMATS

    out = []
    for c in list_checkpoints(ws):
        base = ws.runs_dir / c.run_id / "exports"
        out += [f"{CHECKPOINT_PREFIX}{c.run_id}@{f}" for f in FORMATS
                if (base / f / "export.json").is_file()]
    return out


# ---- run files ------------------------------------------------------------------------------


def load_run_file(path: str | Path, max_errors: int = 20) -> pd.DataFrame:
    """query_id, doc_id, score per line; every bad line is named (file, line, field, reason)."""
    p = Path(path)
    rows: list[tuple[str, str, float]] = []
    errors: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    with open(p, encoding="utf-8-sig", errors="strict") as fh:
        try:
            for no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                problem = _run_line(line, no, rows, seen)
                if problem:
                    errors.append(f"{p.name} line {no}: {problem}")
                    if len(errors) >= max_errors:
                        break
        except UnicodeDecodeError as exc:
            errors.append(f"{p.name}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    if errors:
        more = " (stopped after the first 20 problems)" if len(errors) >= max_errors else ""
        raise RunFileError("invalid run file: " + "; ".join(errors) + more)
    if not rows:
        raise RunFileError(f"run file {p.name} has no rows: expected JSONL lines like "
                           '{"query_id": "q1", "doc_id": "d7", "score": 12.3}')
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "score"])


def _kind(value: object) -> str:
    """What a bad field held, by kind only: a message must not quote a file's content."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "text" if value.strip() else "an empty string"
    if isinstance(value, int | float):
        return "a number" if math.isfinite(value) else "a non-finite number"
    return "a list" if isinstance(value, list) else "an object"


def _run_line(line: str, no: int, rows: list, seen: dict) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return f"invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    ids = []
    for key in ("query_id", "doc_id"):
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
            return f"field {key}: missing or not a non-empty string/integer (got {_kind(value)})"
        ids.append(str(value))
    score = obj.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return f"field score: missing or not a finite number (got {_kind(score)})"
    key = (ids[0], ids[1])
    if key in seen:
        return f"field doc_id: ({ids[0]}, {ids[1]}) already scored on line {seen[key]}"
    seen[key] = no
    rows.append((ids[0], ids[1], float(score)))
    return None
