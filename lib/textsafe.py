"""User text (queries, documents, names, messages that echo them) shown inside Streamlit markdown.

st.markdown, st.caption, st.info & co., widget labels and progress texts all render markdown:
a query holding `![x](http://host/t.png)` would make every viewer's browser fetch that URL, and
`**`, `#`, `$...$` (LaTeX), `:red[...]` would restyle the page. Pages pass such text through
`escape_markdown` (or show it with st.text / st.code / a dataframe, which render nothing).
"""

from __future__ import annotations

import re

# CommonMark: a backslash-escaped ASCII punctuation character is always literal text. These are
# the ones that open markup anywhere in a line: images and links (`[`), emphasis (`*`, `_`),
# code (`` ` ``), HTML and entities (`<`, `>`, `&`), headings (`#`), tables (`|`),
# strikethrough (`~`), math (`$`), Streamlit's directives (`:red[...]`) and the escape itself.
_ANYWHERE = re.compile(r"([\\`*_\[\]<>#|~$&])")
# ...and these only at the start of a line: list items (`-`, `+`, `1.`, `1)`), setext headings.
_LINE_START = re.compile(r"^([-+=]|\d{1,9}(?=[.)]))")
_SPACE = re.compile(r"\s+")


def escape_markdown(text: object) -> str:
    """`text` as markdown that renders as exactly that text. Runs of whitespace become one
    space: a newline could start a heading or a list, four leading spaces a code block."""
    flat = _ANYWHERE.sub(r"\\\1", _SPACE.sub(" ", str(text)).strip())
    m = _LINE_START.match(flat)
    if m is None:
        return flat
    if m.group(1)[0].isdigit():  # '12. x' -> '12\. x'
        end = m.end()
        return flat[:end] + "\\" + flat[end:]
    return "\\" + flat
