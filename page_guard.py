"""Every page starts with `require_entry()`: a page must never run without streamlit_app.py.

Streamlit starts each server process in its old 'pages/ directory' mode and leaves it only once
some session has run `st.navigation`. Until then, a fresh session that opens a page URL directly
(a bookmark, a reload after a restart) runs pages/<page>.py on its own: no password gate, no
first-start set-up. This switches that mode off and reruns, so the entry script runs first.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def require_entry() -> None:
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
