"""Shared fixtures: no Hydra global state or open figure leaks between tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_hydra_and_figures():
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close("all")


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """nnexp's user cache (prepared datasets, store template) in a folder of this session, for the commands it starts too."""
    before = os.environ.get("NNEXP_CACHE_DIR")
    os.environ["NNEXP_CACHE_DIR"] = str(tmp_path_factory.mktemp("nnexp-cache"))
    yield
    if before is None:
        os.environ.pop("NNEXP_CACHE_DIR", None)
    else:
        os.environ["NNEXP_CACHE_DIR"] = before


def run_cli(args: list[str], cwd: Path, *, module: str = "nnexp", timeout: float = 300, env: dict | None = None):
    """Run ``python -m <module> <args>`` in ``cwd`` with a clean MLflow environment; return the CompletedProcess."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=e)


@pytest.fixture
def cli():
    return run_cli


def migrated_store(tmp_path_factory, dest: Path) -> str:
    """Copy an empty, migrated MLflow SQLite store into ``dest``; return its URI.

    Creating a store runs MLflow's schema migration (seconds); tests that do not test that step copy a template.
    """
    from mlflow import MlflowClient

    template = tmp_path_factory.getbasetemp() / "template-store" / "mlflow.db"
    if not template.exists():
        template.parent.mkdir(exist_ok=True)
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, dest / "mlflow.db")
    return f"sqlite:///{dest / 'mlflow.db'}"


@pytest.fixture
def compose():
    """Hydra's compose API on the packaged configs: ``compose(overrides) -> DictConfig``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from nnexp.config import register

    register()
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        yield lambda overrides: hydra_compose(config_name="config", overrides=overrides)


@contextmanager
def failing_once(engine, statement_prefix: str):
    """Make the first SQL statement on ``engine`` that starts with ``statement_prefix`` raise; yield the list of
    statements failed so (one, once it happened)."""
    from sqlalchemy import event

    failed: list[str] = []

    def fail_once(conn, cursor, statement, parameters, context, executemany):
        if not failed and statement.startswith(statement_prefix):
            failed.append(statement)
            raise RuntimeError("injected failure")

    event.listen(engine, "before_cursor_execute", fail_once)
    try:
        yield failed
    finally:
        event.remove(engine, "before_cursor_execute", fail_once)


def locked_once(monkeypatch, module, name: str) -> list[int]:
    """Make ``module.name`` raise SQLite's "database is locked" on its first call, then behave; return the list
    of its calls (one item per call)."""
    import sqlite3

    real, tries = getattr(module, name), []

    def locked(*a):
        tries.append(1)
        if len(tries) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(*a)

    monkeypatch.setattr(module, name, locked)
    return tries


def two_fresh_stores(tmp_path_factory, tmp_path) -> list[tuple]:
    """``[(client, SQLite path, experiment id of "m"), ...]`` of two fresh, migrated stores under ``tmp_path``."""
    from nnexp import tracking

    out = []
    for name in ("a", "b"):
        uri = migrated_store(tmp_path_factory, tmp_path / name)
        c, exp = tracking.prepare_store(uri, "m")
        out.append((c, tracking.sqlite_path(uri), exp))
    return out
