"""Reranker Studio web app entry point: `streamlit run streamlit_app.py` (or `make run`)."""

from __future__ import annotations

import streamlit as st

from lib.auth import configured_hash, verify_password
from lib.bootstrap import first_start
from lib.metrics import configure_numba_cache
from lib.workspace import resolve_workspace

st.set_page_config(page_title="Reranker Studio", page_icon=":material/sort:", layout="wide")

ws = resolve_workspace()
configure_numba_cache(ws.cache_dir / "numba")


@st.cache_resource(show_spinner=False)
def _warm_ranx(cache_dir: str):
    """ranx's numba JIT (~27 s cold) is paid in a background thread at start, not by a click."""
    from lib.evaluation.warmup import warm_ranx_in_background

    return warm_ranx_in_background(cache_dir)


_warm_ranx(str(ws.cache_dir / "numba"))

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
    st.Page("pages/checks.py", title="Checks", icon=":material/fact_check:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/review.py", title="Review", icon=":material/rule:"),
    st.Page("pages/noise.py", title="Noise", icon=":material/report:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/leaderboard:"),
    st.Page("pages/playground.py", title="Playground", icon=":material/science:"),
    st.Page("pages/ship.py", title="Ship", icon=":material/rocket_launch:"),
    st.Page("pages/experiments.py", title="Experiments", icon=":material/tune:"),
]
_hash = configured_hash(ws)
if _hash and not st.session_state.get("authenticated"):
    st.title("Reranker Studio")
    with st.form("login"):
        password = st.text_input("Password", type="password")
        if st.form_submit_button("Sign in"):
            if verify_password(password, _hash):
                st.session_state["authenticated"] = True
                st.rerun()
            st.error("Wrong password.")
    # Navigation declared but hidden: the page the URL asks for (and its ?query) stays selected
    # through the sign-in rerun, and no page list shows before sign-in, not even Streamlit's
    # pages/ sidebar on a freshly started server. The page itself does not run.
    st.navigation(PAGES, position="hidden")
    st.stop()


@st.cache_resource(show_spinner="First start: loading the Cranfield demo dataset...")
def _first_start(root: str) -> dict | None:
    return first_start(ws)


_first_start(str(ws.root))
st.navigation(PAGES).run()
