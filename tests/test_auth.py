"""The optional password gate: hashes verify, the app stays shut without the right password."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib import auth
from lib.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_hash_roundtrip_and_salt():
    h1, h2 = auth.hash_password("correct horse"), auth.hash_password("correct horse")
    assert h1 != h2  # salted
    assert auth.verify_password("correct horse", h1)
    assert not auth.verify_password("wrong horse!", h1)
    assert not auth.verify_password("correct horse", "garbage")
    with pytest.raises(ValueError, match="at least 8"):
        auth.hash_password("short")


def test_cli_sets_and_clears_the_gate(workspace, monkeypatch):
    monkeypatch.setenv("NEWPW", "team-secret-1")
    assert main(["set-password", "--from-env", "NEWPW", "--workspace", str(workspace.root)]) == 0
    stored = auth.configured_hash(workspace)
    assert stored and "team-secret-1" not in stored
    assert (workspace.root / "auth.json").stat().st_mode & 0o077 == 0
    assert main(["set-password", "--clear", "--workspace", str(workspace.root)]) == 0
    assert auth.configured_hash(workspace) is None


def test_cli_from_env_says_the_variable_is_not_set(workspace, monkeypatch, capsys):
    monkeypatch.delenv("NO_SUCH_PW_VAR", raising=False)
    code = main(["set-password", "--from-env", "NO_SUCH_PW_VAR", "--workspace",
                 str(workspace.root)])
    err = capsys.readouterr().err
    assert code == 2
    assert "NO_SUCH_PW_VAR is not set" in err and "8 characters" not in err
    assert auth.configured_hash(workspace) is None


def test_app_asks_for_password_and_lets_the_right_one_in(workspace):
    auth.save_password(workspace, "team-secret-1")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=90).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Reranker Studio"]
    assert len(at.text_input) == 1 and at.text_input[0].label == "Password"
    assert len(at.main.children) == 2  # the title and the form: no page ran
    # Typing into the form is checked in a real browser (tests/browser/test_gate_in_browser.py):
    # the gate declares a hidden st.navigation, and AppTest (unlike a browser session) gives the
    # form's widgets a new id on the next run, so a typed value never reaches it here.
    assert auth.verify_password("team-secret-1", auth.configured_hash(workspace))
    at.session_state["authenticated"] = True  # what a right password sets
    at.run()
    assert not at.exception
    assert "Password" not in [t.label for t in at.text_input]
    assert "This workspace" in [s.value for s in at.subheader]  # the Home page ran
