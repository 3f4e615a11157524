"""MLflow tracking: one store per launch directory, a parent run per sweep, a child run per job.

This module is the only one that talks to MLflow while training; the trainer
(:mod:`nnexp.train`) never sees it. Every write goes through :func:`retry`,
which retries a locked or briefly unreachable store with a bounded back-off.

Store layout
------------
By default the store is ``sqlite:///<launch dir>/mlflow.db`` with artifacts in
``<launch dir>/mlartifacts``: absolute paths, so every job of a sweep, whatever
its working directory, and the report all see one store. ``tracking.uri`` in
the config, or the ``MLFLOW_TRACKING_URI`` environment variable, overrides it.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from .config import ConfigError

log = logging.getLogger(__name__)

__all__ = ["resolve_uri", "artifact_location", "prepare_store", "client", "retry", "get_or_create_experiment",
           "start_run", "end_run", "MetricBuffer", "mark_orphans_killed", "TAG"]

T = TypeVar("T")

#: Prefix of nnexp's own run tags.
TAG = "nnexp."


def resolve_uri(uri: str | None, launch_dir: str | os.PathLike) -> str:
    """The tracking URI: ``uri`` if set, else ``$MLFLOW_TRACKING_URI``, else the launch directory's SQLite file."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(launch_dir).resolve() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


def artifact_location(uri: str) -> str | None:
    """Where a new experiment's artifacts go: ``mlartifacts/`` beside a SQLite file, else the server's default."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / "mlartifacts").resolve().as_uri()


def client(uri: str):
    """An ``mlflow.MlflowClient`` for ``uri`` (imports MLflow on first use)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("database is locked", "temporarily_unavailable", "connection refused",
                                   "max retries exceeded", "timed out", "503", "502", "504"))


def retry(fn: Callable[..., T], *args, attempts: int = 8, first_delay: float = 0.05, max_delay: float = 5.0,
          **kwargs) -> T:
    """Call ``fn(*args, **kwargs)``, retrying transient store errors with exponential back-off.

    Transient means a locked SQLite database or an unreachable or overloaded
    server. Delays double from ``first_delay`` up to ``max_delay`` seconds;
    after ``attempts`` tries the last error is raised.
    """
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # MLflow wraps store errors in MlflowException
            if attempt == attempts or not _transient(exc):
                raise
            log.debug("store busy (%s); retry %d in %.2fs", exc, attempt, delay)
            time.sleep(delay)
            delay = min(2 * delay, max_delay)
    raise AssertionError("unreachable")


@contextmanager
def _store_lock(uri: str):
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=120):
        yield


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast when an HTTP tracking server does not answer.

    Raises
    ------
    ConfigError
        Naming the URI, when nothing answers within ``timeout`` seconds.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"tracking.uri={uri!r} cannot be reached ({reason}); start the server or fix the URI") from None


def prepare_store(uri: str, experiment: str):
    """Create the store and the experiment once, before any job starts; return ``(client, experiment_id)``.

    For SQLite this runs MLflow's schema migration under a file lock, so that
    parallel jobs never race on a fresh database, and switches the database to
    write-ahead logging, which lets readers and a writer work at once.

    Raises
    ------
    ConfigError
        If the store cannot be reached or opened.
    """
    check_reachable(uri)
    db = sqlite_path(uri)
    with _store_lock(uri):
        c = client(uri)
        try:
            retry(c.search_experiments, max_results=1)
        except Exception as e:
            if db is not None and not db.parent.exists():
                raise ConfigError(f"tracking.uri={uri!r}: folder {db.parent} does not exist") from None
            raise ConfigError(f"tracking.uri={uri!r} cannot be opened: {str(e).splitlines()[0]}") from None
        if db is not None:
            con = sqlite3.connect(db, timeout=30)
            try:
                con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()
        exp_id = get_or_create_experiment(c, experiment, artifact_location(uri))
    return c, exp_id


def get_or_create_experiment(c, name: str, location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``location`` for artifacts) if missing; race-safe.

    A deleted experiment of that name is restored.
    """
    from mlflow.exceptions import MlflowException

    exp = retry(c.get_experiment_by_name, name)
    if exp is None:
        try:
            return retry(c.create_experiment, name, artifact_location=location)
        except MlflowException as e:
            if "already exists" not in str(e).lower() and "unique" not in str(e).lower():
                raise
            exp = retry(c.get_experiment_by_name, name)
    if exp.lifecycle_stage == "deleted":
        retry(c.restore_experiment, exp.experiment_id)
    return exp.experiment_id


def start_run(c, experiment_id: str, *, run_name: str, parent_id: str | None = None,
              tags: dict[str, str] | None = None) -> str:
    """Create a RUNNING run (nested under ``parent_id`` if given) tagged with this host and process; return its id."""
    all_tags = {f"{TAG}host": socket.gethostname(), f"{TAG}pid": str(os.getpid()), **(tags or {})}
    if parent_id:
        all_tags["mlflow.parentRunId"] = parent_id
    run = retry(c.create_run, experiment_id, run_name=run_name, tags=all_tags)
    return run.info.run_id


def end_run(c, run_id: str, status: str = "FINISHED") -> None:
    """Set a run's final status (FINISHED, FAILED or KILLED)."""
    retry(c.set_terminated, run_id, status=status)


def log_params(c, run_id: str, params: dict[str, Any]) -> None:
    """Log params in batches of 100 (MLflow's limit per call); lists become their JSON-like text."""
    from mlflow.entities import Param

    items = [Param(k, "null" if v is None else str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):
        retry(c.log_batch, run_id, params=items[i:i + 100])


def set_tags(c, run_id: str, tags: dict[str, Any]) -> None:
    """Set several tags in one call."""
    from mlflow.entities import RunTag

    retry(c.log_batch, run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


class MetricBuffer:
    """Collects metric points and writes them with MLflow's batch API.

    Points are flushed in batches of at most 1000 (MLflow's limit per call)
    when :meth:`flush` is called, and by :meth:`add` once ``flush_seconds``
    have passed since the last write, so the MLflow UI shows a long run's
    curves while it trains. Non-finite values are not logged.
    """

    def __init__(self, c, run_id: str, flush_seconds: float = 15.0):
        self.c, self.run_id, self.flush_seconds = c, run_id, flush_seconds
        self.points: list = []
        self.last = time.monotonic()
        self.logged = 0

    def add(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        for k, v in values.items():
            v = float(v)
            if v == v and abs(v) != float("inf"):
                self.points.append(Metric(k, v, ts, int(step)))
        if time.monotonic() - self.last > self.flush_seconds:
            self.flush()

    def extend(self, steps: Iterable[int], series: dict[str, Iterable[float]]) -> None:
        """Add whole histories at once: ``series[name][i]`` is the value at ``steps[i]``."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        steps = [int(s) for s in steps]
        for k, values in series.items():
            for s, v in zip(steps, values):
                v = float(v)
                if v == v and abs(v) != float("inf"):
                    self.points.append(Metric(k, v, ts, s))

    def flush(self) -> None:
        for i in range(0, len(self.points), 1000):
            retry(self.c.log_batch, self.run_id, metrics=self.points[i:i + 1000])
        self.logged += len(self.points)
        self.points = []
        self.last = time.monotonic()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_orphans_killed(c, experiment_id: str) -> int:
    """End as KILLED every RUNNING run of this host whose process is gone (a sweep killed with -9).

    Returns the number of runs marked.
    """
    host = socket.gethostname()
    runs = retry(c.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000)
    n = 0
    for r in runs:
        tags = r.data.tags
        if tags.get(f"{TAG}host") != host:
            continue
        try:
            pid = int(tags.get(f"{TAG}pid", "0"))
        except ValueError:
            continue
        if pid and (pid == os.getpid() or _pid_alive(pid)):
            continue
        end_run(c, r.info.run_id, "KILLED")
        n += 1
    return n


def find_finished(c, experiment_id: str, config_hash: str) -> str | None:
    """The id of a FINISHED run in the experiment with this config hash (for resume), else None."""
    runs = retry(c.search_runs, [experiment_id],
                 filter_string=f"attributes.status = 'FINISHED' and tags.`{TAG}config_hash` = '{config_hash}'",
                 max_results=1)
    return runs[0].info.run_id if runs else None
