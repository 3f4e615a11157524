"""nnexp from Python: the command line's power for notebooks and scripts.

Three entry points, also importable from the package itself (``nnexp.load_runs``,
``nnexp.load_model``, ``nnexp.sweep``)::

    import nnexp

    runs = nnexp.sweep(["dataset=moons", "activation=relu,tanh", "epochs=50"])   # a sweep, like python -m nnexp -m ...
    runs.groupby("activation")["val_loss"].mean()

    runs = nnexp.load_runs(experiment="activations", sweep="latest")             # the runs of a sweep
    net = nnexp.load_model(runs.run_id.iloc[0])                                   # a run's trained network
    net.predict_proba(X)                                                         # (n_samples, n_classes)

Every function reads and writes the same store as the command line run from the
current folder (``./mlflow.db``, or ``$MLFLOW_TRACKING_URI``, or ``uri=``).
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

__all__ = ["load_runs", "load_model", "sweep"]


def _uri(uri: str | None) -> str:
    from .tracking import resolve_uri

    return resolve_uri(uri, Path.cwd())


def load_runs(experiment: str = "activations", sweep: str | None = None, filter: str = "", uri: str | None = None,
              *, duplicates: bool = False):
    """The runs of an experiment as a tidy DataFrame, one row per run: the table the report uses.

    Parameters
    ----------
    experiment : str, default "activations"
        The MLflow experiment (``tracking.experiment``).
    sweep : str, optional
        A sweep's name (``2026-11-30_11-27-22-123456``), its parent run id, or ``"latest"``: only the runs of
        that sweep (and the earlier runs it reused). Default: every run of the experiment.
    filter : str, optional
        An MLflow search filter, e.g. ``"params.`optimizer.lr` = '0.1'"`` or ``"tags.activation = 'relu'"``.
    uri : str, optional
        The tracking URI; default as the command line: ``$MLFLOW_TRACKING_URI`` or ``./mlflow.db``.
    duplicates : bool, default False
        Keep runs that repeat another run's configuration and seed (the report counts them once).

    Returns
    -------
    DataFrame
        One row per run: ``run_id``, ``run_name``, ``status``, ``outcome`` (finished, diverged, failed,
        killed), the configuration (one column per key: ``activation``, ``optimizer.lr``, ``seed``, ...)
        and the final metrics (``val_loss``, ``val_accuracy``, ``test_accuracy``, ...).
        See :func:`nnexp.report.load.load_runs`.

    Raises
    ------
    nnexp.report.load.ReportError
        If the store, experiment or sweep does not exist, or the filter is invalid or matches nothing.
    """
    from .report.__main__ import _resolve_sweep
    from .report.load import ReportError, drop_duplicates
    from .report.load import load_runs as _load_runs
    from .tracking import sqlite_path

    uri = _uri(uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise ReportError(f"no MLflow store at {db}; run a sweep in {db.parent} first or pass uri=")
    parent = _resolve_sweep(uri, experiment, sweep)[0] if sweep else None
    runs = _load_runs(uri, experiment, parent_id=parent, filter_string=filter)
    if not duplicates and len(runs):
        runs = drop_duplicates(runs)[0]
    return runs.reset_index(drop=True)


def load_model(run: str | os.PathLike, uri: str | None = None):
    """A run's trained network, from its run id or from a folder holding its ``weights.npz`` and ``config.yaml``.

    Parameters
    ----------
    run : str or path
        A run id (looked up in the store at ``uri``), or a folder: a run's artifacts folder
        (``mlartifacts/<experiment id>/<run id>/artifacts``) or a job's output folder.
    uri : str, optional
        The tracking URI for a run id; default as the command line.

    Returns
    -------
    nnexp.network.Network
        ``predict_proba(X)`` -> ndarray of shape (n_samples, n_classes); ``predict(X)`` -> class indices of
        shape (n_samples,); ``X`` of shape (n_samples, n_features), raw (unstandardised) features.

    Raises
    ------
    ValueError
        If the run or folder does not exist or holds no weights (a run with ``tracking.save_weights=false``),
        or a folder holds the weights of several seeds (``weights_s<seed>.npz``: pass the file's folder and
        one seed's file is ambiguous; give the run id instead).
    """
    from .network import Network

    folder = Path(run)
    if folder.is_dir():
        return Network.from_files(_one_weights_file(folder), folder / "config.yaml")
    if not isinstance(run, str) or os.sep in run:
        raise ValueError(f"{run} is neither a folder nor a run id")
    return Network.from_files(*_download_run_files(run, _uri(uri)))


def _one_weights_file(folder: Path) -> Path:
    found = sorted(folder.glob("weights*.npz"))
    if not found:
        raise ValueError(f"{folder} holds no weights*.npz; a run logs it unless tracking.save_weights=false")
    if len(found) > 1:
        raise ValueError(f"{folder} holds the weights of several seeds ({', '.join(f.name for f in found)}); "
                         "load one run by its run id")
    return found[0]


def _download_run_files(run_id: str, uri: str) -> tuple[Path, Path]:
    """The run's weights file and config.yaml, read in place from a local artifact store, else downloaded."""
    import tempfile
    from urllib.parse import unquote, urlparse

    from .tracking import client, retry

    c = client(uri)
    try:
        r = retry(c.get_run, run_id)
    except Exception as e:  # MLflow's RESOURCE_DOES_NOT_EXIST
        raise ValueError(f"run {run_id!r} not found in {uri}: {str(e).splitlines()[0][:200]}") from None
    names = [f.path for f in retry(c.list_artifacts, run_id)]
    weights = [n for n in names if n.startswith("weights") and n.endswith(".npz")]
    if not weights or "config.yaml" not in names:
        raise ValueError(f"run {run_id} has no weights*.npz and config.yaml artifacts (artifacts: "
                         f"{', '.join(names) or 'none'}); it was run with tracking.save_weights=false, or it failed")
    art = r.info.artifact_uri
    if art.startswith("file://"):
        base = Path(unquote(urlparse(art).path))
        return base / weights[0], base / "config.yaml"
    import mlflow.artifacts

    dst = tempfile.mkdtemp(prefix="nnexp-run-")
    got = [Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=n, tracking_uri=uri, dst_path=dst))
           for n in (weights[0], "config.yaml")]
    return got[0], got[1]


def sweep(overrides: list[str], *, experiment: str | None = None, uri: str | None = None, duplicates: bool = False):
    """Run a sweep, as ``python -m nnexp -m <overrides>`` does, in this process; return its runs.

    The sweep runs in the current folder (its store, ``multirun/`` and ``reports/`` go
    there, as on the command line) under Hydra's own launcher machinery: the parent
    run, resume, the printed summary and the report are the command line's. It can be
    called again in the same process (a notebook kernel): Hydra's global state is
    cleared before and after, and the objects the launcher took out of the garbage
    collector's view for the jobs (``gc.freeze()``) are handed back to it after
    (unless this process had frozen objects itself before).

    Parameters
    ----------
    overrides : list of str
        Hydra overrides, e.g. ``["dataset=moons", "activation=relu,tanh", "epochs=50", "seed=0,1"]``.
    experiment, uri : str, optional
        Shorthands for the overrides ``tracking.experiment=...`` and ``tracking.uri=...``.
    duplicates : bool, default False
        See :func:`load_runs`.

    Returns
    -------
    DataFrame
        The sweep's runs, one row per run, as :func:`load_runs` with ``sweep=`` gives them.

    Raises
    ------
    nnexp.config.ConfigError
        For an invalid override, before anything runs (the command line's one-line message).
    TypeError
        If ``overrides`` is a string (give a list: ``["activation=relu,tanh"]``).
    """
    from hydra.core.global_hydra import GlobalHydra

    from .__main__ import hydra_main
    from .callbacks import LAST_SWEEP
    from .preflight import preflight

    if isinstance(overrides, str):  # the example: the string as a shell would split it, one override per item
        import shlex

        try:
            example = shlex.split(overrides)
        except ValueError:  # unbalanced quotes
            example = overrides.split()
        raise TypeError(f"overrides must be a list of strings, one override each, e.g. {example!r}, not a string")
    argv = ["-m", *map(str, overrides)]
    if experiment:
        argv.append(f"tracking.experiment={experiment}")
    if uri:
        argv.append(f"tracking.uri={uri}")
    preflight(argv)  # raises ConfigError with the command line's one-line message
    LAST_SWEEP.clear()
    saved_argv, saved_full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    frozen = gc.get_freeze_count()
    sys.argv = ["nnexp", *argv]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # errors reach the caller, not Hydra's trimmed report and sys.exit
    try:
        GlobalHydra.instance().clear()
        hydra_main()
    finally:
        GlobalHydra.instance().clear()
        if not frozen:  # the launcher froze what lived before the jobs (nnexp.launcher): the collector gets it back
            gc.unfreeze()
        sys.argv = saved_argv
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error
    from .report.load import drop_duplicates
    from .report.load import load_runs as _load_runs

    runs = _load_runs(LAST_SWEEP["uri"], LAST_SWEEP["experiment"], parent_id=LAST_SWEEP["parent_id"])
    if not duplicates and len(runs):
        runs = drop_duplicates(runs)[0]
    return runs.reset_index(drop=True)
