"""Read runs back from MLflow into tidy pandas DataFrames.

:func:`load_runs` gives one row per run (params with real types, final
metrics, outcome); :func:`load_histories` gives one row per (run, metric,
step). The report knows MLflow and pandas only, never the trainer's internals.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from .. import tracking

__all__ = ["load_runs", "drop_duplicates", "load_histories", "load_weights", "summarize_outcomes", "check_metric",
           "ReportError", "GROUP_ALIASES", "run_url"]

#: Config groups whose value is their ``name``: a filter may say ``params.dataset``
#: for the flattened ``params.`dataset.name``` (how the run stores it).
GROUP_ALIASES = ("activation", "init", "optimizer", "dataset")

_ALIAS_RE = re.compile(r"\b(params?)\.(" + "|".join(GROUP_ALIASES) + r")\b(?![.\w`])")
_KEY_RE = re.compile(r"\b(params?|tags?|metrics?)\.(`[^`]+`|\"[^\"]+\"|[\w.]+)")


def run_url(experiment_id: str, run_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The run's page in the MLflow UI (``mlflow ui --backend-store-uri <uri> --host 127.0.0.1 --port 5000``)."""
    return f"{host}/#/experiments/{experiment_id}/runs/{run_id}"


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
            "experiment_id": r.info.experiment_id, "artifact_uri": r.info.artifact_uri,
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
    filter_string = _ALIAS_RE.sub(lambda m: f"{m.group(1)}.`{m.group(2)}.name`", filter_string.strip())
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
        text = str(e).lower()
        if filter_string and any(w in text for w in ("filter", "invalid", "parse", "expected", "quoted")):
            raise ReportError(f"invalid filter {filter_string!r}: {' '.join(str(e).split())[:300]}") from None
        raise
    if not runs and filter_string:
        _explain_empty(c, exp_id, experiment, filter_string)
    df = _runs_frame(runs)
    if reused:
        r = _runs_frame(reused)
        r["reused"] = True
        df = pd.concat([df, r], ignore_index=True)
    df.attrs["metrics"] = sorted({k for r in [*runs, *reused] for k in r.data.metrics})
    return df


def drop_duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run per ``config_hash``: ``(kept, dropped)``.

    Runs with the same ``nnexp.config_hash`` tag trained the same configuration
    with the same seed (the hash covers the resolved config, seed included,
    without ``tracking.*``, ``study`` and ``blas_threads``): a single run repeating
    a sweep's, or two sweeps of one grid started at once. Counting both would
    count one seed twice. Of each hash the kept run is the first by: status
    ``FINISHED`` before any other, then the latest ``end_time`` (a run still
    running has none and comes last), then the latest ``start_time``, then the
    smallest ``run_id`` (so the choice never depends on the store's order).
    Runs without the tag (older stores) are all kept.

    Parameters
    ----------
    runs : DataFrame
        One row per run, as :func:`load_runs` returns it (columns ``run_id, status, start_time, end_time``
        and ``config_hash``).

    Returns
    -------
    kept : DataFrame
        ``runs`` without the duplicates, in their original order, with ``runs.attrs``.
    dropped : DataFrame
        The duplicates, with a ``kept_run_id`` column: the run kept in their place.
    """
    tagged = (runs["config_hash"].notna() & (runs["config_hash"].astype(str) != "")) if "config_hash" in runs \
        else pd.Series(False, index=runs.index)
    if not tagged.any():
        return runs, runs.iloc[:0].assign(kept_run_id=pd.Series(dtype=object))
    order = pd.DataFrame({
        "finished": runs["status"].eq("FINISHED"),
        "end": pd.to_numeric(runs["end_time"], errors="coerce").fillna(-np.inf),
        "start": pd.to_numeric(runs["start_time"], errors="coerce").fillna(-np.inf),
        "run_id": runs["run_id"], "config_hash": runs["config_hash"],
    }, index=runs.index)[tagged]
    order = order.sort_values(["finished", "end", "start", "run_id"], ascending=[False, False, False, True], kind="stable")
    winners = order.drop_duplicates("config_hash")
    dup = tagged & ~runs.index.isin(winners.index)
    kept = runs[~dup].copy()
    dropped = runs[dup].copy()
    dropped["kept_run_id"] = dropped["config_hash"].map(winners.set_index("config_hash")["run_id"])
    kept.attrs.update(runs.attrs)
    return kept, dropped


def _explain_empty(c, exp_id: str, experiment: str, filter_string: str) -> None:
    """Raise a ReportError naming the filter's keys that no run of the experiment has."""
    some = tracking.retry(c.search_runs, [exp_id], filter_string=f"tags.`{tracking.TAG}config_hash` != ''",
                          max_results=200)
    known = {"param": set(), "tag": set(), "metric": set()}
    for r in some:
        known["param"].update(r.data.params)
        known["tag"].update(r.data.tags)
        known["metric"].update(r.data.metrics)
    for kind, key in _KEY_RE.findall(filter_string):
        kind = kind.rstrip("s")
        key = key.strip("`\"")
        if some and key not in known[kind]:
            near = sorted(k for k in known[kind] if k.split(".")[0] == key.split(".")[0] or key in k)[:6]
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ReportError(f"filter {filter_string!r}: no run of experiment {experiment!r} has {kind} {key!r}"
                              f" (params are stored flattened, e.g. params.`dataset.name`){hint}")
    seen = []
    for kind, key in _KEY_RE.findall(filter_string)[:3]:
        kind, key = kind.rstrip("s"), key.strip("`\"")
        if kind in ("param", "tag"):
            vals = sorted({(r.data.params if kind == "param" else r.data.tags).get(key) for r in some} - {None})
            seen.append(f"{kind} {key} takes {', '.join(map(repr, vals[:8]))}{' ...' if len(vals) > 8 else ''}")
    raise ReportError(f"no runs in experiment {experiment!r} match the filter {filter_string!r}"
                      + (f" ({'; '.join(seen)})" if seen else ""))


def check_metric(runs: pd.DataFrame, metric: str) -> None:
    """Raise a ReportError if no run logged ``metric``, listing the metrics that exist."""
    if metric in runs.columns and runs[metric].notna().any():
        return
    logged = runs.attrs.get("metrics", [])
    raise ReportError(f"metric {metric!r} was not logged by the selected runs; metrics: {', '.join(logged)}")


def load_weights(uri: str, run_id: str, artifact_uri: str | None = None, name: str = "weights.npz") -> dict | None:
    """A run's ``weights.npz`` artifact as a dict of arrays, or None if it has none.

    Read with ``np.load(..., allow_pickle=False)``; a local artifact store is read
    in place, any other is downloaded through MLflow.
    """
    if artifact_uri and artifact_uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        base = Path(unquote(urlparse(artifact_uri).path))
        path = base / name
        if not path.exists():
            found = sorted(base.glob("weights*.npz"))
            if not found:
                return None
            path = found[0]
    else:
        import tempfile

        import mlflow.artifacts

        try:
            path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, tracking_uri=uri,
                                                            dst_path=tempfile.mkdtemp(prefix="nnexp-w-")))
        except Exception:
            return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def summarize_outcomes(runs: pd.DataFrame) -> dict[str, int]:
    """Counts of runs by outcome (finished, diverged, failed, killed) and how many were reused."""
    if runs.empty:
        return {}
    counts = runs["outcome"].value_counts().to_dict()
    counts["reused"] = int(runs["reused"].sum())
    return {k: int(v) for k, v in counts.items()}


#: Requests in flight at once when histories come from a tracking server.
HISTORY_THREADS = 8


def load_histories(uri: str, run_ids: list[str], metrics: list[str] | None = None) -> pd.DataFrame:
    """Per-step metric histories in long form: columns ``run_id, metric, step, value``.

    A SQLite store is read with one SQL query (fast for hundreds of runs); any
    other store through MLflow's client, one request per run and metric,
    :data:`HISTORY_THREADS` requests at a time.
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
    from concurrent.futures import ThreadPoolExecutor

    c = tracking.client(uri)

    def one_run(rid: str) -> list[tuple]:
        keys = metrics or list(tracking.retry(c.get_run, rid).data.metrics)
        return [(rid, k, m.step, m.value) for k in keys for m in tracking.retry(c.get_metric_history, rid, k)]

    # a tracking server answers one (run, metric) per request: overlap the round trips
    with ThreadPoolExecutor(max_workers=HISTORY_THREADS) as pool:
        rows = [row for part in pool.map(one_run, run_ids) for row in part]
    df = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
    return df.sort_values(["run_id", "metric", "step"], ignore_index=True)
