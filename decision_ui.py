"""The decision table the Noise and Review pages share: filter, show, pick pairs, decide.

Both pages review (query, doc) pairs one at a time or in bulk with a row of decision buttons;
only what a decision means differs, and that stays in lib/ (relabel.decide, review.decide), passed
in as `apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import streamlit as st

from lib.textsafe import escape_markdown as esc

SHOWN = 500  # rows in the table and options in the picker
SEP = " | "

Keys = list[tuple[str, str]]
# (the column to draw it in, button label, decision, widget key)
Action = tuple[object, str, str, str]


def pick_pairs(table: pd.DataFrame, columns: Sequence[str], *, key: str, noun: str,
               order: str = "first") -> Keys:
    """'Only pending' toggle, the table (first SHOWN rows) and a multiselect of its pairs;
    returns the picked (query_id, doc_id) keys."""
    only_pending = st.toggle("Only pending", value=False, key=f"{key}_only_pending")
    shown = table[table["decision"] == "pending"] if only_pending else table
    st.dataframe(shown[list(columns)].head(SHOWN), hide_index=True, width="stretch")
    if len(shown) > SHOWN:
        st.caption(f"The {SHOWN} {order} of {len(shown):,} shown.")
    head = shown.head(SHOWN)
    options = [f"{q}{SEP}{d}" for q, d in zip(head["query_id"], head["doc_id"], strict=True)]
    picked = st.multiselect(f"Pick {noun} pairs (query | doc)", options, key=f"{key}_pick")
    return [tuple(p.split(SEP, 1)) for p in picked]  # type: ignore[misc]


def decision_buttons(actions: Sequence[Action], keys: Keys,
                     apply: Callable[[Keys, str], str], *, key: str) -> None:
    """One button per decision, disabled until pairs are picked. `apply` records the decision
    and returns the message to show; a ValueError's text is shown instead.

    The decision runs in the button's callback, before the rerun: only there may a widget's
    value be set, and the pick must be emptied there. Popping the pick's key before
    `st.rerun()` left the browser's multiselect holding the decided pairs, so the next pick
    added to them and the next decision applied to both."""
    for col, label, decision, widget_key in actions:
        col.button(label, key=widget_key, disabled=not keys,  # type: ignore[attr-defined]
                   on_click=_decide, args=(apply, keys, decision, key))
    if msg := st.session_state.pop(f"{key}_msg", None):
        st.info(esc(msg))


def _decide(apply: Callable[[Keys, str], str], keys: Keys, decision: str, key: str) -> None:
    try:
        st.session_state[f"{key}_msg"] = apply(keys, decision)
    except ValueError as exc:
        st.session_state[f"{key}_msg"] = str(exc)
    st.session_state[f"{key}_pick"] = []
