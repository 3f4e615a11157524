"""nnexp's user cache: prepared datasets and the migrated store template are reused exactly, and only when valid."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnexp import data as data_mod
from nnexp.cache import atomic_write, cache_dir
from nnexp.data import load

ARRAYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "mean", "scale")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NNEXP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def assert_same(a, b):
    for k in ARRAYS:
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), k
    assert (a.name, a.n_classes, a.task, a.feature_names) == (b.name, b.n_classes, b.task, b.feature_names)


@pytest.mark.parametrize("name, params", [("iris", {}), ("moons", {"n_samples": 120, "noise": 0.3}), ("xor", {})])
def test_cached_dataset_is_bit_identical_and_reused(cache, monkeypatch, name, params):
    fresh = load(name, split_seed=2, **params)
    first = load(name, split_seed=2, cache=True, **params)  # a miss: prepared, then stored
    assert len(list((cache / "datasets").glob(f"{name}-*.npz"))) == 1
    monkeypatch.setattr(data_mod, "_prepare", lambda *a, **k: pytest.fail("prepared again despite a cache entry"))
    second = load(name, split_seed=2, cache=True, **params)
    assert_same(fresh, first)
    assert_same(fresh, second)


def test_other_settings_or_versions_get_their_own_entry(cache, monkeypatch):
    base = data_mod.cache_path("digits", val_fraction=0.2, test_fraction=0.2, split_seed=0, standardize=True)
    assert base.parent == cache / "datasets"
    assert data_mod.cache_path("digits", val_fraction=0.2, test_fraction=0.2, split_seed=0, standardize=True) == base
    assert data_mod.cache_path("digits", val_fraction=0.2, test_fraction=0.2, split_seed=1, standardize=True) != base
    assert data_mod.cache_path("digits", val_fraction=0.2, test_fraction=0.2, split_seed=0, standardize=False) != base
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "0.0" if d == "scikit-learn" else real(d))
    assert data_mod.cache_path("digits", val_fraction=0.2, test_fraction=0.2, split_seed=0, standardize=True) != base
    monkeypatch.setattr(importlib.metadata, "version", real)
    monkeypatch.setattr(np, "__version__", "0.0")
    assert data_mod.cache_path("digits", val_fraction=0.2, test_fraction=0.2, split_seed=0, standardize=True) != base


def test_unreadable_entry_is_made_again(cache):
    fresh = load("wine", split_seed=0)
    load("wine", split_seed=0, cache=True)
    (entry,) = (cache / "datasets").glob("wine-*.npz")
    entry.write_bytes(b"not a zip file")
    assert_same(fresh, load("wine", split_seed=0, cache=True))
    assert_same(fresh, data_mod._read_cached(entry))  # replaced by a valid entry


def test_csv_is_never_cached(cache, tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    load("csv", path=str(f), target="label", cache=True)
    assert not (cache / "datasets").exists()


def test_warm_cache_spares_the_scikit_learn_import(cache):
    load("digits", split_seed=0, cache=True)
    code = ("import sys; from nnexp.data import load; d = load('digits', split_seed=0, cache=True); "
            "print(len(d.y_train), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(len(load("digits", split_seed=0).y_train)), "False"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "f.bin"

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert list(target.parent.iterdir()) == []
    atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert target.read_bytes() == b"whole" and [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_new_store_is_a_copy_of_the_migrated_template(cache, tmp_path, monkeypatch):
    from nnexp import tracking

    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    c, exp = tracking.prepare_store(f"sqlite:///{a / 'mlflow.db'}", "acts")
    (template,) = (cache_dir("stores")).glob("mlflow-*.db")
    made = template.stat().st_mtime_ns
    con = sqlite3.connect(template)
    try:
        assert con.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
        assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        con.close()
    # the store works as one MLflow migrated itself: its Default experiment, the named one, runs
    names = sorted(e.name for e in c.search_experiments())
    assert names == ["Default", "acts"]
    assert c.get_experiment("0").artifact_location == str(tmp_path / "mlruns" / "0")
    run = tracking.start_run(c, exp, run_name="r")
    tracking.end_run(c, run)
    assert c.get_run(run).info.status == "FINISHED"
    # a second new store reuses the template as it is
    c2, _ = tracking.prepare_store(f"sqlite:///{b / 'mlflow.db'}", "acts")
    assert template.stat().st_mtime_ns == made
    assert [r.info.run_id for r in c2.search_runs([_])] == []
    # another MLflow version gets its own template
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "0.0.0" if d == "mlflow" else real(d))
    assert tracking.store_template_path() == template.with_name("mlflow-0.0.0.db")


def test_existing_store_is_left_alone(cache, tmp_path):
    from nnexp import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c, exp = tracking.prepare_store(uri, "acts")
    run = tracking.start_run(c, exp, run_name="kept")
    c2, exp2 = tracking.prepare_store(uri, "acts")
    assert exp2 == exp and [r.info.run_id for r in c2.search_runs([exp])] == [run]


def test_a_deleted_store_starts_empty_and_a_damaged_template_is_made_again(cache, tmp_path):
    """``rm mlflow.db`` leaves SQLite's -wal/-shm files: a new store must not replay them (the deleted runs came
    back, or the file was "malformed"). A damaged template in the cache is a cache miss, not a broken store."""
    from nnexp import tracking

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    c, exp = tracking.prepare_store(uri, "acts")
    tracking.start_run(c, exp, run_name="deleted with its file")
    tracking.retry(c.search_runs, [exp])  # the store's connections stay open, as in a job: the WAL holds the run
    wal = db.with_name("mlflow.db-wal")
    assert wal.exists() and wal.stat().st_size > 0
    saved = wal.read_bytes()
    db.unlink()
    wal.write_bytes(saved)  # what a crash or an open connection leaves beside a removed file
    # a new command (this process still holds a connection to the removed file)
    code = ("from nnexp import tracking; c, e = tracking.prepare_store(%r, 'acts'); "
            "print([r.info.run_name for r in c.search_runs([e])])" % uri)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"

    (template,) = cache_dir("stores").glob("mlflow-*.db")
    template.write_bytes(b"garbage")
    other = tmp_path / "other.db"
    c3, exp3 = tracking.prepare_store(f"sqlite:///{other}", "acts")
    assert template.read_bytes()[:16] == b"SQLite format 3\x00"
    assert [e.name for e in c3.search_experiments()] and c3.search_runs([exp3]) == []


def test_a_store_path_that_is_not_a_database_is_one_line(cache, tmp_path):
    from nnexp import tracking
    from nnexp.config import ConfigError

    (tmp_path / "mlflow.db").mkdir()
    with pytest.raises(ConfigError, match="is not an SQLite database"):
        tracking.check_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "notes.db").write_text("not a database")
    with pytest.raises(ConfigError, match="is not an SQLite database"):
        tracking.check_store(f"sqlite:///{tmp_path / 'notes.db'}")
    tracking.check_store(f"sqlite:///{tmp_path / 'new.db'}")  # a file to be made is fine


def test_making_the_store_template_does_not_show_mlflows_migration_lines(cache, capfd):
    """The first command on a machine printed MLflow's "Creating initial MLflow database tables..." and "Updating
    database tables" INFO lines: the template is nnexp's cache, not a store the user asked for (new-user test)."""
    import logging

    from nnexp import tracking

    before = logging.getLogger("mlflow.store.db.utils").level
    path = tracking.store_template()
    assert tracking._is_sqlite_file(path)
    err = capfd.readouterr().err
    assert "database tables" not in err
    assert logging.getLogger("mlflow.store.db.utils").level == before
