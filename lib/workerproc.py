"""What every detached worker's `main` does around its work (training, label noise): check its
directory, install the stop flag, and turn any failure into a non-zero exit whose report reaches
status.json (the app reads only files; a traceback lost in the log helps nobody)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_worker(job_dir: Path, required: str, work: Callable[[Any], Any],
               report_failure: Callable[[BaseException, str], Any]) -> int:
    """`work(flag)` in `job_dir` (which must hold `required`); on any exception the traceback
    goes to stderr (the worker log) and `report_failure(exc, trace)` writes the status."""
    if not (job_dir / required).is_file():
        print(f"error: {job_dir / required} does not exist", file=sys.stderr)
        return EXIT_USAGE
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lib.training.callbacks import StopFlag

    flag = StopFlag(job_dir)
    flag.install()
    try:
        work(flag)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach status.json
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)
        report_failure(exc, trace)
        return EXIT_FAILED
    return EXIT_OK
