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

A tracking server
-----------------
With an ``http(s)://`` URI every job talks to an MLflow tracking server (team
mode: ``python -m nnexp.team_server``). MLflow's own HTTP retries are turned off
for nnexp's clients (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``, unless set) so that
all retrying happens in :func:`retry`, where it is idempotent: metric points
carry their client-side timestamps, so a batch sent twice is stored once (the
store drops points with the same key, step, timestamp and value); params and
tags are set to the same values again; a run is created under a random
``nnexp.request_id`` tag that a retry looks up before creating another.
While a server does not answer, :func:`retry` keeps trying for
``$NNEXP_TRACKING_PATIENCE`` seconds (default 120), then raises
:class:`StoreUnavailable` naming the server.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TypeVar

from .config import ConfigError

log = logging.getLogger(__name__)

__all__ = ["resolve_uri", "artifact_location", "prepare_store", "client", "retry", "get_or_create_experiment",
           "start_run", "end_run", "MetricBuffer", "diagnostic_steps", "DIAGNOSTIC", "MetricWriter", "start_metric_writer", "metric_writer",
           "stop_metric_writer", "mark_orphans_killed", "check_store", "TAG",
           "StoreUnavailable", "find_sweep_parent", "end_orphan_children", "find_finished_many"]

T = TypeVar("T")

#: Prefix of nnexp's own run tags.
TAG = "nnexp."


def resolve_uri(uri: str | None, launch_dir: str | os.PathLike) -> str:
    """The tracking URI: ``uri`` if set, else ``$MLFLOW_TRACKING_URI``, else the launch directory's SQLite file.

    A local store given by a relative path (``sqlite:///runs.db``, ``file:mlruns``, ``./mlruns``) is made
    absolute against ``launch_dir``, so that every job of a sweep writes to one store even when Hydra runs
    each job in its own folder (``hydra.job.chdir=true``).

    Raises
    ------
    ConfigError
        If a SQLite file's absolute path holds ``?``, ``#`` or ``%``, which a URI would read as a query,
        a fragment or an escape, so that MLflow would open another file.
    """
    launch = Path(launch_dir).resolve()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{launch / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        db = uri[len("sqlite:///"):]
        if not db.startswith("/"):
            uri = f"sqlite:///{launch / db}"
        bad = sorted(set("?#%") & set(uri[len("sqlite:///"):]))
        if bad:
            raise ConfigError(f"the store {uri} holds {' and '.join(repr(c) for c in bad)} in its path, which a "
                              "SQLite URI cannot carry; launch from a folder without them or set tracking.uri")
    elif uri.startswith("file:") and not uri.startswith("file:///") and not uri.startswith("file://"):
        uri = (launch / uri[len("file:"):]).as_uri()
    elif "://" not in uri and not uri.startswith("databricks") and ":" not in uri.split("/")[0]:
        uri = str(launch / uri)  # a plain local path: MLflow's file store
    return uri


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


#: MLflow's HTTP client settings for nnexp's processes (each used unless already set in the environment):
#: no retries inside MLflow (a POST retried there after a lost response could create a run twice; :func:`retry`
#: retries instead, idempotently) and a bounded wait for one answer, in seconds.
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}

#: Seconds a call waits for an unreachable tracking server before :class:`StoreUnavailable`.
DEFAULT_PATIENCE = 120.0


class StoreUnavailable(RuntimeError):
    """The tracking server did not answer within the patience (``$NNEXP_TRACKING_PATIENCE`` seconds)."""


def client(uri: str):
    """An ``mlflow.MlflowClient`` for ``uri`` (imports MLflow on first use); see :data:`HTTP_ENV` for servers.

    A SQLite store's connections commit without waiting for the disk (:func:`_fast_sqlite_commits`).
    """
    from mlflow import MlflowClient

    if uri.startswith(("http://", "https://")):
        for k, v in HTTP_ENV.items():
            os.environ.setdefault(k, v)
    elif uri.startswith("sqlite:"):
        _fast_sqlite_commits()
    return MlflowClient(tracking_uri=uri)


def preload(server: bool = False) -> None:
    """Import what :func:`client` and :func:`prepare_store` will need: MLflow and, unless ``server``, its SQLite store.

    About 2 s of imports on the benchmark machine (``import mlflow`` 1.0-1.5 s; MLflow's SQLAlchemy store module
    0.6-0.8 s, most of it SQLAlchemy configuring its mappers); importing has no other effect, so a command can do
    it while its input is still being checked (:func:`nnexp.__main__.main`). ``server``: the store is a tracking
    server (``http(s)://``), which talks to MLflow over REST and never loads the SQLAlchemy store.
    """
    import mlflow  # noqa: F401

    if not server:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        import sqlalchemy.event  # noqa: F401


_FAST_COMMITS: list[bool] = []


def _fast_sqlite_commits() -> None:
    """Open every SQLite connection of this process that is in write-ahead-log mode with ``synchronous=NORMAL``.

    SQLite's default (``FULL``) flushes the log to disk at every commit: about 9 ms on this project's
    benchmark machine (ext4 on a virtual disk), and MLflow commits a dozen times per run (run, params, tags,
    dataset inputs, the logged model, its end), more than training a small network takes. In WAL mode,
    ``NORMAL`` keeps the database consistent through a crash or power loss; only the last commits before a power
    loss may be lost, never a half-written run (https://www.sqlite.org/pragma.html#pragma_synchronous). Stores
    in another journal mode (not made by :func:`prepare_store`) keep SQLite's default. Installed once per
    process, as a SQLAlchemy ``connect`` event (MLflow's SQLite store is a SQLAlchemy engine).
    """
    if _FAST_COMMITS:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def on_connect(dbapi_connection, connection_record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            mode = dbapi_connection.execute("PRAGMA journal_mode").fetchone()
            if mode and str(mode[0]).lower() == "wal":
                dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(Engine, "connect", on_connect)
    _FAST_COMMITS.append(True)


def _transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("database is locked", "temporarily_unavailable", "connection refused",
                                   "max retries exceeded", "timed out", "503", "502", "504"))


def _server_of(fn: Callable) -> str | None:
    """The ``http(s)://`` tracking URI behind a bound MlflowClient method (or a function with a ``client``), else None."""
    owner = getattr(fn, "__self__", None) or getattr(fn, "client", None)
    uri = getattr(getattr(owner, "_tracking_client", None), "tracking_uri", None)
    return uri if isinstance(uri, str) and uri.startswith(("http://", "https://")) else None


def _patience() -> float:
    try:
        return max(0.0, float(os.environ.get("NNEXP_TRACKING_PATIENCE", DEFAULT_PATIENCE)))
    except ValueError:
        return DEFAULT_PATIENCE


#: Servers this process gave up on, with the time: later calls to them retry ``attempts`` times only,
#: so that a job's failure handler does not wait the patience again for each run it marks.
_GAVE_UP: dict[str, float] = {}


def retry(fn: Callable[..., T], *args, attempts: int = 8, first_delay: float = 0.05, max_delay: float = 5.0,
          **kwargs) -> T:
    """Call ``fn(*args, **kwargs)``, retrying transient store errors with exponential back-off.

    Transient means a locked SQLite database or an unreachable or overloaded
    server. Delays double from ``first_delay`` up to ``max_delay`` seconds;
    after ``attempts`` tries the last error is raised. When ``fn`` is a method
    of a client of a tracking server, tries go on until the server has not
    answered for ``$NNEXP_TRACKING_PATIENCE`` seconds (default 120).

    Raises
    ------
    StoreUnavailable
        Naming the server, when it did not answer within the patience.
    """
    server = _server_of(fn)
    patience = _patience() if server and time.monotonic() - _GAVE_UP.get(server, -1e18) > _patience() else 0.0
    start = time.monotonic()
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            result = fn(*args, **kwargs)
            _GAVE_UP.pop(server, None)
            return result
        except Exception as exc:  # MLflow wraps store errors in MlflowException
            if not _transient(exc):
                raise
            waited = time.monotonic() - start
            if attempt >= attempts and waited + delay > patience:
                if not server:
                    raise
                _GAVE_UP[server] = time.monotonic()
                reason = " ".join(str(exc).split())[:300]
                raise StoreUnavailable(f"tracking server {server} did not answer for {waited:.0f} s "
                                       f"(NNEXP_TRACKING_PATIENCE={patience:g}): {reason}") from exc
            log.log(logging.WARNING if waited > 5 else logging.DEBUG,
                    "store busy or unreachable (%s); retry %d in %.2fs", str(exc).splitlines()[0][:200], attempt, delay)
            time.sleep(delay)
            delay = min(2 * delay, max_delay)


@contextmanager
def _store_lock(uri: str):
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock

    with FileLock(str(db) + ".lock", timeout=120):
        yield


def check_store(uri: str) -> None:
    """Fail fast, before any training, when the store at ``uri`` cannot be used.

    An HTTP server must answer within 5 s (:func:`check_reachable`); a SQLite
    file must lie in an existing folder (nnexp never creates folders for it).

    Raises
    ------
    ConfigError
        Naming ``tracking.uri``.
    """
    check_reachable(uri)
    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir():
        raise ConfigError(f"tracking.uri={uri!r}: folder {db.parent} does not exist; create it or use another URI")
    if db is not None and db.exists() and not (db.is_file() and (db.stat().st_size == 0 or _is_sqlite_file(db))):
        raise ConfigError(f"tracking.uri={uri!r}: {db} is not an SQLite database (a folder or another file); "
                          "move it away or use another URI")
    if db is not None and not os.access(db if db.exists() else db.parent, os.W_OK):
        raise ConfigError(f"tracking.uri={uri!r}: {db if db.exists() else db.parent} is not writable; "
                          "use another URI or launch folder")


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

    For SQLite, under a file lock so that parallel jobs never race on a fresh
    database, a new store is copied from an already migrated template
    (:func:`store_template`; MLflow's own schema migration takes seconds), and
    the database is switched to write-ahead logging, which lets readers and a
    writer work at once.

    Raises
    ------
    ConfigError
        If the store cannot be reached or opened.
    """
    check_store(uri)
    db = sqlite_path(uri)
    with _store_lock(uri):
        if db is not None and not db.exists():
            _copy_store_template(db)
        if db is not None and db.exists():  # before MLflow connects: its connections then commit fast
            _set_wal(db)
        c = client(uri)
        try:
            retry(c.search_experiments, max_results=1)
        except Exception as e:
            raise ConfigError(f"tracking.uri={uri!r} cannot be opened: {str(e).splitlines()[0]}") from None
        if db is not None:
            _set_wal(db, index=True)  # a store MLflow created itself (no template) too; resume's index of run keys
        exp_id = get_or_create_experiment(c, experiment, artifact_location(uri))
    return c, exp_id


def _set_wal(db: Path, index: bool = False) -> None:
    """Switch the SQLite file ``db`` to write-ahead logging (a setting kept in the file); with ``index``, also add
    :data:`RUN_KEY_INDEX` (needs MLflow's tables)."""
    con = sqlite3.connect(db, timeout=30)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        if index:
            con.execute(RUN_KEY_INDEX)  # resume looks keys up by value: O(log n), not a scan of every run's tag
    finally:
        con.close()


def store_template() -> Path:
    """An empty SQLite store at the installed MLflow's schema head, made once per MLflow version; return its path.

    Lives in the user cache (:mod:`nnexp.cache`, ``stores/mlflow-<version>.db``);
    made under a file lock, so parallel commands migrate once, and written
    atomically. It holds no experiment: MLflow creates its ``Default``
    experiment, with an artifact folder of the process that opens the copy,
    exactly as it does in a store it migrated itself.
    """
    from filelock import FileLock

    from .cache import atomic_write

    path = store_template_path()
    if _is_sqlite_file(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=300):
        if not _is_sqlite_file(path):  # missing, or damaged (it is a cache: made again)
            atomic_write(path, _migrate_empty_store)
    return path


def _is_sqlite_file(path: Path) -> bool:
    """Whether ``path`` is a file that starts with SQLite's header (https://www.sqlite.org/fileformat.html)."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def store_template_path() -> Path:
    """Where :func:`store_template` keeps the template of the installed MLflow version."""
    from importlib.metadata import version

    from .cache import cache_dir

    return cache_dir("stores") / f"mlflow-{version('mlflow')}.db"


def _migrate_empty_store(db: Path) -> None:
    """Run MLflow's schema migration on the new file ``db``, then drop the ``Default`` experiment it creates."""
    store = client(f"sqlite:///{db}")._tracking_client.store
    store.engine.dispose()  # closes MLflow's pooled connections to the file
    con = sqlite3.connect(db)
    try:
        with con:
            con.execute("DELETE FROM experiments")
    finally:
        con.close()


def _copy_store_template(db: Path) -> None:
    """Create the store file ``db`` as a copy of :func:`store_template` (atomically).

    When the template cannot be made or copied (an unwritable cache, say),
    nothing is created and MLflow migrates the new store itself, as without a cache.
    """
    import shutil

    from .cache import atomic_write

    for stale in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        # the write-ahead log of a deleted store: SQLite would replay it into the new file (its runs back, or a
        # "malformed" database)
        stale.unlink(missing_ok=True)
    try:
        template = store_template()
        atomic_write(db, lambda tmp: shutil.copyfile(template, tmp))
    except Exception as e:  # noqa: BLE001 - any failure here only costs the migration time
        log.debug("no store template (%s); MLflow migrates %s", e, db)


def get_or_create_experiment(c, name: str, location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``location`` for artifacts) if missing; race-safe.

    The experiment carries :data:`nnexp.context.EXPERIMENT_TAGS` (MLflow's model-training view, nnexp's table
    view).

    Raises
    ------
    ConfigError
        If an experiment of that name was deleted in MLflow: it is never restored (and its runs never
        reused) without the user saying so; the message says how to restore it or choose another name.
    """
    from mlflow.exceptions import MlflowException

    from .context import EXPERIMENT_TAGS

    exp = retry(c.get_experiment_by_name, name)
    if exp is None:
        try:
            return retry(c.create_experiment, name, artifact_location=location, tags=EXPERIMENT_TAGS)
        except MlflowException as e:
            if "already exists" not in str(e).lower() and "unique" not in str(e).lower():
                raise
            exp = retry(c.get_experiment_by_name, name)
    if exp.lifecycle_stage == "deleted":
        raise ConfigError(deleted_experiment_message(name, exp.experiment_id))
    for k, v in EXPERIMENT_TAGS.items():  # an experiment made before nnexp set them
        if k not in exp.tags:
            retry(c.set_experiment_tag, exp.experiment_id, k, v)
    return exp.experiment_id


def deleted_experiment_message(name: str, experiment_id: str) -> str:
    """The one line for an experiment deleted in MLflow (see :func:`get_or_create_experiment`)."""
    return (f"experiment {name!r} was deleted in MLflow; restore it (mlflow experiments restore --experiment-id "
            f"{experiment_id}) or choose another with tracking.experiment=NAME")


def deleted_experiment(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` if the SQLite store at ``uri`` holds it deleted, else None (read only).

    Reads the file with :mod:`sqlite3` (no MLflow import, nothing created): for the check before a command
    starts. Other stores answer None here; the job's :func:`get_or_create_experiment` refuses them.
    """
    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            row = con.execute("SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'deleted'",
                              (name,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def start_run(c, experiment_id: str, *, run_name: str, parent_id: str | None = None,
              tags: dict[str, str] | None = None) -> str:
    """Create a RUNNING run (nested under ``parent_id`` if given) tagged with this host and process; return its id.

    Idempotent under retries: the run carries a random ``nnexp.request_id``; a
    retry after a lost answer looks that up before creating a run, and should
    two runs carry it after all, the later ones are deleted.
    """
    request_id = uuid.uuid4().hex
    all_tags = {f"{TAG}host": socket.gethostname(), f"{TAG}pid": str(os.getpid()),
                f"{TAG}pid_start": _process_start(os.getpid()), f"{TAG}request_id": request_id, **(tags or {})}
    if parent_id:
        all_tags["mlflow.parentRunId"] = parent_id
    tries = []

    def create():
        if tries:
            found = _runs_with_request_id(c, experiment_id, request_id)
            if found:
                return found[0]
        tries.append(1)
        return c.create_run(experiment_id, run_name=run_name, tags=all_tags)

    create.client = c
    run = retry(create)
    if len(tries) > 1:
        for extra in _runs_with_request_id(c, experiment_id, request_id):
            if extra.info.run_id != run.info.run_id:
                retry(c.delete_run, extra.info.run_id)
    return run.info.run_id


def _runs_with_request_id(c, experiment_id: str, request_id: str) -> list:
    return c.search_runs([experiment_id], filter_string=f"tags.`{TAG}request_id` = '{request_id}'",
                         order_by=["attributes.start_time ASC"], max_results=10)


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


#: The per-layer training diagnostics (``layer<l>.grad_norm``, ``.act_mean``, ``.act_std``, ``.saturation``,
#: ``.dead_fraction``), as opposed to the probes a user asks for (``layer<l>.probe.*``).
DIAGNOSTIC = re.compile(r"layer\d+\.(?!probe\.)")


def diagnostic_steps(epochs: int, log_every: int, points: int | None) -> set[int] | None:
    """The recorded epochs at which per-layer diagnostics are kept: about ``points`` of them, evenly spaced.

    The recorded epochs are ``log_every``, ``2 * log_every``, ... and the last (as :func:`nnexp.train.fit` records
    them); when there are more than ``points``, every ``ceil(n / points)``-th is kept, starting at the first, plus
    the last (the final values). None (keep every recorded epoch) when ``points`` is None or not exceeded.
    """
    logged = [e for e in range(1, epochs + 1) if e % log_every == 0 or e == epochs]
    if points is None or len(logged) <= points:
        return None
    stride = -(-len(logged) // max(1, int(points)))
    return {*logged[::stride], logged[-1]}


class MetricBuffer:
    """Collects metric points and writes them with MLflow's batch API.

    Points go out in batches of 1000 (MLflow's limit per call): as soon as a
    batch is full when a :class:`MetricWriter` is given, else when
    :meth:`flush` is called or ``flush_seconds`` have passed since the last
    write (so the MLflow UI shows a long run's curves while it trains).
    :meth:`flush` returns once every point added so far is in the store.
    Non-finite values are not logged. With ``diagnostic_steps`` (:func:`diagnostic_steps`), the per-layer
    diagnostics (:data:`DIAGNOSTIC`) are logged at those steps only; every other metric at every step added.
    """

    def __init__(self, c, run_id: str, flush_seconds: float = 15.0, writer: "MetricWriter | None" = None,
                 diagnostic_steps: set[int] | None = None):
        self.c, self.run_id, self.flush_seconds, self.writer = c, run_id, flush_seconds, writer
        self.diagnostic_steps = diagnostic_steps
        self.points: list = []
        self.last = time.monotonic()
        self.logged = 0
        self.unconfirmed: list = []  # handed to the writer, not yet confirmed in the store

    #: Wait for the writer's confirmation once this many points are unconfirmed (bounds the memory they hold).
    CONFIRM_EVERY = 100_000

    def add(self, step: int, values: dict[str, float]) -> None:
        ts = int(time.time() * 1000)
        thin = self.diagnostic_steps is not None and int(step) not in self.diagnostic_steps
        for k, v in values.items():
            if thin and DIAGNOSTIC.match(k):
                continue
            v = float(v)
            if v == v and abs(v) != float("inf"):
                self.points.append((k, v, ts, int(step)))
        due = time.monotonic() - self.last > self.flush_seconds
        if self.writer is None:
            if due:
                self.flush()
        elif len(self.points) >= MAX_METRICS_PER_BATCH or due:
            self._hand_over(self.points)
            self.points = []

    def _hand_over(self, points: list) -> None:
        if not self.writer.send(self.run_id, points):
            self._write(points)  # the writer is gone: write here
            return
        self.unconfirmed.extend(points)
        self.last = time.monotonic()
        if len(self.unconfirmed) >= self.CONFIRM_EVERY:
            self._confirm()

    def _write(self, points: list) -> None:
        from mlflow.entities import Metric

        for i in range(0, len(points), MAX_METRICS_PER_BATCH):
            retry(self.c.log_batch, self.run_id,
                  metrics=[Metric(*p) for p in points[i:i + MAX_METRICS_PER_BATCH]])
        self.logged += len(points)

    def _confirm(self) -> None:
        if self.writer.sync(self.run_id):
            self.logged += len(self.unconfirmed)
        else:  # the writer failed or died: write what it may not have (the store drops duplicate points)
            log.warning("metric writer lost; writing run %s's metrics in this process", self.run_id)
            self._write(self.unconfirmed)
        self.unconfirmed = []

    def flush(self) -> None:
        """Write the points not yet in the store, and wait until every point added so far is there."""
        if self.unconfirmed:
            self._confirm()
        self._write(self.points)
        self.points = []
        self.last = time.monotonic()


#: MLflow's limit of metrics per ``log_batch`` call.
MAX_METRICS_PER_BATCH = 1000


class MetricWriter:
    """A child process that writes metric batches into the store while the job trains.

    MLflow's SQLAlchemy store spends about 0.1 ms of Python per metric point;
    a background thread would take that from the training loop (both hold the
    GIL), while a process uses a core the training leaves idle: a mini-batch
    job keeps one core busy. MLflow's own asynchronous logging uses threads,
    hence this process. It is made for jobs that run one after another in one
    process (Hydra's basic launcher, a single run); parallel jobs already use
    every core and write their metrics themselves.

    Nothing is lost: :meth:`MetricBuffer.flush` waits for the writer to confirm
    a run's points (:meth:`sync`) before the run is ended, and if the writer
    reports an error or dies, the buffer writes the unconfirmed points itself
    (the store keeps one copy of a point sent twice: same key, step, timestamp
    and value). The writer ignores Ctrl-C (the job's own handler marks its runs
    KILLED; the writer finishes what it was given) and exits with its parent.
    """

    def __init__(self, uri: str):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no copy of the parent's store connections
        self.requests, self.replies = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_writer_main, args=(uri, self.requests, self.replies, os.getpid()),
                                name="nnexp-metric-writer", daemon=True)
        self.proc.start()
        self._token = 0
        import atexit

        atexit.register(self.close)

    def send(self, run_id: str, points: list) -> bool:
        """Queue ``points`` (tuples ``(key, value, timestamp_ms, step)``) for ``run_id``; False if the writer is gone."""
        if not self.proc.is_alive():
            return False
        self.requests.put(("log", run_id, points))
        return True

    def sync(self, run_id: str, poll: float = 0.5) -> bool:
        """Wait until the points queued for ``run_id`` are in the store: True, or False if the writer failed or died."""
        import queue

        if not self.proc.is_alive():
            return False
        self._token += 1
        self.requests.put(("sync", run_id, self._token))
        while True:
            try:
                token, error = self.replies.get(timeout=poll)
            except queue.Empty:
                if not self.proc.is_alive():
                    return False
                continue
            if token == self._token:
                if error:
                    log.warning("metric writer: run %s: %s", run_id, error)
                return error is None

    def close(self, timeout: float = 60.0) -> None:
        """Let the writer finish what it was given and stop (also run at exit)."""
        if self.proc.is_alive():
            self.requests.put(None)
            self.proc.join(timeout)
        self.requests.close()
        self.replies.close()


#: The metric writer of each store URI in this process (see :func:`start_metric_writer`).
_WRITERS: dict[str, MetricWriter] = {}


def start_metric_writer(uri: str) -> MetricWriter:
    """Start this process's :class:`MetricWriter` for ``uri`` (once; again if it died) and return it.

    Called where jobs will run one after another in this process (a sweep under
    Hydra's basic launcher), early, so that the writer's imports overlap the
    sweep's start-up; jobs find it with :func:`metric_writer`.
    """
    w = _WRITERS.get(uri)
    if w is None or not w.proc.is_alive():
        w = _WRITERS[uri] = MetricWriter(uri)
    return w


def metric_writer(uri: str) -> MetricWriter | None:
    """The running :class:`MetricWriter` of ``uri`` in this process, else None (the job writes its metrics itself)."""
    w = _WRITERS.get(uri)
    return w if w is not None and w.proc.is_alive() else None


def stop_metric_writer(uri: str) -> None:
    """Stop the metric writer of ``uri`` after it wrote what it was given (no-op without one)."""
    w = _WRITERS.pop(uri, None)
    if w is not None:
        w.close()


def _writer_main(uri: str, requests, replies, parent_pid: int) -> None:
    """The loop of :class:`MetricWriter`'s process: write each batch, answer each sync; stop on None or when orphaned."""
    import queue
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from mlflow.entities import Metric

    c = client(uri)
    errors: dict[str, str] = {}
    while True:
        try:
            msg = requests.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:  # the parent died (kill -9): nothing will ask for these runs again
                break
            continue
        if msg is None:
            break
        kind, run_id, payload = msg
        if kind == "log" and run_id not in errors:
            try:
                retry(c.log_batch, run_id, metrics=[Metric(*p) for p in payload])
            except Exception as e:  # reported at the run's next sync; the parent then writes the points itself
                errors[run_id] = f"{type(e).__name__}: {e}"[:500]
        elif kind == "sync":
            replies.put((payload, errors.pop(run_id, None)))
    # every batch is committed: skip the interpreter's teardown (about 0.5 s with MLflow loaded; the parent waits)
    replies.close()
    replies.join_thread()
    os._exit(0)


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or "" where unknown.

    Tells a live process from a later one that reuses a dead process's id.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_alive(pid: int, start: str = "") -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or _process_start(pid) in ("", start)


def mark_orphans_killed(c, experiment_id: str) -> int:
    """End as KILLED every RUNNING run of this host whose process is gone.

    Such runs are left by a sweep or job killed with ``kill -9`` (or by a crash
    of the machine): the parent run of the sweep as well as its children. A run
    of another host, or of a process that is still alive, is left alone, except
    a child whose sweep has ended: a job on another machine (a Ray or SLURM
    worker) that died without closing its run.

    Returns the number of runs marked.
    """
    host = socket.gethostname()
    runs = retry(c.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000)
    n = 0
    killed = set()
    for r in runs:
        tags = r.data.tags
        if tags.get(f"{TAG}host") != host:
            continue
        try:
            pid = int(tags.get(f"{TAG}pid", "0"))
        except ValueError:
            continue
        if pid and (pid == os.getpid() or _pid_alive(pid, tags.get(f"{TAG}pid_start", ""))):
            continue
        end_run(c, r.info.run_id, "KILLED")
        killed.add(r.info.run_id)
        n += 1
    open_sweeps = {r.info.run_id for r in runs if r.info.run_id not in killed}
    for r in runs:
        parent = r.data.tags.get("mlflow.parentRunId")
        if r.info.run_id not in killed and parent and parent not in open_sweeps:
            end_run(c, r.info.run_id, "KILLED")
            n += 1
    return n


def end_orphan_children(c, experiment_id: str, parent_id: str, status: str = "FAILED") -> int:
    """End the children of a sweep still RUNNING once all its jobs have returned; return how many.

    A job whose process died (killed, out of memory, its machine lost) never
    closes its run; when the launcher has returned, no job of the sweep runs,
    so such a run is ended with ``status`` and tagged ``nnexp.outcome=failed``.
    """
    runs = retry(c.search_runs, [experiment_id], max_results=5000,
                 filter_string=f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{parent_id}'")
    for r in runs:
        set_tags(c, r.info.run_id, {f"{TAG}outcome": "failed",
                                    f"{TAG}error": "the job's process ended without closing its run (worker died?)"})
        end_run(c, r.info.run_id, status)
    return len(runs)


def find_sweep_parent(c, experiment_id: str, sweep_dir: str | os.PathLike) -> str | None:
    """The RUNNING parent run of the sweep writing to ``sweep_dir``, else None.

    For a job on a machine that does not share the sweep directory (a Ray or
    SLURM worker elsewhere): the parent run is tagged ``nnexp.kind=sweep`` and
    ``nnexp.sweep_dir=<sweep dir>``; the latest such run is taken.
    """
    where = str(sweep_dir).replace("'", "\\'")
    runs = retry(c.search_runs, [experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                 filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG}kind` = 'sweep' "
                               f"and tags.`{TAG}sweep_dir` = '{where}'")
    return runs[0].info.run_id if runs else None


def find_sweep_run(c, experiment_id: str, run_key: str, parent_id: str, wait: float = 60.0):
    """The run of sweep ``parent_id`` with this ``nnexp.run_key``, in any state, waiting up to ``wait`` seconds for
    it to appear (another job of the sweep, running beside this one, claimed the key first); None if it never does."""
    deadline = time.monotonic() + wait
    while True:
        runs = retry(c.search_runs, [experiment_id], max_results=1, filter_string=(
            f"tags.`{TAG}run_key` = '{run_key}' and tags.mlflow.parentRunId = '{parent_id}'"))
        if runs or time.monotonic() > deadline:
            return runs[0] if runs else None
        time.sleep(0.5)


def find_finished(c, experiment_id: str, run_key: str):
    """A FINISHED, not deleted run of the experiment with this ``nnexp.run_key`` (for resume), else None.

    Deleted runs are never reused (MLflow's search sees active runs only); see :mod:`nnexp.identity`.
    The earliest started such run is returned. :func:`find_finished_many` looks up many keys at once.
    """
    return find_finished_many(c, experiment_id, [run_key])[run_key]


#: A partial index of the SQLite store's ``nnexp.run_key`` tags by value (:func:`prepare_store` adds it): without
#: it, each resume lookup reads the tag of every run in the store, and a sweep of n runs pays n x n row reads
#: (0.5 s per 50 lookups at 10,000 runs). Its name marks it as nnexp's; dropping it only makes lookups scan again.
RUN_KEY_INDEX = f"CREATE INDEX IF NOT EXISTS nnexp_run_key ON tags (value) WHERE key = '{TAG}run_key'"

#: Searches in flight at once when :func:`find_finished_many` asks a tracking server.
FIND_THREADS = 8


def _finished_ids_sqlite(db: Path, experiment_id: str, run_keys: list[str]) -> dict[str, str]:
    """``{run_key: run_id}`` of the earliest started FINISHED active run per key, read from the SQLite file."""
    found: dict[str, str] = {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:  # without statistics SQLite's planner prefers the primary key (key, run_uuid): name the index when there
        indexed = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'nnexp_run_key'").fetchone()
        for i in range(0, len(run_keys), 10000):  # SQLite allows 32,766 bound variables per statement
            part = run_keys[i:i + 10000]
            rows = con.execute(
                f"SELECT t.value, r.run_uuid FROM tags t {'INDEXED BY nnexp_run_key ' if indexed else ''}"
                "JOIN runs r ON r.run_uuid = t.run_uuid "  # the key a literal: the partial index applies
                f"WHERE t.key = '{TAG}run_key' AND t.value IN ({','.join('?' * len(part))}) AND r.experiment_id = ? "
                "AND r.status = 'FINISHED' AND r.lifecycle_stage = 'active' ORDER BY r.start_time DESC, r.run_uuid DESC",
                [*part, int(experiment_id)])
            found.update(rows)  # later rows overwrite: the earliest started run wins
    finally:
        con.close()
    return found


def find_finished_many(c, experiment_id: str, run_keys: list[str]) -> dict:
    """``{run_key: run or None}``: :func:`find_finished` of each key, in one SQL query on a SQLite store.

    On SQLite the file is read directly (one query for all keys; MLflow's ``search_runs`` is then called only
    for the keys found, to return MLflow ``Run`` objects), so a sweep's resume check costs no MLflow search
    when nothing is finished yet. Any other store: one search per key, :data:`FIND_THREADS` at a time.
    """
    keys = list(dict.fromkeys(run_keys))
    db = sqlite_path(c.tracking_uri)
    if db is not None and db.exists():
        ids = _finished_ids_sqlite(db, experiment_id, keys)
        out = dict.fromkeys(keys)
        if ids:
            by_id = {}
            wanted = sorted(set(ids.values()))
            for i in range(0, len(wanted), 100):
                quoted = ", ".join(f"'{r}'" for r in wanted[i:i + 100])
                by_id.update((r.info.run_id, r) for r in retry(
                    c.search_runs, [experiment_id], filter_string=f"attributes.run_id IN ({quoted})", max_results=100))
            out.update({k: by_id.get(rid) for k, rid in ids.items()})
        return out

    def one(key: str):
        runs = retry(c.search_runs, [experiment_id],
                     filter_string=f"attributes.status = 'FINISHED' and tags.`{TAG}run_key` = '{key}'",
                     order_by=["attributes.start_time ASC"], max_results=1)
        return runs[0] if runs else None

    if len(keys) == 1:
        return {keys[0]: one(keys[0])}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=FIND_THREADS) as pool:
        return dict(zip(keys, pool.map(one, keys)))
