"""Tables and figures for the Checks page, built from the cached JSON results (no streamlit)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from lib.checks.leakage import KIND_TEXT, TRAIN

SPLIT_COLORS = {"train": "#4C78A8", "validation": "#F58518", "test": "#54A24B", "eval": "#B279A2"}


def findings_table(findings: list[dict]) -> pd.DataFrame:
    """One row per finding: the training query next to its held-out twin."""
    rows = []
    for i, f in enumerate(findings):
        train = [m for m in f["queries"] if m["split"] == TRAIN]
        held = [m for m in f["queries"] if m["split"] != TRAIN]
        rows.append({
            "#": i + 1,
            "kind": f["kind"],
            "similarity": f["similarity"],
            "held-out split": ", ".join(sorted({m["split"] for m in held})),
            "held-out query id": ", ".join(m["query_id"] for m in held),
            "held-out query": " | ".join(m["query"] for m in held),
            "train query id": ", ".join(m["query_id"] for m in train),
            "train query": " | ".join(m["query"] for m in train),
            "held-out pairs": f["pairs"],
            "identical (query, doc) pairs": f.get("identical_pairs", 0),
            "documents judged on both sides": f.get("shared_documents", 0),
        })
    return pd.DataFrame(rows)


def kind_explanations(findings: list[dict]) -> list[str]:
    kinds = sorted({f["kind"] for f in findings}, key=list(KIND_TEXT).index)
    return [f"{k}: {KIND_TEXT[k]}" for k in kinds]


def examples_table(finding: dict) -> pd.DataFrame:
    return pd.DataFrame(finding.get("examples", []))


def label_figure(distribution: dict) -> go.Figure:
    """Share of pairs per label value, one bar group per split (counts on hover)."""
    fig = go.Figure()
    for sp, d in distribution.items():
        labels = list(d["labels"])
        counts = [d["labels"][k] for k in labels]
        fig.add_bar(name=f"{sp} ({d['pairs']:,} pairs)", x=labels,
                    y=[c / d["pairs"] for c in counts], customdata=counts,
                    hovertemplate="label %{x}: %{y:.1%} (%{customdata:,} pairs)",
                    marker_color=SPLIT_COLORS.get(sp))
    fig.update_layout(title="Label distribution per split (share of the split's pairs)",
                      barmode="group", xaxis_title="label", yaxis_tickformat=".0%",
                      xaxis_type="category")
    return fig


def length_figure(trunc: dict) -> go.Figure:
    """Pair length histogram per split with the max-length cut line (and the suggestion)."""
    h = trunc["histogram"]
    edges = h["edges"]
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    fig = go.Figure()
    for sp, counts in h["counts"].items():
        fig.add_bar(name=sp, x=centers, y=counts, width=h["bin_width"],
                    marker_color=SPLIT_COLORS.get(sp), opacity=0.75)
    cut = trunc["max_length"]
    fig.add_vline(x=cut, line_color="red", line_dash="dash",
                  annotation_text=f"max length {cut}: longer pairs are cut")
    if trunc["suggested_max_length"] != cut:
        fig.add_vline(x=trunc["suggested_max_length"], line_color="green", line_dash="dot",
                      annotation_text=f"suggested {trunc['suggested_max_length']}",
                      annotation_position="bottom right")
    fig.update_layout(
        title=f"Tokens per (query, document) pair incl. special tokens; last bar = "
        f"{h['overflow_from']}+",
        barmode="overlay", xaxis_title="tokens", yaxis_title="pairs",
    )
    return fig


def lost_figure(trunc: dict) -> go.Figure:
    h = trunc["lost_histogram"]
    edges = h["edges"]
    fig = go.Figure()
    for sp, counts in h["counts"].items():
        fig.add_bar(name=sp, x=edges[:-1], y=counts, width=h["bin_width"], offset=0,
                    marker_color=SPLIT_COLORS.get(sp), opacity=0.75)
    fig.update_layout(title="Tokens lost per truncated pair", barmode="overlay",
                      xaxis_title="tokens cut off the document's end", yaxis_title="pairs")
    return fig


def truncation_table(trunc: dict) -> pd.DataFrame:
    rows = []
    for sp, s in {**trunc["splits"], "all": trunc["overall"]}.items():
        rows.append({
            "split": sp, "pairs": s["pairs"], "truncated": s["truncated"],
            "truncated %": round(100 * s["truncated_share"], 1),
            "relevant pairs": s["relevant_pairs"], "relevant truncated": s["relevant_truncated"],
            "relevant truncated %": round(100 * s["relevant_truncated_share"], 1),
            "tokens lost (median)": s["tokens_lost"]["p50"],
            "tokens lost (p90)": s["tokens_lost"]["p90"],
            "tokens lost (max)": s["tokens_lost"]["max"],
            "model calls with windows": s["model_calls_with_windows"],
        })
    return pd.DataFrame(rows)


def memory_table(memory: dict) -> pd.DataFrame:
    return pd.DataFrame([{"part": k.replace("_", " "), "GiB": round(v / 1024**3, 3)}
                         for k, v in memory["parts"].items()])
