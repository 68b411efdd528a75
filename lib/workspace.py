"""Where all user state lives, and the one place that turns user-typed names into paths."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "RERANKER_STUDIO_HOME"
DEFAULT_DIR = "workspace"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnsafePathError(ValueError):
    """A user-typed name or path would leave the workspace."""


@dataclass(frozen=True)
class Workspace:
    """One directory holding the database, uploads, runs and reports."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "studio.duckdb"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def ensure(self) -> Workspace:
        for d in (self.root, self.uploads_dir, self.runs_dir, self.reports_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def child(self, *parts: str) -> Path:
        """A path under the workspace built from user-typed parts; refuses anything that escapes."""
        return safe_join(self.root, *parts)

    def user_path(self, text: str | os.PathLike[str]) -> Path:
        """A path typed in the app: relative to the root, or absolute but under it. The same
        check (and message) as `child`, so a path outside is refused without touching it: the
        answer never tells whether it exists."""
        p = Path(text).expanduser()
        if p.is_absolute() and p.is_relative_to(self.root.resolve()):
            p = p.relative_to(self.root.resolve())  # '..' and symlinks out: refused below
        return safe_join(self.root, str(p))  # still absolute: refused as outside


def resolve_workspace(explicit: str | os.PathLike[str] | None = None) -> Workspace:
    """--workspace wins, then $RERANKER_STUDIO_HOME, then ./workspace."""
    raw = explicit or os.environ.get(ENV_VAR) or DEFAULT_DIR
    return Workspace(Path(raw).expanduser().resolve()).ensure()


def safe_name(name: str) -> str:
    """Validate a user-chosen name (dataset, run, report) used in a file name."""
    cleaned = name.strip()
    if not _SAFE_NAME.match(cleaned) or cleaned in {".", ".."}:
        raise UnsafePathError(
            f"name {name!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return cleaned


def safe_join(root: Path, *parts: str) -> Path:
    """Join user-typed parts under root; absolute parts, '..' and symlinks out are refused."""
    root = root.resolve()
    candidate = root
    for part in parts:
        p = Path(part)
        if p.is_absolute() or ".." in p.parts:
            raise UnsafePathError(f"path {part!r} must be relative and stay inside {root}")
        candidate = candidate / p
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafePathError(f"path {'/'.join(parts)!r} resolves outside the workspace {root}")
    return resolved
