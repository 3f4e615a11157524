"""Read runs back from MLflow into tidy pandas DataFrames.

:func:`load_runs` gives one row per run (params with real types, final
metrics, outcome); :func:`load_histories` gives one row per (run, metric,
step). The report knows MLflow and pandas only, never the trainer's internals.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from .. import tracking

__all__ = ["load_runs", "load_histories", "summarize_outcomes", "ReportError"]


class ReportError(ValueError):
    """A report request that cannot be met (unknown experiment, empty selection, unknown metric)."""


def _typed(value: str):
    if value is None:
        return None
    if value in ("null", "None"):
        return None
    if value in ("True", "False"):
        return value == "True"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _runs_frame(runs) -> pd.DataFrame:
    rows = []
    for r in runs:
        tags = r.data.tags
        row = {
            "run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
            "start_time": r.info.start_time, "end_time": r.info.end_time,
            "parent_id": tags.get("mlflow.parentRunId"),
            "outcome": tags.get(f"{tracking.TAG}outcome", "failed" if r.info.status in ("FAILED", "KILLED") else "running"),
            "diverged_epoch": _typed(tags.get(f"{tracking.TAG}diverged_epoch", "0")),
            "config_hash": tags.get(f"{tracking.TAG}config_hash"),
        }
        for k in ("activation", "init", "optimizer", "dataset", "loss"):
            row[k] = tags.get(k)
        for k, v in r.data.params.items():
            if k not in row:
                row[k] = _typed(v)
        for k, v in r.data.metrics.items():
            row[k] = v
        if r.info.status in ("FAILED", "KILLED"):
            row["outcome"] = "failed" if r.info.status == "FAILED" else "killed"
        row["error"] = tags.get(f"{tracking.TAG}error")
        row["reused"] = False
        rows.append(row)
    df = pd.DataFrame(rows)
    return df


def _experiment_id(c, experiment: str) -> str:
    exp = tracking.retry(c.get_experiment_by_name, experiment)
    if exp is None:
        names = sorted(e.name for e in tracking.retry(c.search_experiments))
        raise ReportError(f"experiment {experiment!r} not found; experiments in this store: {', '.join(names) or 'none'}")
    return exp.experiment_id


def _search_all(c, exp_id: str, filter_string: str):
    out, token = [], None
    while True:
        page = tracking.retry(c.search_runs, [exp_id], filter_string=filter_string, max_results=5000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def load_runs(uri: str, experiment: str, *, parent_id: str | None = None, filter_string: str = "") -> pd.DataFrame:
    """One row per training run of an experiment (sweep parents excluded).

    Parameters
    ----------
    uri : str
        MLflow tracking URI.
    experiment : str
        Experiment name.
    parent_id : str, optional
        Only the children of this sweep's parent run, plus the earlier runs the
        sweep reused instead of retraining (resume).
    filter_string : str
        An MLflow search filter, e.g. ``"params.dataset = 'digits'"``.

    Returns
    -------
    DataFrame
        Columns ``run_id, run_name, status, outcome, reused, activation, init, optimizer, dataset``,
        every param (``optimizer.lr``, ``seed``, ...) with its real type, and every final metric.

    Raises
    ------
    ReportError
        If the experiment does not exist or the filter is invalid.
    """
    c = tracking.client(uri)
    exp_id = _experiment_id(c, experiment)
    clauses = [f"tags.`{tracking.TAG}config_hash` != ''"]
    if filter_string:
        clauses.append(f"({filter_string})" if " or " in filter_string.lower() else filter_string)
    try:
        if parent_id:
            runs = _search_all(c, exp_id, " and ".join([*clauses, f"tags.mlflow.parentRunId = '{parent_id}'"]))
            reused = _search_all(c, exp_id, " and ".join([*clauses, f"tags.`{tracking.TAG}reused_by.{parent_id}` = '1'"]))
        else:
            runs = _search_all(c, exp_id, " and ".join(clauses))
            reused = []
    except Exception as e:
        if "filter" in str(e).lower() or "invalid" in str(e).lower() or "parse" in str(e).lower():
            raise ReportError(f"invalid filter {filter_string!r}: {str(e).splitlines()[0]}") from None
        raise
    df = _runs_frame(runs)
    if reused:
        r = _runs_frame(reused)
        r["reused"] = True
        df = pd.concat([df, r], ignore_index=True)
    return df


def summarize_outcomes(runs: pd.DataFrame) -> dict[str, int]:
    """Counts of runs by outcome (finished, diverged, failed, killed) and how many were reused."""
    if runs.empty:
        return {}
    counts = runs["outcome"].value_counts().to_dict()
    counts["reused"] = int(runs["reused"].sum())
    return {k: int(v) for k, v in counts.items()}


def load_histories(uri: str, run_ids: list[str], metrics: list[str] | None = None) -> pd.DataFrame:
    """Per-step metric histories in long form: columns ``run_id, metric, step, value``.

    A SQLite store is read with one SQL query (fast for hundreds of runs); any
    other store through MLflow's client, one request per run and metric.
    """
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "metric", "step", "value"])
    db = tracking.sqlite_path(uri)
    if db is not None:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            q = "SELECT run_uuid AS run_id, key AS metric, step, value FROM metrics WHERE run_uuid IN ({})".format(
                ",".join("?" * len(run_ids)))
            args = list(run_ids)
            if metrics:
                q += " AND key IN ({})".format(",".join("?" * len(metrics)))
                args += list(metrics)
            df = pd.read_sql_query(q, con, params=args)
        finally:
            con.close()
        return df.sort_values(["run_id", "metric", "step"], ignore_index=True)
    c = tracking.client(uri)
    rows = []
    for rid in run_ids:
        keys = metrics or list(tracking.retry(c.get_run, rid).data.metrics)
        for k in keys:
            for m in tracking.retry(c.get_metric_history, rid, k):
                rows.append((rid, k, m.step, m.value))
    return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
