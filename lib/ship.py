"""Ship a reranker: export a run's model (or a model folder), prove it, package it.

Where things go: a run's exports in runs/<run_id>/exports/<format>/, a folder's in
exports/<name>-<hash>/<format>/ of the workspace. Each export directory holds the graph, the
model's config/tokenizer, export.json (how it was made), proof.json (lib.export_proof.Proof)
and the model card README.md with the proof appended. Files only: no database table, so the
CLI, the app and a worker see the same state.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.export import FILE_NAMES, ExportedCrossEncoder, backend_of, check_format, export_model
from lib.export_proof import (
    DEFAULT_BATCH,
    DEFAULT_MIN_SPEARMAN,
    DEFAULT_REPEATS,
    Proof,
    prove,
    recommend,
    rejection,
)
from lib.workspace import Workspace, safe_name

PROOF = "proof.json"
EXPORTS = "exports"
CARD_MARK = "<!-- reranker-studio export proof -->"


class ShipError(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    model_dir: Path
    exports_root: Path
    run_id: str | None
    label: str

    def export_dir(self, fmt: str) -> Path:
        return self.exports_root / check_format(fmt)


def resolve_target(ws: Workspace, text: str, *, allow_outside_workspace: bool = True) -> Target:
    """A run id (or checkpoint:RUN) with a saved model, else a model folder."""
    s = (text or "").strip()
    run_id = s.split(":", 1)[1] if s.lower().startswith("checkpoint:") else s
    if run_id and "/" not in run_id and "\\" not in run_id:
        try:
            rid = safe_name(run_id)
        except ValueError:
            rid = ""
        model = ws.runs_dir / rid / "model" if rid else None
        if model is not None and (model / "config.json").is_file():
            return Target(model, ws.runs_dir / rid / EXPORTS, rid, f"checkpoint:{rid}")
    p = Path(s).expanduser() if allow_outside_workspace else ws.user_path(s)
    if not (p / "config.json").is_file():
        raise ShipError(f"{s!r} is neither a training run with a saved model nor a model folder "
                        "(a directory with config.json)")
    p = p.resolve()
    tag = hashlib.sha256(str(p).encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", p.name).lstrip("._-")[:64] or "model"
    return Target(p, ws.child(EXPORTS, f"{stem}-{tag}"), None, p.name)


def _read_pairs(path: Path) -> pd.DataFrame:
    frame = pd.read_json(path, lines=True, dtype={"query_id": str, "doc_id": str})
    frame["query_id"] = frame["query_id"].astype(str)
    frame["doc_id"] = frame["doc_id"].astype(str)
    return frame


def proof_pairs(ws: Workspace, target: Target, dataset: str | None = None,
                split: str | None = None) -> tuple[pd.DataFrame, str]:
    """The pairs the proof scores: the run's validation pairs by default (or its train pairs),
    else a dataset's split (lib.evaluation.evalset)."""
    if dataset is None and target.run_id is not None:
        split = split or "validation"
        if split not in ("validation", "train"):
            raise ShipError(f"a run keeps its validation and train pairs; for {split!r} name the "
                            "dataset too")
        f = ws.runs_dir / target.run_id / "data" / f"{split}.jsonl"
        if not f.is_file():
            raise ShipError(f"run {target.run_id} has no {f.name}")
        return _read_pairs(f), f"{split} of run {target.run_id}"
    if dataset is None:
        raise ShipError("a model folder is proven on a dataset's split: name the dataset")
    from lib.evaluation.evalset import load_eval_set

    es = load_eval_set(ws, dataset, split)
    return es.pairs, f"{es.split_label} of {es.dataset.name}"


def calibration_pairs(ws: Workspace, target: Target, dataset: str | None = None) -> pd.DataFrame:
    """The training pairs: the run's own, else the dataset's active split's train queries."""
    if target.run_id is not None:
        f = ws.runs_dir / target.run_id / "data" / "train.jsonl"
        if f.is_file():
            return _read_pairs(f)
    if dataset is None:
        raise ShipError("openvino-int8 is calibrated on training pairs: name the dataset")
    from lib import db
    from lib.datasets import resolve_dataset
    from lib.split import load_split_pairs

    with db.connect(ws) as con:
        ds = resolve_dataset(con, dataset)
    pairs = load_split_pairs(ws, ds.dataset_id, "train")
    if pairs.empty:
        raise ShipError(f"dataset {ds.name!r} has no training queries to calibrate on")
    return pairs


def export_and_prove(ws: Workspace, target: Target, fmt: str, *, dataset: str | None = None,
                     split: str | None = None, batch_size: int = DEFAULT_BATCH,
                     repeats: int = DEFAULT_REPEATS, original=None,
                     original_scores=None, threads: int | None = None) -> Proof:
    """Export, score both on the proof pairs, write proof.json and the card section."""
    from lib.export import sample_calibration
    from lib.models import load_cross_encoder

    fmt = check_format(fmt)
    pairs, split_label = proof_pairs(ws, target, dataset, split)
    calib = (sample_calibration(calibration_pairs(ws, target, dataset))
             if fmt == "openvino-int8" else None)
    result = export_model(target.model_dir, fmt, target.export_dir(fmt), calibration_pairs=calib)
    if original is None:
        original = load_cross_encoder(str(target.model_dir), device="cpu")
    exported = ExportedCrossEncoder(result.path, fmt, threads=threads)
    proof = prove(original, exported, pairs, fmt=fmt, path=result.path, batch_size=batch_size,
                  repeats=repeats, split=split_label, original_scores=original_scores)
    if result.calibration_pairs:
        proof.notes.append(f"int8 calibrated on {result.calibration_pairs} training pairs")
    out = Path(result.path)
    (out / PROOF).write_text(json.dumps(proof.to_json(), indent=1), encoding="utf-8")
    update_card(out, proof, target.label)
    return proof


def list_proofs(target: Target) -> list[dict]:
    """Every export of the target that has a proof, in FILE_NAMES order."""
    out = []
    for fmt in FILE_NAMES:
        f = target.exports_root / fmt / PROOF
        try:
            out.append(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out


def proofs_table(proofs: list[dict], tolerance: float,
                 min_spearman: float = DEFAULT_MIN_SPEARMAN) -> pd.DataFrame:
    pick = recommend(proofs, tolerance, min_spearman)
    rows = [{
        "format": p["format"], "recommended": bool(pick and pick["format"] == p["format"]),
        "NDCG@10 original": p["ndcg"]["original"], "NDCG@10 export": p["ndcg"]["export"],
        "Δ NDCG@10": p["ndcg"]["delta"], "Δ MRR@10": p["mrr"]["delta"], "p (Fisher)": p["p_value"],
        "Spearman": p["spearman"], "max |Δ score|": p["max_abs_diff"],
        "top-10 identical": p["top10_agreement"], "pairs/s original": p["pairs_per_s"]["original"],
        "pairs/s export": p["pairs_per_s"]["export"], "speedup": p["speedup"],
        "p50 ms (100 cand.)": p["latency_ms"]["p50"], "p95 ms": p["latency_ms"]["p95"],
        "not recommended because": rejection(p, tolerance, min_spearman) or "",
    } for p in proofs]
    return pd.DataFrame(rows)


def serving_snippet(fmt: str) -> str:
    backend, file_name = backend_of(fmt), FILE_NAMES[fmt]
    return f"""# Serving this {fmt} export

Without optimum (onnxruntime / openvino only; `pip install onnxruntime openvino transformers`),
with the scorer this export was proven with (reranker-studio's lib/export.py):

```python
from lib.export import ExportedCrossEncoder
model = ExportedCrossEncoder("path/to/this/folder", "{fmt}")
scores = model.predict([("query", "document 1"), ("query", "document 2")], batch_size=32)
```

With sentence-transformers where its `[{backend}]` extra installs (optimum needs a transformers
it supports):

```python
from sentence_transformers import CrossEncoder
model = CrossEncoder("path/to/this/folder", backend="{backend}",
                     model_kwargs={{"file_name": "{file_name}"}})
scores = model.predict([("query", "document 1"), ("query", "document 2")])
```
"""


def card_section(proof: Proof | dict, label: str) -> str:
    p = proof if isinstance(proof, dict) else proof.to_json()
    n, m = p["ndcg"], p["mrr"]
    return "\n".join([
        CARD_MARK, f"## Export: {p['format']} (from {label})", "",
        f"Proof on {p['split']} ({p['n_queries']} queries, {p['n_pairs']} pairs), measured in "
        "one process on the same CPU:", "",
        "| | original (PyTorch fp32) | export |", "|---|---|---|",
        f"| NDCG@10 | {n['original']:.4f} | {n['export']:.4f} (Δ {n['delta']:+.4f}, "
        f"p = {p['p_value']:.3g}) |",
        f"| MRR@10 | {m['original']:.4f} | {m['export']:.4f} (Δ {m['delta']:+.4f}) |",
        f"| pairs/s (batch {p['batch_size']}) | {p['pairs_per_s']['original']:.1f} | "
        f"{p['pairs_per_s']['export']:.1f} ({p['speedup']:.2f}x) |",
        f"| 1 query x 100 candidates p50 / p95 ms | {p['latency_ms']['original_p50']:.1f} / "
        f"{p['latency_ms']['original_p95']:.1f} | {p['latency_ms']['p50']:.1f} / "
        f"{p['latency_ms']['p95']:.1f} |", "",
        f"Spearman {p['spearman']:.4f}, max |Δ score| {p['max_abs_diff']:.2e}, queries with "
        f"an identical top 10: {100 * p['top10_agreement']:.1f}%."
        + ("".join(f" {x}." for x in p.get("notes") or [])), "",
    ])


def update_card(export_dir: Path, proof: Proof | dict, label: str) -> None:
    """Replace (or add) the proof section of the export's model card."""
    card = Path(export_dir) / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    text = text.split(CARD_MARK)[0].rstrip() + "\n\n" + card_section(proof, label)
    card.write_text(text, encoding="utf-8")


def zip_export(export_dir: str | Path) -> bytes:
    """The export directory as a zip, with SERVING.md (the snippet) at its root."""
    root = Path(export_dir)
    info = json.loads((root / "export.json").read_text(encoding="utf-8"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f"{root.name}/{f.relative_to(root).as_posix()}")
        z.writestr(f"{root.name}/SERVING.md", serving_snippet(info["format"]))
    return buf.getvalue()
