"""Report figures in seaborn's style: tidy ``data=`` plus column names, optional ``ax=``, return the axes or figure.

Curves arrive pre-aggregated (``mean``, ``lo``, ``hi`` per step, from
:func:`nnexp.report.stats.aggregate_curves`): drawing a band from three
columns is instant, whereas letting seaborn bootstrap or call an interval
function for every (step, group) cell of 180 runs × 1000 epochs is not.

Nothing here calls ``plt.show()``; :func:`set_theme` is called once by the report.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .fmt import is_number, matches, val
from .stats import clip_interval, higher_is_better, t_interval

__all__ = ["set_theme", "palette_for", "fit_suptitle", "ACTIVATION_COLORS", "t_interval", "learning_curves",
           "final_metric", "lr_sensitivity",
           "heatmap", "seaborn_heatmap", "layer_diagnostics", "decision_boundaries", "label"]

#: Readable names of the metrics and keys used on axes.
LABELS = {
    "val_loss": "validation loss", "train_loss": "training loss", "test_loss": "test loss",
    "val_accuracy": "validation accuracy", "train_accuracy": "training accuracy", "test_accuracy": "test accuracy",
    "optimizer.lr": "learning rate", "init": "initialisation", "grad_norm": "gradient norm ‖dW‖",
    "saturation": "saturated fraction", "dead_fraction": "dead-unit fraction", "act_std": "activation std",
    "train_seconds": "wall time (s)", "step": "epoch",
}


def label(key: str) -> str:
    """Axis label for a metric or config key."""
    return LABELS.get(key, key)


def set_theme() -> None:
    """The report's one theme (non-interactive backend, seaborn whitegrid, paper-sized fonts)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95,
                  rc={"axes.titlesize": "medium", "figure.dpi": 100, "savefig.dpi": 130,
                      "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none"})


#: One fixed colour per activation of :data:`nnexp.activations.ACTIVATIONS`, the same in every figure of every
#: report, so two reports can be compared side by side. Okabe & Ito's colour-blind-safe set (2008) for the most used
#: eight, Paul Tol's "muted" set (colour-blind safe, https://personal.sron.nl/~pault/) for the rest; relu (blue) and
#: tanh (vermillion) differ in hue and lightness under every common colour-vision deficiency.
ACTIVATION_COLORS = {
    "relu": "#0072B2", "tanh": "#D55E00", "sigmoid": "#009E73", "leaky_relu": "#56B4E9", "elu": "#CC79A7",
    "selu": "#E69F00", "gelu": "#000000", "identity": "#888888", "silu": "#882255", "mish": "#332288",
    "softplus": "#117733", "softsign": "#999933", "hard_tanh": "#AA4499", "hard_sigmoid": "#44AA99",
}


def palette_for(values) -> dict:
    """A fixed colour per value: :data:`ACTIVATION_COLORS` for activations, else the colorblind palette by sort order.

    Returns ``{str(value): colour}`` (hex string for activations, RGB tuple otherwise).
    """
    import seaborn as sns

    values = sorted({str(v) for v in values})
    others = [v for v in values if v not in ACTIVATION_COLORS]
    extra = dict(zip(others, sns.color_palette("colorblind", max(len(others), 3))))
    return {v: ACTIVATION_COLORS.get(v, extra.get(v)) for v in values}


def fit_suptitle(fig, text: str, **kw):
    """``fig.suptitle(text)`` wrapped onto as many lines as the figure's width needs (never clipped at the sides).

    The line length is estimated from the figure width and the title font size
    (an average glyph is about 0.55 em wide); ``tests/test_report_layout.py``
    checks the drawn bounding boxes.
    """
    import textwrap

    import matplotlib as mpl
    from matplotlib.font_manager import FontProperties

    size = FontProperties(size=kw.get("fontsize", mpl.rcParams["figure.titlesize"])).get_size_in_points()
    width = fig.get_figwidth() * 72 * 0.92
    chars = max(int(width / (0.55 * size)), 20)
    return fig.suptitle("\n".join(textwrap.wrap(text, chars)) or text, **kw)


def _plain_log(ax) -> None:
    """Log y axis with plain tick labels (0.2, 0.5, 1) instead of 2 × 10⁻¹.

    No minor ticks: the report's theme (:func:`set_theme`) draws neither their marks nor their grid lines, and
    matplotlib would still make and lay out a tick object for each (most of a log axis' drawing time).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def _levels(data: pd.DataFrame, key: str | None) -> list:
    if key is None or key not in data:
        return [None]
    return sorted(data[key].dropna().unique().tolist(), key=lambda v: (not is_number(v), v if is_number(v) else val(v)))


SHORT = {"optimizer.lr": "lr", "init": "init", "optimizer": "opt", "model.hidden_sizes": "hidden"}


def _facet_title(row_key, row_val, col_key, col_val) -> str:
    both = row_key is not None and col_key is not None  # two keys: short names, so titles fit the panel
    name = (lambda k: SHORT.get(k, k)) if both else label
    parts = [f"{name(k)} = {val(v)}" for k, v in ((row_key, row_val), (col_key, col_val)) if k is not None]
    return ", ".join(parts)


def _subset(data, *pairs):
    """Rows of ``data`` where each ``(key, value)`` of ``pairs`` matches (pairs with key None are ignored)."""
    mask = np.ones(len(data), bool)
    for k, v in pairs:
        if k is not None:
            mask &= matches(data[k], v)
    return data[mask]


def learning_curves(data: pd.DataFrame, *, x: str = "step", y: str = "mean", lo: str = "lo", hi: str = "hi",
                    hue: str = "activation", style: str | None = None, style_order=None, col: str | None = None,
                    row: str | None = None, palette=None, logy: bool = True, ylabel: str | None = None,
                    target: float | None = None, height: float = 3.0):
    """Mean curve per ``hue`` (and line style per ``style``) with its 95 % band, faceted by ``row`` × ``col``.

    Parameters
    ----------
    data : DataFrame
        Pre-aggregated long form: one row per (hue, style, row, col, step) with
        the mean ``y`` and the band ``lo``..``hi``.
    style : str, optional
        Column whose values get solid, dashed, dotted lines (e.g. ``metric``:
        validation and training loss in one panel), in ``style_order``.
    target : float, optional
        Drawn as a dashed horizontal line (the "epochs to target" threshold).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D

    rows, cols = _levels(data, row), _levels(data, col)
    palette = palette or palette_for(data[hue])
    styles = dict(zip(style_order or _levels(data, style), ["-", "--", ":", "-."]))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(max(4.0 * len(cols), 5.5) + 1.2, height * len(rows) + 0.5),
                             sharex=True, sharey="row", squeeze=False, layout="constrained")
    for i, rv in enumerate(rows):
        for j, cv in enumerate(cols):
            ax = axes[i, j]
            sub = _subset(data, (row, rv), (col, cv))
            for key, g in sub.groupby([hue] + ([style] if style else []), sort=True):
                h = key[0]
                ls = styles[key[1]] if style else "-"
                c = palette.get(str(h))
                ax.plot(g[x].to_numpy(), g[y].to_numpy(), color=c, lw=1.5, ls=ls)
                ax.fill_between(g[x].to_numpy(), g[lo].to_numpy(), g[hi].to_numpy(), color=c, alpha=0.2, lw=0)
            if target is not None and math.isfinite(target):
                ax.axhline(target, color="0.35", ls="--", lw=0.9)
            vals = sub[y].to_numpy(float)
            if logy and np.isfinite(vals).any() and np.nanmin(vals) > 0:
                ax.set_ylim(bottom=max(np.nanmin(sub[lo].to_numpy(float)), 0.5 * np.nanmin(vals)))
                _plain_log(ax)
            ax.set_title(_facet_title(row, rv, col, cv))
            if i == len(rows) - 1:
                ax.set_xlabel(label(x))
            if j == 0:
                ax.set_ylabel(ylabel or label(y))
    handles = [Line2D([], [], color=palette[str(h)], lw=2, label=str(h)) for h in sorted(data[hue].astype(str).unique())]
    if style:
        handles += [Line2D([], [], color="0.3", ls=ls, label=label(str(v))) for v, ls in styles.items()]
    fig.legend(handles=handles, loc="outside right center", frameon=False)  # "upper" would overlap the suptitle
    return fig


def final_metric(data: pd.DataFrame, *, x: str = "activation", y: str = "val_loss", ax=None, order=None,
                 palette=None):
    """Final value per run as points, with the mean and its 95 % t-interval (black diamond)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    palette = palette or palette_for(data[x])
    sns.stripplot(data=data, x=x, y=y, order=order, ax=ax, alpha=0.6, hue=x, palette=palette, legend=False)
    sns.pointplot(data=data, x=x, y=y, errorbar=lambda v: clip_interval(y, *t_interval(v)), order=order, ax=ax,
                  color="black",
                  linestyle="none", capsize=0.2, marker="D", markersize=5)
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    return ax


def lr_sensitivity(data: pd.DataFrame, *, x: str = "optimizer.lr", y: str = "val_loss", hue: str = "activation",
                   diverged: pd.DataFrame | None = None, ax=None, palette=None):
    """Final ``y`` against the learning rate (log axis): seeds as dots, mean and 95 % CI as line and bars.

    Parameters
    ----------
    data : DataFrame
        One row per finished run (finite ``y``).
    diverged : DataFrame, optional
        Columns ``hue, x, diverged, trained``: configurations with diverged runs
        are marked with a cross at the top of the axes and their rate.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    palette = palette or palette_for(data[hue])
    levels = sorted(data[hue].unique())
    nh = len(levels)
    for k, h in enumerate(levels):
        g = data[data[hue] == h]
        c = palette.get(str(h))
        jitter = 10 ** ((k - (nh - 1) / 2) * 0.03)  # small multiplicative dodge on the log axis
        summ = g.groupby(x)[y].agg(lambda v: t_interval(v))
        means = g.groupby(x)[y].mean()
        xs = means.index.to_numpy(float) * jitter
        lo, hi = clip_interval(y, np.array([t[0] for t in summ]), np.array([t[1] for t in summ]))
        ax.errorbar(xs, means.to_numpy(), yerr=[means.to_numpy() - lo, hi - means.to_numpy()], color=c,
                    marker="o", ms=5, lw=1.6, capsize=3, label=str(h))
        ax.scatter(g[x].to_numpy(float) * jitter, g[y], color=c, s=12, alpha=0.45, lw=0)
    ax.set_xscale("log")
    xs_all = np.sort(data[x].unique().astype(float))
    if diverged is not None and len(diverged):
        xs_all = np.union1d(xs_all, diverged[x].astype(float))
    ax.set_xticks(xs_all)
    ax.set_xticklabels([f"{v:g}" for v in xs_all])
    ax.minorticks_off()
    if diverged is not None and (diverged["diverged"] > 0).any():
        y0, y1 = ax.get_ylim()
        ax.set_ylim(y0, y1 + (0.06 + 0.055 * nh) * (y1 - y0))  # headroom: markers inside the axes, never clipped
        for k, h in enumerate(levels):
            d = diverged[(diverged[hue] == h) & (diverged["diverged"] > 0)]
            for _, r in d.iterrows():
                xv = float(r[x]) * 10 ** ((k - (nh - 1) / 2) * 0.03)
                ax.annotate(f"×{int(r['diverged'])}/{int(r['trained'])}", (xv, 0.985 - 0.055 * k), xycoords=("data", "axes fraction"),
                            color=palette.get(str(h)), ha="center", va="top", fontsize=8)
    ax.set_xlabel(label(x) + " (log scale)")
    ax.set_ylabel("final " + label(y))
    ax.legend(title=label(hue), frameon=False)
    return ax


def heatmap(data: pd.DataFrame, *, index: str, columns: str, value: str, ax=None, std: str | None = None,
            higher_better: bool | None = None, cbar_label: str | None = None):
    """Annotated heatmap of ``value`` over ``index`` × ``columns`` (one row of ``data`` per cell).

    Cells read ``mean`` (and ``± std`` when ``std`` is given); the colour map
    runs from worse (dark) to better (light) according to ``higher_better``
    (default: from the metric name in ``value``).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.5 * data[columns].nunique(), 0.9 + 0.6 * data[index].nunique()))
    hb = higher_is_better(value.split(" ")[0]) if higher_better is None else higher_better
    grid = data.pivot_table(index=index, columns=columns, values=value, aggfunc="first", dropna=False)
    text = grid.map(lambda v: f"{v:.3g}" if np.isfinite(v) else "–")
    if std:
        s = data.pivot_table(index=index, columns=columns, values=std, aggfunc="first", dropna=False)
        text = text + s.map(lambda v: f"\n± {v:.2g}" if np.isfinite(v) else "")
    seaborn_heatmap(grid, annot=text.to_numpy(), fmt="", cmap="viridis" if hb else "viridis_r", ax=ax,
                    linewidths=0.5, linecolor="white", cbar_kws={"label": cbar_label or label(value)},
                    annot_kws={"fontsize": 8})
    ax.set_xlabel(label(columns))
    ax.set_ylabel(label(index))
    ax.set_xticklabels([f"{float(t.get_text()):g}" if _is_num(t.get_text()) else t.get_text()
                        for t in ax.get_xticklabels()], rotation=0)
    ax.tick_params(axis="y", rotation=0)
    return ax


def seaborn_heatmap(data, *, ax, **kwargs):
    """``seaborn.heatmap(data, ax=ax, **kwargs)`` without the draw of the whole figure it makes; returns ``ax``.

    seaborn draws the figure (every axes, and the constrained layout: as long as rendering it) to see whether the
    heatmap's tick labels overlap, and turns them if they do. The report's heatmaps set their tick labels' rotation
    themselves right after, so that draw changes nothing drawn, and a figure of n heatmaps would be drawn n times
    (quadratic in the panels). The figure is hidden meanwhile: a hidden figure draws nothing, while its tick
    labels still have their sizes.
    """
    import seaborn as sns

    fig = ax.get_figure(root=True)
    visible = fig.get_visible()
    fig.set_visible(False)
    try:
        return sns.heatmap(data, ax=ax, **kwargs)
    finally:
        fig.set_visible(visible)


def _is_num(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def layer_diagnostics(data: pd.DataFrame, *, hue: str = "activation", col: str | None = None, palette=None,
                      kinds=("grad_norm", "saturation", "dead_fraction")):
    """Per-layer diagnostics over epochs: one row per kind, one line per (hue, layer), columns by ``col``.

    Parameters
    ----------
    data : DataFrame
        Pre-aggregated curves with ``metric`` values ``layer{l}.{kind}`` and
        columns ``step, mean, lo, hi``. Layers are told apart by line style
        (solid = layer 1, then dashed, dotted, ...).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    d = data[data["metric"].str.match(r"layer\d+\.")].copy()
    parts = d["metric"].str.extract(r"layer(\d+)\.(.+)")
    d["layer"] = parts[0].astype(int)
    d["kind"] = parts[1]
    kinds = [k for k in kinds if (d["kind"] == k).any()]
    cols = _levels(d, col)
    palette = palette or palette_for(d[hue])
    styles = ["-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3))]
    fig, axes = plt.subplots(len(kinds), len(cols), figsize=(max(4.0 * len(cols), 5.5) + 1.2, 2.5 * len(kinds) + 0.5),
                             sharex=True, sharey="row", squeeze=False, layout="constrained")
    for i, kind in enumerate(kinds):
        for j, cv in enumerate(cols):
            ax = axes[i, j]
            sub = d[(d["kind"] == kind) & ((d[col] == cv) if col else True)]
            for (h, layer), g in sub.groupby([hue, "layer"], sort=True):
                g = g.sort_values("step")
                c = palette.get(str(h))
                ls = styles[(layer - 1) % len(styles)]
                ax.plot(g["step"].to_numpy(), g["mean"].to_numpy(), color=c, ls=ls, lw=1.4)
                lo = np.maximum(g["lo"], 0.5 * g["mean"]) if kind == "grad_norm" else g["lo"]
                ax.fill_between(g["step"].to_numpy(), lo.to_numpy(), g["hi"].to_numpy(), color=c, alpha=0.15, lw=0)
            if kind == "grad_norm" and len(sub) and np.nanmin(sub["mean"].to_numpy(float)) > 0:
                _plain_log(ax)
            if kind != "grad_norm":
                ax.set_ylim(-0.02, 1.02)
            if i == 0:
                ax.set_title(_facet_title(None, None, col, cv) if col else "")
            if j == 0:
                ax.set_ylabel(label(kind))
            if i == len(kinds) - 1:
                ax.set_xlabel("epoch")
            if not len(sub):
                ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", color="0.5")
    layers = sorted(d["layer"].unique())
    handles = [Line2D([], [], color=palette[str(h)], lw=2, label=str(h)) for h in sorted(d[hue].unique())]
    handles += [Line2D([], [], color="0.3", ls=styles[(l - 1) % len(styles)], label=f"layer {l}") for l in layers]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig


def decision_boundaries(grid: pd.DataFrame, points: pd.DataFrame | None = None, *, row: str = "activation",
                        col: str | None = None, titles: dict | None = None):
    """Predicted probability of class 1 over the input plane, one panel per ``row`` × ``col``.

    Parameters
    ----------
    grid : DataFrame
        Long form: columns ``x1, x2, p`` (probability of class 1, or the
        predicted class divided by n_classes - 1) plus ``row``/``col``.
    points : DataFrame, optional
        Test points, columns ``x1, x2, y``: drawn over every panel.
    titles : dict, optional
        Extra title line per ``(row value, col value)`` (e.g. the test accuracy).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("playground", ["#f59322", "#e8eaeb", "#0877bd"])  # Playground's colours
    rows, cols = _levels(grid, row), _levels(grid, col)
    x1, x2 = grid["x1"].to_numpy(float), grid["x2"].to_numpy(float)
    aspect = np.ptp(x2) / np.ptp(x1) if np.ptp(x1) > 0 else 1.0
    w = 2.9
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(w * len(cols) + 1.0, (w * aspect + 0.55) * len(rows)),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    im = None
    for i, rv in enumerate(rows):
        for j, cv in enumerate(cols):
            ax = axes[i, j]
            g = _subset(grid, (row, rv), (col, cv))
            if len(g):
                P = g.pivot(index="x2", columns="x1", values="p")  # one value per grid point: no aggregation
                ext = (P.columns.min(), P.columns.max(), P.index.min(), P.index.max())
                im = ax.imshow(P.to_numpy(), origin="lower", extent=ext, cmap=cmap, vmin=0, vmax=1, aspect="auto",
                               interpolation="bilinear")
                ax.contour(P.columns, P.index, P.to_numpy(), levels=[0.5], colors="0.15", linewidths=1.0)
            else:
                ax.text(0.5, 0.5, "no weights", transform=ax.transAxes, ha="center", color="0.5")
            if points is not None and len(points):
                ax.scatter(points["x1"], points["x2"], c=points["y"], cmap=cmap, vmin=0, vmax=points["y"].max() or 1,
                           s=9, edgecolors="white", linewidths=0.4)
            t = _facet_title(row, rv, col, cv).replace("activation = ", "")
            extra = (titles or {}).get((rv, cv))
            ax.set_title(t + (f"\n{extra}" if extra else ""), fontsize=9)
            ax.set_aspect("equal")
            ax.grid(False)
            ax.tick_params(labelsize=7)
            if i == len(rows) - 1:
                ax.set_xlabel("feature x1 (raw units)", fontsize=8)
            if j == 0:
                ax.set_ylabel("feature x2 (raw units)", fontsize=8)
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=0.6, pad=0.02)
        cb.set_label("P(class 1)")
    return fig
