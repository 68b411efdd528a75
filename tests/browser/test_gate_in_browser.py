"""The password gate holds for a page URL opened first on a fresh server (a bookmark, a reload
after a restart): Streamlit would otherwise run pages/<page>.py without streamlit_app.py."""

import pytest

from lib.cli import main
from tests.browser.conftest import AppServer, _free_port

pytestmark = pytest.mark.browser


def test_direct_page_url_on_a_fresh_server_meets_the_password_gate(page, tmp_path,
                                                                   monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setenv("TEAMPW", "team-secret-1")
    assert main(["set-password", "--from-env", "TEAMPW", "--workspace", str(ws)]) == 0
    server = AppServer(ws, _free_port()).start()
    try:
        page.goto(server.url + "/data")  # the very first session of this server
        page.get_by_label("Password", exact=True).wait_for()
        page.wait_for_timeout(1500)
        assert page.get_by_role("heading", name="Data", exact=True).count() == 0
        assert page.get_by_text("Add a dataset").count() == 0
        page.get_by_label("Password", exact=True).fill("team-secret-1")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Data", exact=True).wait_for()  # the page asked for
        page.get_by_text("Add a dataset").wait_for()
    finally:
        server.stop()
