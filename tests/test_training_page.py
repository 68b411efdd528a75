"""The Train page renders headless, warns about doubtful settings and launches a real run."""

import shutil
from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib import corpora
from lib.bootstrap import load_demo
from lib.training import jobs

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "train.py")


def test_train_page_renders_presets_and_warns(workspace):
    load_demo(workspace)
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not at.exception
    assert at.title[0].value == "Train"
    preset = next(s for s in at.selectbox if s.label == "Preset")
    assert preset.options == ["Guide default", "CPU quick", "GPU throughput", "GPU full",
                              "CPU recommended", "Distil (CPU)", "GPU recommended"]
    assert preset.value == "CPU recommended"  # no GPU here
    assert at.number_input(key="CPU recommended:ml").value == 128
    assert at.text_input(key="CPU recommended:teach").value == "auto"
    # the only doubt about the preset on fresh demo data: the Checks have not been run yet
    assert [w.value for w in at.warning] == [at.warning[0].value]
    assert "Checks have not been run" in at.warning[0].value
    at.number_input(key="CPU recommended:lr").set_value(1e-4).run()
    assert any("outside the usual" in w.value for w in at.warning)
    # training dynamics are opt-in (they cost a validation pass each time); the page sets them
    assert at.number_input(key="CPU recommended:dyn").value == 0
    at.number_input(key="CPU recommended:dyn").set_value(500).run()
    assert any("dynamics_max_pairs: 500" in c.value for c in at.code)
    # a distillation corpus is picked from the workspace's corpora and reaches the config
    corpus = at.selectbox(key="CPU recommended:dco")
    assert corpus.options == ["(none)", "auto (mined-from corpus, else own docs)"]
    assert corpus.value == jobs.AUTO_CORPUS
    corpora.corpus_from_dataset(workspace, "cranfield-demo", "demo-docs")
    at.run()
    assert at.selectbox(key="CPU recommended:dco").options[2:] == ["demo-docs"]
    at.text_input(key="CPU recommended:teach").set_value("biencoder")
    at.selectbox(key="CPU recommended:dco").set_value("demo-docs")
    at.number_input(key="CPU recommended:dtk").set_value(40)
    at.number_input(key="CPU recommended:dpq").set_value(300).run()
    shown = next(c.value for c in at.code if "distill_corpus" in c.value)
    assert "distill_corpus: demo-docs" in shown and "distill_corpus_top_k: 40" in shown
    assert "distill_pseudo_queries: 300" in shown
    next(s for s in at.selectbox if s.label == "Preset").set_value("Guide default").run()
    assert at.number_input(key="Guide default:ml").value == 512
    assert at.number_input(key="Guide default:lr").value == 3e-5
    assert any(i.value == "No runs yet." for i in at.info)


def test_launch_from_the_page_runs_the_worker(workspace, tiny_model):
    load_demo(workspace)
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    inside = shutil.copytree(tiny_model, workspace.root / "imports" / "tiny-ce")  # app: in ws
    at.text_input(key="CPU recommended:model").set_value(str(inside))
    at.number_input(key="CPU recommended:ml").set_value(32)
    at.number_input(key="CPU recommended:mtp").set_value(100)
    at.number_input(key="CPU recommended:es").set_value(1000)
    at.number_input(key="CPU recommended:thr").set_value(1)
    at.run()
    next(b for b in at.button if b.label == "Launch").click()
    at.run()
    assert not at.exception
    assert any("queued" in s.value for s in at.success)
    runs = jobs.list_runs(workspace)
    assert len(runs) == 1
    run_id = runs["run_id"].iloc[0]
    status = jobs.wait_for(workspace, run_id, timeout_s=120)
    assert status["state"] == "finished", status
    at = AppTest.from_file(PAGE, default_timeout=90).run()  # a browser refresh: rebuilt from disk
    assert any(run_id in m.value and "finished" in m.value for m in at.markdown)
    assert any(d.label == "Download the model (zip)" for d in at.get("download_button"))


def test_a_run_that_ended_while_the_app_was_away_is_listed_as_ended(workspace, tiny_model):
    """The runs table is read after the files are ingested: a run that finished with no app
    running (a CLI or bench worker) is not shown as still queued on the first render."""
    from lib.training import runfiles
    from lib.training.config import build_config

    load_demo(workspace)
    created = jobs.create_run(workspace, "cranfield-demo", build_config(
        {"base_model": str(tiny_model), "max_length": 32, "max_train_pairs": 50}), enqueue=False)
    runfiles.update_status(created.run_dir, state=runfiles.FINISHED, step=7)
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table.loc[table["run_id"] == created.run_id, "status"].tolist() == ["finished"]
