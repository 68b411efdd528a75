"""The pages render headless (AppTest) on a workspace with the demo data loaded."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib.bootstrap import load_demo

ROOT = Path(__file__).resolve().parents[1]


def test_home_renders_with_demo_data(workspace):
    load_demo(workspace)
    at = AppTest.from_file(str(ROOT / "pages" / "home.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Reranker Studio"
    assert [m.value for m in at.metric][:1] == ["1"]


def test_data_page_shows_dataset_and_split(workspace):
    load_demo(workspace)
    at = AppTest.from_file(str(ROOT / "pages" / "data.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Data"
    assert "cranfield-demo" in at.selectbox[0].options[0] or any(
        "cranfield-demo" in o for o in at.selectbox[0].options
    )
    assert any("Active split" in m.value for m in at.markdown)


def test_app_entry_loads_demo_on_first_start(workspace):
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=90).run()
    assert not at.exception
    from lib.datasets import list_datasets

    assert list(list_datasets(workspace)["name"]) == ["cranfield-demo"]
