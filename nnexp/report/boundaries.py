"""Decision boundaries of trained networks on 2-D data, from their ``weights.npz`` artifacts.

The weights come from MLflow; the network is rebuilt with the public model
class :class:`nnexp.model.MLP` and evaluated on a grid of the raw input plane
(the artifact carries the standardisation ``feature_mean`` / ``feature_scale``).
The test points drawn over the boundary are regenerated with the public
dataset registry :func:`nnexp.data.load` from the run's logged dataset params.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["network_from_weights", "probability_grid", "test_points"]


def _param(row, key, default=None):
    v = row.get(key, default)
    return default if v is None or (isinstance(v, float) and np.isnan(v)) else v


def network_from_weights(weights: dict, row) -> "object":
    """An :class:`nnexp.model.MLP` with the arrays ``W1, b1, W2, ...`` of ``weights``.

    ``row`` holds the run's params (``activation.name``, ``activation.alpha``, ...).
    """
    from nnexp.activations import get_activation
    from nnexp.model import MLP

    n = sum(1 for k in weights if k.startswith("W"))
    Ws = [weights[f"W{l}"] for l in range(1, n + 1)]
    bs = [weights[f"b{l}"] for l in range(1, n + 1)]
    act = get_activation(_param(row, "activation.name", row.get("activation")),
                         **{k: _param(row, f"activation.{k}") for k in ("alpha", "beta", "approximate")})
    sizes = [Ws[0].shape[0], *(W.shape[1] for W in Ws)]
    return MLP(sizes, act, replicas=1, dtype=Ws[0].dtype).set_weights(Ws, bs)


def probability_grid(weights: dict, row, lims: tuple[float, float, float, float], n: int = 150) -> pd.DataFrame:
    """P(class 1) on an ``n`` × ``n`` grid over ``lims = (x1_min, x1_max, x2_min, x2_max)`` in raw units.

    One output: sigmoid of the logit (``binary_cross_entropy``) or the output
    clipped to [0, 1] (``mse``); several outputs: softmax probability of class 1
    for two classes, else the predicted class divided by ``n_classes - 1``.

    Returns
    -------
    DataFrame with columns ``x1, x2, p`` (``n * n`` rows).
    """
    net = network_from_weights(weights, row)
    g1, g2 = np.linspace(lims[0], lims[1], n), np.linspace(lims[2], lims[3], n)
    X1, X2 = np.meshgrid(g1, g2)
    X = np.c_[X1.ravel(), X2.ravel()]
    mean = weights.get("feature_mean", np.zeros(2))
    scale = weights.get("feature_scale", np.ones(2))
    Z = ((X - mean) / scale).astype(net.dtype)
    with np.errstate(all="ignore"):
        out = net.predict_logits(Z)[0]
        if out.shape[1] == 1:
            loss = str(_param(row, "loss.resolved", "binary_cross_entropy"))
            p = np.clip(out[:, 0], 0, 1) if loss == "mse" else 1 / (1 + np.exp(-out[:, 0]))
        elif out.shape[1] == 2:
            e = np.exp(out - out.max(axis=1, keepdims=True))
            p = e[:, 1] / e.sum(axis=1)
        else:
            p = out.argmax(axis=1) / (out.shape[1] - 1)
    return pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "p": p})


def test_points(row) -> pd.DataFrame | None:
    """The run's test points in raw units (columns ``x1, x2, y``), or None if the dataset cannot be rebuilt."""
    from nnexp.data import load

    name = _param(row, "dataset.name", row.get("dataset"))
    kw = {k: _param(row, f"dataset.{k}") for k in ("val_fraction", "test_fraction", "split_seed", "standardize",
                                                 "n_samples", "noise")}
    kw = {k: v for k, v in kw.items() if v is not None}
    try:
        d = load(name, **kw)
    except Exception:
        return None
    if d.n_features != 2:
        return None
    X = d.X_test * d.scale + d.mean
    return pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": d.y_test})
