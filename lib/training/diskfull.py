"""A full disk during training: recognise it, clear the half-written files, say what to do.

A checkpoint or model cut off by a full disk must never look usable: resume takes only complete
checkpoints (with trainer_state.json, written last), and the final model is written to
`model.partial/` and renamed to `model/` only when complete. Removing the partial files also
frees the space that the failure report needs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lib.diskspace import free_mb
from lib.training import runfiles


def remove_partial_files(run_dir: Path) -> list[str]:
    """Delete incomplete checkpoints and a half-written final model; return their names."""
    removed = []
    complete = {p for _, p in runfiles.checkpoints(run_dir)}
    for p in sorted(run_dir.glob("checkpoint-*")):
        if p.is_dir() and p not in complete:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    partial = run_dir / runfiles.MODEL_PARTIAL  # a model/ already there is complete: kept
    if partial.exists():
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(runfiles.MODEL_PARTIAL)
    for tmp in run_dir.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    return removed


def disk_full_message(run_dir: Path, removed: list[str]) -> tuple[str, str]:
    """(error, advice) for status.json."""
    last = runfiles.last_checkpoint(run_dir)
    error = (f"disk full: no space left on the disk holding {run_dir} "
             f"({free_mb(run_dir):.0f} MB free after cleaning up). The run is NOT marked done")
    error += f"; removed the half-written {', '.join(removed)}." if removed else "."
    advice = ("Free disk space (old runs' checkpoint-* folders, workspace/cache) or move the "
              "workspace to a bigger disk, then press Resume: it continues from "
              + (f"{last.name} (complete)." if last else "step 0 (no complete checkpoint yet)."))
    return error, advice
