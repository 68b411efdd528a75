"""Recognise a full disk, whoever hit it (Python, DuckDB, torch's or safetensors' native writers),
so every caller can say 'disk full' and what to do instead of a raw traceback."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

_MARKERS = ("no space left on device", "disk quota exceeded", "file write failed")
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """Raised with a message naming the disk, what was (not) kept and what to do."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_disk_full(exc: BaseException, trace: str = "") -> bool:
    """ENOSPC anywhere in the exception chain, or the native writers' wording of it (DuckDB's
    'IO Error: ... No space left on device'; torch's zip writer says only 'file write failed')."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _FULL:
            return True
        if any(m in str(cur).lower() for m in _MARKERS):
            return True
        cur = cur.__cause__ or cur.__context__
    return any(m in trace.lower() for m in _MARKERS)


def free_mb(path: Path) -> float:
    try:
        return shutil.disk_usage(path).free / 2**20
    except OSError:
        return float("nan")
