"""The Data page in a real browser: upload a file with bad lines, read the validation report."""

import json
import re

import pytest

from tests.browser.conftest import wait_for_app

pytestmark = pytest.mark.browser


def test_upload_with_bad_lines_shows_the_report(app_server, page, tmp_path):
    rows = [json.dumps({"query": f"q{i // 3}", "document": f"doc {i}", "label": i % 3})
            for i in range(30)]
    rows[4] = '{"query": "broken", "document": "x", "label": 9}'
    rows[7] = "not json at all"
    upload = tmp_path / "my-pairs.jsonl"
    upload.write_text("\n".join(rows) + "\n")

    page.goto(app_server.url)
    wait_for_app(page)
    assert page.get_by_role("heading", name="Reranker Studio").is_visible()
    page.get_by_role("link", name="Data").click()
    page.get_by_role("heading", name="Data", exact=True).wait_for()
    page.get_by_test_id("stTabs").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(upload))
    page.get_by_role("button", name="Ingest and split").click()
    page.get_by_text("Validation report: my-pairs").wait_for()
    page.get_by_text(
        re.compile(r"30 lines = 28 accepted \+ 0 exact duplicates \(stored once\) \+ 2 rejected")
    ).wait_for()
    page.locator("[data-testid='stDataFrame']").first.wait_for()
    page.get_by_text("Download the 2 rejected lines").wait_for()
