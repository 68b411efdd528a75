"""User-typed names and paths never leave the workspace; the schema is versioned."""

import os

import pytest

from lib import db
from lib.workspace import UnsafePathError, resolve_workspace, safe_name


def test_env_var_and_explicit_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANKER_STUDIO_HOME", str(tmp_path / "env"))
    assert resolve_workspace().root == (tmp_path / "env").resolve()
    assert resolve_workspace(tmp_path / "x").root == (tmp_path / "x").resolve()


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../b"])
def test_child_refuses_escapes(workspace, bad):
    with pytest.raises(UnsafePathError):
        workspace.child(bad)


def test_child_refuses_symlink_out(workspace, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, workspace.root / "link")
    with pytest.raises(UnsafePathError):
        workspace.child("link/file.jsonl")
    assert workspace.child("uploads/x.jsonl") == workspace.uploads_dir / "x.jsonl"


@pytest.mark.parametrize("bad", ["", "..", "a/b", "-x", "x" * 200, "name with space"])
def test_safe_name(bad):
    with pytest.raises(UnsafePathError):
        safe_name(bad)


def test_migrations_applied_once(workspace):
    with db.connect(workspace) as con:
        names = [r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()]
        assert "001_core" in names
        assert db.migrate(con) == []
