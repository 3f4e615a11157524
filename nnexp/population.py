"""Replicas as a population: one MLflow run for a whole batch of replicas (``tracking.replica_runs=false``).

By default each replica of a job is a run of its own (a seed). A study that asks how often something happens
over many random initialisations (Lu et al. 2019: how many narrow deep ReLU networks are born dead, over 1,000
initialisations) needs the population, not 1,000 runs: with ``tracking.replica_runs=false`` a job trains its
``replicas`` networks as one batch, as always, and records **one** run whose metrics are the means over the
replicas (the finite ones; a diverged replica's metrics are NaN and left out). A 0/1 metric such as
``dead_network`` then gives the fraction of the population, and the run's ``replicas`` parameter its size:
:mod:`nnexp.report.claims` turns the two into a count for Wilson's interval (claim key ``per_replica: true``).

The run's configuration hash is that of the whole config, seed and replicas included, so a population run is
never mistaken for the per-replica run of its first seed (and resume skips it only for the same population).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["summarise", "outcome"]


def summarise(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over the replicas of each metric, NaN values left out (NaN if every replica's is NaN).

    Parameters
    ----------
    values : dict of str to ndarray of shape (n_replicas,) or scalar

    Returns
    -------
    dict of str to float
    """
    out = {}
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        out[name] = float(v.mean()) if v.size else math.nan
    return out


def outcome(diverged_epoch: np.ndarray) -> tuple[int, float]:
    """``(diverged epoch of the population, fraction of replicas that diverged)``.

    The population diverged (at its last replica's divergence epoch) only when every replica did; else 0.
    """
    d = np.asarray(diverged_epoch)
    return (int(d.max()) if (d > 0).all() else 0), float((d > 0).mean())
