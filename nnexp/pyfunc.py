"""The MLflow pyfunc wrapper of a run's network (see :mod:`nnexp.mlflow_model`).

This file is the model's code, logged with each model the way MLflow 3 recommends
("models from code": no pickled object; MLflow runs the file at load and takes the
model it names with ``mlflow.models.set_model``). It is its own module so that
importing :mod:`nnexp.mlflow_model` does not import MLflow's pyfunc machinery
before a model is logged.
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import numpy as np

__all__ = ["NNExpPyfunc"]


class NNExpPyfunc(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper: ``predict(context, X)`` -> class probabilities of shape ``(n_samples, n_classes)``.

    Reads the artifacts ``weights`` (weights.npz) and ``config`` (config.yaml) of the model.
    Accepts an ndarray or a DataFrame of shape ``(n_samples, n_features)``.
    """

    def load_context(self, context):
        from nnexp.network import Network  # absolute: MLflow runs this file as a script at load

        self.network = Network.from_files(context.artifacts["weights"], context.artifacts["config"])

    # np.ndarray: a type hint MLflow takes as "no schema to infer" (the signature is given when logging)
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return self.network.predict_proba(model_input)


mlflow.models.set_model(NNExpPyfunc())
