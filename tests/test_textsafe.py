"""escape_markdown: user text renders as itself, never as an image, a link, emphasis or math."""

import html
import re

import pytest
from markdown_it import MarkdownIt

from lib.textsafe import escape_markdown

# CommonMark plus the GFM parts Streamlit turns on (tables, strikethrough, autolinks)
_MD = MarkdownIt("commonmark", {"linkify": False}).enable(["table", "strikethrough"])

NASTY = [
    "![img](http://127.0.0.1:9/track.png)",
    "[click](javascript:alert(1)) and <https://evil.example>",
    "**bold** __bold__ *em* _em_ ~~gone~~ `code`",
    "# heading",
    "- item",
    "+ item",
    "1. first",
    "12) twelfth",
    "> quoted",
    "a | b\n--|--\n1 | 2",
    "$x^2$ and $$\\int f$$",
    ":red[coloured] :material/home:",
    "<img src=x onerror=alert(1)> &amp; &lt;",
    "back\\slash \\*not em\\*",
    "line one\n\n# line two\n    indented code",
    "***\n---\n===",
    "[ref]: http://evil.example/x.png",
    "x_y_z 3*4*5 snake_case_name",
    "plain text, nothing to see",
]


def _render(md: str) -> str:
    return _MD.render(md)


def _text_of(rendered: str) -> str:
    """The visible text of a one-paragraph rendering."""
    m = re.fullmatch(r"<p>(.*)</p>\n", rendered, flags=re.S)
    assert m, f"expected one plain paragraph, got {rendered!r}"
    return html.unescape(m.group(1))


@pytest.mark.parametrize("text", NASTY)
def test_escaped_text_renders_as_the_literal_text(text):
    rendered = _render(escape_markdown(text))
    assert _text_of(rendered) == " ".join(text.split())
    assert not re.search(r"<(img|a|strong|em|code|h\d|ul|ol|li|table|del|blockquote|hr|pre)\b",
                         rendered)


def test_the_unescaped_texts_do_render_as_markup():
    """The cases above are real attacks: without escaping they produce markup."""
    assert "<img" in _render(NASTY[0])
    assert "<strong>" in _render(NASTY[2]) and "<h1>" in _render(NASTY[3])
    assert "<ol" in _render(NASTY[6]) and "<table>" in _render(NASTY[9])


def test_escaped_text_inside_the_pages_own_markup():
    """Pages wrap user text in their own formatting: that still works around escaped text."""
    rendered = _render(f"**{escape_markdown('![i](http://x/t.png) *q*')}**: 3 candidates")
    assert rendered.startswith("<p><strong>") and "<img" not in rendered
    assert "<em>" not in rendered
    assert html.unescape(rendered).count("![i](http://x/t.png) *q*") == 1


def test_non_strings_and_dollar_signs():
    assert escape_markdown(None) == "None"
    assert escape_markdown(ValueError("bad $x$ in 'a_b'")) == r"bad \$x\$ in 'a\_b'"
    plain = "tiny-ce's run-1 (got a list): 3.5"  # only what opens markup is escaped
    assert escape_markdown(plain) == plain
    assert escape_markdown("a  \n b") == "a b"
