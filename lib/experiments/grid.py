"""A hyperparameter grid: which keys may vary, parsing from YAML, expansion into configs."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from lib.training.config import ConfigError, TrainConfig, build_config

SWEEPABLE = (
    "learning_rate",
    "epochs",
    "batch_size",
    "max_length",
    "loss",
    "warmup",
    "weight_decay",
    "pos_weight",
    "seed",
    "max_train_pairs",
)
MAX_RUNS = 64

# Quick what-if: rank settings fast on a CPU by training on fewer pairs and shorter inputs.
QUICK_MAX_TRAIN_PAIRS = 800
QUICK_MAX_LENGTH = 128
QUICK_LABEL = (
    f"quick what-if: at most {QUICK_MAX_TRAIN_PAIRS} training pairs and max length "
    f"{QUICK_MAX_LENGTH} unless swept; use it to rank settings, not as final numbers"
)


def parse_grid(data: dict[str, Any] | str | Path, source: str = "grid") -> dict[str, list]:
    """{key: [values]} from a dict, YAML text or a YAML file; every problem names the key."""
    if isinstance(data, Path) or (isinstance(data, str) and data.endswith((".yaml", ".yml"))):
        path = Path(data)
        if not path.is_file():
            raise ConfigError(f"grid file {path} does not exist")
        source, data = str(path), path.read_text(encoding="utf-8")
    if isinstance(data, str):
        try:
            data = yaml.safe_load(data) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: expected a mapping like {{learning_rate: [2e-5, 3e-5]}}")
    grid: dict[str, list] = {}
    for raw_key, values in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in SWEEPABLE:
            raise ConfigError(
                f"{source}: {raw_key!r} cannot be swept; sweepable: {', '.join(SWEEPABLE)}"
            )
        values = [_number(v) for v in (values if isinstance(values, list) else [values])]
        if not values or len(set(map(str, values))) != len(values):
            raise ConfigError(f"{source}: {key} needs distinct values, got {values!r}")
        grid[key] = values
    n = 1
    for values in grid.values():
        n *= len(values)
    if n > MAX_RUNS:
        raise ConfigError(f"{source}: the grid makes {n} runs; at most {MAX_RUNS} at once")
    return grid


def _number(value: Any) -> Any:
    """YAML 1.1 reads `2e-5` (no dot) as a string; users mean the number."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return (
            int(number)
            if number.is_integer() and "." not in value and "e" not in value.lower()
            else number
        )
    return value


def expand_grid(
    base: TrainConfig, grid: dict[str, list], quick: bool = False
) -> list[tuple[dict[str, Any], TrainConfig]]:
    """One validated config per grid point (grid order: the last key varies fastest)."""
    keys = list(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, combo, strict=True))
        values = {**base.to_json(), **params}
        if quick:
            values = quick_values(values, swept=set(keys))
        out.append((params, build_config(values, source=f"grid point {params}")))
    return out


def quick_values(values: dict[str, Any], swept: set[str]) -> dict[str, Any]:
    """Shrink what is not being swept, so each run takes a fraction of the full time."""
    out = dict(values)
    if "max_train_pairs" not in swept:
        current = out.get("max_train_pairs")
        out["max_train_pairs"] = min(current or QUICK_MAX_TRAIN_PAIRS, QUICK_MAX_TRAIN_PAIRS)
    if "max_length" not in swept:
        out["max_length"] = min(int(out.get("max_length") or QUICK_MAX_LENGTH), QUICK_MAX_LENGTH)
    return out
