"""Report figures in seaborn's style: tidy ``data=`` plus column names, optional ``ax=``, return the axes.

Nothing here calls ``plt.show()``; :func:`set_theme` is called once by the report.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["set_theme", "t_interval", "learning_curves", "final_metric"]


def set_theme() -> None:
    """The report's one theme (non-interactive backend, seaborn whitegrid)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean of ``values`` (NaNs dropped).

    With one value the interval is that value. Used as seaborn's ``errorbar``
    callable so the band is an honest 95 % CI for few seeds (t, not 1.96).
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (np.nan, np.nan)
    m = v.mean()
    if v.size < 2:
        return (m, m)
    half = stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return (m - half, m + half)


def learning_curves(data: pd.DataFrame, *, x: str = "step", y: str = "value", hue: str = "activation",
                    ax=None, logy: bool = True, ylabel: str | None = None):
    """Mean curve per ``hue`` with its 95 % t-interval band over seeds.

    Parameters
    ----------
    data : DataFrame
        Long form, one row per (run, step).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    sns.lineplot(data=data, x=x, y=y, hue=hue, errorbar=t_interval, ax=ax, estimator="mean")
    if logy and (data[y] > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or y)
    return ax


def final_metric(data: pd.DataFrame, *, x: str = "activation", y: str = "val_loss", ax=None, order=None):
    """Final value per run as points, with the mean and its 95 % t-interval."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    sns.pointplot(data=data, x=x, y=y, errorbar=t_interval, order=order, ax=ax, color="black",
                  linestyle="none", capsize=0.2, marker="D")
    sns.stripplot(data=data, x=x, y=y, order=order, ax=ax, alpha=0.5, hue=x, legend=False)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    return ax
