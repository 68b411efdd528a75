"""How many torch threads a CPU run should use: one per core that nobody else is using.

torch's default is one thread per core. On a machine other jobs share, that is the slowest
choice: each intra-op parallel region waits at a barrier for the thread the OS descheduled.
Measured on this project's 2-core box at load average ~7 (bench/threads.py has the controlled
version): all-MiniLM-L6 training at 128 tokens ran 1.2-1.5 pairs/s with 2 threads and 3.1-3.2
pairs/s with 1.
"""

from __future__ import annotations

import math
import os


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """Cores minus the 1-minute load average (the other jobs' demand), rounded, at least 1."""
    cores = available_cores() if cores is None else max(1, int(cores))
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    free = cores - max(0.0, float(load))
    return max(1, min(cores, math.floor(free + 0.5)))


def choose_threads(requested: int, device: str) -> tuple[int | None, str]:
    """(threads to set or None to leave torch alone, a line for the log). `requested` is the
    config's cpu_threads: > 0 is the user's choice, 0 means auto on CPU."""
    if requested:
        return requested, f"CPU threads: {requested} (set in the config)"
    if device != "cpu":
        return None, ""
    cores = available_cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    n = auto_threads(cores, load)
    return n, (f"CPU threads: {n} (auto: {cores} cores, load average {load:.1f}; "
               "set cpu_threads to override)")
