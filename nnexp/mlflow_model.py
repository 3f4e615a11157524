"""Each run's network as an MLflow model, and its data as MLflow dataset inputs.

Model
-----
:func:`log_model` logs a run's network as an MLflow *pyfunc* model named ``model``
(a NumPy-only model: no deep-learning framework), so that::

    import mlflow
    net = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    proba = net.predict(X)        # X: ndarray of shape (n_samples, n_features), raw (unstandardised) features
                                  # proba: ndarray of shape (n_samples, n_classes), rows sum to 1

and ``mlflow models serve -m runs:/<run_id>/model --env-manager local`` answers
``POST /invocations`` with ``{"inputs": [[...], ...]}``. The model holds the run's
``weights.npz`` and ``config.yaml`` as artifacts, and :class:`nnexp.pyfunc.NNExpPyfunc` rebuilds
:class:`nnexp.network.Network` from them, so ``predict`` reproduces the run's logged
``test_accuracy`` exactly on its test split. Loading needs nnexp installed (the
network's forward pass is nnexp's own).

It carries a tensor signature (input ``float64 (-1, n_features)``, output ``float64
(-1, n_classes)``) and an input example (five raw test rows). It is logged the way
MLflow 3's ``Model.log`` does (a LoggedModel entity, its artifacts, the run's model
output: the UI's Models column), without the steps that cost seconds per run and
add nothing here: inferring pip requirements in a subprocess (they are given),
copying every metric's history onto the model, and loading the model again to
validate the input example; and ``mlflow.pyfunc.save_model`` runs once per process
and dataset (:func:`_model_dir`). The model's code is :mod:`nnexp.pyfunc` (MLflow's
"models from code": nothing is pickled).

Registry
--------
With ``tracking.register_model=<name>``, :func:`register_best` registers the model of
a sweep's best run (lowest final ``val_loss`` among the runs that finished) as a new
version of the registered model ``<name>`` and points its alias ``best`` at it:
``mlflow.pyfunc.load_model("models:/<name>@best")``.

Data
----
:func:`log_datasets` records the training, validation and test parts as MLflow
dataset inputs (``mlflow.data.from_numpy``), named ``<dataset>-training`` /
``-validation`` / ``-test`` (a CSV file: its name without ``.csv``), with the context tag ``mlflow.data.context``
(``training``, ``validation``, ``test``), so that the UI's Dataset column and
filters work. For file data the digest is the file's content digest
(:func:`nnexp.identity.file_digest`, as in the run identity) and the source is the
file (``file://`` URI); otherwise MLflow's digest of the arrays, and a code source
naming the loader (``nnexp.data.load('digits')``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["log_model", "warm_up", "record", "model_spec", "register_best", "log_datasets", "dataset_inputs", "log_inputs",
           "MODEL_NAME", "CONTEXTS"]

#: Name of the logged model (``runs:/<run_id>/model``).
MODEL_NAME = "model"

#: Dataset part -> MLflow's ``mlflow.data.context`` tag.
CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"mlflow=={version('mlflow')}", f"numpy=={np.__version__}", f"omegaconf=={version('omegaconf')}",
            f"scipy=={version('scipy')}"]


@contextmanager
def _quiet(*names: str):
    """Raise the level of MLflow's loggers ``names`` to WARNING, and hide its artifact progress bars, for a block."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def warm_up() -> None:
    """Do now the one-off part of the first :func:`log_model` in this process: its imports and MLflow's check of
    the model's requirements against the installed packages.

    ``mlflow.pyfunc.save_model`` checks them (``warn_dependency_requirement_mismatches``), and the first check
    reads the metadata of every installed distribution: about 0.25 s on the benchmark machine, 0.035 s for each
    later ``save_model``. The metric writer calls this while it waits for its first request
    (:func:`nnexp.tracking._writer_main`). A mismatch is reported by ``save_model`` itself, once, not here; an
    MLflow without this function is skipped (the first model then pays as before).
    """
    import mlflow.pyfunc  # noqa: F401 - and what log_model imports
    from mlflow.models import Model, ModelSignature  # noqa: F401

    try:
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches
    except ImportError:
        return
    logger = logging.getLogger("mlflow.utils.requirements_utils")
    disabled, logger.disabled = logger.disabled, True
    try:
        warn_dependency_requirement_mismatches(_requirements())
    except Exception as e:  # noqa: BLE001 - an optimisation: the first save_model does the check anyway
        log.debug("model warm-up skipped: %s", e)
    finally:
        logger.disabled = disabled


#: Model folders made by ``mlflow.pyfunc.save_model`` in this process, by input example and signature, with their
#: MLmodel as saved: each later run with the same data writes its own files into the folder (see :func:`_model_dir`).
_TEMPLATES: dict[tuple, tuple[Path, object, int]] = {}
#: One run at a time fills and logs a template's folder (the writer process is one thread; a notebook may not be).
_TEMPLATE_LOCK = threading.Lock()


def _model_dir(weights: Path, config: Path, example: np.ndarray, signature, **fields) -> Path:
    """The pyfunc model folder of ``weights`` / ``config``, with ``fields`` set in its MLmodel; valid until the next
    call with the same data (hold :data:`_TEMPLATE_LOCK` until it is logged).

    ``mlflow.pyfunc.save_model`` spends about 0.2 s per call (it checks the installed
    packages against the requirements, writes the environment files, validates the input
    example), and everything it writes but the two artifacts and the MLmodel's creation time
    is the same for every run of one dataset. So it runs once per process and dataset (keyed
    by the input example and the signature) into a folder kept until the process exits, and later
    runs write their artifacts over that folder's and its MLmodel from the one saved first, with their
    own ``utc_time_created``, ``model_size_bytes``, artifact URIs and ids: about 4 ms instead of
    the 30 ms of copying the folder, parsing its MLmodel again and removing the copy.
    """
    import atexit
    import copy
    import datetime
    import hashlib

    import mlflow.pyfunc
    from mlflow.models import Model

    from . import pyfunc

    key = (hashlib.sha256(example.tobytes()).hexdigest(), example.shape, signature.to_dict()["outputs"])
    saved = _TEMPLATES.get(key)
    if saved is None or not saved[0].is_dir():
        path = Path(tempfile.mkdtemp(prefix="nnexp-model-")) / MODEL_NAME
        atexit.register(shutil.rmtree, path.parent, ignore_errors=True)
        with _quiet("mlflow.pyfunc", "mlflow.models"):  # its INFO lines, per run, say nothing a user acts on
            mlflow.pyfunc.save_model(path, python_model=pyfunc.__file__, mlflow_model=Model(),
                                     artifacts={"weights": str(weights), "config": str(config)},
                                     signature=signature, input_example=example, pip_requirements=_requirements())
        saved = _TEMPLATES[key] = (path, Model.load(path / "MLmodel"), (path / "MLmodel").stat().st_size)
    path, meta, mlmodel_bytes = saved[0], copy.deepcopy(saved[1]), saved[2]
    for name, source in (("weights", weights), ("config", config)):
        entry = meta.flavors["python_function"]["artifacts"][name]
        shutil.copyfile(source, path / entry["path"])
        entry["uri"] = str(source)
    meta.utc_time_created = str(datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None))
    # as MLflow's Model.log measures it: the folder save_model wrote (its MLmodel then), this run's artifacts
    meta.model_size_bytes = mlmodel_bytes + sum(f.stat().st_size for f in path.rglob("*")
                                                if f.is_file() and f != path / "MLmodel")
    for k, v in fields.items():  # the run and LoggedModel ids, as Model.log writes them
        setattr(meta, k, v)
    meta.save(path / "MLmodel")
    return path


def log_model(c, run_id: str, experiment_id: str, weights: Path, config: Path, example: np.ndarray,
              n_classes: int, step: int = 0, tags: dict | None = None) -> str:
    """Log the network of ``weights`` / ``config`` as the pyfunc model ``model`` of run ``run_id``; return its model id.

    Parameters
    ----------
    c : mlflow.MlflowClient
    run_id, experiment_id : str
    weights, config : Path
        The run's ``weights.npz`` and resolved ``config.yaml``.
    example : ndarray of shape (n_example, n_features)
        Raw feature rows stored as the input example.
    n_classes : int
        Columns of the output (the signature).
    step : int
        The step the model belongs to (the run's last epoch).

    Raises
    ------
    mlflow.exceptions.MlflowException
        If the store refuses a write (after :func:`nnexp.tracking.retry`).
    """
    from mlflow.entities import LoggedModelOutput

    from .tracking import retry

    model = retry(c.create_logged_model, experiment_id, name=MODEL_NAME, source_run_id=run_id,
                  model_type=MODEL_TYPE, tags=model_tags(tags) or None)
    with _TEMPLATE_LOCK:
        path = _model_dir(weights, config, *_example_and_signature(example, n_classes),
                          artifact_path=model.artifact_location, run_id=run_id, model_id=model.model_id,
                          model_uuid=model.model_id)
        with _quiet():
            retry(c.log_model_artifacts, model.model_id, str(path))
    retry(c.log_outputs, run_id, [LoggedModelOutput(model.model_id, step=step)])
    retry(c.finalize_logged_model, model.model_id, "READY")
    return model.model_id


#: The ``model_type`` of nnexp's logged models.
MODEL_TYPE = "nnexp.mlp"


def model_tags(tags: dict | None) -> dict[str, str]:
    """A logged model's tags as ``create_logged_model`` stores them (values as text)."""
    return {str(k): str(v) for k, v in (tags or {}).items()}


def _example_and_signature(example: np.ndarray, n_classes: int) -> tuple:
    """The input example as float64 rows and the model's tensor signature (see the module docstring)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    example = np.ascontiguousarray(example, dtype=np.float64)
    return example, ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, example.shape[1]))]),
                                   outputs=Schema([TensorSpec(np.dtype(np.float64), (-1, n_classes))]))


def write_model_files(artifact_location: str, model_id: str, run_id: str, weights: Path, config: Path,
                      example: np.ndarray, n_classes: int, **_) -> None:
    """Write the files of logged model ``model_id`` of run ``run_id`` (the keyword arguments of :func:`log_model`)
    into its artifact location, as :func:`log_model` does (``log_model_artifacts``) but without looking the
    model up in the store: the artifact repository of the known ``artifact_location``
    (``get_artifact_repository``). The store's rows are the caller's (``nnexp.tracking``'s batched run ends).
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with _TEMPLATE_LOCK:
        path = _model_dir(weights, config, *_example_and_signature(example, n_classes),
                          artifact_path=artifact_location, run_id=run_id, model_id=model_id, model_uuid=model_id)
        with _quiet():
            get_artifact_repository(artifact_location).log_artifacts(str(path))


def dataset_inputs(data, name: str, path: str | None = None) -> list:
    """The training, validation and test parts of ``data`` as MLflow dataset inputs (``DatasetInput`` entities).

    Parameters
    ----------
    data : nnexp.data.Dataset
        The prepared (split, standardised) data the run trained on.
    name : str
        The dataset's config name (``digits``, ``csv``, ...).
    path : str, optional
        The data file, for file data: the digest is :func:`nnexp.identity.file_digest` of it.

    Returns
    -------
    list of mlflow.entities.DatasetInput
        One per part, in :data:`CONTEXTS` order; plain entities (they pickle), the same for every run of ``data``.
    """
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    from .identity import file_digest

    digest = file_digest(path) if path else None
    if path:
        source = Path(path).resolve().as_uri()
    else:  # data made by code (a generator, or a set shipped with scikit-learn): say which call
        from mlflow.data.code_dataset_source import CodeDatasetSource

        source = CodeDatasetSource({"mlflow.source.name": f"nnexp.data.load({name!r})"})
    inputs = []
    for part, context in CONTEXTS.items():
        with warnings.catch_warnings():  # MLflow registers its local-file source twice and says so for every file
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            ds = mlflow.data.from_numpy(getattr(data, f"X_{part}"), targets=getattr(data, f"y_{part}"), source=source,
                                        name=f"{Path(path).stem if path else name}-{context}", digest=digest)
        inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))
    return inputs


def log_inputs(c, run_id: str, inputs: list) -> None:
    """Record ``inputs`` (:func:`dataset_inputs`) as run ``run_id``'s dataset inputs."""
    from .tracking import retry

    for attempt in range(3):
        try:
            retry(c.log_inputs, run_id, datasets=inputs)
            return
        except Exception as e:  # noqa: BLE001
            # parallel jobs recording a new dataset at once: MLflow's store checks, then inserts, so one of them
            # meets the other's row (UNIQUE experiment_id, name, digest); again, it finds that row and links it
            if "unique constraint" not in str(e).lower() or attempt == 2:
                raise


def log_datasets(c, run_id: str, data, name: str, path: str | None = None) -> None:
    """Record the training, validation and test parts of ``data`` as dataset inputs of run ``run_id``.

    :func:`log_inputs` of :func:`dataset_inputs` (see there for the parameters).
    """
    log_inputs(c, run_id, dataset_inputs(data, name, path))


def model_spec(cfg, data, config_path: Path, weights_path: Path | None, step: int, diverged: bool) -> dict | None:
    """The keyword arguments of :func:`log_model` (but the client and ids) for a run's model, or None for none.

    A run has a model when its weights were saved (``tracking.save_weights``, ``weights_path``), it did not
    diverge and ``tracking.log_model`` is on. The input example is five raw test rows (before standardisation).
    """
    if weights_path is None or diverged or not cfg.tracking.get("log_model", True):
        return None
    raw_example = data.X_test[:5].astype(np.float64) * data.scale + data.mean
    return dict(weights=Path(weights_path), config=Path(config_path), example=raw_example, n_classes=data.n_classes,
                step=step, tags={"activation": cfg.activation.name, "dataset": cfg.dataset.name})


def record(c, run_id: str, experiment_id: str, inputs: list, model: dict | None) -> None:
    """A run's MLflow inputs and outputs at its end: its dataset ``inputs`` (:func:`dataset_inputs`), and its model
    (``model``: :func:`model_spec`, None for none); see :func:`log_inputs` and :func:`log_model`.

    :meth:`nnexp.tracking.RunEnd.apply` calls it and tags the run with the seconds it took
    (``nnexp.seconds.model``, beside ``nnexp.seconds.log``, for ``benchmarks/run.py``).
    """
    log_inputs(c, run_id, inputs)
    if model is not None:
        log_model(c, run_id, experiment_id, **model)


#: The alias :func:`register_best` moves to the newest best version.
BEST_ALIAS = "best"


def register_best(c, runs, name: str, metric: str = "val_loss"):
    """Register the model of the run with the lowest ``metric`` among ``runs`` as a version of ``name``, alias ``best``.

    Parameters
    ----------
    c : mlflow.MlflowClient
    runs : DataFrame
        A sweep's runs (:func:`nnexp.report.load.load_runs`); only ``outcome == "finished"`` runs compete.
    name : str
        The registered model; created if missing.

    Returns
    -------
    mlflow.entities.model_registry.ModelVersion or None
        The new version (the current one when the alias already points at this run), or None when no
        finished run has a logged model.
    """
    from mlflow.exceptions import MlflowException

    from .tracking import retry

    done = runs[(runs["outcome"] == "finished")] if len(runs) else runs
    if metric not in done or done[metric].isna().all():
        return None
    for _, row in done.sort_values(metric, kind="stable").iterrows():
        outputs = retry(c.get_run, row["run_id"]).outputs
        model_ids = [m.model_id for m in (outputs.model_outputs if outputs else [])]
        if model_ids:
            break
    else:
        return None
    try:
        retry(c.create_registered_model, name)
    except MlflowException as e:
        if "already exists" not in str(e).lower():
            raise
        try:
            current = retry(c.get_model_version_by_alias, name, BEST_ALIAS)
        except MlflowException:  # no alias yet
            current = None
        if current is not None and current.run_id == row["run_id"]:  # a resumed sweep with the same best run
            return current
    version = retry(c.create_model_version, name, source=f"models:/{model_ids[0]}", run_id=row["run_id"],
                    model_id=model_ids[0])
    retry(c.set_registered_model_alias, name, BEST_ALIAS, version.version)
    return version
