"""Data checks before training: query leakage, label quality, truncation, memory."""

from lib.checks.runner import (
    CheckResults,
    last_settings,
    load_cached_checks,
    model_info,
    resplit_grouped,
    run_checks,
)

__all__ = [
    "CheckResults",
    "last_settings",
    "load_cached_checks",
    "model_info",
    "resplit_grouped",
    "run_checks",
]
