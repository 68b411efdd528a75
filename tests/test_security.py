"""No model repository's own Python code runs unless the user turns trust_remote_code on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.models import load_cross_encoder, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_with_custom_code(tiny_model, tmp_path):
    """The tiny model plus an `auto_map` to a module that leaves a marker when imported."""
    path = tmp_path / "custom-code-model"
    shutil.copytree(tiny_model, path)
    marker = tmp_path / "remote-code-ran"
    (path / "evil_model.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import BertForSequenceClassification\n"
        "class EvilModel(BertForSequenceClassification):\n    pass\n"
    )
    cfg = json.loads((path / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "evil_model.EvilModel",
                       "AutoModel": "evil_model.EvilModel"}
    (path / "config.json").write_text(json.dumps(cfg))
    return path, marker


def test_custom_code_in_a_model_folder_does_not_run_by_default(model_with_custom_code):
    path, marker = model_with_custom_code
    model = load_cross_encoder(str(path), device="cpu")
    load_tokenizer(str(path))
    assert len(model.predict([("wing", "a swept wing")])) == 1
    assert not marker.exists()


def test_it_runs_only_when_the_user_trusts_it(model_with_custom_code):
    """In a child process: trusting remote code registers classes process-wide in transformers,
    which must not leak into the other tests."""
    path, marker = model_with_custom_code
    code = ("from lib.models import load_cross_encoder\n"
            f"try:\n    load_cross_encoder({str(path)!r}, device='cpu', trust_remote_code=True)\n"
            "except Exception:\n    pass\n")  # whether the model then loads does not matter
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
    assert marker.exists()  # the switch really is what keeps the code out
