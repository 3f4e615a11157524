"""nnexp: which activation function trains a network best, and why.

A NumPy multilayer perceptron (:mod:`nnexp.model`, :mod:`nnexp.train`) trained
over Hydra sweeps (:mod:`nnexp.app`), tracked in MLflow (:mod:`nnexp.tracking`)
and compared in seaborn reports (:mod:`nnexp.report`).

From Python (:mod:`nnexp.api`): ``nnexp.sweep([...])`` runs a sweep and returns its
runs, ``nnexp.load_runs(...)`` reads runs back as a DataFrame, ``nnexp.load_model(run_id)``
returns a run's trained network. They are imported on first use, so that
``import nnexp`` stays instant.
"""

__version__ = "0.1.0"

__all__ = ["load_runs", "load_model", "sweep"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'nnexp' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
