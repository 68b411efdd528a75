import pytest

from lib.workspace import ENV_VAR, resolve_workspace


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace, also exported so pages and subprocesses use it."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "ws"))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path.parent / "numba-cache"))
    return resolve_workspace(tmp_path / "ws")
