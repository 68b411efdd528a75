"""The files of one run directory, shared by the worker (writer) and the app (reader).

runs/<run_id>/
  config.json, config.yaml    the TrainConfig
  data/train.jsonl, data/validation.jsonl, data/meta.json   exported by the launcher
  status.json                 lifecycle state; atomic rewrites (write temp, rename)
  progress.jsonl              one JSON object per line: start / train / eval / end records
  pid.json                    pid + process create time of the launched worker
  stop.json                   a stop request (the worker polls it every step)
  worker.log                  the worker's stdout and stderr
  checkpoint-N/               trainer checkpoints (loadable CrossEncoders + optimizer state)
  model/                      the best checkpoint, saved after training
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

CONFIG = "config.json"
STATUS = "status.json"
PROGRESS = "progress.jsonl"
PID = "pid.json"
STOP = "stop.json"
LOG = "worker.log"
DATA = "data"
MODEL = "model"
MODEL_PARTIAL = "model.partial"  # being written; renamed to MODEL when complete
START_MODEL = "model-start"  # the distilled model before any label step: step 0's, eligible as best

QUEUED, STARTING, RUNNING = "queued", "starting", "running"
FINISHED, STOPPED, FAILED, CANCELLED = "finished", "stopped", "failed", "cancelled"
ACTIVE = (STARTING, RUNNING)
TERMINAL = (FINISHED, STOPPED, FAILED, CANCELLED)
RESUMABLE = (STOPPED, FAILED)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


def write_json_atomic(path: Path, obj: Any) -> None:
    """Readers never see half a file: write a temp file beside it, then rename over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no stray half file
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_status(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / STATUS) or {}


def update_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    status = read_status(run_dir)
    status.update(fields)
    status["updated_at"] = now_iso()
    write_json_atomic(run_dir / STATUS, status)
    return status


def append_progress(run_dir: Path, record: dict[str, Any]) -> None:
    """One complete line per record; a reader ignores a trailing line without its newline."""
    line = json.dumps({"ts": round(time.time(), 3), **record}, default=float) + "\n"
    with open(run_dir / PROGRESS, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()


def read_progress(run_dir: Path, skip: int = 0) -> list[dict[str, Any]]:
    """Complete progress records after the first `skip` ones."""
    path = run_dir / PROGRESS
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.endswith("\n"):
                break  # being written right now
            if i < skip:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"kind": "corrupt", "line": i + 1})
    return out


def tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last lines of a (log) file, without reading all of a big one."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of each complete checkpoint, oldest first."""
    out = []
    if run_dir.is_dir():
        for p in run_dir.iterdir():
            m = _CHECKPOINT.match(p.name)
            if m and p.is_dir() and (p / "trainer_state.json").is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def last_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1][1] if found else None
