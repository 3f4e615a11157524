"""The numbers behind the report: summaries over seeds, tests, effect sizes, epochs to a target.

Conventions
-----------
* A *configuration* is one combination of the swept keys (activation, learning
  rate, ...); its runs differ only in the seed.
* Only runs whose outcome is ``finished`` and whose value is finite enter a
  mean; diverged and failed runs are counted (divergence rate) and listed, never
  averaged in.
* Confidence intervals are two-sided Student-t intervals of the mean,
  ``mean ± t_{0.975, n-1} · s / sqrt(n)`` (honest for 3–10 seeds, where 1.96 is not).
* Displayed intervals are clipped to the metric's range (:func:`metric_range`):
  a t-interval of a few seeds near 0 loss or 100 % accuracy can cross the bound.
* "Better" is lower for losses and higher for accuracies (:func:`higher_is_better`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from .fmt import matches, val

__all__ = ["higher_is_better", "metric_range", "clip_interval", "t_interval", "holm", "welch_p", "hedges_g",
           "describe", "summary_table", "epochs_to_target", "default_target", "compare_to_best", "aggregate_curves"]


def higher_is_better(metric: str) -> bool:
    """True for accuracies (``*accuracy``), False for everything else (losses, times, norms)."""
    return metric.endswith("accuracy")


def metric_range(metric: str) -> tuple[float, float]:
    """The values ``metric`` can take: ``[0, 1]`` for accuracies, ``[0, inf)`` for losses, else unbounded."""
    if metric.endswith("accuracy"):
        return (0.0, 1.0)
    if metric.endswith("loss"):
        return (0.0, math.inf)
    return (-math.inf, math.inf)


def clip_interval(metric: str, lo, hi):
    """``(lo, hi)`` clipped to :func:`metric_range` of ``metric`` (scalars or arrays; NaN stays NaN)."""
    a, b = metric_range(metric)
    return np.clip(lo, a, b), np.clip(hi, a, b)


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean of the finite ``values``.

    One value gives ``(value, value)``; none gives ``(nan, nan)``.
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    m = float(v.mean())
    if v.size < 2 or np.ptp(v) == 0:
        return (m, m)
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return (m - half, m + half)


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    For the ``m`` p-values sorted ascending, ``p_(i)`` becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))`` (1-based ``j``); NaNs stay NaN and
    do not count towards ``m``.

    References
    ----------
    Holm, S. (1979). A simple sequentially rejective multiple test procedure.
    Scandinavian Journal of Statistics 6(2), 65–70.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p-value of samples ``a`` and ``b`` (``scipy.stats.ttest_ind(equal_var=False)``).

    NaN when either has fewer than two values or both are constant (no test is possible). Nearly equal samples
    (accuracies of 0.75 and 0.75 + 1e-17) make scipy warn of precision loss; the p-value stays usable, so the
    warning is not shown.
    """
    import warnings

    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def hedges_g(a, b) -> float:
    """Hedges' g of ``a`` minus ``b``: Cohen's d with pooled std, times ``1 - 3 / (4 (n_a + n_b) - 9)``.

    NaN when either sample has fewer than 2 finite values or the pooled std is 0.
    """
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return math.nan
    sp = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if sp == 0 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return math.nan
    return float((a.mean() - b.mean()) / sp * (1 - 3 / (4 * (na + nb) - 9)))


def describe(values) -> dict:
    """``n, mean, std, ci_lo, ci_hi`` of the finite values (std with ddof=1; std and interval NaN for n < 2: one
    seed has no spread to speak of, and a zero-width interval would claim one)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    lo, hi = t_interval(v) if v.size > 1 else (math.nan, math.nan)
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else math.nan,
            "std": (float(v.std(ddof=1)) if np.ptp(v) > 0 else 0.0) if v.size > 1 else math.nan,
            "ci_lo": lo, "ci_hi": hi}


def default_target(ok: pd.DataFrame, metric: str) -> float:
    """The default target of "epochs to target": the median final ``metric`` over finished runs.

    Half the finished runs reach it by construction, so the column separates fast
    from slow configurations whatever the dataset's loss scale.
    """
    v = ok[metric].to_numpy(float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def epochs_to_target(hist: pd.DataFrame, target: float, *, higher: bool = False) -> pd.Series:
    """First logged epoch at which each run's metric reaches ``target`` (``<=``, or ``>=`` if ``higher``).

    Parameters
    ----------
    hist : DataFrame
        Columns ``run_id, step, value`` of one metric.

    Returns
    -------
    Series indexed by run_id
        The epoch, NaN for runs that never reach it.
    """
    reached = hist["value"] >= target if higher else hist["value"] <= target
    first = hist[reached].groupby("run_id")["step"].min()
    return first.reindex(hist["run_id"].unique()).astype(float)


def summary_table(runs: pd.DataFrame, keys: list[str], metrics: list[str], *, primary: str,
                  epochs: pd.Series | None = None) -> pd.DataFrame:
    """One row per configuration of ``keys``, ranked by the mean of ``primary`` (best first).

    Parameters
    ----------
    runs : DataFrame
        One row per run, *all* outcomes: finished runs with a finite ``primary``
        enter the statistics (every metric), ``diverged`` ones only the
        divergence rate, failed ones neither. Intervals are clipped to :func:`metric_range`.
    metrics : list of str
        Final metrics to summarise as ``<m> mean``, ``<m> std``, ``<m> ci_lo``, ``<m> ci_hi``.
    epochs : Series indexed by run_id, optional
        Epochs to target per run (NaN = not reached): adds ``epochs mean`` (over
        the runs that reached it) and ``reached`` (count).

    Returns
    -------
    DataFrame
        Columns ``rank, *keys, seeds, diverged, divergence rate, ...``.
    """
    rows = []
    for group, sub in runs.groupby(keys, dropna=False, sort=True):
        group = group if isinstance(group, tuple) else (group,)
        row = dict(zip(keys, group))
        ok = sub[(sub["outcome"] == "finished") & np.isfinite(sub[primary].to_numpy(float))]
        trained = sub["outcome"].isin(["finished", "diverged"]).sum()
        row["seeds"] = len(ok)
        row["diverged"] = int((sub["outcome"] == "diverged").sum())
        row["divergence rate"] = row["diverged"] / trained if trained else math.nan
        for m in dict.fromkeys([primary, *metrics]):  # the primary even when no run logged it (all killed early)
            d = describe(ok[m]) if m in ok else describe([])
            d["ci_lo"], d["ci_hi"] = (float(v) for v in clip_interval(m, d["ci_lo"], d["ci_hi"]))
            for k in ("mean", "std", "ci_lo", "ci_hi"):
                row[f"{m} {k}"] = d[k]
        if epochs is not None:
            e = epochs.reindex(ok["run_id"])
            row["reached"] = int(e.notna().sum())
            row["epochs mean"] = float(e.mean()) if e.notna().any() else math.nan
        rows.append(row)
    table = pd.DataFrame(rows, columns=None if rows else [  # no run trained (all killed or failed): no row
        *keys, "seeds", "diverged", "divergence rate", *(f"{primary} {k}" for k in ("mean", "std", "ci_lo", "ci_hi"))])
    col = f"{primary} mean"
    table = table.sort_values(col, ascending=not higher_is_better(primary), na_position="last", ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def compare_to_best(runs: pd.DataFrame, keys: list[str], primary: str, *, epochs: pd.Series | None = None,
                    censor_at: float | None = None) -> pd.DataFrame:
    """Each activation at its best configuration against the best configuration overall.

    The best configuration of an activation is the one with the best mean
    ``primary`` over its finished runs. For every other activation: Welch's
    t-test and the Mann–Whitney U test (two-sided) of ``primary``, each
    Holm-corrected over the comparisons, and Hedges' g (other minus best). With
    ``epochs``, also the epochs to target, runs that never reach it counted as
    ``censor_at`` (one more than the last epoch) in a Mann–Whitney test; ``epochs_mean``
    is over the seeds that reached the target, ``epochs_median`` over all seeds, a
    seed that never reached it counted as ``inf`` (so ``inf`` unless more than half did).

    Returns
    -------
    DataFrame
        One row per activation (best first): ``activation, config, n, mean, std,
        diff, hedges_g, welch_p, welch_p_holm, mwu_p, mwu_p_holm`` (+ epochs columns).
    """
    from scipy import stats

    ok = runs[(runs["outcome"] == "finished") & np.isfinite(runs[primary].astype(float))]
    higher = higher_is_better(primary)
    best_rows = []
    for act, sub in ok.groupby("activation", sort=True):
        means = sub.groupby(keys[1:], dropna=False)[primary].mean() if len(keys) > 1 else None
        if means is not None:
            cfg = means.idxmax() if higher else means.idxmin()
            cfg = cfg if len(keys) > 2 else (cfg,)  # one key: its value may itself be a tuple (a list key)
            mask = np.ones(len(sub), bool)
            for k, v in zip(keys[1:], cfg):
                mask &= matches(sub[k], v)  # None, NaN and lists compare as values, never broadcast
            sub = sub[mask]
            label = ", ".join(f"{k}={val(v)}" for k, v in zip(keys[1:], cfg))
        else:
            label = ""
        best_rows.append((act, label, sub))
    if not best_rows:
        return pd.DataFrame()
    best_rows.sort(key=lambda r: r[2][primary].mean(), reverse=higher)
    _, _, ref = best_rows[0]
    out = []
    for act, label, sub in best_rows:
        a, b = sub[primary].to_numpy(float), ref[primary].to_numpy(float)
        row = {"activation": act, "config": label, "n": len(a), "mean": a.mean(),
               "std": describe(a)["std"], "diff": a.mean() - b.mean(),
               "hedges_g": math.nan, "welch_p": math.nan, "mwu_p": math.nan,
               "run_ids": list(sub["run_id"])}
        if sub is not ref:
            row["hedges_g"] = hedges_g(a, b)
            with warnings.catch_warnings():  # nearly equal samples: scipy warns of precision loss, p stays usable
                warnings.simplefilter("ignore", RuntimeWarning)
                row["welch_p"] = welch_p(a, b)
                if len(a) and len(b):
                    row["mwu_p"] = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
        if epochs is not None:
            ea = epochs.reindex(sub["run_id"]).to_numpy(float)
            eb = epochs.reindex(ref["run_id"]).to_numpy(float)
            row["epochs_mean"] = float(np.nanmean(ea)) if np.isfinite(ea).any() else math.nan
            row["reached"] = int(np.isfinite(ea).sum())
            row["epochs_median"] = float(np.median(np.where(np.isfinite(ea), ea, np.inf))) if ea.size else math.nan
            row["epochs_mwu_p"] = math.nan
            if sub is not ref and censor_at is not None:
                ca, cb = np.where(np.isfinite(ea), ea, censor_at), np.where(np.isfinite(eb), eb, censor_at)
                if not (np.all(ca == censor_at) and np.all(cb == censor_at)):
                    row["epochs_mwu_p"] = float(stats.mannwhitneyu(ca, cb, alternative="two-sided").pvalue)
        out.append(row)
    table = pd.DataFrame(out)
    table["welch_p_holm"] = holm(table["welch_p"])
    table["mwu_p_holm"] = holm(table["mwu_p"])
    if epochs is not None:
        table["epochs_mwu_p_holm"] = holm(table["epochs_mwu_p"])
    return table


def aggregate_curves(hist: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and 95 % t-interval over seeds per ``(keys, metric, step)``, non-finite values dropped.

    Bands are clipped to the metric's range (:func:`metric_range`).

    The report draws these pre-aggregated curves directly instead of letting
    seaborn bootstrap thousands of (step, group) cells.

    Returns
    -------
    DataFrame
        Columns ``*keys, metric, step, n, mean, std, lo, hi``.
    """
    from scipy import stats

    h = hist[np.isfinite(hist["value"].to_numpy(float))]
    g = h.groupby([*keys, "metric", "step"], dropna=False, sort=True, observed=True)["value"]
    agg = g.agg(n="count", mean="mean", std="std").reset_index()
    n = agg["n"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), 0.0)
        half = np.where(n > 1, t * agg["std"].to_numpy() / np.sqrt(n), 0.0)
    agg["lo"] = agg["mean"] - half
    agg["hi"] = agg["mean"] + half
    for m, idx in agg.groupby("metric", observed=True).groups.items():  # bands clipped to the metric's range
        agg.loc[idx, "lo"], agg.loc[idx, "hi"] = clip_interval(str(m), agg.loc[idx, "lo"], agg.loc[idx, "hi"])
    return agg
