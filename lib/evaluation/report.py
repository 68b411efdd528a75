"""The shareable report: one self-contained HTML file, plus a LaTeX table; and the charts the
Evaluate page shows (the same figures).

The HTML embeds plotly.js once (so it opens offline and references no external URL), every user
string (queries, documents, ids, names, paths, configs) passes through html.escape, and figure
data is JSON that plotly writes with '<' escaped.
"""

from __future__ import annotations

import html
import json
import math

import pandas as pd

from lib.evaluation.compare import STAT_TEST_LABELS, format_p, metric_label
from lib.evaluation.pipeline import EvaluationResult, query_deltas, side_by_side

TOP_QUERIES = 10
EXAMPLE_QUERIES = 3
EXAMPLE_ROWS = 10
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def e(value) -> str:
    """Escape anything shown in HTML (quotes too: values also land in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _f(x, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


# ---- figures --------------------------------------------------------------------------------


def delta_figure(result: EvaluationResult, baseline: str, metric: str | None = None):
    """Per-query difference (model - baseline), sorted: how many queries gain, how many lose."""
    import plotly.graph_objects as go

    metric = metric or result.primary_metric
    d = query_deltas(result.per_query, result.model, baseline, metric)
    colors = ["#2e7d32" if x > 0 else "#c62828" if x < 0 else "#9e9e9e" for x in d["delta"]]
    hover = [f"{e(q)}<br>{e(_short(t, 80))}" for q, t in zip(d["query_id"], d["query"],
                                                             strict=True)]
    fig = go.Figure(go.Bar(
        x=list(range(1, len(d) + 1)), y=d["delta"], marker_color=colors, hovertext=hover,
        hovertemplate="%{hovertext}<br>delta %{y:+.3f}<extra></extra>"))
    fig.update_layout(
        title=f"Per-query {metric_label(metric)}: {e(result.model)} minus {e(baseline)} "
              f"({len(d)} {result.split_label} queries, sorted)",
        xaxis_title="query (sorted by difference)", yaxis_title=f"delta {metric_label(metric)}",
        height=360, margin={"t": 60, "b": 40, "l": 60, "r": 20}, showlegend=False)
    return fig


def scatter_figure(result: EvaluationResult, baseline: str, metric: str | None = None):
    """Baseline vs model per query; points above the diagonal are queries the model improves."""
    import plotly.graph_objects as go

    metric = metric or result.primary_metric
    d = query_deltas(result.per_query, result.model, baseline, metric)
    hover = [f"{e(q)}<br>{e(_short(t, 80))}" for q, t in zip(d["query_id"], d["query"],
                                                             strict=True)]
    top = max(1.0, float(d[["baseline", "model"]].max().max()))
    fig = go.Figure([
        go.Scatter(x=[0, top], y=[0, top], mode="lines", line={"dash": "dot", "color": "#888"},
                   hoverinfo="skip", name="equal"),
        go.Scatter(x=d["baseline"], y=d["model"], mode="markers", hovertext=hover,
                   marker={"color": d["delta"], "colorscale": "RdYlGn", "cmid": 0, "size": 8},
                   hovertemplate="%{hovertext}<br>" + e(baseline) + " %{x:.3f}<br>"
                   + e(result.model) + " %{y:.3f}<extra></extra>", name="query"),
    ])
    fig.update_layout(
        title=f"{metric_label(metric)} per query: {e(baseline)} (x) vs {e(result.model)} (y)",
        xaxis_title=e(baseline), yaxis_title=e(result.model), height=420, showlegend=False,
        margin={"t": 60, "b": 40, "l": 60, "r": 20})
    return fig


def _short(text: str, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 3] + "..."


# ---- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-size:1.15rem;background:#eef6ee;border-left:5px solid #2e7d32;padding:.8rem 1rem}
.verdict.neutral{background:#f5f5f5;border-color:#888}.verdict.bad{background:#fbeaea;
border-color:#c62828}.warn{background:#fff8e1;border-left:5px solid #f9a825;padding:.5rem 1rem;
margin:.4rem 0}.info{background:#e8f1fb;border-left:5px solid #1565c0;padding:.5rem 1rem;
margin:.4rem 0}.muted{color:#666;font-size:.9rem}.up{color:#2e7d32}.down{color:#c62828}
.sig{font-weight:bold}.snip{max-width:520px}pre{white-space:pre-wrap;font-size:.8rem;
background:#f7f7f7;padding:.5rem}details{margin:.3rem 0}
"""


def _table(headers: list[str] | None, rows: list[list[str]],
           num_cols: set[int] | None = None) -> str:
    """`rows` hold already-escaped cell HTML; headers are escaped here (None: no header row)."""
    num_cols = num_cols or set()
    if headers is None:
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tbody>{body}</tbody></table>"
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{c}</td>' if i in num_cols else f"<td>{c}</td>"
            for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict_class(result: EvaluationResult, baseline: str) -> str:
    c = result.comparisons[baseline][result.primary_metric]
    if not c.significant:
        return "verdict neutral"
    return "verdict" if c.delta > 0 else "verdict bad"


def _data_section(r: EvaluationResult) -> str:
    ds = r.dataset
    rows = [
        ["Dataset", f"{e(ds['name'])} <span class='muted'>({e(ds['dataset_id'])})</span>"],
        ["Source", e(ds.get("ingested_from") or ds.get("source") or "")],
        ["Split", f"{e(r.split_label)}" + (f" of split {e(r.split_id)}" if r.split_id else "")],
        ["Queries evaluated", f"{r.n_queries:,}"],
        ["Queries excluded", f"{r.n_excluded:,} (no candidate with label &ge; "
                             f"{e(r.spec.get('rel_threshold', 1))}; not averaged in)"
         + (f"<br><span class='muted'>{e(', '.join(r.excluded[:50]))}"
            f"{' ...' if len(r.excluded) > 50 else ''}</span>" if r.excluded else "")],
        ["Candidates", e(r.candidates)],
        *([["First stage", e(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in r.first_stage.items()))]]
          if r.first_stage else []),
        ["Labels", e(", ".join(f"{k}: {v:,}" for k, v in r.label_counts.items()))
         + f" <span class='muted'>({e(ds.get('label_scale'))}; relevant = label &ge; "
           f"{e(r.spec.get('rel_threshold', 1))} for the binary metrics, NDCG uses the grades)"
           "</span>"],
    ]
    return _table(None, [[f"<b>{e(a)}</b>", b] for a, b in rows])


def _models_section(r: EvaluationResult) -> str:
    rows, details = [], []
    for rk in r.rankers:
        st = rk.get("stats") or {}
        role = "model under test" if rk["name"] == r.model else "baseline"
        scored = (f"{st.get('n_scored', 0):,} scored, {st.get('n_cached', 0):,} from cache"
                  if rk["kind"] in ("cross-encoder", "biencoder") else f"{st.get('n_pairs', 0):,}")
        setting = ""
        if st.get("max_length"):
            setting = f"max length {st['max_length']}"
            if st.get("windowing") and st["windowing"] != "none":
                setting += f", windows ({st['windowing']}, {st.get('n_windows') or 0:,} windows)"
        rows.append([e(rk["name"]), e(role), e(rk["description"]),
                     e(rk.get("path") or rk.get("spec")), e(setting), e(scored),
                     e(f"{st.get('seconds', 0):.1f} s") + (f"<br><span class='muted'>"
                                                          f"{e(st['note'])}</span>"
                                                          if st.get("note") else "")])
        if rk.get("training"):
            details.append(
                f"<details><summary>Training run of {e(rk['name'])}</summary><pre>"
                f"{e(json.dumps(rk['training'], indent=1, default=str))}</pre></details>")
    return _table(["Ranker", "Role", "What", "Path / id", "Setting", "Pairs", "Time"],
                  rows) + "".join(details)


def _metrics_section(r: EvaluationResult) -> str:
    headers = ["Ranker"] + [metric_label(m) for m in r.metrics]
    rows = []
    for name in r.ranker_names:
        cells = [e(name) + (" <span class='muted'>(model)</span>" if name == r.model else "")]
        for m in r.metrics:
            v = r.means[name].get(m)
            best = max(r.means[n].get(m, float("-inf")) for n in r.ranker_names)
            cell = e(_f(v))
            cells.append(f"<b>{cell}</b>" if v is not None and v == best else cell)
        rows.append(cells)
    out = _table(headers, rows, set(range(1, len(headers))))
    judged = [(n, r.means[n].get("judged@10")) for n in r.ranker_names]
    if r.first_stage and any(v is not None for _, v in judged):
        out += ("<p>Judged@10 (share of each query's top 10 that was ever labelled; unjudged "
                "documents count as not relevant): " + e(", ".join(
                    f"{n} {_f(v)}" for n, v in judged)) + "</p>")
    test = STAT_TEST_LABELS.get(r.spec.get("stat_test", "fisher"), "")
    for b in r.baselines:
        crow = []
        for m in r.metrics:
            c = r.comparisons[b][m]
            cls = "up" if c.delta > 0 else "down" if c.delta < 0 else ""
            sig = " sig" if c.significant else ""
            crow.append([
                e(metric_label(m)), e(_f(c.model_mean)), e(_f(c.baseline_mean)),
                f"<span class='{cls}{sig}'>{e(_f(c.delta, signed=True))}</span>",
                e("n/a" if c.rel_change is None else f"{100 * c.rel_change:+.1f}%"),
                e(f"{_f(c.ci_low, signed=True)} .. {_f(c.ci_high, signed=True)}"),
                e(format_p(c.p_value)) + (" *" if c.significant else ""),
                e(f"{c.wins} / {c.ties} / {c.losses}"),
            ])
        out += (f"<h3>{e(r.model)} vs {e(b)}</h3>" + _table(
            ["Metric", r.model, b, "Delta", "Relative", "95% CI of delta", "p", "Win / tie / loss"],
            crow, {1, 2, 3, 4, 5}))
    out += (f"<p class='muted'>p: {e(test)}, {e(r.spec.get('n_permutations'))} permutations "
            f"(exact for &le; 16 queries), seed {e(r.spec.get('seed'))}; * = p &le; "
            f"{e(r.spec.get('max_p'))}. CI: percentile bootstrap over queries, "
            f"{e(r.spec.get('n_bootstrap'))} resamples. Win/tie/loss: queries where the model's "
            "value is higher / equal / lower. Metrics computed with ranx; ties in scores are "
            "broken by doc id.</p>")
    return out


def _query_tables(r: EvaluationResult, baseline: str) -> str:
    d = query_deltas(r.per_query, r.model, baseline, r.primary_metric)
    m = metric_label(r.primary_metric)

    def rows(frame: pd.DataFrame) -> list[list[str]]:
        return [[e(x.query_id), e(_short(x.query, 160)), e(x.n_relevant), e(_f(x.baseline)),
                 e(_f(x.model)), e(_f(x.delta, signed=True))] for x in frame.itertuples()]

    headers = ["Query id", "Query", "Relevant", f"{baseline} {m}", f"{r.model} {m}", "Delta"]
    improved = d[d["delta"] > 0].head(TOP_QUERIES)
    worsened = d[d["delta"] < 0].sort_values("delta").head(TOP_QUERIES)
    n_up, n_down = int((d["delta"] > 0).sum()), int((d["delta"] < 0).sum())
    return (
        f"<p>{n_up} queries improved, {n_down} worsened, {len(d) - n_up - n_down} unchanged.</p>"
        f"<h3>Most improved</h3>" + (_table(headers, rows(improved), {2, 3, 4, 5})
                                     if len(improved) else "<p>none</p>")
        + "<h3>Most worsened</h3>" + (_table(headers, rows(worsened), {2, 3, 4, 5})
                                      if len(worsened) else "<p>none</p>"))


def _examples(r: EvaluationResult, baseline: str) -> str:
    d = query_deltas(r.per_query, r.model, baseline, r.primary_metric)
    picks = list(d[d["delta"] > 0].head(EXAMPLE_QUERIES)["query_id"]) + list(
        d[d["delta"] < 0].sort_values("delta").head(EXAMPLE_QUERIES)["query_id"])
    out = []
    for qid in picks:
        row = d[d["query_id"] == qid].iloc[0]
        sbs = side_by_side(r.scored, qid, r.model, baseline).head(EXAMPLE_ROWS)
        rows = []
        for x in sbs.itertuples():
            cls = "up" if x.rank_change > 0 else "down" if x.rank_change < 0 else ""
            rows.append([e(x.rank_model), e(f"{x.score_model:.6g}"), e(x.rank_base),
                         e(f"{x.score_base:.6g}"),
                         f"<span class='{cls}'>{e(f'{x.rank_change:+d}')}</span>",
                         e(x.label), e(x.doc_id), f"<div class='snip'>{e(x.snippet)}</div>"])
        out.append(
            f"<h3>Query {e(qid)}: {e(row['query'])}</h3><p class='muted'>"
            f"{e(metric_label(r.primary_metric))} {e(_f(row['baseline']))} &rarr; "
            f"{e(_f(row['model']))} ({e(_f(row['delta'], signed=True))}); top {EXAMPLE_ROWS} of "
            f"{int(row['n_candidates'])} candidates in {e(r.model)}'s order</p>"
            + _table([f"{r.model} rank", "score", f"{baseline} rank", "score", "rank change",
                      "label", "doc id", "document"], rows, {0, 1, 2, 3, 4, 5}))
    return "".join(out) or "<p>No query changed.</p>"


def _fig_html(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config=PLOTLY_CONFIG)


def _honest_verdict(r: EvaluationResult) -> str:
    """When the model under test loses to BM25 / the bi-encoder: that, the likely causes and
    what to try next (lib.evaluation.verdicts)."""
    from lib.evaluation.verdicts import evaluation_verdict

    v = evaluation_verdict(r)
    if v is None or not v.lost:
        return ""
    items = lambda xs: "<ul>" + "".join(f"<li>{e(x)}</li>" for x in xs) + "</ul>"  # noqa: E731
    return (f"<div class='verdict bad'><b>{e(v.headline)}</b><br>Likely causes:"
            f"{items(v.causes)}Next to try:{items(v.next_steps)}</div>")


def _fusion_notes(r: EvaluationResult) -> str:
    """Where each fusion weight was chosen and where its figure is reported."""
    return "".join(f"<p class='muted'>Fusion {e(rk['name'])}: {e(rk['stats']['note'])}</p>"
                   for rk in r.rankers if (rk.get("stats") or {}).get("fusion"))


def render_html(r: EvaluationResult) -> str:
    """The whole report as one string (~5 MB, most of it plotly.js)."""
    from plotly.offline import get_plotlyjs

    title = f"{r.model} vs {', '.join(r.baselines)} on {r.dataset['name']} ({r.split_label})"
    verdicts = "".join(
        f"<div class='{_verdict_class(r, b)}'>{e(v)}</div>"
        for b, v in zip(r.baselines, r.verdicts, strict=True))
    verdicts += _honest_verdict(r) + _fusion_notes(r)
    warnings = "".join(
        f"<div class='{'warn' if w.severity == 'warning' else 'info'}'>{e(w.message)}"
        + (_leak_examples(w.details) if w.kind == "leakage" and w.details else "") + "</div>"
        for w in r.warnings) or "<p>None.</p>"
    per_query = "".join(
        f"<h3>{e(r.model)} vs {e(b)}</h3>" + _fig_html(delta_figure(r, b))
        + _fig_html(scatter_figure(r, b)) + _query_tables(r, b)
        for b in r.baselines)
    examples = "".join(f"<h3>vs {e(b)}</h3>" + _examples(r, b) for b in r.baselines)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>Reranker evaluation: {e(title)}</h1>
<p class="muted">Evaluation {e(r.eval_id)}, {e(r.created_at)}; Reranker Studio. {e(r.candidates)}.
</p>
<h2>Verdict</h2>{verdicts}
<h2>Warnings</h2>{warnings}
<h2>Data</h2>{_data_section(r)}
<h2>Models</h2>{_models_section(r)}
<h2>Metrics</h2>{_metrics_section(r)}
<h2>Per query</h2>{per_query}
<h2>Examples: both rankings side by side</h2>{examples}
</body></html>
"""


def _leak_examples(details: dict) -> str:
    ex = details.get("examples") or []
    if not ex:
        return ""
    rows = [[e(x["kind"]), e(x["eval_query"]), e(x["train_query"]), e(x["similarity"])]
            for x in ex]
    return _table(["kind", "evaluation query", "training query", "similarity"], rows)


# ---- LaTeX ----------------------------------------------------------------------------------

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(text) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def latex_table(r: EvaluationResult) -> str:
    """booktabs table: rankers x metrics; best in bold; significance marks vs each baseline."""
    marks = ["\\dagger", "\\ddagger", "\\S", "\\P", "\\|"]
    cols = "l" + "r" * len(r.metrics)
    lines = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[t]", "\\centering", f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
        "Ranker & " + " & ".join(tex(metric_label(m)) for m in r.metrics) + " \\\\",
        "\\midrule",
    ]
    for name in r.ranker_names:
        cells = []
        for m in r.metrics:
            v = r.means[name].get(m)
            best = max(r.means[n].get(m, float("-inf")) for n in r.ranker_names)
            cell = _f(v)
            if v is not None and v == best:
                cell = f"\\textbf{{{cell}}}"
            if name == r.model:
                sup = "".join(marks[i % len(marks)] for i, b in enumerate(r.baselines)
                              if r.comparisons[b][m].significant)
                if sup:
                    cell += f"$^{{{sup}}}$"
            cells.append(cell)
        lines.append(tex(name) + " & " + " & ".join(cells) + " \\\\")
    legend = "; ".join(
        f"${marks[i % len(marks)]}$: significantly different from {tex(b)}"
        for i, b in enumerate(r.baselines))
    test = STAT_TEST_LABELS.get(r.spec.get("stat_test", "fisher"), "")
    lines += [
        "\\bottomrule", "\\end{tabular}",
        f"\\caption{{{tex(r.model)} vs baselines on {tex(r.dataset['name'])}, "
        f"{tex(r.split_label)} split: {r.n_queries} queries ({r.n_excluded} without a relevant "
        f"candidate excluded); candidates are each query's labelled pairs. {legend} "
        f"({tex(test)}, $p \\le {r.spec.get('max_p')}$).}}",
        "\\end{table}", "",
    ]
    return "\n".join(lines)
