import pytest

from lib.models import load_tokenizer
from lib.windowing import MIN_WINDOW_TOKENS, make_windows, window_pairs


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("default")


def _pair_len(tok, q, d):
    return len(tok(q, d)["input_ids"])


def test_short_document_is_one_window_unchanged(tok):
    doc = "a short document about wings."
    assert make_windows(tok, "lift", doc, 128) == [doc]


def test_window_count_and_sizes_on_constructed_lengths(tok):
    # "the" is one token; query "q" is one token; 3 special tokens (BERT pair).
    doc = " ".join(["the"] * 100)
    windows = make_windows(tok, "q", doc, max_length=32, stride=8)
    # budget 32 - 3 - 1 = 28 tokens, step 28 - 8 = 20: starts 0, 20, 40, 60, 80
    assert [len(w.split()) for w in windows] == [28, 28, 28, 28, 20]
    assert all(_pair_len(tok, "q", w) <= 32 for w in windows)
    assert _pair_len(tok, "q", windows[0]) == 32


def test_windows_fit_cover_and_overlap(tok):
    words = [f"w{i}x" for i in range(300)]  # several tokens per word: cuts must respect words
    doc = " ".join(words)
    query = "which words appear in this document"
    windows = make_windows(tok, query, doc, max_length=64, stride=16)
    assert len(windows) > 5
    assert all(_pair_len(tok, query, w) <= 64 for w in windows)
    seen = [set(w.split()) for w in windows]
    assert set().union(*seen) == set(words)  # nothing lost, every cut at a word boundary
    for a, b in zip(seen, seen[1:], strict=False):
        assert a & b, "consecutive windows overlap"
    assert all(w in doc for w in windows)  # windows are verbatim slices of the document


def test_window_pairs_sources_and_max_score_recovers_late_evidence(tok):
    long_doc = " ".join(["filler"] * 400) + " needle"
    pairs = [("find the needle", "needle here"), ("find the needle", long_doc), ("q", "tiny")]
    expanded, source = window_pairs(tok, pairs, max_length=64, stride=16)
    assert source == sorted(source)
    assert source.count(0) == 1 and source.count(2) == 1 and source.count(1) > 5
    assert expanded[0] == pairs[0] and expanded[-1] == pairs[2]
    # a toy scorer that sees only what fits: truncation loses the needle, windows keep it
    best: dict[int, int] = {}
    for (_, text), src in zip(expanded, source, strict=True):
        best[src] = max(best.get(src, 0), int("needle" in text))
    assert best == {0: 1, 1: 1, 2: 0}
    truncated = tok.decode(tok("find the needle", long_doc, truncation=True, max_length=64)
                           ["input_ids"])
    assert "needle" not in truncated.split("[SEP]")[1]


def test_long_query_still_gets_minimum_window(tok):
    query = " ".join(["the"] * 200)
    doc = " ".join(["and"] * 100)
    windows = make_windows(tok, query, doc, max_length=64, stride=8)
    floor = min(MIN_WINDOW_TOKENS, (64 - 3) // 2)  # at most half the room beside the specials
    assert [len(w.split()) for w in windows[:-1]] == [floor] * (len(windows) - 1)
    assert sum(len(w.split()) for w in windows) >= 100


def test_max_length_too_small_is_an_error(tok):
    with pytest.raises(ValueError, match="no room"):
        make_windows(tok, "q", "the " * 50, max_length=3)


def test_empty_input(tok):
    assert window_pairs(tok, [], 64) == ([], [])
