"""The DuckDB store: short-lived connections, retried while another process holds the file.

The app never keeps the database open between actions, so the CLI (or a second app process) can
write between them; the training worker never writes here at all (it writes files we ingest).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import duckdb

from lib.workspace import Workspace

LOCK_TIMEOUT_S = float(os.environ.get("RERANKER_STUDIO_LOCK_TIMEOUT", "30"))


class DatabaseLockedError(RuntimeError):
    """Another process holds the workspace database for longer than we are willing to wait."""


def _migrations() -> list[tuple[str, str]]:
    """Migration files `lib/migrations/NNN_name.sql`, applied once each, in name order."""
    files = resources.files("lib.migrations")
    items = [
        (f.name.removesuffix(".sql"), f.read_text(encoding="utf-8"))
        for f in files.iterdir()
        if f.name.endswith(".sql")
    ]
    return sorted(items)


def _open(path: str, timeout_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(path)
        except duckdb.IOException as exc:  # lock held by another process
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                if "lock" in str(exc).lower():
                    raise DatabaseLockedError(
                        f"the workspace database {path} is locked by another process and stayed "
                        f"locked for {timeout_s:.0f} s ({exc}). Close the other Reranker Studio "
                        "process or CLI command using this workspace, then retry."
                    ) from exc
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply pending migrations; returns the names applied now."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name VARCHAR PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)"
    )
    done = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
    applied = []
    for name, sql in _migrations():
        if name in done:
            continue
        con.execute("BEGIN")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations (name) VALUES (?)", [name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


_migrated: set[str] = set()


@contextmanager
def connect(
    ws: Workspace, timeout_s: float | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the workspace database (migrated), yield it, always close it."""
    path = str(ws.db_path)
    con = _open(path, LOCK_TIMEOUT_S if timeout_s is None else timeout_s)
    try:
        if path not in _migrated:
            migrate(con)
            _migrated.add(path)
        yield con
    finally:
        con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing: a crash mid-way leaves no half-written rows."""
    con.execute("BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def register(con: duckdb.DuckDBPyConnection, name: str, frame) -> None:
    """con.register, after finishing any pending result: DuckDB refuses to register a frame
    while the last execute() is not fully fetched (e.g. after a fetchone())."""
    con.execute("SELECT 1").fetchall()
    con.register(name, frame)
