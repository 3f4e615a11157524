"""A local team tracking server for trying team mode: PostgreSQL + ``mlflow server`` on loopback.

``python -m nnexp.team_server start`` initialises a PostgreSQL cluster in a
project-local folder (``.team/pg``), creates the ``mlflow`` database and runs
an MLflow tracking server on it, with artifacts proxied by the server into
``.team/artifacts``. Both listen on 127.0.0.1 only. Then::

    python -m nnexp -m +tracking=team activation=sigmoid,tanh,relu

sends every job of the sweep to ``http://127.0.0.1:5000`` instead of the
launch directory's SQLite file. ``stop`` stops both, ``status`` prints the
URI and what runs. A real team points ``tracking.uri`` (or
``$NNEXP_TRACKING_URI`` with ``+tracking=team``) at its shared server instead;
this module only makes one to try things with.

Layout of ``<root>/.team/`` (``root`` is the current directory unless ``--root``)::

    pg/            PostgreSQL data directory (owned by the ``postgres`` user when run as root)
    pgpass         libpq password file of the database role (mode 0600)
    artifacts/     artifact store behind the server's ``mlflow-artifacts:/`` proxy
    state.json     ports and process ids
    pg.log, mlflow.log

The database role ``nnexp`` authenticates with a random password
(scram-sha-256) kept in ``pgpass``; the password never appears on a command
line. PostgreSQL's ``initdb``/``pg_ctl`` are taken from ``$PATH`` or
``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package); the
server needs ``psycopg2`` (the ``team`` extra).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TeamServer", "TeamServerError", "find_pg_bin", "free_port", "local_optuna_storage", "main"]

DB_NAME = "mlflow"
#: The database of Optuna's studies (a search, :mod:`nnexp.search`): its own, since Optuna and MLflow both keep an
#: Alembic version table.
OPTUNA_DB = "optuna"
DB_USER = "nnexp"
HOST = "127.0.0.1"


class TeamServerError(RuntimeError):
    """PostgreSQL or the MLflow server could not be set up, started or stopped."""


def local_optuna_storage(tracking_uri: str, root: str | os.PathLike = ".") -> str | None:
    """The Optuna database of the team server started from ``root`` (``<root>/.team``) when ``tracking_uri`` is
    that server (``http://127.0.0.1:<its port>``), else None. Reads the saved state only: starts nothing."""
    from urllib.parse import urlparse

    state = Path(root) / ".team" / "state.json"
    if not state.exists():
        return None
    u = urlparse(tracking_uri)
    if u.scheme not in ("http", "https") or u.hostname not in (HOST, "localhost"):
        return None
    try:
        saved = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("port") != u.port or not saved.get("pg_port"):
        return None
    return f"postgresql+psycopg2://{DB_USER}@{HOST}:{saved['pg_port']}/{OPTUNA_DB}"


def find_pg_bin() -> Path | None:
    """The folder holding PostgreSQL's ``initdb`` and ``pg_ctl``: the newest Debian one, else from ``$PATH``."""
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                    key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if debian:
        return Path(debian[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process is dead too
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


@dataclass
class TeamServer:
    """PostgreSQL + MLflow tracking server rooted at ``<root>/.team``.

    Parameters
    ----------
    root : path
        Project folder; state lives in ``root/.team``.
    port : int
        Port of the MLflow server on 127.0.0.1 (0: a free one, chosen at the first start and kept).
    pg_port : int
        Port of PostgreSQL on 127.0.0.1 (0: a free one, chosen at the first start and kept).
    workers : int
        MLflow server worker processes.
    """

    root: Path
    port: int = 5000
    pg_port: int = 0
    workers: int = 2
    mlflow_pid: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        saved = self._load()
        if saved:
            self.pg_port = self.pg_port or saved.get("pg_port", 0)
            self.port = self.port or saved.get("port", 0)
            self.mlflow_pid = saved.get("mlflow_pid")
        self.pg_port = self.pg_port or free_port()
        self.port = self.port or free_port()

    # paths and URIs --------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.root / ".team"

    @property
    def pg_dir(self) -> Path:
        return self.dir / "pg"

    @property
    def uri(self) -> str:
        """The tracking URI to give nnexp (``tracking.uri``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def backend_uri(self) -> str:
        """SQLAlchemy URI of the database (no password: libpq reads it from ``pgpass``).

        The driver is named: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, not psycopg2.
        """
        return f"postgresql+psycopg2://{DB_USER}@{HOST}:{self.pg_port}/{DB_NAME}"

    @property
    def optuna_uri(self) -> str:
        """SQLAlchemy URI of the Optuna database in the same PostgreSQL (a search's studies, :mod:`nnexp.search`)."""
        return f"postgresql+psycopg2://{DB_USER}@{HOST}:{self.pg_port}/{OPTUNA_DB}"

    def _state_file(self) -> Path:
        return self.dir / "state.json"

    def _load(self) -> dict:
        try:
            return json.loads(self._state_file().read_text())
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._state_file().write_text(json.dumps(
            {"port": self.port, "pg_port": self.pg_port, "mlflow_pid": self.mlflow_pid}, indent=1))

    # PostgreSQL ------------------------------------------------------------------------------------
    def _pg(self, tool: str, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """Run a PostgreSQL tool, as the ``postgres`` user when this process is root (initdb refuses root)."""
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise TeamServerError("PostgreSQL's initdb was not found (install the Debian package 'postgresql')")
        env = {**os.environ, "PGPASSFILE": str(self.dir / "pgpass"), "LC_ALL": "C.UTF-8"}
        user = {}
        if os.geteuid() == 0:
            user = {"user": "postgres", "group": "postgres", "extra_groups": []}
            env["PGPASSFILE"] = str(self.dir / "pgpass.postgres")
        proc = subprocess.run([str(bin_dir / tool), *args], capture_output=True, text=True, env=env,
                              cwd="/", **user, **kw)
        if check and proc.returncode != 0:
            raise TeamServerError(f"{tool} {' '.join(args)} failed ({proc.returncode}): "
                                  f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
        return proc

    def _chown_postgres(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def _init_pg(self) -> None:
        if (self.pg_dir / "PG_VERSION").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        pwfile = self.dir / "pwfile.tmp"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        self._chown_postgres(pwfile)
        for name, owner_is_postgres in (("pgpass", False), ("pgpass.postgres", True)):
            f = self.dir / name
            f.write_text(f"{HOST}:*:*:{DB_USER}:{password}\n")
            f.chmod(0o600)
            if owner_is_postgres:
                self._chown_postgres(f)
        if os.geteuid() != 0:
            (self.dir / "pgpass.postgres").unlink()
        self.pg_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown_postgres(self.pg_dir)
        if os.geteuid() == 0 and subprocess.run(["test", "-w", str(self.pg_dir)], user="postgres").returncode != 0:
            raise TeamServerError(f"PostgreSQL runs as the user 'postgres', which cannot reach {self.pg_dir} "
                                  f"(a parent folder is not searchable by others); pass --root elsewhere")
        try:
            self._pg("initdb", "-D", str(self.pg_dir), "-U", DB_USER, f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                     "--auth-local=reject", "-E", "UTF8", "--no-instructions")
        finally:
            pwfile.unlink(missing_ok=True)

    def pg_running(self) -> bool:
        return self._pg("pg_ctl", "status", "-D", str(self.pg_dir), check=False).returncode == 0

    def start_pg(self) -> None:
        """Initialise the cluster if needed, start it on 127.0.0.1:``pg_port`` and create the database."""
        self._init_pg()
        if not self.pg_running():
            log = self.dir / "pg.log"
            log.touch()
            self._chown_postgres(log)
            opts = f"-c listen_addresses={HOST} -p {self.pg_port} -c unix_socket_directories='' -c fsync=on"
            self._pg("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.pg_dir), "-l", str(log), "-o", opts)
        for db in (DB_NAME, OPTUNA_DB):
            probe = self._pg("psql", "-h", HOST, "-p", str(self.pg_port), "-U", DB_USER, "-d", "postgres", "-tAc",
                             f"SELECT 1 FROM pg_database WHERE datname = '{db}'")
            if probe.stdout.strip() != "1":
                self._pg("createdb", "-h", HOST, "-p", str(self.pg_port), "-U", DB_USER, db)
        self._save()

    def stop_pg(self) -> None:
        if (self.pg_dir / "PG_VERSION").exists() and self.pg_running():
            self._pg("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.pg_dir))

    # MLflow server ---------------------------------------------------------------------------------
    def mlflow_running(self) -> bool:
        return _pid_alive(self.mlflow_pid)

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(self.uri + "/health", timeout=timeout) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start_mlflow(self, wait: float = 120.0) -> None:
        """Start ``mlflow server`` on the database (PostgreSQL must run) and wait until it answers.

        Raises
        ------
        TeamServerError
            If the port is taken by something else, or the server does not answer within ``wait`` seconds.
        """
        if self.mlflow_running() and self.healthy():
            return
        if _port_open(self.port):
            raise TeamServerError(f"port {self.port} on {HOST} is already in use; pass --port")
        artifacts = self.dir / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["PGPASSFILE"] = str(self.dir / "pgpass")
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
               "--artifacts-destination", str(artifacts), "--host", HOST, "--port", str(self.port),
               "--workers", str(self.workers)]
        with open(self.dir / "mlflow.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=self.dir, start_new_session=True)
        self.mlflow_pid = proc.pid
        self._save()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self.dir / "mlflow.log").read_text(errors="replace")[-2000:]
                raise TeamServerError(f"mlflow server exited with code {proc.returncode}:\n{tail}")
            if self.healthy():
                return
            time.sleep(0.3)
        self.stop_mlflow()
        raise TeamServerError(f"mlflow server did not answer at {self.uri} within {wait:.0f} s; see {self.dir / 'mlflow.log'}")

    def stop_mlflow(self, timeout: float = 30.0) -> None:
        """Stop the MLflow server started by :meth:`start_mlflow` (its whole process group), if it runs."""
        pid = self.mlflow_pid
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
        while _port_open(self.port) and pid:  # workers still closing their sockets
            time.sleep(0.1)
            if not _pid_alive(pid):
                break
        self.mlflow_pid = None
        self._save()

    # both --------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Start PostgreSQL and the MLflow server; return the tracking URI."""
        self.start_pg()
        self.start_mlflow()
        return self.uri

    def stop(self) -> None:
        self.stop_mlflow()
        self.stop_pg()

    def status(self) -> dict:
        pg = (self.pg_dir / "PG_VERSION").exists() and self.pg_running()
        return {"tracking_uri": self.uri, "mlflow": "running" if self.mlflow_running() and self.healthy() else "stopped",
                "postgresql": f"running on {HOST}:{self.pg_port}" if pg else "stopped",
                "backend_store_uri": self.backend_uri, "artifacts": str(self.dir / "artifacts"), "folder": str(self.dir)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nnexp.team_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--root", default=".", help="project folder; state goes to <root>/.team (default: .)")
    p.add_argument("--port", type=int, help="MLflow server port on 127.0.0.1 (default: the one kept from the last start, "
                   "else 5000; 0: a free one)")
    p.add_argument("--pg-port", type=int, default=0, help="PostgreSQL port on 127.0.0.1 (default: a free one, kept)")
    p.add_argument("--workers", type=int, default=2, help="MLflow server worker processes (default: 2)")
    args = p.parse_args(argv)
    root = Path(args.root)
    kept = (root / ".team" / "state.json").exists()
    port = args.port if args.port is not None else (0 if kept else 5000)
    server = TeamServer(root, port=port, pg_port=args.pg_port, workers=args.workers)
    try:
        if args.action == "start":
            uri = server.start()
            print(f"tracking server: {uri}  (PostgreSQL {HOST}:{server.pg_port}, artifacts {server.dir / 'artifacts'})")
            print(f"use it:          python -m nnexp -m +tracking=team ...   or   tracking.uri={uri}")
            print(f"searches:        Optuna studies in {server.optuna_uri} (found from this folder by itself)")
        elif args.action == "stop":
            server.stop()
            print("stopped")
        else:
            print(json.dumps(server.status(), indent=1))
    except TeamServerError as e:
        print(f"nnexp.team_server: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
