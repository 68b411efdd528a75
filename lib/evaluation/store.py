"""Evaluations on disk and in the database, so the page rebuilds any of them after a refresh.

workspace/reports/<eval_id>/
  report.html      self-contained (plotly embedded): opens offline, can be mailed
  results.json     the CLI's --json object plus everything needed to rebuild the page
  per_query.csv    one row per query: text, candidates, each ranker's metric values
  per_query.parquet, scores.parquet   the same table and every pair's scores, typed
  metrics.tex      the metrics table with significance, for papers and slides
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lib import db
from lib.evaluation.compare import Comparison
from lib.evaluation.pipeline import EvaluationResult
from lib.evaluation.sanity import SanityWarning
from lib.workspace import Workspace, safe_name

FILES = {
    "html": "report.html", "json": "results.json", "csv": "per_query.csv",
    "latex": "metrics.tex",
}


class EvaluationNotFoundError(LookupError):
    pass


def report_dir(ws: Workspace, eval_id: str) -> Path:
    return ws.child("reports", safe_name(eval_id))


def save_evaluation(ws: Workspace, result: EvaluationResult) -> Path:
    """Write the report files, then the database rows (one transaction)."""
    from lib.evaluation.report import latex_table, render_html

    out = report_dir(ws, result.eval_id)
    out.mkdir(parents=True, exist_ok=True)
    result.report_dir = str(out.relative_to(ws.root))
    result.files = {k: f"{result.report_dir}/{v}" for k, v in FILES.items()}
    result.per_query.to_csv(out / FILES["csv"], index=False)
    result.per_query.to_parquet(out / "per_query.parquet", index=False)
    result.scored.to_parquet(out / "scores.parquet", index=False)
    (out / FILES["latex"]).write_text(latex_table(result), encoding="utf-8")
    (out / FILES["json"]).write_text(json.dumps(result.to_json(), indent=1, default=str),
                                     encoding="utf-8")
    (out / FILES["html"]).write_text(render_html(result), encoding="utf-8")
    long = result.per_query.melt(
        id_vars=["query_id"], value_vars=[c for c in result.per_query.columns if "|" in c],
        var_name="key", value_name="value")
    long[["ranker", "metric"]] = long["key"].str.rsplit("|", n=1, expand=True)
    long["eval_id"] = result.eval_id
    long = long[["eval_id", "ranker", "query_id", "metric", "value"]]
    summary = json.dumps({k: v for k, v in result.to_json().items()
                          if k in ("metrics", "comparison", "n_queries", "n_excluded")})
    with db.connect(ws) as con, db.transaction(con):
        con.execute(
            "INSERT INTO evaluations (eval_id, dataset_id, dataset_name, split_id, split, "
            "n_queries, n_excluded, n_pairs, model, baselines, primary_metric, verdict, "
            "report_dir, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [result.eval_id, result.dataset["dataset_id"], result.dataset["name"],
             result.split_id, result.split, result.n_queries, result.n_excluded, result.n_pairs,
             result.model, json.dumps(result.baselines), result.primary_metric, result.verdict,
             result.report_dir, summary])
        con.register("eval_long", long)
        con.execute("INSERT INTO evaluation_queries SELECT * FROM eval_long")
        con.unregister("eval_long")
    return out


def list_evaluations(ws: Workspace) -> pd.DataFrame:
    """Newest first; only those whose report directory still exists."""
    with db.connect(ws) as con:
        df = con.execute(
            "SELECT eval_id, created_at, dataset_name, split, n_queries, n_excluded, model, "
            "baselines, primary_metric, verdict, report_dir FROM evaluations "
            "ORDER BY created_at DESC, eval_id DESC").df()
    if df.empty:
        return df
    keep = [(ws.root / d / FILES["json"]).is_file() for d in df["report_dir"]]
    return df[keep].reset_index(drop=True)


def load_evaluation(ws: Workspace, eval_id: str) -> EvaluationResult:
    """Rebuild an EvaluationResult from its report directory."""
    out = report_dir(ws, eval_id)
    path = out / FILES["json"]
    if not path.is_file():
        raise EvaluationNotFoundError(f"no evaluation {eval_id!r} in {ws.reports_dir}")
    d = json.loads(path.read_text(encoding="utf-8"))
    per_query = pd.read_parquet(out / "per_query.parquet")
    scored = pd.read_parquet(out / "scores.parquet")
    comparisons = {
        b: {m: Comparison(**{k: (float("nan") if v is None and k in _FLOATS else v)
                             for k, v in c.items()}) for m, c in cs.items()}
        for b, cs in d["comparisons"].items()
    }
    return EvaluationResult(
        eval_id=d["eval_id"], created_at=d["created_at"], spec=d["spec"], dataset=d["dataset"],
        split=d["split"], split_id=d["split_id"], n_queries=d["n_queries"],
        n_excluded=d["n_excluded"], excluded=d["excluded"], n_pairs=d["n_pairs"],
        candidates=d["candidates"], label_counts=d["label_counts"], rankers=d["rankers"],
        model=d["model"], baselines=d["baselines"], metrics=list(d["spec"]["metrics"]),
        means={r: {m: (float("nan") if v is None else v) for m, v in ms.items()}
               for r, ms in d["metrics"].items()},
        comparisons=comparisons, verdicts=d["verdicts"],
        warnings=[SanityWarning(**w) for w in d["warnings"]], per_query=per_query,
        scored=scored, seconds=d.get("seconds", 0.0), report_dir=d["report_dir"],
        files=d["files"], first_stage=d.get("first_stage"),
    )


_FLOATS = {"model_mean", "baseline_mean", "delta", "ci_low", "ci_high", "p_value"}
