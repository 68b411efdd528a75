"""How many torch threads a CPU run should use: one per core that nobody else is using.

torch's default is one thread per core. On a machine other jobs share, that is the slowest
choice: each intra-op parallel region waits at a barrier for the thread the OS descheduled.
bench/threads.py (2 cores, all-MiniLM-L6 training steps at 128 tokens) measured 1 thread 1.56x
faster than torch's 2 with one other busy process, 1.25x with three; on an idle box 2 threads
are faster (1 thread: 0.72x), so "auto" must see the other jobs, not guess.

The other jobs' demand is sampled from /proc/stat (all CPUs busy time over half a second, minus
this process's own CPU time): the 1-minute load average lags by a minute and counts this
process too, so an idle box that just finished a job would get one thread.
"""

from __future__ import annotations

import math
import os
import time


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None without /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def other_busy_cores(interval: float = 0.5) -> float | None:
    """Cores' worth of CPU the OTHER processes used over `interval` seconds (None: unknown)."""
    first = _cpu_jiffies()
    if first is None:
        return None
    own0, t0 = os.times(), time.monotonic()
    time.sleep(interval)
    second = _cpu_jiffies()
    own1, wall = os.times(), time.monotonic() - t0
    if second is None or second[1] <= first[1] or wall <= 0:
        return None
    n_cpus = os.cpu_count() or 1
    busy_cores = (second[0] - first[0]) / (second[1] - first[1]) * n_cpus
    own_cores = ((own1.user - own0.user) + (own1.system - own0.system)) / wall
    return max(0.0, busy_cores - own_cores)


def auto_threads(cores: int | None = None, busy: float | None = None) -> int:
    """Cores minus the other jobs' busy cores, rounded, at least 1."""
    cores = available_cores() if cores is None else max(1, int(cores))
    if busy is None:
        busy = other_busy_cores()
    if busy is None:  # no /proc/stat: the load average is the best we have
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            busy = 0.0
    free = cores - max(0.0, float(busy))
    return max(1, min(cores, math.floor(free + 0.5)))


def choose_threads(requested: int, device: str) -> tuple[int | None, str]:
    """(threads to set or None to leave torch alone, a line for the log). `requested` is the
    config's cpu_threads: > 0 is the user's choice, 0 means auto on CPU."""
    if requested:
        return requested, f"CPU threads: {requested} (set in the config)"
    if device != "cpu":
        return None, ""
    cores = available_cores()
    busy = other_busy_cores()
    n = auto_threads(cores, busy)
    seen = "unknown" if busy is None else f"{busy:.1f} cores busy with other jobs"
    return n, f"CPU threads: {n} (auto: {cores} cores, {seen}; set cpu_threads to override)"
