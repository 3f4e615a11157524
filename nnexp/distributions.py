r"""Per-layer distributions of activations and back-propagated gradients, measured on a fixed probe batch.

Glorot & Bengio (2010) and He et al. (2015) read a network's health from the *distribution* of each hidden
layer's activations :math:`a_l` and back-propagated gradients :math:`\delta_l = \partial L / \partial z_l`,
at initialisation and during training. :func:`probe` measures both, without changing the network's parameters
or drawing random numbers (training is bit-identical with or without it):

- the probe batch is the first :data:`PROBE_ROWS` training samples (the split is already shuffled), the same
  at every probe, so that epochs compare like with like;
- one forward and backward pass of the current weights over it, after the epoch's last update (epoch 0: at
  initialisation); it overwrites the gradient buffers ``model.dW`` / ``model.db``, which the next training
  step computes afresh;
- :math:`\delta_l` is reported per sample: the loss is the mean over the batch, so the pass's
  :math:`\delta_l` is multiplied by the batch size (the gradient of one sample's loss).

Metrics (each an ``ndarray of shape (n_replicas,)``, hidden layer ``l`` from 1)::

    layer{l}.probe.act_mean, ...act_std, ...act_p01, ...p50, ...p99      over samples and units of a_l
    layer{l}.probe.delta_mean, ...delta_std, ...delta_p01, ...p50, ...p99  of the per-sample delta_l

:data:`PERCENTILES` are the 1st, 50th and 99th: the band that holds 98 % of the values, as Glorot & Bengio's
Figure 2 and 3 draw it ("mean and the 98 percentiles"); the mean and std are what Klambauer et al.'s (2017)
self-normalisation keeps at 0 and 1. 10 metrics per hidden layer and probe: a 30-layer network probed 7 times
writes 2,100 points per run.

Histograms (:func:`histograms`): counts in :data:`HIST_BINS` equal bins between each layer's own minimum and
maximum, per replica, layer and probe epoch, saved as one ``.npz`` artifact per run by :func:`save_histograms`.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

__all__ = ["PERCENTILES", "PROBE_ROWS", "HIST_BINS", "probe", "percentile_metrics", "histograms", "save_histograms",
           "probe_epochs"]

PERCENTILES = (1, 50, 99)
PROBE_ROWS = 1000
HIST_BINS = 50


def probe_epochs(epochs: int, every: int | None, histogram_epochs: Sequence[int] = ()) -> tuple[list[int], list[int]]:
    """Epochs at which to probe: ``(percentile_epochs, histogram_epochs)``, each sorted, within ``[0, epochs]``.

    Percentiles at 0 (initialisation), every ``every`` epochs and at the last epoch; none when ``every`` is None.
    """
    pct = sorted({0, *range(every, epochs + 1, every), epochs}) if every else []
    hist = sorted({int(e) for e in histogram_epochs if 0 <= int(e) <= epochs})
    return pct, hist


def probe(model, loss, X: np.ndarray, Y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Activations and per-sample back-propagated gradients of every hidden layer on a probe batch.

    Parameters
    ----------
    model : nnexp.model.MLP
    loss : nnexp.losses.Loss
    X : ndarray of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_outputs)
        Encoded targets.

    Returns
    -------
    (acts, deltas) : two lists of ``ndarray of shape (n_replicas, n_samples, h_l)``, one per hidden layer
        Copies: ``a_l`` and :math:`n \\cdot \\partial L/\\partial z_l` (per-sample gradient).
    """
    X, Y = X[:PROBE_ROWS], Y[:PROBE_ROWS]
    n = X.shape[0]
    with np.errstate(all="ignore"):
        model.gradients(X, Y, loss)
    ws = model.workspace(X)
    return [a.copy() for a in ws.a], [d * n for d in ws.dA]


def percentile_metrics(acts: list[np.ndarray], deltas: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The ``layer{l}.probe.*`` metrics (module docstring) from :func:`probe`'s arrays; each of shape (n_replicas,)."""
    out = {}
    for l, (a, d) in enumerate(zip(acts, deltas), start=1):
        for kind, v in (("act", a), ("delta", d)):
            flat = v.reshape(v.shape[0], -1).astype(np.float64, copy=False)
            with np.errstate(all="ignore"):
                out[f"layer{l}.probe.{kind}_mean"] = flat.mean(axis=1)
                out[f"layer{l}.probe.{kind}_std"] = flat.std(axis=1)
                qs = np.percentile(flat, PERCENTILES, axis=1)
            for p, q in zip(PERCENTILES, qs):
                out[f"layer{l}.probe.{kind}_p{p:02d}"] = q
    return out


def histograms(acts: list[np.ndarray], deltas: list[np.ndarray], bins: int = HIST_BINS) -> dict[str, np.ndarray]:
    """Histograms per replica and hidden layer.

    Returns
    -------
    dict with ``act_counts``, ``delta_counts`` of shape (n_replicas, n_layers, bins) and ``act_edges``,
    ``delta_edges`` of shape (n_replicas, n_layers, bins + 1): equal bins between the values' minimum and maximum
    (``[v - 0.5, v + 0.5]`` when every value is ``v``; all zero counts when none is finite).
    """
    out = {}
    for kind, arrays in (("act", acts), ("delta", deltas)):
        K, L = arrays[0].shape[0], len(arrays)
        counts = np.zeros((K, L, bins), np.int64)
        edges = np.zeros((K, L, bins + 1))
        for l, v in enumerate(arrays):
            for k in range(K):
                x = v[k].ravel().astype(np.float64, copy=False)
                x = x[np.isfinite(x)]
                if not x.size:
                    continue
                lo, hi = float(x.min()), float(x.max())
                if lo == hi:
                    lo, hi = lo - 0.5, hi + 0.5
                counts[k, l], edges[k, l] = np.histogram(x, bins=bins, range=(lo, hi))
        out[f"{kind}_counts"], out[f"{kind}_edges"] = counts, edges
    return out


def save_histograms(path: str | os.PathLike, epochs: Sequence[int], per_epoch: list[dict[str, np.ndarray]],
                    k: int) -> None:
    """Write replica ``k``'s histograms at ``epochs`` as one ``.npz``.

    Arrays: ``epochs`` (n_epochs,), ``act_counts`` / ``delta_counts`` (n_epochs, n_layers, bins), ``act_edges`` /
    ``delta_edges`` (n_epochs, n_layers, bins + 1); read with ``np.load(path, allow_pickle=False)``.
    """
    arrays = {"epochs": np.asarray(epochs, np.int64)}
    for name in ("act_counts", "act_edges", "delta_counts", "delta_edges"):
        arrays[name] = np.stack([h[name][k] for h in per_epoch])
    np.savez(path, **arrays)
