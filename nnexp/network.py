"""A trained network for inference: raw features in, class probabilities out.

A run saves its network as ``weights.npz`` (plain arrays, read with
``allow_pickle=False``) beside its resolved ``config.yaml``:

- ``W1, b1, ..., W{L+1}, b{L+1}``: weights of shape ``(fan_in, fan_out)`` and biases of
  shape ``(fan_out,)`` per layer;
- ``feature_mean``, ``feature_scale``: the standardisation fitted on the training part,
  shape ``(n_features,)``.

:class:`Network` rebuilds the trained :class:`nnexp.model.MLP` from them (one replica)
and computes, for raw features ``X`` of shape ``(n_samples, n_features)``::

    x = (X - feature_mean) / feature_scale      in float64, then cast to the model's dtype
    logits = MLP.forward(x)                     the same operations as training
    proba = output(logits)                      shape (n_samples, n_classes)

so that ``predict`` gives the run's logged test accuracy exactly on its test split.
The output follows the loss: softmax for ``cross_entropy``; for one sigmoid output
(``binary_cross_entropy``) the columns ``[1 - p, p]`` with ``p = sigmoid(z)``; for
``mse`` (no probabilistic output) the clipped score ``[1 - p, p]``, ``p = clip(z, 0, 1)``,
with one output, and the softmax of the outputs with several (scores that rank the
classes as the network does, not calibrated probabilities). Classes are the indices
``0 .. n_classes - 1`` of the sorted distinct labels of the training data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["Network", "NetworkInputError"]


class NetworkInputError(ValueError):
    """Inputs a network cannot take: wrong shape, dtype or non-finite values."""


def _sigmoid_pair(z: np.ndarray) -> np.ndarray:
    """``[1 - sigmoid(z), sigmoid(z)]`` as two columns, each computed from ``tanh(z / 2)``.

    Computing ``1 - p`` as ``(1 - tanh(z / 2)) / 2`` rather than from ``p`` keeps the
    two columns distinct for every ``z != 0``, so that their argmax is ``z > 0``: the
    trainer's decision rule (:func:`nnexp.train.accuracy`).
    """
    t = np.tanh(0.5 * z)
    return np.concatenate([0.5 * (1.0 - t), 0.5 * (1.0 + t)], axis=1)


def _clip_pair(z: np.ndarray) -> np.ndarray:
    p = np.clip(z, 0.0, 1.0)
    return np.concatenate([1.0 - p, p], axis=1)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Network:
    """A trained MLP with its input standardisation; see the module docstring.

    Parameters
    ----------
    weights : list of ndarray of shape (fan_in, fan_out)
    biases : list of ndarray of shape (fan_out,)
    activation : str
        Hidden-layer activation (a key of :data:`nnexp.activations.ACTIVATIONS`).
    loss : str
        ``cross_entropy``, ``binary_cross_entropy`` or ``mse``; ``auto`` is resolved from the
        number of outputs (one: ``binary_cross_entropy``, more: ``cross_entropy``).
    feature_mean, feature_scale : ndarray of shape (n_features,), optional
        Default: no standardisation.
    dtype : str, default "float64"
        The dtype the network was trained in.
    activation_params : dict, optional
        ``alpha``, ``beta``, ``approximate`` of the activation (None: its default).

    Raises
    ------
    ValueError
        If the layer shapes do not chain, or the activation or loss is unknown.
    """

    def __init__(self, weights, biases, activation: str, loss: str = "auto", feature_mean=None, feature_scale=None,
                 dtype: str = "float64", activation_params: dict | None = None):
        from .activations import get_activation
        from .model import MLP

        weights = [np.asarray(w) for w in weights]
        biases = [np.asarray(b).reshape(-1) for b in biases]
        sizes = [weights[0].shape[0], *(w.shape[1] for w in weights)]
        for l, (w, b) in enumerate(zip(weights, biases, strict=True), start=1):
            if w.ndim != 2 or w.shape[0] != sizes[l - 1] or b.shape != (w.shape[1],):
                raise ValueError(f"layer {l}: W{l} of shape {w.shape} and b{l} of shape {b.shape} do not follow a "
                                 f"layer of {sizes[l - 1]} units")
        self.n_outputs = sizes[-1]
        if loss == "auto":
            loss = "binary_cross_entropy" if self.n_outputs == 1 else "cross_entropy"
        if loss not in ("cross_entropy", "binary_cross_entropy", "mse", "sigmoid_mse"):
            raise ValueError(f"loss={loss!r} is not known; choose one of: binary_cross_entropy, cross_entropy, mse, "
                             "sigmoid_mse")
        self.loss = loss
        self.activation = activation
        self.dtype = np.dtype(dtype)
        act = get_activation(activation, **{k: v for k, v in (activation_params or {}).items() if v is not None})
        self.mlp = MLP(sizes, act, replicas=1, dtype=self.dtype).set_weights(weights, biases)
        n = sizes[0]
        self.feature_mean = np.zeros(n) if feature_mean is None else np.asarray(feature_mean, dtype=np.float64)
        self.feature_scale = np.ones(n) if feature_scale is None else np.asarray(feature_scale, dtype=np.float64)

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return self.mlp.sizes[0]

    @property
    def n_classes(self) -> int:
        """Number of classes (2 for a one-output network)."""
        return 2 if self.n_outputs == 1 else self.n_outputs

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_files(cls, weights: str | os.PathLike, config: str | os.PathLike) -> "Network":
        """The network of a run's ``weights.npz`` and resolved ``config.yaml``.

        Raises
        ------
        ValueError
            If a file is missing or not what a run writes.
        """
        from omegaconf import OmegaConf

        weights, config = Path(weights), Path(config)
        for f in (weights, config):
            if not f.is_file():
                raise ValueError(f"{f} does not exist; a run's artifacts hold weights.npz and config.yaml")
        with np.load(weights, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        n_layers = sum(1 for k in arrays if k.startswith("W"))
        if n_layers == 0 or any(f"W{l}" not in arrays or f"b{l}" not in arrays for l in range(1, n_layers + 1)):
            raise ValueError(f"{weights} holds {sorted(arrays)}; expected W1, b1, ..., feature_mean, feature_scale")
        cfg = OmegaConf.load(config)
        act = cfg.activation
        return cls([arrays[f"W{l}"] for l in range(1, n_layers + 1)], [arrays[f"b{l}"] for l in range(1, n_layers + 1)],
                   activation=act.name, loss=cfg.model.loss, dtype=cfg.model.dtype,
                   feature_mean=arrays.get("feature_mean"), feature_scale=arrays.get("feature_scale"),
                   activation_params={k: act.get(k) for k in ("alpha", "beta", "approximate")})

    # -- inference ---------------------------------------------------------------------------
    def check_input(self, X) -> np.ndarray:
        """``X`` as a float64 array of shape ``(n_samples, n_features)``.

        A pandas DataFrame is taken by position (its columns in training order);
        integers and booleans are converted to float64.

        Raises
        ------
        NetworkInputError
            If ``X`` is not 2-D with ``n_features`` columns, not numeric, or holds NaN or infinity.
        """
        if hasattr(X, "to_numpy") and hasattr(X, "columns"):  # a DataFrame
            X = X.to_numpy()
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise NetworkInputError(f"X has dtype {X.dtype}; expected numbers (float, int or bool)")
        if X.ndim != 2:
            hint = " (one sample: X.reshape(1, -1))" if X.ndim == 1 else ""
            raise NetworkInputError(f"X has shape {X.shape}; expected (n_samples, {self.n_features}){hint}")
        if X.shape[1] != self.n_features:
            raise NetworkInputError(f"X has {X.shape[1]} features (shape {X.shape}); this network takes "
                                    f"{self.n_features}: shape (n_samples, {self.n_features})")
        X = X.astype(np.float64, copy=False)
        if not np.isfinite(X).all():
            raise NetworkInputError("X holds NaN or infinite values; every feature must be a finite number")
        return X

    def logits(self, X) -> np.ndarray:
        """The network's outputs before the output activation, shape ``(n_samples, n_outputs)``."""
        X = self.check_input(X)
        x = ((X - self.feature_mean) / self.feature_scale).astype(self.dtype, copy=False)
        with np.errstate(all="ignore"):
            return self.mlp.forward(np.ascontiguousarray(x))[0].astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (scores for ``mse``), ndarray of shape ``(n_samples, n_classes)``, float64.

        Rows sum to 1. See the module docstring for the output of each loss.

        Raises
        ------
        NetworkInputError
            See :meth:`check_input`.
        """
        z = self.logits(X)
        with np.errstate(all="ignore"):
            if self.n_outputs == 1:
                return _clip_pair(z) if self.loss == "mse" else _sigmoid_pair(z)
            return _softmax(z)

    def predict(self, X) -> np.ndarray:
        """Class indices, ndarray of shape ``(n_samples,)``: the argmax of :meth:`predict_proba`.

        Raises
        ------
        NetworkInputError
            See :meth:`check_input`.
        """
        return self.predict_proba(X).argmax(axis=1)

    def __repr__(self) -> str:
        return (f"Network({'-'.join(map(str, self.mlp.sizes))}, activation={self.activation!r}, loss={self.loss!r}, "
                f"dtype={self.dtype.name})")
