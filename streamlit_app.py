"""Reranker Studio web app entry point: `streamlit run streamlit_app.py` (or `make run`)."""

from __future__ import annotations

import streamlit as st

from lib.bootstrap import first_start
from lib.metrics import configure_numba_cache
from lib.workspace import resolve_workspace

st.set_page_config(page_title="Reranker Studio", page_icon=":material/sort:", layout="wide")

ws = resolve_workspace()
configure_numba_cache(ws.cache_dir / "numba")


@st.cache_resource(show_spinner="First start: loading the Cranfield demo dataset...")
def _first_start(root: str) -> dict | None:
    return first_start(ws)


_first_start(str(ws.root))

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
]
st.navigation(PAGES).run()
