"""Ship page (AppTest): export a run's model, the proof table, recommended pick, zip download."""

import io
import zipfile
from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib.textsafe import escape_markdown
from tests.test_export import make_run

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "ship.py")


def _by_label(widgets, label):
    found = [w for w in widgets if w.label == label]
    assert found, f"no widget labelled {label!r}: {[w.label for w in widgets]}"
    return found[0]


def test_ship_page_exports_and_recommends(workspace, tiny_model):
    run = make_run(workspace, tiny_model, "run-ship")
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Ship"
    assert any("No exports of checkpoint:run-ship yet" in i.value for i in at.info)
    _by_label(at.multiselect, "Formats to export").set_value(["onnx", "onnx-int8"])
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert list(table["format"]) == ["onnx", "onnx-int8"]
    assert (run / "exports" / "onnx" / "proof.json").is_file()
    # the pick follows the rule on the table's own numbers (fastest, within the tolerance,
    # ordering like the original); every other row says why it was not picked
    ok = table[(table["Δ NDCG@10"] >= -0.005) & (table["speedup"] > 1.0)
               & (table["Spearman"] >= 0.98)]
    assert set(table.loc[table["not recommended because"] == "", "format"]) == set(ok["format"])
    if len(ok):
        best = ok.sort_values("pairs/s export").iloc[-1]["format"]
        assert list(table.loc[table["recommended"], "format"]) == [best]
        assert f"Recommended: **{escape_markdown(best)}**" in at.success[0].value
    else:
        assert not table["recommended"].any() and at.warning
    # tolerance 1.0 and Spearman 0 accept any quality: the pick is then the fastest faster one
    _by_label(at.number_input, "Quality tolerance: NDCG@10 an export may lose").set_value(
        1.0)
    _by_label(at.number_input, "Minimum Spearman correlation with the original's scores"
              ).set_value(0.0).run()
    faster = table[table["speedup"] > 1.0]
    if len(faster):
        best = faster.sort_values("pairs/s export").iloc[-1]["format"]
        assert list(at.dataframe[0].value.query("recommended")["format"]) == [best]
    dl = at.get("download_button")
    assert dl, "no download button"
    card = (run / "exports" / "onnx-int8" / "README.md").read_text()
    assert "## Export: onnx-int8 (from checkpoint:run-ship)" in card
    from lib.ship import zip_export

    names = zipfile.ZipFile(io.BytesIO(zip_export(run / "exports" / "onnx"))).namelist()
    assert "onnx/SERVING.md" in names and "onnx/onnx/model.onnx" in names
