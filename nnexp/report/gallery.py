"""The activation gallery: every activation of :data:`nnexp.activations.ACTIVATIONS` and its derivative.

``python -m nnexp.report gallery [--out DIR]`` writes ``activation_gallery.png``
and ``activation_gallery.svg`` to ``DIR`` (default ``reports/`` under the
current directory). :func:`activation_frame` builds the tidy data,
:func:`gallery` draws it; nothing here calls ``plt.show()``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..activations import ACTIVATIONS, get_activation

__all__ = ["activation_frame", "gallery", "main"]

CURVES = ("f(z)", "f'(z)")


def activation_frame(z: np.ndarray | None = None, names=None) -> pd.DataFrame:
    """Long-form values of each activation and its derivative, default parameters.

    Parameters
    ----------
    z : ndarray of shape (n_points,), optional
        Pre-activations; default 601 points on [-5, 5] (which include the kinks at 0, +-1, +-3).
    names : sequence of str, optional
        Activations to include; default all, sorted.

    Returns
    -------
    DataFrame
        Columns ``activation`` (str), ``curve`` (``"f(z)"`` or ``"f'(z)"``),
        ``z`` and ``value`` (float); ``2 * n_points`` rows per activation.
    """
    z = np.linspace(-5, 5, 601) if z is None else np.asarray(z, dtype=np.float64)
    frames = []
    for name in sorted(ACTIVATIONS) if names is None else names:
        act = get_activation(name)
        a = act.forward(z)
        for curve, values in zip(CURVES, (a, act.derivative(z, a))):
            frames.append(pd.DataFrame({"activation": name, "curve": curve, "z": z, "value": values}))
    return pd.concat(frames, ignore_index=True)


def gallery(data: pd.DataFrame | None = None, *, col_wrap: int = 5, height: float = 2.2):
    """One panel per activation with the function and its derivative; returns the Figure.

    Parameters
    ----------
    data : DataFrame, optional
        As returned by :func:`activation_frame` (its default if omitted).
    col_wrap : int
        Panels per row.
    height : float
        Height of each panel, inches.

    Returns
    -------
    matplotlib.figure.Figure
        Each panel's axes hold two data lines, ``f(z)`` then ``f'(z)``, drawn
        from the data unaggregated (plus the axes through 0, ``gid="axis"``);
        ``fig.axes_dict`` maps activation name to its axes.
    """
    import seaborn as sns

    data = activation_frame() if data is None else data
    g = sns.relplot(data=data, x="z", y="value", hue="curve", hue_order=list(CURVES), col="activation",
                    col_wrap=col_wrap, kind="line", estimator=None, sort=False, height=height, aspect=1.2,
                    facet_kws={"sharey": False})
    g.set_titles("{col_name}")
    g.set_axis_labels("pre-activation z", "")
    for ax in g.axes.flat:
        ax.axhline(0, color="0.6", lw=0.6, zorder=0, gid="axis")
        ax.axvline(0, color="0.6", lw=0.6, zorder=0, gid="axis")
    sns.move_legend(g, "upper right", title=None, frameon=False)
    g.figure.suptitle("Activations f and derivatives f' (nnexp.activations)", y=1.02)
    g.figure.axes_dict = g.axes_dict
    return g.figure


def main(argv=None) -> int:
    """``python -m nnexp.report gallery [--out DIR]``: write the gallery as PNG and SVG, print the paths."""
    p = argparse.ArgumentParser(prog="python -m nnexp.report gallery", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output folder (default: ./reports)")
    args = p.parse_args(argv)
    from .figures import set_theme

    set_theme()
    import matplotlib.pyplot as plt

    out = Path(args.out).resolve() if args.out else Path.cwd() / "reports"
    out.mkdir(parents=True, exist_ok=True)
    fig = gallery()
    paths = [out / f"activation_gallery.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
