"""Which swept key matters for the primary metric: hyperparameter importance, and a parallel-coordinates figure.

Any sweep's runs (a grid or an Optuna search, one row per run) become the trials of an in-memory Optuna study
(:func:`runs_to_study`: each swept key a parameter, numeric keys as float ranges, on a log scale when
:func:`log_scaled` says so, every other key, ``activation`` included, as a categorical one; the run's final
metric the trial's value), and Optuna's evaluator ranks the keys (:func:`importance`):

PED-ANOVA (default; Watanabe, Bansal and Hutter, "PED-ANOVA: Efficiently Quantifying Hyperparameter Importance in
Arbitrary Subspaces", IJCAI 2023; ``optuna.importance.PedAnovaImportanceEvaluator``) fits a Parzen estimator of
each key over all runs and over the best runs (the top ``target_quantile``, 10 % by default) and measures how far
apart they are (Pearson divergence), normalised to sum to 1. A key is important when the best runs crowd into part
of its range. Caveats: it ranks keys one at a time (an interaction shows only through each key's own marginal);
with fewer than about 10 runs in the top quantile the estimate is coarse (this module raises the quantile so that
it holds at least :data:`MIN_TOP` runs and says so); seeds of one configuration count as separate runs, so seed
noise dilutes every key alike.

fANOVA (``method="fanova"``; Hutter, Hoos and Leyton-Brown, "An Efficient Approach for Assessing Hyperparameter
Importance", ICML 2014) fits a random forest of the metric on the keys and splits the variance it explains into
one share per key (interactions left out of the shares). Caveats: the shares are of the forest's variance, not
of the metric's, so a poor fit still yields shares that sum to 1; it is slow (here 1.6 s at 100 runs, 40 s at
1,000), which is why PED-ANOVA (0.4 s at 1,000 runs) is the default.

Both only see runs with a finite metric (diverged runs have none), and only keys that the selected runs vary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["importance", "importance_section", "runs_to_study", "log_scaled", "parallel_coordinates",
           "load_search_trials", "METHODS", "MIN_TOP"]

#: Importance methods: name -> (Optuna evaluator class, one-line description for the report).
METHODS = {
    "ped_anova": ("PedAnovaImportanceEvaluator",
                  "PED-ANOVA (Watanabe et al., IJCAI 2023): how differently each key is spread among the best runs "
                  "than among all runs"),
    "fanova": ("FanovaImportanceEvaluator",
               "fANOVA (Hutter et al., ICML 2014): each key's share of the metric's variance as a random forest "
               "explains it"),
}

#: PED-ANOVA's top quantile holds at least this many runs (raised from 10 % for small sweeps).
MIN_TOP = 5


def log_scaled(values: pd.Series) -> bool:
    """True for a positive numeric key whose values span a factor of 10 or more (learning rates, weight decay)."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(v) and (v > 0).all() and v.max() / v.min() >= 10)


def _is_numeric(s: pd.Series) -> bool:
    if s.dtype == bool or s.map(lambda x: isinstance(x, bool)).any():
        return False
    return bool(pd.to_numeric(s, errors="coerce").notna().all())


def _varying(runs: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    return [k for k in keys if k in runs and runs[k].astype(str).nunique() > 1]


def runs_to_study(runs: pd.DataFrame, keys: Sequence[str], metric: str, higher: bool = False,
                  log_keys: Sequence[str] | None = None):
    """An in-memory Optuna study with one COMPLETE trial per run of ``runs`` whose ``metric`` is finite.

    Parameters
    ----------
    runs : DataFrame, one row per run
        Columns ``keys`` and ``metric``. Lists and None are categorical values (as their text).
    keys : sequence of str
        The swept keys, e.g. ``["activation", "optimizer.lr", "init"]``.
    metric : str
        The trials' value.
    higher : bool
        The study maximises ``metric`` if true, else minimises it.
    log_keys : sequence of str, optional
        Numeric keys on a log scale; default: those :func:`log_scaled` picks.

    Returns
    -------
    optuna.Study
        Numeric keys are ``FloatDistribution(min, max, log)``, the rest ``CategoricalDistribution`` of their
        sorted text values.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    d = runs[np.isfinite(pd.to_numeric(runs[metric], errors="coerce"))]
    dists, columns = {}, {}
    for k in keys:
        s = d[k]
        if _is_numeric(s):
            x = pd.to_numeric(s).astype(float)
            log = (k in log_keys) if log_keys is not None else log_scaled(x)
            dists[k] = FloatDistribution(float(x.min()), float(x.max()), log=log and bool((x > 0).all()))
            columns[k] = x.to_numpy()
        else:
            text = s.map(lambda v: "null" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
            dists[k] = CategoricalDistribution(sorted(text.unique()))
            columns[k] = text.to_numpy()
    values = pd.to_numeric(d[metric]).astype(float).to_numpy()
    trials = [optuna.trial.create_trial(params={k: (float(columns[k][i]) if isinstance(dists[k], FloatDistribution)
                                                    else columns[k][i]) for k in keys},
                                        distributions=dists, value=float(values[i])) for i in range(len(d))]
    study = optuna.create_study(direction="maximize" if higher else "minimize")
    study.add_trials(trials)
    return study


def importance(runs: pd.DataFrame, keys: Sequence[str], metric: str, higher: bool = False, *,
               method: str = "ped_anova", log_keys: Sequence[str] | None = None, seed: int = 0) -> pd.Series:
    """Importance of each swept key for ``metric``: a Series indexed by key, summing to 1, largest first.

    Parameters
    ----------
    runs, keys, metric, higher, log_keys
        See :func:`runs_to_study`; keys that do not vary among the runs with a finite metric are left out.
    method : "ped_anova" or "fanova"
        See the module docstring for what each measures and its caveats.
    seed : int
        fANOVA's forest seed (PED-ANOVA draws nothing).

    Raises
    ------
    ValueError
        If ``method`` is unknown, or fewer than two keys vary, or fewer than 3 runs have a finite metric.
    """
    import optuna

    if method not in METHODS:
        raise ValueError(f"method={method!r} is not an option; choose one of: {', '.join(sorted(METHODS))}")
    d = runs[np.isfinite(pd.to_numeric(runs[metric], errors="coerce"))]
    keys = _varying(d, keys)
    if len(keys) < 2:
        raise ValueError(f"importance needs two keys that vary; {keys or 'none'} vary")
    if len(d) < 3:
        raise ValueError(f"importance needs 3 runs with a finite {metric}; {len(d)} have one")
    study = runs_to_study(d, keys, metric, higher, log_keys)
    cls = getattr(optuna.importance, METHODS[method][0])
    if method == "ped_anova":
        # the top runs' share: at least MIN_TOP runs, and below the whole (PED-ANOVA's region quantile, 1.0)
        evaluator = cls(target_quantile=max(0.1, min(0.5, MIN_TOP / len(d))))
    else:
        evaluator = cls(seed=seed)
    scores = optuna.importance.get_param_importances(study, evaluator=evaluator, params=list(keys), normalize=True)
    return pd.Series(scores, name="importance").reindex(sorted(scores, key=lambda k: -scores[k]))


def parallel_coordinates(runs: pd.DataFrame, keys: Sequence[str], metric: str, *, hue: str = "activation",
                         log_keys: Sequence[str] | None = None, palette: dict | None = None, ax=None):
    """Parallel coordinates: one vertical axis per key, the metric last; one line per run, coloured by ``hue``.

    Numeric keys are drawn on their own range (log scale for ``log_keys``, default :func:`log_scaled`), with
    their values at the ends; categorical keys (and lists, None) at evenly spaced levels, labelled. Runs with
    a non-finite metric are left out.

    Parameters
    ----------
    runs : DataFrame, one row per run
    keys : sequence of str
        Axes from left to right (``metric`` is added last).
    hue : str
        Column that colours the lines (``activation``), with ``palette`` (default:
        :func:`nnexp.report.figures.palette_for`, the report's fixed colours).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    from .figures import label, palette_for

    d = runs[np.isfinite(pd.to_numeric(runs[metric], errors="coerce"))]
    axes_keys = [k for k in keys if k in d and k != metric] + [metric]
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(axes_keys), 3.6))
    else:
        fig = ax.figure
    hue_values = d[hue].astype(str) if hue in d else pd.Series("runs", index=d.index)
    palette = palette or palette_for(hue_values)
    pos = np.zeros((len(d), len(axes_keys)))
    for j, k in enumerate(axes_keys):
        s = d[k]
        if _is_numeric(s):
            x = pd.to_numeric(s).astype(float).to_numpy()
            log = (k in log_keys) if (log_keys is not None and k != metric) else (k != metric and log_scaled(s))
            t = np.log10(x) if log else x
            lo, hi = float(np.min(t)), float(np.max(t))
            pos[:, j] = (t - lo) / (hi - lo) if hi > lo else 0.5
            fmt = (lambda v: f"{v:.3g}")
            ends = (10 ** lo, 10 ** hi) if log else (lo, hi)
            ax.text(j, -0.06, fmt(ends[0]), ha="center", va="top", fontsize=8)
            ax.text(j, 1.06, fmt(ends[1]) + (" (log)" if log else ""), ha="center", va="bottom", fontsize=8)
        else:
            text = s.map(lambda v: "null" if v is None else str(v))
            levels = sorted(text.unique())
            where = {v: (i / (len(levels) - 1) if len(levels) > 1 else 0.5) for i, v in enumerate(levels)}
            pos[:, j] = text.map(where).to_numpy()
            for v, y in where.items():
                ax.text(j + 0.04, y, v, ha="left", va="center", fontsize=8)
        ax.axvline(j, color="0.3", lw=0.8)
    xs = np.arange(len(axes_keys), dtype=float)
    colors = [palette.get(h, "0.5") for h in hue_values]
    # one collection for every run: a thousand lines draw in one call
    ax.add_collection(LineCollection([np.column_stack([xs, p]) for p in pos], colors=colors, alpha=0.55, linewidths=1))
    ax.set_xticks(range(len(axes_keys)), [label(k) for k in axes_keys])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes_keys) - 0.6)
    ax.set_ylim(-0.15, 1.15)
    ax.grid(False)
    for side in ("left", "right", "top", "bottom"):
        ax.spines[side].set_visible(False)
    ax.legend(handles=[Line2D([], [], color=palette[h], lw=2, label=h) for h in sorted(set(hue_values))],
              title=hue, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.set_title(f"each run's swept keys and final {label(metric)}")
    fig.tight_layout()
    return fig


def importance_section(runs: pd.DataFrame, keys: Sequence[str], metric: str, higher: bool,
                       method: str = "ped_anova") -> dict | None:
    """What the report shows about the shape of a sweep: importance (when two or more keys vary) and the figure.

    Parameters
    ----------
    runs : DataFrame, one row per run (the report passes the runs that finished)
    keys : sequence of str
        The swept keys (:func:`nnexp.report.swept_keys`), ``activation`` first.
    metric : str
        The primary metric.
    higher : bool
        Whether a higher ``metric`` is better.

    Returns
    -------
    dict or None
        None when no run has a finite ``metric`` or no key varies. Otherwise ``{"figure": Figure,
        "importance": Series or None, "method": str, "caveat": str, "reason": str or None, "n_runs": int}``:
        ``importance`` is None when fewer than two keys vary or fewer than 3 runs count, and ``reason`` then says
        why in one sentence, for the page.
    """
    d = runs[np.isfinite(pd.to_numeric(runs[metric], errors="coerce"))] if metric in runs else runs.iloc[:0]
    varying = _varying(d, keys)
    if d.empty or not varying:
        return None
    out = {"figure": parallel_coordinates(d, varying, metric), "importance": None, "method": METHODS[method][1],
           "caveat": CAVEATS[method], "reason": None, "n_runs": len(d)}
    # a key whose every value goes with one value of an earlier key, and back (each activation at its own tuned
    # rate), cannot be told apart from it: rank the first, and say so
    text = {k: d[k].astype(str) for k in varying}
    kept, tied = [], {}
    for k in varying:
        twin = next((j for j in kept if (text[k].groupby(text[j]).nunique() == 1).all()
                     and (text[j].groupby(text[k]).nunique() == 1).all()), None)
        if twin is None:
            kept.append(k)
        else:
            tied[k] = twin
    if tied:
        out["caveat"] += " " + "; ".join(f"{k} changes only together with {j}, so it is counted with {j}"
                                         for k, j in tied.items()) + "."
    varying = kept
    if len(varying) < 2:
        out["reason"] = (f"Importance is omitted: only {varying[0]} varies among these runs"
                         + (f" ({', '.join(tied)} with it)" if tied else "")
                         + ", so there is nothing to rank it against; its effect is the comparison above.")
    elif len(d) < 3:
        out["reason"] = f"Importance is omitted: {len(d)} runs with a finite {metric} are too few to rank keys."
    else:
        out["importance"] = importance(d, varying, metric, higher, method=method)
    return out


def load_search_trials(uri: str, experiment: str, parent_id: str) -> pd.DataFrame:
    """The trial runs of a search sweep (``hydra/sweeper=nnexp_optuna``): one row per trial, as
    :func:`nnexp.report.load.load_runs` gives them, from the ``search <activation>`` runs under ``parent_id``.

    Empty (no rows) for any other sweep. The rows include pruned trials (``outcome == "pruned"``); pass the
    finished ones to :func:`importance_section` for the search's importance over activation and the searched keys.
    """
    from .. import tracking
    from .load import load_runs

    c = tracking.client(uri)
    exp = tracking.retry(c.get_experiment_by_name, experiment)
    if exp is None:
        return pd.DataFrame()
    searches = tracking.retry(c.search_runs, [exp.experiment_id], max_results=1000, filter_string=(
        f"tags.`nnexp.kind` = 'search' and tags.mlflow.parentRunId = '{parent_id}'"))
    parts = [load_runs(uri, experiment, parent_id=r.info.run_id) for r in searches]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


#: One sentence of caveats per method, for the page.
CAVEATS = {
    "ped_anova": ("It ranks keys one at a time (interactions appear only through each key's own spread), is coarse "
                  "when the best runs are few, and counts each seed as a run, so seed noise dilutes every key alike."),
    "fanova": ("Shares are of the variance a random forest explains, not of the metric's, and leave interactions "
               "out; with few distinct settings the forest is coarse."),
}
