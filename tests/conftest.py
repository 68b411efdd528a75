import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ranx compiles with numba on first use (~30 s cold); a cache that survives test sessions
# (and is inherited by worker subprocesses) pays that once per machine.
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every training run measures its bar to beat; the bundled bi-encoder takes minutes on a busy
# CPU, so worker tests measure BM25 only unless they set a (tiny) bi-encoder themselves.
os.environ.setdefault("RERANKER_STUDIO_BAR_BIENCODER", "none")

from lib.workspace import ENV_VAR, resolve_workspace  # noqa: E402


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace, also exported so pages and subprocesses use it."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "ws"))
    return resolve_workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT cross-encoder saved locally (random weights, real tokenizer)."""
    from lib.testing import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny") / "tiny-ce")
