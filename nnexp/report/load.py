"""Read runs back from MLflow into tidy pandas DataFrames.

:func:`load_runs` gives one row per run (params with real types, its
identity from :mod:`nnexp.identity`, final metrics, outcome);
:func:`load_histories` gives one row per (run, metric, step). The report knows
MLflow and pandas only, never the trainer's internals.
"""

from __future__ import annotations

import gc
import re
import sqlite3
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .. import identity, tracking

__all__ = ["load_runs", "drop_duplicates", "lists_as_text", "load_histories", "load_weights", "summarize_outcomes", "check_metric",
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


def _identity_columns(r) -> dict:
    """``config_id``, ``run_key``, ``legacy``, ``repeat_parents`` and the canonical configuration of a run (lists as
    tuples).

    A run without the identity tags (recorded before them) is read from its params
    (:func:`nnexp.identity.canonical_from_params`) and flagged ``legacy``: its
    ``config_id`` never equals a new run's, and its ``run_key`` is its old
    ``nnexp.config_hash`` (same configuration and seed), so legacy copies of one
    run still count once.
    """
    tags = r.data.tags
    if tags.get(identity.TAG_VERSION) and tags.get(identity.TAG_CONFIG):
        canon = identity.from_json(tags[identity.TAG_CONFIG])
        cid, key, legacy = tags.get(identity.TAG_CONFIG_ID), tags.get(identity.TAG_RUN_KEY), False
    else:
        canon = identity.canonical_from_params(r.data.params, tags)
        cid, legacy = identity.config_id(canon), True
        old = tags.get(f"{tracking.TAG}config_hash")
        key = f"legacy-{old}" if old else None
    prefix = f"{tracking.TAG}repeat."
    repeat_tags = sorted((k, v) for k, v in tags.items() if k.startswith(prefix))
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in canon.items()}
    out.update(config_id=cid, run_key=key, legacy=legacy,
               repeated_by="; ".join(v for _, v in repeat_tags) or None,
               repeat_parents=tuple(k[len(prefix):].split(".")[0] for k, _ in repeat_tags))
    return out


def duplicate_jobs(runs: pd.DataFrame, parents: Iterable[str] | None = None) -> int:
    """Jobs of the sweeps ``parents`` (every sweep: None) that spelled the configuration and seed of a run another
    of their jobs trained or reused: trained once, counted once.

    Each such job tagged that run ``nnexp.repeat.<parent run>.<job number>`` (:func:`nnexp.app.run_job`), so a run
    reused by a later sweep carries the later sweep's repeats apart from its own sweep's. The one count of
    duplicate jobs: the sweep's summary and the report both read it here.
    """
    if "repeat_parents" not in runs:
        return 0
    wanted = None if parents is None else set(parents)
    return int(sum(sum(wanted is None or p in wanted for p in t) for t in runs["repeat_parents"]
                   if isinstance(t, tuple)))


#: Final metrics every runs frame has, NaN where a run did not record them (it diverged or failed).
ALWAYS_METRICS = ("train_loss", "val_loss")


def _runs_frame(runs) -> pd.DataFrame:
    rows = []
    keys: dict[str, None] = {}
    for r in runs:
        tags = r.data.tags
        row = {
            "run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
            "start_time": r.info.start_time, "end_time": r.info.end_time,
            "parent_id": tags.get("mlflow.parentRunId"),
            "outcome": tags.get(f"{tracking.TAG}outcome", "failed" if r.info.status in ("FAILED", "KILLED") else "running"),
            # the first epoch with a non-finite loss; None for a run that did not diverge (runs.csv: empty)
            "diverged_epoch": _typed(tags[f"{tracking.TAG}diverged_epoch"])
            if f"{tracking.TAG}diverged_epoch" in tags else None,
            "experiment_id": r.info.experiment_id, "artifact_uri": r.info.artifact_uri,
        }
        for k in ("activation", "init", "optimizer", "dataset", "loss"):
            row[k] = tags.get(k)
        for k, v in r.data.params.items():
            if k not in row:
                row[k] = _typed(v)
        ids = _identity_columns(r)
        keys.update((k, None) for k in ids
                    if k not in ("config_id", "run_key", "repeated_by", "repeat_parents"))
        row.update(ids)
        for k, v in r.data.metrics.items():
            row[k] = v
        row["error"] = tags.get(f"{tracking.TAG}error")
        if r.info.status in ("FAILED", "KILLED"):
            row["outcome"] = "failed" if r.info.status == "FAILED" else "killed"
        elif r.info.status == "RUNNING" and (gone := tracking.process_gone(tags)) is not None:
            # killed (kill -9, out of memory) before any later command marked it: it will never finish
            row["outcome"] = "killed"
            row["error"] = f"{gone}; the store still says RUNNING (the next sweep in this experiment marks it KILLED)"
        row["reused"] = False
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):  # whole epochs or None (a float column would write 12.0 and NaN)
        df["diverged_epoch"] = pd.Series([row["diverged_epoch"] for row in rows], index=df.index, dtype=object)
    for k in keys:  # object columns: None stays None, 32 stays 32, lists stay tuples
        df[k] = pd.Series([row.get(k) for row in rows], index=df.index, dtype=object)
    for m in ALWAYS_METRICS:  # every run diverged or failed: still a column to average (NaN), not a KeyError
        if len(df) and m not in df:
            df[m] = np.nan
    df.attrs["identity_keys"] = list(keys)
    return df



def _experiment_id(c, experiment: str) -> str:
    exp = tracking.retry(c.get_experiment_by_name, experiment)
    if exp is None:
        names = sorted(e.name for e in tracking.retry(c.search_experiments))
        raise ReportError(f"experiment {experiment!r} not found; experiments in this store: {', '.join(names) or 'none'}")
    if exp.lifecycle_stage == "deleted":  # its runs are deleted too: say so rather than answer with nothing
        raise ReportError(tracking.deleted_experiment_message(experiment, exp.experiment_id, "--experiment NAME"))
    return exp.experiment_id


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while a search builds its hundreds of thousands of small objects.

    They hold no cycles; with collection on, a 2,700-run search took 2.4x the CPU time (full collections rescan
    every object built so far, so the cost grows faster than the number of runs).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


#: Runs per page of a search: a server answers a page within its client's timeout (60 s, tracking.HTTP_ENV) even
#: loaded (a 5,000-run page of a 10,000-run sweep timed out at load 17); a local store reads bigger pages.
SERVER_PAGE, LOCAL_PAGE = 1000, 5000


def _search_all(c, exp_id: str, filter_string: str):
    out, token = [], None
    size = SERVER_PAGE if str(getattr(c, "tracking_uri", "")).startswith(("http://", "https://")) else LOCAL_PAGE
    with _gc_paused():
        while True:
            page = tracking.retry(c.search_runs, [exp_id], filter_string=filter_string, max_results=size,
                                  page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out


def _sqlite_runs(db: Path, exp_id: str, parent_id: str | None) -> tuple[list, list]:
    """``(runs, reused)`` as :func:`load_runs` selects them, read from a SQLite store: four SQL queries per selection.

    MLflow's ``search_runs`` builds an ORM object per tag, param and metric (about 110 per run here): 10,000
    runs took minutes. This reads the same rows of MLflow's tables (``runs``, ``tags``, ``params``,
    ``latest_metrics``) straight into light objects with the attributes :func:`_runs_frame` reads
    (``info.run_id, run_name, status, start_time, end_time, experiment_id, artifact_uri``; ``data.tags``,
    ``data.params``, ``data.metrics``: the latest value of each metric, NaN where MLflow stores NaN), active runs
    only, ordered as MLflow orders them (``start_time`` descending, then ``run_uuid``).
    """
    # each kind of training run in turn, as load_runs' searches return them: identity tags, then the old hash
    kinds = [f"(SELECT run_uuid FROM tags WHERE key = '{k}' AND value != '')"
             for k in (identity.TAG_VERSION, f"{tracking.TAG}config_hash")]
    active = "SELECT run_uuid FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active'"
    if parent_id:
        reused = "run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = '1')"
        sets = [("runs", f"{active} AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId' "
                         f"AND value = ?)", [parent_id])]
        sets += [("reused", f"{active} AND run_uuid IN {kind} AND {reused}", [f"{tracking.TAG}reused_by.{parent_id}"])
                 for kind in kinds]
    else:
        sets = [("runs", f"{active} AND run_uuid IN {kind}", []) for kind in kinds]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    out = {}
    try:
        with _gc_paused():
            for name, where, args in sets:
                args = [int(exp_id), *args]
                runs = {}
                for rid, rname, status, start, end, eid, art in con.execute(
                        "SELECT run_uuid, name, status, start_time, end_time, experiment_id, artifact_uri FROM runs "
                        f"WHERE run_uuid IN ({where}) ORDER BY start_time DESC, run_uuid", args):
                    runs[rid] = SimpleNamespace(
                        info=SimpleNamespace(run_id=rid, run_name=rname, status=status, start_time=start,
                                             end_time=end, experiment_id=str(eid), artifact_uri=art),
                        data=SimpleNamespace(tags={}, params={}, metrics={}))
                for table, field in (("tags", "tags"), ("params", "params")):
                    for rid, k, v in con.execute(f"SELECT run_uuid, key, value FROM {table} WHERE run_uuid IN ({where})",
                                                 args):
                        getattr(runs[rid].data, field)[k] = v
                for rid, k, v, nan in con.execute(
                        f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({where})", args):
                    runs[rid].data.metrics[k] = float("nan") if nan else v
                out.setdefault(name, []).extend(runs.values())
    finally:
        con.close()
    for name, found in out.items():  # a run of both kinds once, where the first search found it
        out[name] = list({r.info.run_id: r for r in found}.values())
    return out["runs"], out.get("reused", [])


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
        Columns ``run_id, run_name, status, outcome, reused``, ``config_id`` and ``run_key``
        (:mod:`nnexp.identity`), one column per canonical key (``activation``, ``init`` resolved,
        ``optimizer.lr``, ``model.hidden_sizes`` as a tuple, ``batch_size`` None for full batch, ...;
        their names in ``attrs["identity_keys"]``), ``legacy`` (a run recorded before the identity tags,
        read from its params), ``repeat_parents`` (the sweep of each job that spelled the same configuration
        and seed and was not trained again: :func:`duplicate_jobs`), every other param with its real type (``seed``, ...) and every final
        metric. One row per run: a run of the sweep that the sweep also reused is listed once.

    Raises
    ------
    ReportError
        If the experiment does not exist or the filter is invalid.
    """
    c = tracking.client(uri)
    exp_id = _experiment_id(c, experiment)
    clauses = []
    filter_string = _ALIAS_RE.sub(lambda m: f"{m.group(1)}.`{m.group(2)}.name`", filter_string.strip())
    if filter_string:
        clauses.append(f"({filter_string})" if " or " in filter_string.lower() else filter_string)
    # training runs carry the identity tags, or (recorded before them) the old configuration hash
    kinds = [f"tags.`{identity.TAG_VERSION}` != ''", f"tags.`{tracking.TAG}config_hash` != ''"]
    db = tracking.sqlite_path(uri)
    try:
        if db is not None and not filter_string:  # the sweep's report and summary: straight from the file
            runs, reused = _sqlite_runs(db, exp_id, parent_id)
            runs = [r for r in runs if not (parent_id and r.data.tags.get(f"{tracking.TAG}kind"))]
        elif parent_id:
            runs = _search_all(c, exp_id, " and ".join([*clauses, f"tags.mlflow.parentRunId = '{parent_id}'"]))
            # training runs only: not the intermediate parents of a search (tag nnexp.kind=search), which nest trials
            runs = [r for r in runs if not r.data.tags.get(f"{tracking.TAG}kind")]
            reused = [r for kind in kinds for r in _search_all(c, exp_id, " and ".join(
                [*clauses, kind, f"tags.`{tracking.TAG}reused_by.{parent_id}` = '1'"]))]
        else:
            runs = [r for kind in kinds for r in _search_all(c, exp_id, " and ".join([*clauses, kind]))]
            reused = []
        seen = {r.info.run_id for r in runs}
        reused = [r for r in {r.info.run_id: r for r in reused}.values() if r.info.run_id not in seen]
        runs = list({r.info.run_id: r for r in runs}.values())
    except Exception as e:
        text = str(e).lower()
        if filter_string and any(w in text for w in ("filter", "invalid", "parse", "expected", "quoted")):
            raise ReportError(f"invalid filter {filter_string!r}: {' '.join(str(e).split())[:300]}") from None
        raise
    if not runs and not reused and filter_string:
        _explain_empty(c, exp_id, experiment, filter_string)
    df = _runs_frame(runs)
    if reused:
        r = _runs_frame(reused)
        r["reused"] = True
        keys = list(dict.fromkeys([*df.attrs.get("identity_keys", []), *r.attrs["identity_keys"]]))
        df = pd.concat([df, r], ignore_index=True)
        df.attrs["identity_keys"] = keys
    df.attrs["metrics"] = sorted({k for r in [*runs, *reused] for k in r.data.metrics})
    return df


def drop_duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run per ``run_key``: ``(kept, dropped)``.

    Runs with the same ``nnexp.run_key`` trained the same network: the same
    canonical configuration (:mod:`nnexp.identity`, every ``auto`` resolved)
    and the same seed. A single run repeating a sweep's, two spellings of one
    configuration (``init=auto`` and the initialiser it picks), or two sweeps of
    one grid started at once. Counting both would count one seed twice. Of each
    key the kept run is the first by: status
    ``FINISHED`` before any other, then the latest ``end_time`` (a run still
    running has none and comes last), then the latest ``start_time``, then the
    smallest ``run_id`` (so the choice never depends on the store's order).
    Runs without a key are all kept; legacy runs (recorded before the identity
    tags) have their old ``nnexp.config_hash`` as key, so they never match a new run.

    Parameters
    ----------
    runs : DataFrame
        One row per run, as :func:`load_runs` returns it (columns ``run_id, status, start_time, end_time``
        and ``run_key``).

    Returns
    -------
    kept : DataFrame
        ``runs`` without the duplicates, in their original order, with ``runs.attrs``.
    dropped : DataFrame
        The duplicates, with a ``kept_run_id`` column: the run kept in their place.
    """
    tagged = (runs["run_key"].notna() & (runs["run_key"].astype(str) != "")) if "run_key" in runs \
        else pd.Series(False, index=runs.index)
    if not tagged.any():
        return runs, runs.iloc[:0].assign(kept_run_id=pd.Series(dtype=object))
    order = pd.DataFrame({
        "finished": runs["status"].eq("FINISHED"),
        "end": pd.to_numeric(runs["end_time"], errors="coerce").fillna(-np.inf),
        "start": pd.to_numeric(runs["start_time"], errors="coerce").fillna(-np.inf),
        "run_id": runs["run_id"], "run_key": runs["run_key"],
    }, index=runs.index)[tagged]
    order = order.sort_values(["finished", "end", "start", "run_id"], ascending=[False, False, False, True], kind="stable")
    winners = order.drop_duplicates("run_key")
    dup = tagged & ~runs.index.isin(winners.index)
    kept = runs[~dup].copy()
    dropped = runs[dup].copy()
    dropped["kept_run_id"] = dropped["run_key"].map(winners.set_index("run_key")["run_id"])
    kept.attrs.update(runs.attrs)
    return kept, dropped


def lists_as_text(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with each list-valued canonical column (tuples) as its text, ``[4, 4]`` (:func:`nnexp.identity.format_value`).

    For tables, figures and CSV files: text groups, compares and plots as one category per value, where a
    tuple would be read as several values. Nulls stay None; other columns are left alone.
    """
    out = runs.copy()
    for k in runs.attrs.get("identity_keys", []):
        if k in out and out[k].map(lambda v: isinstance(v, (tuple, list))).any():
            out[k] = out[k].map(lambda v: None if v is None else identity.format_value(v))
    return out


def _explain_empty(c, exp_id: str, experiment: str, filter_string: str) -> None:
    """Raise a ReportError naming the filter's keys that no run of the experiment has."""
    some = [r for kind in (identity.TAG_VERSION, f"{tracking.TAG}config_hash") for r in tracking.retry(
        c.search_runs, [exp_id], filter_string=f"tags.`{kind}` != ''", max_results=200)]
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
    """Raise a ReportError if no run logged ``metric``, listing the metrics that exist.

    A selection in which no run finished (every run diverged before logging it) passes: its report says
    that no run finished, whatever the metric.
    """
    if metric in runs.columns and runs[metric].notna().any():
        return
    if "outcome" in runs and not (runs["outcome"] == "finished").any():
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


def run_tags(uri: str, run_ids: list[str]) -> dict[str, dict[str, str] | None]:
    """``{run_id: {tag: value}}`` of each run in ``run_ids``; None for a run the store does not have.

    A SQLite store is read straight from the file (no MLflow import: a report worker that has the runs frame
    needs MLflow for nothing else); any other store through MLflow's ``get_run``.
    """
    db = tracking.sqlite_path(uri)
    if db is None:
        c = tracking.client(uri)
        out = {}
        for rid in run_ids:
            try:
                out[rid] = dict(tracking.retry(c.get_run, rid).data.tags)
            except Exception:  # noqa: BLE001 - the run is gone: nothing to say about it
                out[rid] = None
        return out
    out: dict[str, dict | None] = {rid: None for rid in run_ids}
    if not run_ids:
        return out
    marks = ",".join("?" * len(run_ids))
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        for (rid,) in con.execute(f"SELECT run_uuid FROM runs WHERE run_uuid IN ({marks})", list(run_ids)):
            out[rid] = {}
        for rid, k, v in con.execute(f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})",
                                     list(run_ids)):
            out[rid][k] = v
    finally:
        con.close()
    return out


def summarize_outcomes(runs: pd.DataFrame, here: Iterable[str] = ()) -> dict[str, int]:
    """Counts of runs by outcome (finished, diverged, failed, killed) and how many were reused.

    ``reused`` counts runs of earlier sweeps; ``reused_here`` those whose parent is in ``here`` (the search runs
    of this very sweep, whose trials its final seeds reuse).
    """
    if runs.empty:
        return {}
    counts = runs["outcome"].value_counts().to_dict()
    reused = runs["reused"].astype(bool)
    mine = runs["parent_id"].isin(set(here)) if "parent_id" in runs else pd.Series(False, index=runs.index)
    counts["reused"] = int((reused & ~mine).sum())
    counts["reused_here"] = int((reused & mine).sum())
    return {k: int(v) for k, v in counts.items()}


#: Requests in flight at once when histories come from a tracking server.
HISTORY_THREADS = 8
#: Runs per request of the tracking server's bulk history endpoint (``/ajax-api/2.0/mlflow/metrics/get-history-bulk``,
#: the one MLflow's UI draws its charts from): at most 100 runs and 25,000 points per answer.
BULK_RUNS = 100
BULK_POINTS = 25000
#: Run ids per SQL query (SQLite allows 32,766 bound variables per statement).
SQL_CHUNK = 10000


def _sqlite_histories(db: Path, run_ids: list[str], metrics: list[str] | None) -> pd.DataFrame:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    parts = []
    try:
        for i in range(0, len(run_ids), SQL_CHUNK):
            ids = run_ids[i:i + SQL_CHUNK]
            q = "SELECT run_uuid AS run_id, key AS metric, step, value FROM metrics WHERE run_uuid IN ({})".format(
                ",".join("?" * len(ids)))
            args = list(ids)
            if metrics:
                q += " AND key IN ({})".format(",".join("?" * len(metrics)))
                args += list(metrics)
            parts.append(pd.read_sql_query(q, con, params=args))
    finally:
        con.close()
    return pd.concat(parts, ignore_index=True)


def _bulk_histories(c, run_ids: list[str], metrics: list[str]) -> list[tuple] | None:
    """``(run_id, metric, step, value)`` rows from the server's bulk endpoint, 100 runs per request; None when the
    store is not a REST server. An answer cut at :data:`BULK_POINTS` is asked again in halves (one run with more
    points than that: its history through ``get_metric_history``)."""
    store = c._tracking_client.store
    creds = getattr(store, "get_host_creds", None)
    if creds is None or not callable(creds):
        return None
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.utils.rest_utils import http_request

    def fetch(ids: list[str], key: str) -> list[tuple]:
        resp = tracking.retry(http_request, creds(), "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "GET",
                              params=[*(("run_id", r) for r in ids), ("metric_key", key),
                                      ("max_results", BULK_POINTS)])
        points = resp.json().get("metrics", [])
        if len(points) >= BULK_POINTS:
            if len(ids) > 1:
                return fetch(ids[:len(ids) // 2], key) + fetch(ids[len(ids) // 2:], key)
            return [(ids[0], key, m.step, m.value) for m in tracking.retry(c.get_metric_history, ids[0], key)]
        return [(m["run_id"], key, int(m.get("step", 0)), float(m["value"])) for m in points]

    jobs = [(run_ids[i:i + BULK_RUNS], k) for k in metrics for i in range(0, len(run_ids), BULK_RUNS)]
    with ThreadPoolExecutor(max_workers=HISTORY_THREADS) as pool:
        return [row for part in pool.map(lambda j: fetch(*j), jobs) for row in part]


def load_histories(uri: str, run_ids: list[str], metrics: list[str] | None = None) -> pd.DataFrame:
    """Per-step metric histories in long form: columns ``run_id, metric, step, value``.

    A SQLite store is read with one SQL query per 10,000 runs. A tracking server is asked through its bulk
    endpoint, 100 runs and one metric per request (10,000 runs, 3 metrics: 300 requests), when ``metrics`` are
    named; else (and for any other store) through MLflow's client, one request per run and metric.
    :data:`HISTORY_THREADS` requests are in flight at a time.
    """
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "metric", "step", "value"])
    run_ids = list(run_ids)
    db = tracking.sqlite_path(uri)
    if db is not None:
        return _sqlite_histories(db, run_ids, metrics).sort_values(["run_id", "metric", "step"], ignore_index=True)
    from concurrent.futures import ThreadPoolExecutor

    c = tracking.client(uri)
    rows = _bulk_histories(c, run_ids, list(metrics)) if metrics else None
    if rows is None:
        def one_run(rid: str) -> list[tuple]:
            keys = metrics or list(tracking.retry(c.get_run, rid).data.metrics)
            return [(rid, k, m.step, m.value) for k in keys for m in tracking.retry(c.get_metric_history, rid, k)]

        # a tracking server answers one (run, metric) per request: overlap the round trips
        with ThreadPoolExecutor(max_workers=HISTORY_THREADS) as pool:
            rows = [row for part in pool.map(one_run, run_ids) for row in part]
    df = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
    return df.sort_values(["run_id", "metric", "step"], ignore_index=True)
