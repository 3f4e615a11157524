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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from .config import ConfigError

log = logging.getLogger(__name__)

#: MLflow's usage telemetry (on by default since MLflow 3.2) runs two threads per process that import MLflow and
#: asks a web service for its configuration: off in nnexp's processes unless the environment says otherwise
#: (MLflow's documented opt-out, https://mlflow.org/docs/latest/community/usage-tracking). Without those threads
#: the sweep's process can fork its :class:`MetricWriter`. Set here, before nnexp imports MLflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__all__ = ["resolve_uri", "artifact_location", "prepare_store", "client", "retry", "get_or_create_experiment",
           "start_run", "start_runs", "NewRun", "end_run", "MetricBuffer", "log_metrics", "diagnostic_steps", "DIAGNOSTIC", "MetricWriter", "start_metric_writer", "metric_writer",
           "stop_metric_writer", "RunEnd", "fail_run", "process_gone", "mark_orphans_killed", "check_store", "TAG",
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


#: What the head of a transient store error says: a locked SQLite database, an unreachable or overloaded server.
TRANSIENT_TEXT = ("database is locked", "database is busy", "temporarily_unavailable", "connection refused",
                  "max retries exceeded", "timed out")
#: A gateway or server answering 502, 503 or 504 (busy or restarting), as a whole number in the error's head.
_BUSY_STATUS = re.compile(r"(?<!\d)(?<!\d\.)50[234](?!\d|\.\d)")


def _error_head(exc: BaseException) -> str:
    """``str(exc)`` without the statement and bound parameters SQLAlchemy appends (``[SQL: ...]``,
    ``[parameters: ...]``): those hold the caller's values (metric values, timestamps), not the error."""
    text = str(exc)
    for mark in ("[SQL:", "[parameters:", "(Background on this error"):
        text = text.split(mark, 1)[0]
    return text


def _transient(exc: BaseException) -> bool:
    """True when ``exc`` is a store error that waiting may cure (see :data:`TRANSIENT_TEXT`, :data:`_BUSY_STATUS`).

    Only the error's head is read, never the statement or parameters: an ``IntegrityError`` whose parameters
    held ``0.5031`` once read as a server's 503, and a duplicate point was retried for 6 s and its run lost.
    A constraint violation (``IntegrityError``) is never transient."""
    if "IntegrityError" in type(exc).__name__ or "IntegrityError" in type(getattr(exc, "orig", None)).__name__:
        return False
    text = _error_head(exc).lower()
    if "integrityerror" in text or "constraint failed" in text:
        return False
    return any(s in text for s in TRANSIENT_TEXT) or _BUSY_STATUS.search(text) is not None


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
    check_driver(uri)
    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir():
        raise ConfigError(f"tracking.uri={uri!r}: folder {db.parent} does not exist; create it or use another URI")
    if db is not None and db.exists() and not (db.is_file() and (db.stat().st_size == 0 or _is_sqlite_file(db))):
        raise ConfigError(f"tracking.uri={uri!r}: {db} is not an SQLite database (a folder or another file); "
                          "move it away or use another URI")
    if db is not None and not os.access(db if db.exists() else db.parent, os.W_OK):
        raise ConfigError(f"tracking.uri={uri!r}: {db if db.exists() else db.parent} is not writable; "
                          "use another URI or launch folder")


def check_driver(uri: str) -> None:
    """Fail fast when a database URI's SQLAlchemy driver is not installed.

    ``postgresql://`` means SQLAlchemy's default driver for PostgreSQL (psycopg 3 in SQLAlchemy 2.1);
    ``postgresql+psycopg2://`` names psycopg2, which ``pip install -e ".[team]"`` installs.

    Raises
    ------
    ConfigError
        Naming ``tracking.uri``, the driver and how to get one, when the driver cannot be imported or the URI
        names no known database.
    """
    if uri.startswith(("sqlite:", "http://", "https://", "file:", "databricks")) or "://" not in uri:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(uri).get_dialect()
        dialect.import_dbapi()
    except (ArgumentError, NoSuchModuleError) as e:
        raise ConfigError(f"tracking.uri={uri!r} is not a database URI SQLAlchemy knows ({e})") from None
    except ImportError as e:
        if dialect.driver == "psycopg2":
            how = "pip install -e '.[team]' (or pip install psycopg2-binary)"
        elif dialect.name == "postgresql":
            how = f"pip install {dialect.driver}, or write postgresql+psycopg2:// and pip install -e '.[team]'"
        else:
            how = f"install the Python package that provides {e.name or dialect.driver}"
        raise ConfigError(f"tracking.uri={uri!r} needs the database driver {dialect.driver!r}, which is not "
                          f"installed: {how}") from None


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
    """Run MLflow's schema migration on the new file ``db``, then drop the ``Default`` experiment it creates.

    MLflow's "Creating initial MLflow database tables..." INFO lines are not shown: the template is nnexp's cache,
    made once per machine, not a store the user asked for.
    """
    import logging

    quiet = logging.getLogger("mlflow.store.db.utils")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        store = client(f"sqlite:///{db}")._tracking_client.store
    finally:
        quiet.setLevel(level)
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


def deleted_experiment_message(name: str, experiment_id: str, choose: str = "tracking.experiment=NAME") -> str:
    """The one line for an experiment deleted in MLflow (see :func:`get_or_create_experiment`); ``choose`` is how
    the command at hand names another (the report's ``--experiment NAME``)."""
    return (f"experiment {name!r} was deleted in MLflow; restore it (mlflow experiments restore --experiment-id "
            f"{experiment_id}) or choose another with {choose}")


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


def _own_tags(tags: dict[str, Any] | None, parent_id: str | None) -> dict[str, Any]:
    """The tags :func:`start_run` gives a run: this host and process, a new ``nnexp.request_id``, then ``tags``
    (which may replace them), then ``mlflow.parentRunId`` when ``parent_id`` is given."""
    pid = os.getpid()
    all_tags = {f"{TAG}host": socket.gethostname(), f"{TAG}pid": str(pid), f"{TAG}pid_start": _own_start(pid),
                f"{TAG}request_id": uuid.uuid4().hex, **(tags or {})}
    if parent_id:
        all_tags["mlflow.parentRunId"] = parent_id
    return all_tags


#: This process's start time (:func:`_process_start`), by process id (a forked child has its own).
_OWN_START: dict[int, str] = {}


def _own_start(pid: int) -> str:
    if pid not in _OWN_START:
        _OWN_START[pid] = _process_start(pid)
    return _OWN_START[pid]


def start_run(c, experiment_id: str, *, run_name: str, parent_id: str | None = None,
              tags: dict[str, str] | None = None) -> str:
    """Create a RUNNING run (nested under ``parent_id`` if given) tagged with this host and process; return its id.

    Idempotent under retries: the run carries a random ``nnexp.request_id``; a
    retry after a lost answer looks that up before creating a run, and should
    two runs carry it after all, the later ones are deleted.
    """
    all_tags = _own_tags(tags, parent_id)
    request_id = all_tags[f"{TAG}request_id"]
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


@dataclass
class NewRun:
    """A run for :func:`start_runs` to create: its name, its tags (as :func:`start_run`'s) and its params (as
    :func:`log_params`'s: None becomes ``"null"``, anything else its ``str``)."""

    name: str
    tags: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


#: Set ``NNEXP_RUN_PATH=create_run`` to create every run through MLflow's ``create_run`` (:func:`start_run`), never
#: through :func:`start_runs`'s SQLite path (the reference it is compared with in the tests).
RUN_PATH_ENV = "NNEXP_RUN_PATH"

#: The columns of MLflow's ``runs`` table that :func:`start_runs` writes (MLflow 3.17), and of ``tags`` and ``params``.
RUN_COLUMNS = frozenset({"run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status",
                         "start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage", "artifact_uri",
                         "experiment_id"})
KEY_VALUE_COLUMNS = frozenset({"key", "value", "run_uuid"})


def start_runs(c, experiment_id: str, runs: list[NewRun], *, parent_id: str | None = None) -> tuple[list[str], bool]:
    """Create the RUNNING runs ``runs``, each as :func:`start_run` creates it; return their ids and whether their
    params were logged too.

    On a SQLite store (MLflow's ``SqlAlchemyStore``, tables as :data:`RUN_COLUMNS` expects) everything is written
    in one transaction with SQLAlchemy Core (:func:`_insert_runs`): the rows MLflow's ``create_run`` writes for
    each run, and the rows ``log_batch`` writes for its params (unless a param fails MLflow's checks: then none
    are, and the second value is False). MLflow's ``create_run`` takes the database's write lock once per run
    (and waits for it while the metric writer holds it; 5-25 ms a run on a 2-core machine), this once per call.
    Elsewhere (a tracking server, a file store, ``$NNEXP_RUN_PATH=create_run``), or when the transaction fails
    other than on a locked database (it is then rolled back), :func:`start_run` for each run and False: the
    caller logs the params (:func:`log_params`, or through the :class:`MetricWriter`).

    Raises
    ------
    mlflow.exceptions.MlflowException
        As ``create_run`` does (a deleted or missing experiment, a store error), on the fallback path.
    """
    tags = [_own_tags(r.tags, parent_id) for r in runs]
    store = _sqlite_run_store(c)
    if store is not None and runs and not any("mlflow.runName" in t for t in tags):
        params = _checked_params(runs)
        try:
            return retry(_insert_runs, store, experiment_id, runs, tags, params), params is not None
        except Exception as e:  # noqa: BLE001 - rolled back; MLflow's create_run decides
            if _transient(e):
                raise
            log.debug("runs created through create_run: %s: %s", type(e).__name__, e)
    return [start_run(c, experiment_id, run_name=r.name, parent_id=parent_id, tags=r.tags) for r in runs], False


def _sqlite_store(c, env: str, api: str):
    """``c``'s MLflow ``SqlAlchemyStore`` on SQLite, else None; None too when ``$<env>`` is ``api`` (MLflow's API
    asked for by name)."""
    import sys

    if os.environ.get(env, "").strip().lower() == api:
        return None
    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")  # loaded with any SQL store
    tracking_client = getattr(c, "_tracking_client", None)
    if module is None or tracking_client is None:
        return None
    store = tracking_client.store
    if not isinstance(store, module.SqlAlchemyStore) or getattr(store, "db_type", None) != "sqlite":
        return None
    return store


def _sqlite_run_store(c):
    """``c``'s MLflow ``SqlAlchemyStore`` when :func:`start_runs` may write to it directly, else None."""
    store = _sqlite_store(c, RUN_PATH_ENV, "create_run")
    if store is None:
        return None
    from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag

    if {col.name for col in SqlRun.__table__.columns} != RUN_COLUMNS or \
            any({col.name for col in t.__table__.columns} != KEY_VALUE_COLUMNS for t in (SqlTag, SqlParam)):
        log.debug("MLflow's run tables are not the expected ones: runs are created through create_run")
        return None
    return store


def _checked_params(runs: list[NewRun]) -> list[list[tuple[str, str]]] | None:
    """Each run's params as ``log_batch`` stores them (MLflow's ``_validate_param``: a valid name, the value cut at
    MLflow's limit), or None when one fails the check (``log_batch`` then raises MLflow's own error)."""
    from mlflow.utils.validation import _validate_param

    out = []
    try:
        for r in runs:
            items = [_validate_param(k, param_text(v), path=f"params[{i}]")
                     for i, (k, v) in enumerate(r.params.items())]
            out.append([(p.key, p.value) for p in items])
    except Exception:  # noqa: BLE001 - MLflow's error comes from log_batch
        return None
    return out


def _insert_runs(store, experiment_id: str, runs: list[NewRun], tags: list[dict],
                 params: list[list[tuple[str, str]]] | None) -> list[str]:
    """Insert ``runs`` (with ``tags`` and, unless None, ``params``) into the SQLite ``store`` in one transaction.

    What ``SqlAlchemyStore.create_run`` does (MLflow 3.x), with SQLAlchemy Core: the experiment must be active;
    each run gets a new id (``uuid4().hex``), its artifact URI ``<experiment's artifact location>/<run id>/artifacts``,
    status RUNNING, source type UNKNOWN, empty source name, entry point and version, ``user_id`` the tag
    ``mlflow.user`` (else "unknown"), and its tags, then ``mlflow.runName``. Start times are this call's clock in
    milliseconds, one more than the previous run's when the clock has not moved (so that the runs keep their order
    in MLflow's default order, by start time). Params are inserted as ``_log_params`` inserts them into a new run.
    Everything in one transaction (MLflow's ``ManagedSessionMaker``: commit, or rollback on any error).

    Raises
    ------
    Exception
        A deleted or missing experiment, a store error: nothing is written then.
    """
    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag
    from mlflow.utils.uri import append_to_uri_path
    from sqlalchemy import insert

    with store.ManagedSessionMaker(read_only=False) as session:
        experiment = store.get_experiment(experiment_id)
        store._check_experiment_is_active(experiment)
        ids, run_rows, tag_rows, param_rows = [], [], [], []
        start = 0
        for i, (run, run_tags) in enumerate(zip(runs, tags)):
            run_id = uuid.uuid4().hex
            start = max(int(time.time() * 1000), start + 1)
            ids.append(run_id)
            run_rows.append({
                "run_uuid": run_id, "name": run.name, "experiment_id": experiment_id,
                "artifact_uri": append_to_uri_path(experiment.artifact_location, run_id,
                                                   store.ARTIFACTS_FOLDER_NAME),
                "source_type": SourceType.to_string(SourceType.UNKNOWN), "source_name": "", "entry_point_name": "",
                "user_id": run_tags.get("mlflow.user", "unknown"), "status": RunStatus.to_string(RunStatus.RUNNING),
                "start_time": start, "end_time": None, "deleted_time": None, "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE})
            tag_rows += [{"key": k, "value": v, "run_uuid": run_id}
                         for k, v in {**run_tags, "mlflow.runName": run.name}.items()]
            if params is not None:
                param_rows += [{"key": k, "value": v, "run_uuid": run_id} for k, v in params[i]]
        session.execute(insert(SqlRun.__table__), run_rows)
        session.execute(insert(SqlTag.__table__), tag_rows)
        if param_rows:
            session.execute(insert(SqlParam.__table__), param_rows)
    return ids


def _runs_with_request_id(c, experiment_id: str, request_id: str) -> list:
    return c.search_runs([experiment_id], filter_string=f"tags.`{TAG}request_id` = '{request_id}'",
                         order_by=["attributes.start_time ASC"], max_results=10)


def end_run(c, run_id: str, status: str = "FINISHED") -> None:
    """Set a run's final status (FINISHED, FAILED or KILLED)."""
    retry(c.set_terminated, run_id, status=status)


def param_text(value: Any) -> str:
    """A param's value as nnexp stores it: ``"null"`` for None, else its ``str`` (lists: their JSON-like text)."""
    return "null" if value is None else str(value)


def log_params(c, run_id: str, params: dict[str, Any]) -> None:
    """Log params in batches of 100 (MLflow's limit per call); lists become their JSON-like text."""
    from mlflow.entities import Param

    items = [Param(k, param_text(v)) for k, v in params.items()]
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
    """Collects metric points and writes them with :func:`log_metrics`.

    Points go out in batches of 1000 (MLflow's limit per ``log_batch`` call): to the :class:`MetricWriter` as
    soon as a batch is full when one is given, else when
    :meth:`flush` is called or ``flush_seconds`` have passed since the last
    write (so the MLflow UI shows a long run's curves while it trains).
    :meth:`flush` returns once every point added so far is in the store;
    :meth:`end` ends the run after its last points (:class:`RunEnd`), through the writer when there is one.
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

    #: Wait for the writer's confirmation once this many points of the run are unconfirmed (bounds their memory).
    CONFIRM_EVERY = 100_000

    @property
    def unconfirmed(self) -> list:
        """The points handed to the writer and not yet confirmed in the store."""
        return self.writer.unconfirmed(self.run_id) if self.writer is not None else []

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
            self._hand_over()

    def _hand_over(self) -> None:
        points, self.points = self.points, []
        if not self.writer.send(self.run_id, points):
            self._take_back()  # the writer is gone: this run's points are written here from now on
            self._write(points)
            return
        self.last = time.monotonic()
        if len(self.unconfirmed) >= self.CONFIRM_EVERY:
            self._confirm()

    def _write(self, points: list) -> None:
        log_metrics(self.c, self.run_id, points)
        self.logged += len(points)

    def _take_back(self) -> None:
        """Write here what the writer was given for this run and may not have written; stop using the writer."""
        log.warning("metric writer lost; writing run %s's metrics in this process", self.run_id)
        given, self.writer = self.writer.take_back(self.run_id), None
        given.write_here(self.c, self.run_id)
        self.logged += len(given.points)

    def _confirm(self) -> None:
        n = len(self.unconfirmed)
        if self.writer.sync(self.run_id):
            self.logged += n
        else:  # the writer failed or died: write what it may not have (the store drops duplicate points)
            self._take_back()

    def flush(self) -> None:
        """Write the points not yet in the store, and wait until every point added so far is there."""
        if self.writer is not None:
            self._confirm()
        self._write(self.points)
        self.points = []
        self.last = time.monotonic()

    def end(self, ending: "RunEnd", wait: bool = False) -> bool:
        """End the run after its last points: hand both to the writer (True: it finishes the run later, in order),
        or, without a writer or with ``wait``, write them and end the run here as :func:`apply_ends` does (False:
        the run has ended).

        Raises
        ------
        mlflow.exceptions.MlflowException
            Without a writer, when the store refuses a write.
        """
        if self.writer is not None and not wait:
            if self.points and self.writer.send(self.run_id, self.points):
                self.points = []
            if not self.points and self.writer.end(ending):
                return True
        self.flush()
        if not _ended_on_sqlite(self.c, [ending]):  # as apply_ends; MLflow's client raises its own error
            ending.apply(self.c)
        return False


#: MLflow's limit of metrics per ``log_batch`` call.
MAX_METRICS_PER_BATCH = 1000


#: Set ``NNEXP_METRIC_PATH=log_batch`` to write every metric point through MLflow's ``log_batch`` (the reference
#: :func:`log_metrics` is compared with in the tests and the benchmark), never through the SQLite path.
METRIC_PATH_ENV = "NNEXP_METRIC_PATH"

#: Points per transaction of :func:`log_metrics`'s SQLite path (MLflow's API limit of 1000 is the REST API's).
POINTS_PER_TRANSACTION = 10_000

#: The columns of MLflow's ``metrics`` and ``latest_metrics`` tables that :func:`log_metrics` writes (MLflow 3.17).
METRIC_COLUMNS = frozenset({"key", "value", "timestamp", "step", "is_nan", "run_uuid"})


def log_metrics(c, run_id: str, points: list) -> None:
    """Write metric points of ``run_id`` into ``c``'s store, stored exactly as ``c.log_batch`` stores them.

    ``points`` are tuples ``(key, value, timestamp_ms, step)``, in the order they were measured. On a SQLite store
    (MLflow's ``SqlAlchemyStore``) they are written by :func:`_insert_metrics` with SQLAlchemy Core, in
    transactions of :data:`POINTS_PER_TRANSACTION` points: 8-25 us per point where ``log_batch`` takes
    90-150 us (a quiet to a loaded 2-core machine), nearly all of it SQLAlchemy's ORM building one ``SqlMetric``
    object per point. Elsewhere (a tracking server, a file store), with ``$NNEXP_METRIC_PATH=log_batch``, or when
    an active MLflow model would receive the metrics too (``mlflow.set_active_model``), ``log_batch`` in batches
    of 1000. Every write goes through :func:`retry`.

    Raises
    ------
    mlflow.exceptions.MlflowException
        As ``log_batch`` does (an invalid point, a run that does not exist or is deleted, a store error): a
        transaction of the SQLite path that fails for any other reason than a locked database is rolled back
        and its points are written with ``log_batch`` instead, which raises MLflow's own error if it fails too.
    """
    store = _sqlite_metric_store(c)
    if store is None:
        from mlflow.entities import Metric

        for i in range(0, len(points), MAX_METRICS_PER_BATCH):
            retry(c.log_batch, run_id, metrics=[Metric(*p) for p in points[i:i + MAX_METRICS_PER_BATCH]])
        return
    for i in range(0, len(points), POINTS_PER_TRANSACTION):
        retry(_log_metrics_sqlite, c, store, run_id, points[i:i + POINTS_PER_TRANSACTION])


def _sqlite_metric_store(c):
    """``c``'s MLflow ``SqlAlchemyStore`` when :func:`log_metrics` may write to it directly, else None."""
    store = _sqlite_store(c, METRIC_PATH_ENV, "log_batch")
    if store is None:
        return None
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
    from mlflow.tracking.fluent import get_active_model_id

    if get_active_model_id() is not None:  # log_batch would log the points to that model as well
        return None
    if {col.name for col in SqlMetric.__table__.columns} != METRIC_COLUMNS or \
            {col.name for col in SqlLatestMetric.__table__.columns} != METRIC_COLUMNS:
        log.debug("MLflow's metric tables are not the expected ones: metric points go through log_batch")
        return None
    return store


def _log_metrics_sqlite(c, store, run_id: str, points: list) -> None:
    """:func:`_insert_metrics`; if it fails (its transaction rolled back) other than on a locked database, the
    points again with ``c.log_batch``: the same rows, or MLflow's own error."""
    try:
        _insert_metrics(store, run_id, points)
    except Exception as e:  # noqa: BLE001 - whatever failed was rolled back; log_batch decides
        if _transient(e):
            raise  # retry() tries the transaction again
        log.debug("metric points of run %s through log_batch: %s: %s", run_id, type(e).__name__, e)
        from mlflow.entities import Metric

        c.log_batch(run_id, metrics=[Metric(*p) for p in points])


def _insert_metrics(store, run_id: str, points: list) -> None:
    """Insert ``points`` into the SQLite ``store`` in one transaction, as ``store.log_batch`` would store them.

    What ``SqlAlchemyStore.log_batch`` and ``_log_metrics_once`` do (MLflow 3.x), with SQLAlchemy Core instead of
    one ORM object per point: each point validated (``_validate_metric``), its value sanitised
    (``sanitize_metric_value``: NaN stored as 0 with ``is_nan``, +-inf as +-1.7976931348623157e308); points equal in
    the table's primary key (key, timestamp, step, run, sanitised value, is_nan) written once, the first; the run
    must exist and be active; one executemany INSERT into ``metrics`` in the points' order; then each key's row in
    ``latest_metrics`` set to its most recent point, the largest ``(step, timestamp, value)`` among the stored row
    and the new points, the earliest of equals (``_update_latest_metrics_if_necessary``), new keys inserted in the
    order they first appear. Everything in one transaction (MLflow's ``ManagedSessionMaker``: its SQLite pragmas,
    commit, rollback on any error).

    Raises
    ------
    Exception
        An invalid point, a missing or deleted run, or a point already in the store (an IntegrityError, which
        ``log_batch`` resolves by skipping it): nothing is written then.
    """
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
    from mlflow.tracking.metric_value_conversion_utils import convert_metric_value_to_float_if_possible
    from mlflow.utils.validation import _validate_metric, _validate_run_id
    from sqlalchemy import bindparam, insert, select, update

    _validate_run_id(run_id)
    rows: dict[tuple, None] = {}  # (key, timestamp, step, value, is_nan), first of equals, in order
    valid_keys: set[str] = set()
    for idx, (key, value, timestamp, step) in enumerate(points):
        if type(value) is not float:
            value = convert_metric_value_to_float_if_possible(value)  # as MlflowClient.log_batch
        if key not in valid_keys or type(value) is not float or type(timestamp) is not int or timestamp < 0 \
                or type(step) is not int:  # else _validate_metric checks nothing a checked key's point can fail
            _validate_metric(key, value, timestamp, step, path=f"metrics[{idx}]")
            valid_keys.add(key)
        is_nan, value = store.sanitize_metric_value(value)
        rows.setdefault((key, timestamp, step, value, is_nan))
    latest: dict[str, tuple] = {}  # key -> (step, timestamp, value, is_nan) of its most recent new point
    for key, timestamp, step, value, is_nan in rows:
        best = latest.get(key)
        if best is None or (step, timestamp, value) > best[:3]:
            latest[key] = (step, timestamp, value, is_nan)
    metrics, latest_metrics = SqlMetric.__table__, SqlLatestMetric.__table__
    with store.ManagedSessionMaker(read_only=False) as session:
        store._check_run_is_active(store._get_run(run_uuid=run_id, session=session))
        if not rows:
            return
        session.execute(insert(metrics), [{"key": k, "value": v, "timestamp": t, "step": s, "is_nan": n,
                                           "run_uuid": run_id} for k, t, s, v, n in rows])
        keys = list(latest)
        stored = {}
        for i in range(0, len(keys), 500):
            stored.update((r.key, (r.step, r.timestamp, r.value)) for r in session.execute(
                select(latest_metrics.c.key, latest_metrics.c.step, latest_metrics.c.timestamp,
                       latest_metrics.c.value).where(latest_metrics.c.run_uuid == run_id,
                                                     latest_metrics.c.key.in_(keys[i:i + 500]))))
        new = [{"key": k, "step": s, "timestamp": t, "value": v, "is_nan": n, "run_uuid": run_id}
               for k, (s, t, v, n) in latest.items() if k not in stored]
        changed = [{"b_key": k, "b_step": s, "b_timestamp": t, "b_value": v, "b_is_nan": n}
                   for k, (s, t, v, n) in latest.items() if k in stored and (s, t, v) > stored[k]]
        if new:
            session.execute(insert(latest_metrics), new)
        if changed:
            session.execute(update(latest_metrics)
                            .where(latest_metrics.c.run_uuid == run_id, latest_metrics.c.key == bindparam("b_key"))
                            .values(step=bindparam("b_step"), timestamp=bindparam("b_timestamp"),
                                    value=bindparam("b_value"), is_nan=bindparam("b_is_nan")), changed)


@dataclass
class RunEnd:
    """What is left to record of a trained run after its metrics, and :meth:`apply` to record it.

    ``tags`` (outcome, timings), ``artifacts`` (files logged at the artifact root), ``inputs``
    (``mlflow.entities.DatasetInput``, :func:`nnexp.mlflow_model.dataset_inputs`) and ``model`` (the keyword
    arguments of :func:`nnexp.mlflow_model.log_model` but the client and ids, or None for no model). Plain data:
    it is pickled to the :class:`MetricWriter`, which applies it after the run's last metric batch.
    """

    run_id: str
    experiment_id: str
    tags: dict
    artifacts: list
    inputs: list
    model: dict | None = None

    def apply(self, c) -> None:
        """Log the artifacts, the dataset inputs and the model, set the tags (with ``nnexp.seconds.model``, the
        seconds the inputs and model took) and end the run FINISHED.

        Raises
        ------
        mlflow.exceptions.MlflowException
            When the store refuses a write (after :func:`retry`); the run is then left RUNNING for the caller.
        """
        from . import mlflow_model

        for path in self.artifacts:
            retry(c.log_artifact, self.run_id, str(path))
        t0 = time.perf_counter()
        mlflow_model.record(c, self.run_id, self.experiment_id, self.inputs, self.model)
        set_tags(c, self.run_id, {**self.tags, f"{TAG}seconds.model": f"{time.perf_counter() - t0:.4f}"})
        end_run(c, self.run_id, "FINISHED")


#: Set ``NNEXP_END_PATH=mlflow`` to end every run through MLflow's client (:meth:`RunEnd.apply`), never through
#: :func:`apply_ends`'s SQLite path (the reference it is compared with in the tests).
END_PATH_ENV = "NNEXP_END_PATH"

#: The columns of MLflow's tables that :func:`_end_runs_sqlite` writes (MLflow 3.17), beside :data:`RUN_COLUMNS`.
END_COLUMNS = {
    "logged_models": frozenset({"model_id", "experiment_id", "name", "artifact_location", "creation_timestamp_ms",
                                "last_updated_timestamp_ms", "status", "lifecycle_stage", "model_type",
                                "source_run_id", "status_message"}),
    "logged_model_tags": frozenset({"model_id", "experiment_id", "tag_key", "tag_value"}),
    "inputs": frozenset({"input_uuid", "source_type", "source_id", "destination_type", "destination_id", "step"}),
    "input_tags": frozenset({"input_uuid", "name", "value"}),
    "datasets": frozenset({"dataset_uuid", "experiment_id", "name", "digest", "dataset_source_type",
                           "dataset_source", "dataset_schema", "dataset_profile"}),
}


def apply_ends(c, ends: list[RunEnd]) -> list[str | None]:
    """Record the ends of several runs (each as :meth:`RunEnd.apply` records it); return each one's error text
    (``"<type>: <message>"``, 500 characters), None for a run ended FINISHED.

    On a SQLite store (:func:`_sqlite_end_store`) the files are written first (the runs' artifacts and the logged
    models' folders, through the artifact repository of each known URI), then every row in one transaction
    (:func:`_end_runs_sqlite`): 2-5 ms a run where MLflow's client takes 35-90 ms (about ten store transactions
    and two run look-ups per run). Elsewhere (a tracking server, a file store, ``$NNEXP_END_PATH=mlflow``), or
    when that transaction fails other than on a locked database (rolled back, the models' folders removed),
    :meth:`RunEnd.apply` for each run, which records MLflow's own error of a run that fails.
    """
    if _ended_on_sqlite(c, ends):
        return [None] * len(ends)
    errors = []
    for ending in ends:
        try:
            ending.apply(c)
            errors.append(None)
        except Exception as e:  # noqa: BLE001 - answered to the caller, which records the run FAILED
            errors.append(f"{type(e).__name__}: {e}"[:500])
    return errors


def _ended_on_sqlite(c, ends: list[RunEnd]) -> bool:
    """End ``ends`` through :func:`_end_runs_sqlite` (with :func:`retry`) where :func:`_sqlite_end_store`
    allows: True, or False when nothing was written (not allowed there, or the transaction failed: the caller
    ends the runs through MLflow's client)."""
    store = _sqlite_end_store(c, ends)
    if store is None:
        return False
    try:
        retry(_end_runs_sqlite, c, store, ends)
        return True
    except Exception as e:  # noqa: BLE001 - rolled back; MLflow's client decides, run by run
        if _transient(e):
            log.warning("run ends through MLflow's client after: %s: %s", type(e).__name__, e)
        else:
            log.debug("run ends through MLflow's client: %s: %s", type(e).__name__, e)
    return False


def _sqlite_end_store(c, ends: list[RunEnd]):
    """``c``'s MLflow ``SqlAlchemyStore`` when :func:`apply_ends` may write ``ends`` to it directly, else None
    (also for tags MLflow treats apart: ``mlflow.runName``, more than ``log_batch``'s 100)."""
    store = _sqlite_store(c, END_PATH_ENV, "mlflow")
    if store is None or not ends:
        return None
    if any("mlflow.runName" in e.tags or len(e.tags) >= 100 for e in ends):
        return None
    from mlflow.store.tracking.dbmodels import models

    tables = {t.__tablename__: t for t in (models.SqlLoggedModel, models.SqlLoggedModelTag, models.SqlInput,
                                           models.SqlInputTag, models.SqlDataset)}
    expected = {**END_COLUMNS, "runs": RUN_COLUMNS, "tags": KEY_VALUE_COLUMNS}
    tables.update(runs=models.SqlRun, tags=models.SqlTag)
    if any({col.name for col in tables[name].__table__.columns} != cols for name, cols in expected.items()):
        log.debug("MLflow's tables are not the expected ones: runs end through MLflow's client")
        return None
    return store


def _end_runs_sqlite(c, store, ends: list[RunEnd]) -> None:
    """Write ``ends`` into the SQLite ``store``: the files, then every row in one transaction.

    What :meth:`RunEnd.apply`'s MLflow calls do (MLflow 3.x ``SqlAlchemyStore``), with SQLAlchemy Core:

    - ``log_artifact``: each file copied to the run's artifact URI (read from ``runs``; no ``get_run``);
    - ``create_logged_model`` / ``log_model_artifacts`` / ``log_outputs`` / ``finalize_logged_model``
      (:func:`nnexp.mlflow_model.log_model`): a model id ``m-<uuid4 hex>``, its artifact location
      ``<experiment's artifact location>/models/<id>/artifacts`` with its files
      (:func:`nnexp.mlflow_model.write_model_files`); a ``logged_models`` row READY (created when its files
      were started, last updated at the transaction), its tags, and the run's output edge (``RUN_OUTPUT`` ->
      ``MODEL_OUTPUT`` at the model's step);
    - ``log_inputs`` (``_log_inputs_impl``): inputs deduplicated by (name, digest), first kept; a dataset
      already in the run's experiment (same name and digest) reused, else one new row, shared by the later
      runs of the batch; one ``DATASET`` -> ``RUN`` edge per input not already there, with its input tags;
    - ``log_batch`` of the tags (``_set_tags``; validated and cut as ``_validate_tag``): a tag already on the
      run updated, others inserted; ``nnexp.seconds.model`` is each run's share of the seconds the files took;
    - ``set_terminated``: status FINISHED, ``end_time`` the transaction's clock in milliseconds.

    Every run must exist and be active, and every model's experiment active. Everything in one transaction
    (MLflow's ``ManagedSessionMaker``: commit, or rollback on any error); the models' folders are removed when it
    fails (the runs' artifacts are the same files MLflow's client then copies again).

    Raises
    ------
    Exception
        A missing or deleted run or experiment, an invalid tag or input, a store error: no row is written then.
    """
    from mlflow.entities import LifecycleStage, LoggedModelStatus, RunStatus
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.tracking.dbmodels.models import (SqlDataset, SqlInput, SqlInputTag, SqlLoggedModel,
                                                       SqlLoggedModelTag, SqlRun, SqlTag)
    import shutil
    from urllib.parse import urlparse

    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import append_to_uri_path
    from mlflow.utils.validation import _validate_dataset_inputs, _validate_run_id, _validate_tag
    from sqlalchemy import and_, bindparam, insert, or_, select, update

    from . import mlflow_model

    t0 = time.perf_counter()
    runs_t = SqlRun.__table__
    ids = [e.run_id for e in ends]
    for run_id in ids:
        _validate_run_id(run_id)
    for e in ends:
        _validate_dataset_inputs(e.inputs)
    with store.ManagedSessionMaker() as session:
        known = {r.run_uuid: r for r in session.execute(
            select(runs_t.c.run_uuid, runs_t.c.experiment_id, runs_t.c.artifact_uri, runs_t.c.lifecycle_stage)
            .where(runs_t.c.run_uuid.in_(ids)))}
    for run_id in ids:
        if run_id not in known or known[run_id].lifecycle_stage != LifecycleStage.ACTIVE:
            raise RuntimeError(f"run {run_id} is missing or not active")
    locations = {}
    for exp_id in {e.experiment_id for e in ends if e.model is not None}:
        experiment = store.get_experiment(exp_id)
        store._check_experiment_is_active(experiment)
        locations[exp_id] = experiment.artifact_location
    models, written = {}, []  # run id -> (model id, artifact location, creation ms)
    try:
        for e in ends:
            repo = get_artifact_repository(known[e.run_id].artifact_uri, tracking_uri=c.tracking_uri)
            for path in e.artifacts:
                repo.log_artifact(str(path))
            if e.model is not None:
                model_id = f"m-{uuid.uuid4().hex}"
                location = append_to_uri_path(locations[e.experiment_id], store.MODELS_FOLDER_NAME, model_id,
                                              store.ARTIFACTS_FOLDER_NAME)
                models[e.run_id] = (model_id, location, int(time.time() * 1000))
                written.append(location)
                mlflow_model.write_model_files(location, model_id, e.run_id, **e.model)
        model_seconds = (time.perf_counter() - t0) / len(ends)
        tags = {e.run_id: {t.key: t.value for t in (
            _validate_tag(k, str(v), path=f"tags[{i}]") for i, (k, v) in enumerate(
                {**e.tags, f"{TAG}seconds.model": f"{model_seconds:.4f}"}.items()))} for e in ends}
        with store.ManagedSessionMaker(read_only=False) as session:
            now = int(time.time() * 1000)
            _insert_models(session, ends, models, now, SqlLoggedModel, SqlLoggedModelTag, SqlInput,
                           LoggedModelStatus.READY.to_int(), LifecycleStage.ACTIVE)
            _insert_inputs(session, ends, known, SqlDataset, SqlInput, SqlInputTag)
            tag_t = SqlTag.__table__
            stored = {(r.run_uuid, r.key) for r in session.execute(
                select(tag_t.c.run_uuid, tag_t.c.key).where(tag_t.c.run_uuid.in_(ids), or_(*[
                    and_(tag_t.c.run_uuid == rid, tag_t.c.key.in_(list(t))) for rid, t in tags.items()])))}
            new = [{"key": k, "value": v, "run_uuid": rid} for rid, t in tags.items() for k, v in t.items()
                   if (rid, k) not in stored]
            changed = [{"b_run": rid, "b_key": k, "b_value": v} for rid, t in tags.items() for k, v in t.items()
                       if (rid, k) in stored]
            if new:
                session.execute(insert(tag_t), new)
            if changed:
                session.execute(update(tag_t).where(tag_t.c.run_uuid == bindparam("b_run"),
                                                    tag_t.c.key == bindparam("b_key"))
                                .values(value=bindparam("b_value")), changed)
            session.execute(update(runs_t).where(runs_t.c.run_uuid.in_(ids))
                            .values(status=RunStatus.to_string(RunStatus.FINISHED), end_time=now))
    except BaseException:
        for location in written:  # the models of a failed transaction: MLflow's client logs them anew
            if urlparse(location).scheme in ("", "file"):
                shutil.rmtree(Path(local_file_uri_to_path(location)).parent, ignore_errors=True)
        raise


def _insert_models(session, ends, models: dict, now: int, SqlLoggedModel, SqlLoggedModelTag, SqlInput,
                   ready: int, active: str) -> None:
    """The ``logged_models`` rows (READY), their tags and the runs' output edges of ``models`` (see
    :func:`_end_runs_sqlite`)."""
    from sqlalchemy import insert

    from . import mlflow_model

    rows, tag_rows, edges = [], [], []
    for e in ends:
        if e.run_id not in models:
            continue
        model_id, location, created = models[e.run_id]
        rows.append({"model_id": model_id, "experiment_id": e.experiment_id, "name": mlflow_model.MODEL_NAME,
                     "artifact_location": location, "creation_timestamp_ms": created,
                     "last_updated_timestamp_ms": max(now, created), "status": ready, "lifecycle_stage": active,
                     "model_type": mlflow_model.MODEL_TYPE, "source_run_id": e.run_id, "status_message": None})
        tag_rows += [{"model_id": model_id, "experiment_id": e.experiment_id, "tag_key": k, "tag_value": v}
                     for k, v in mlflow_model.model_tags(e.model.get("tags")).items()]
        edges.append({"input_uuid": uuid.uuid4().hex, "source_type": "RUN_OUTPUT", "source_id": e.run_id,
                      "destination_type": "MODEL_OUTPUT", "destination_id": model_id, "step": e.model["step"]})
    if rows:
        session.execute(insert(SqlLoggedModel.__table__), rows)
    if tag_rows:
        session.execute(insert(SqlLoggedModelTag.__table__), tag_rows)
    if edges:
        session.execute(insert(SqlInput.__table__), edges)


def _insert_inputs(session, ends, known: dict, SqlDataset, SqlInput, SqlInputTag) -> None:
    """The dataset rows, ``DATASET`` -> ``RUN`` edges and input tags of ``ends``' inputs (see
    :func:`_end_runs_sqlite`)."""
    from sqlalchemy import insert, select

    wanted = {}  # run id -> its inputs, deduplicated by (name, digest), first kept
    for e in ends:
        first: dict[tuple, Any] = {}
        for i in e.inputs:
            first.setdefault((i.dataset.name, i.dataset.digest), i)
        wanted[e.run_id] = list(first.values())
    if not any(wanted.values()):
        return
    data_t, input_t = SqlDataset.__table__, SqlInput.__table__
    names = {i.dataset.name for inputs in wanted.values() for i in inputs}
    digests = {i.dataset.digest for inputs in wanted.values() for i in inputs}
    exps = {str(known[rid].experiment_id) for rid in wanted}
    datasets = {(str(r.experiment_id), r.name, r.digest): r.dataset_uuid for r in session.execute(
        select(data_t.c.experiment_id, data_t.c.name, data_t.c.digest, data_t.c.dataset_uuid)
        .where(data_t.c.experiment_id.in_(exps), data_t.c.name.in_(names), data_t.c.digest.in_(digests)))}
    linked = {(r.source_id, r.destination_id) for r in session.execute(
        select(input_t.c.source_id, input_t.c.destination_id)
        .where(input_t.c.source_type == "DATASET", input_t.c.destination_type == "RUN",
               input_t.c.destination_id.in_(list(wanted))))}
    new_data, edges, edge_tags = [], [], []
    for run_id, inputs in wanted.items():
        exp = str(known[run_id].experiment_id)
        for i in inputs:
            d = i.dataset
            key = (exp, d.name, d.digest)
            if key not in datasets:
                datasets[key] = uuid.uuid4().hex
                new_data.append({"dataset_uuid": datasets[key], "experiment_id": exp, "name": d.name,
                                 "digest": d.digest, "dataset_source_type": d.source_type,
                                 "dataset_source": d.source, "dataset_schema": d.schema,
                                 "dataset_profile": d.profile})
            if (datasets[key], run_id) in linked:
                continue
            input_id = uuid.uuid4().hex
            edges.append({"input_uuid": input_id, "source_type": "DATASET", "source_id": datasets[key],
                          "destination_type": "RUN", "destination_id": run_id, "step": 0})
            edge_tags += [{"input_uuid": input_id, "name": t.key, "value": t.value} for t in i.tags]
    if new_data:
        session.execute(insert(data_t), new_data)
    if edges:
        session.execute(insert(input_t), edges)
    if edge_tags:
        session.execute(insert(SqlInputTag.__table__), edge_tags)


def fail_run(c, run_id: str, error: str, status: str = "FAILED") -> None:
    """End ``run_id`` with ``status``, tagged ``nnexp.error=<error>`` (500 characters) and ``nnexp.outcome=failed``
    (``killed`` for a KILLED run, as :func:`nnexp.report.load.load_runs` reads its status)."""
    set_tags(c, run_id, {f"{TAG}outcome": "killed" if status == "KILLED" else "failed", f"{TAG}error": error[:500]})
    end_run(c, run_id, status)


@dataclass
class _Given:
    """What the writer was given for one run and has not confirmed: its params, metric points and end."""

    params: dict | None = None
    points: list = field(default_factory=list)
    ending: RunEnd | None = None

    def write_here(self, c, run_id: str) -> None:
        """Write the params and points in this process (the store keeps one copy of a point sent twice)."""
        if self.params:
            log_params(c, run_id, self.params)
        log_metrics(c, run_id, self.points)

    def end_here(self, c, run_id: str) -> StoreUnavailable | None:
        """Write what was given here and end the run (unless it has ended already); FAILED with the error if that
        fails. Returns the :class:`StoreUnavailable` error when even that could not be recorded."""
        try:
            self.write_here(c, run_id)
            if self.ending is not None and retry(c.get_run, run_id).info.status == "RUNNING":
                self.ending.apply(c)
        except Exception as e:  # noqa: BLE001 - the store itself may be what fails
            log.error("run %s could not be recorded: %s", run_id, e)
            return _fail_or_report(c, run_id, f"{type(e).__name__}: {e}")
        return None


def _fail_or_report(c, run_id: str, error: str) -> StoreUnavailable | None:
    """:func:`fail_run`; if the store is unavailable for that too, the error (logged), else None."""
    try:
        fail_run(c, run_id, error)
    except StoreUnavailable as e:
        log.warning("could not mark run %s FAILED: %s", run_id, e)
        return e
    except Exception:  # noqa: BLE001
        log.warning("could not mark run %s FAILED", run_id)
    return None


class MetricWriter:
    """A child process that records runs into the store while the jobs train: their params, metric batches and
    ends (:class:`RunEnd`: tags, artifacts, dataset inputs, model, FINISHED).

    MLflow's SQLAlchemy store spends about 0.1 ms of Python per metric point in
    ``log_batch`` (:func:`log_metrics` about 10 us on SQLite) and about 30 ms of CPU
    per run end with a model (:func:`apply_ends` about 7 ms on SQLite, the ends
    it is given together in one transaction); a background thread would take that from the
    training loop (both hold the GIL), while a process uses a core the training
    leaves idle: a mini-batch job keeps one core busy. MLflow's own asynchronous
    logging uses threads, hence this process. It is made for jobs that run one
    after another in one process (Hydra's basic launcher): a job hands each run's
    end over after its last metrics and the next job starts at once; parallel
    jobs already use every core and record their runs themselves.

    Requests are handled in the order they were made. On a SQLite store the
    process is forked (:data:`FORK`), so that it shares the MLflow this process
    has imported (a spawned one spends seconds importing it again); this
    process's SQLite connections are closed first, so that none is open across
    the fork, and the writer opens its own.

    Nothing is lost and no run is left RUNNING: the writer keeps what it was
    given until the process confirms it (:meth:`sync`, :meth:`poll`,
    :meth:`close`); if the writer reports an error with a run's params or metrics,
    or dies, this process writes what it gave (the store keeps one copy of a point
    sent twice: same key, step, timestamp and value) and ends the run itself; a
    run whose end the writer could not record ends FAILED with the error
    (``nnexp.error``), as it would here. The writer ignores Ctrl-C and SIGTERM (the
    job's own handler marks its runs KILLED; the writer finishes what it was
    given) and exits with its parent.
    """

    #: Wait for the writer once the points of ended runs it has not confirmed exceed this (bounds their memory).
    MAX_BACKLOG = 300_000

    def __init__(self, uri: str, models: bool = True):
        import multiprocessing
        import threading

        # fork only a process without other threads (a thread holding a lock at the fork would hold it forever in
        # the child), and for a SQLite store (its new connections do not depend on the parent's sockets)
        method = "fork" if FORK and sqlite_path(uri) is not None and threading.active_count() == 1 else "spawn"
        if method == "fork":
            _close_sqlite_connections()
        ctx = multiprocessing.get_context(method)
        self.uri, self.method = uri, method
        self.requests, self.replies = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_writer_main, args=(uri, self.requests, self.replies, os.getpid(), models),
                                name="nnexp-metric-writer", daemon=True)
        self.proc.start()
        self._token = 0
        self._given: dict[str, _Given] = {}
        self._c = None
        self._closed = False
        self._stopped = False  # the writer answered its last request (see close)
        #: Errors of runs neither the writer nor this process could record (the store unavailable)
        self.lost: list[StoreUnavailable] = []
        import atexit

        atexit.register(self._close_at_exit)

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except StoreUnavailable as e:
            log.error("%s", e)

    def _client(self):
        if self._c is None:
            self._c = client(self.uri)
        return self._c

    def unconfirmed(self, run_id: str) -> list:
        """The points of ``run_id`` given to the writer and not confirmed yet."""
        given = self._given.get(run_id)
        return given.points if given is not None else []

    def _put(self, run_id: str, kind: str, payload) -> bool:
        if not self.proc.is_alive():
            return False
        self.requests.put((kind, run_id, payload))
        return True

    def send(self, run_id: str, points: list) -> bool:
        """Queue ``points`` (tuples ``(key, value, timestamp_ms, step)``) for ``run_id``; False if the writer is gone."""
        if not self._put(run_id, "log", points):
            return False
        self._given.setdefault(run_id, _Given()).points.extend(points)
        return True

    def log_params(self, run_id: str, params: dict[str, Any]) -> bool:
        """Queue :func:`log_params` of ``params`` for ``run_id``; False if the writer is gone."""
        params = {k: param_text(v) for k, v in params.items()}
        if not self._put(run_id, "params", params):
            return False
        self._given.setdefault(run_id, _Given()).params = params
        return True

    def end(self, ending: RunEnd) -> bool:
        """Queue ``ending`` after the run's points; False if the writer is gone (the caller then ends the run).

        Reads the writer's answers so far, and waits for it when the ended runs it still holds have more than
        :data:`MAX_BACKLOG` points.
        """
        if not self._put(ending.run_id, "end", ending):
            return False
        self._given.setdefault(ending.run_id, _Given()).ending = ending
        self.poll()
        while self.proc.is_alive() and sum(len(g.points) for g in self._given.values() if g.ending) > self.MAX_BACKLOG:
            self.poll(timeout=0.5)
        return True

    def take_back(self, run_id: str) -> _Given:
        """Stop giving ``run_id`` to the writer; return what it was given and did not confirm, for this process."""
        return self._given.pop(run_id, None) or _Given()

    def pending(self) -> list[str]:
        """The runs given to the writer that it has not confirmed ended."""
        return [r for r, g in self._given.items() if g.ending is not None]

    def _answer(self, reply) -> None:
        """Act on one answer of the writer: an end confirmed, or a run it could not record."""
        kind, run_id, stage, error = reply
        if kind == "stopped":
            self._stopped = True
        if kind not in ("ended", "failed"):
            return
        given = self._given.pop(run_id, None)
        if error is None or given is None:
            return
        if kind == "failed":  # a run that was not ended (stopped sweep), whose points failed: write them here
            try:
                given.write_here(self._client(), run_id)
            except Exception as e:  # noqa: BLE001
                log.warning("run %s: its metrics could not be written: %s", run_id, e)
            return
        log.warning("metric writer: run %s: %s", run_id, error)
        if stage == "end":  # as a run whose end fails in this process
            lost = _fail_or_report(self._client(), run_id, error)
        else:  # its params or metrics failed: all of it again here, then its end
            lost = given.end_here(self._client(), run_id)
        if lost is not None:
            self.lost.append(lost)

    def poll(self, timeout: float = 0.0) -> None:
        """Read the writer's answers (waiting up to ``timeout`` seconds for the first); if it died, record what
        it was given and did not confirm here."""
        import queue

        dead = not self.proc.is_alive()  # before reading: a dead writer's last answers are all in the pipe
        try:
            reply = self.replies.get(timeout=timeout) if timeout and not dead else self.replies.get_nowait()
            while True:
                self._answer(reply)
                reply = self.replies.get_nowait()
        except queue.Empty:
            pass
        if dead:
            self._recover()

    def wait(self, run_ids) -> None:
        """Return once the writer has recorded the ends of ``run_ids`` (or this process did, the writer gone)."""
        while any(r in self._given and self._given[r].ending for r in run_ids):
            self.poll(timeout=0.5)

    def _recover(self) -> None:
        for run_id in [r for r, g in self._given.items() if g.ending is not None]:
            log.warning("metric writer gone; recording run %s in this process", run_id)
            lost = self._given.pop(run_id).end_here(self._client(), run_id)
            if lost is not None:
                self.lost.append(lost)

    def sync(self, run_id: str, poll: float = 0.5) -> bool:
        """Wait until the points queued for ``run_id`` are in the store: True, or False if the writer failed or died."""
        import queue

        if not self.proc.is_alive():
            return False
        self._token += 1
        self.requests.put(("sync", run_id, self._token))
        while True:
            try:
                reply = self.replies.get(timeout=poll)
            except queue.Empty:
                if not self.proc.is_alive():
                    return False
                continue
            if reply[0] != "sync":
                self._answer(reply)
            elif reply[2] == self._token:
                if reply[3]:
                    log.warning("metric writer: run %s: %s", run_id, reply[3])
                    return False
                given = self._given.get(run_id)
                if given is not None:
                    given.points, given.params = [], None
                return True

    def close(self) -> None:
        """Let the writer record what it was given and stop; record here what it could not (also run at exit).

        Raises
        ------
        StoreUnavailable
            When a run could be recorded neither by the writer nor here (it is left RUNNING; the next sweep
            marks it KILLED, see :func:`mark_orphans_killed`).
        """
        if self._closed:
            return
        if self.proc.is_alive():
            self.requests.put(None)
        while self.proc.is_alive() and not self._stopped:  # its last answer read: it is exiting, join it
            self.poll(timeout=0.5)
        self.proc.join()
        self.poll()  # the last answers; the ends it did not confirm are recorded here
        if self.proc.exitcode != 0:  # killed: the points of runs not ended (a stopped sweep) may be missing
            for run_id in list(self._given):
                try:
                    self._given.pop(run_id).write_here(self._client(), run_id)
                except Exception as e:  # noqa: BLE001 - the store itself may be what failed
                    log.warning("run %s: its metrics could not be written: %s", run_id, e)
        self._given.clear()  # a writer that stopped cleanly wrote them, or answered "failed"
        self._closed = True
        self.requests.close()
        self.replies.close()
        if self.lost:
            raise StoreUnavailable(f"{len(self.lost)} run(s) could not be recorded: {self.lost[0]}")


#: Fork the writer (see :class:`MetricWriter`) where the platform can.
FORK = hasattr(os, "fork")

#: The metric writer of each store URI in this process (see :func:`start_metric_writer`).
_WRITERS: dict[str, MetricWriter] = {}


def start_metric_writer(uri: str, models: bool = True) -> MetricWriter:
    """Start this process's :class:`MetricWriter` for ``uri`` (once; again if it died) and return it.

    Called where jobs will run one after another in this process (a sweep under
    Hydra's basic launcher), early, so that the writer's imports overlap the
    sweep's start-up; jobs find it with :func:`metric_writer`. ``models``: the runs
    will log MLflow models (``tracking.log_model``), so the writer prepares for the
    first one while it waits for the first request (:func:`nnexp.mlflow_model.warm_up`).
    """
    w = _WRITERS.get(uri)
    if w is None or not w.proc.is_alive():
        w = _WRITERS[uri] = MetricWriter(uri, models)
    return w


def metric_writer(uri: str) -> MetricWriter | None:
    """The running :class:`MetricWriter` of ``uri`` in this process, else None (the job writes its metrics itself)."""
    w = _WRITERS.get(uri)
    return w if w is not None and w.proc.is_alive() else None


def stop_metric_writer(uri: str) -> None:
    """Stop the metric writer of ``uri`` once every run handed to it is recorded (no-op without one).

    A run the writer could not record is recorded here (see :class:`MetricWriter`): when this returns, no run
    handed over is left RUNNING.

    Raises
    ------
    StoreUnavailable
        When some run could not be recorded at all (:meth:`MetricWriter.close`).
    """
    w = _WRITERS.get(uri)
    if w is not None:
        try:
            w.close()  # before forgetting it: interrupted (Ctrl-C), a second call waits again
        finally:
            if w._closed:
                _WRITERS.pop(uri, None)


def _mlflow_engines() -> list:
    """The SQLAlchemy engines of MLflow's SQL stores in this process (tracking, model registry, jobs)."""
    import sys

    engines = []
    for name in ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
                 "mlflow.store.jobs.sqlalchemy_store"):
        store = getattr(sys.modules.get(name), "SqlAlchemyStore", None)
        engines += list(getattr(store, "_engine_map", {}).values())
    return engines


def _close_sqlite_connections() -> None:
    """Close the pooled connections of MLflow's engines in this process, before it forks a writer.

    SQLite's rule for ``fork()``: no database connection may be open across it
    (https://www.sqlite.org/howtocorrupt.html#_carrying_an_open_database_connection_across_a_fork_): the child
    would share the parent's record of its locks. With none open, the child opens its own; this process
    reconnects on its next call (about a millisecond).
    """
    for engine in _mlflow_engines():
        engine.dispose()


#: The writer gathers the run ends it is given within this many seconds of each other (a job hands its runs'
#: ends over one after another), up to :data:`ENDS_PER_BATCH`, and records them together (:func:`apply_ends`).
#: An end waits at most :data:`END_WAIT_SECONDS` (other runs' metrics streaming in without a pause).
END_GATHER_SECONDS = 0.03
ENDS_PER_BATCH = 64
END_WAIT_SECONDS = 0.5


def _writer_main(uri: str, requests, replies, parent_pid: int, models: bool = True) -> None:
    """The loop of :class:`MetricWriter`'s process: handle each request in order; stop on None or when orphaned.

    A run whose params or metrics failed is skipped from then on, and its error answered at its next sync or
    end (the parent records it); an end that fails is answered with its error. Run ends are recorded in
    batches (:func:`apply_ends`): an end waits until no request has come for :data:`END_GATHER_SECONDS`,
    :data:`ENDS_PER_BATCH` ends wait, the first has waited :data:`END_WAIT_SECONDS`, or the writer is asked to
    stop; the requests in between (other runs' params, metrics and syncs) are handled in order meanwhile. With ``models``, it first does what the first
    logged model would otherwise pay for at a run's end (:func:`nnexp.mlflow_model.warm_up`): the first job is
    still training then.
    """
    import queue
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    c = client(uri)
    if models:
        from .mlflow_model import warm_up

        warm_up()
    errors: dict[str, str] = {}
    ends: list[RunEnd] = []  # ends waiting to be recorded together, the first since first_end
    first_end = 0.0

    def record_ends() -> None:
        batch = ends[:]
        ends.clear()
        try:
            results = apply_ends(c, batch)
        except Exception as e:  # noqa: BLE001 - apply_ends answers per run; anything else ends them all here
            results = [f"{type(e).__name__}: {e}"[:500]] * len(batch)
        for ending, error in zip(batch, results):
            replies.put(("ended", ending.run_id, None if error is None else "end", error))

    while True:
        try:
            msg = requests.get(timeout=END_GATHER_SECONDS if ends else 1.0)
        except queue.Empty:
            if ends:
                record_ends()
            elif os.getppid() != parent_pid:  # the parent died (kill -9): nothing will ask for these runs again
                break
            continue
        if msg is None:
            record_ends()
            for run_id, error in errors.items():  # runs not ended whose points failed: the parent writes them
                replies.put(("failed", run_id, None, error))
            replies.put(("stopped", None, None, None))  # the last answer: the parent need not wait for more
            break
        kind, run_id, payload = msg
        if kind == "sync":
            replies.put(("sync", run_id, payload, errors.pop(run_id, None)))
            continue
        if run_id in errors:
            if kind == "end":
                replies.put(("ended", run_id, "metrics", errors.pop(run_id)))
            continue
        if kind == "end":
            if not ends:
                first_end = time.monotonic()
            ends.append(payload)
        else:
            try:
                if kind == "params":
                    log_params(c, run_id, payload)
                elif kind == "log":
                    log_metrics(c, run_id, payload)
            except Exception as e:  # answered at the run's next sync or end; the parent then records the run
                errors[run_id] = f"{type(e).__name__}: {e}"[:500]
        if ends and (len(ends) >= ENDS_PER_BATCH or time.monotonic() - first_end > END_WAIT_SECONDS):
            record_ends()
    # every request is handled: skip the interpreter's teardown (about 0.5 s with MLflow loaded; the parent waits)
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


def process_gone(tags: dict[str, str]) -> str | None:
    """Why a RUNNING run with these tags can no longer end: its process, on this host, is gone; else None.

    A run records the host, pid and process start time of the command that opened it (``nnexp.host``,
    ``nnexp.pid``, ``nnexp.pid_start``). None for a run of another host (its process cannot be looked up from
    here), of a live process (this one included), or without those tags. Used by :func:`mark_orphans_killed`,
    which ends such runs, and by the report (:mod:`nnexp.report.load`), which counts them as killed before any
    later command has marked them.
    """
    host = socket.gethostname()
    if tags.get(f"{TAG}host") != host:
        return None
    try:
        pid = int(tags.get(f"{TAG}pid", "0"))
    except ValueError:
        return None
    if pid and (pid == os.getpid() or _pid_alive(pid, tags.get(f"{TAG}pid_start", ""))):
        return None
    return (f"its process (pid {pid} on {host}) ended without ending the run (killed with SIGKILL, out of memory, "
            "or the machine stopped)")


def mark_orphans_killed(c, experiment_id: str) -> int:
    """End as KILLED every RUNNING run of this host whose process is gone, tagged ``nnexp.outcome=killed`` and
    ``nnexp.error`` (which process, and why it is thought gone; :func:`fail_run`).

    Such runs are left by a sweep or job killed with ``kill -9`` (or by a crash
    of the machine): the parent run of the sweep as well as its children. A run
    of another host, or of a process that is still alive, is left alone, except
    a child whose sweep has ended: a job on another machine (a Ray or SLURM
    worker) that died without closing its run.

    Returns the number of runs marked.
    """
    runs = retry(c.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000)
    n = 0
    killed = set()
    for r in runs:
        gone = process_gone(r.data.tags)
        if gone is None:
            continue
        fail_run(c, r.info.run_id, f"{gone}; found by a later command", "KILLED")
        killed.add(r.info.run_id)
        n += 1
    open_sweeps = {r.info.run_id for r in runs if r.info.run_id not in killed}
    for r in runs:
        parent = r.data.tags.get("mlflow.parentRunId")
        if r.info.run_id not in killed and parent and parent not in open_sweeps:
            fail_run(c, r.info.run_id, f"its sweep (parent run {parent}) ended while this run was still open "
                                       "(a worker on another machine died?); found by a later command", "KILLED")
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
