"""Figures drawn the way the classic papers draw them, for the studies in ``experiments/``.

Plot functions take long-form data (seaborn's ``data=`` plus column names) and an optional ``ax=``, and return
the axes; nothing calls ``plt.show()``. :func:`sections` is what the report calls (through
:func:`nnexp.report.claims.sections`): it looks the study up in :data:`STUDY_FIGURES` and returns report sections
with the figures embedded.

- ``he2015_deep_relu``: He et al. (2015): activation std at initialisation against depth with the theoretical
  line of each variance (their Sec. 2.2), the training loss against epochs (their Fig. 3), and a layer x epoch
  heatmap of the activation spread, readable at 30 layers.
- ``glorot2010_saturation``: Glorot & Bengio (2010): per-layer median activation with its 1-99 percentile band
  against epochs (their Figs. 2-4), and the spreads of activations and back-propagated gradients at
  initialisation per layer (their Figs. 6-7).
- ``lu2019_dying_relu``: Lu et al. (2019): the fraction of networks born dead against depth, one line per width,
  with Wilson intervals and the probability of being dead at one input (an upper bound).
- ``saxe2013_deep_linear``: Saxe et al. (2013): epochs until the training loss reaches the claims' threshold
  against depth, one line per initialisation (median and min-max band over seeds), and the training loss of the
  deepest networks against epochs.
- ``klambauer2017_selu``: Klambauer et al. (2017): each hidden layer's activation mean and variance against depth,
  one line per input variance, SELU against ReLU, at initialisation and after training, with the tolerance band
  the claims test.
- ``hendrycks2016_gelu``: Hendrycks & Gimpel (2016): final training loss against the learning rate, one line per
  activation (median over seeds, band from the lowest to the highest seed).
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

__all__ = ["layer_profile", "loss_curves", "layer_epoch_heatmap", "born_dead", "percentile_bands", "layer_histograms",
           "load_histograms", "sections", "STUDY_FIGURES", "born_dead_probability", "time_to_threshold", "moments_by_layer", "loss_by_lr"]


def _embed(fig, out_dir: Path, name: str, caption: str) -> str:
    """Save ``fig`` as ``<name>.png`` in ``out_dir`` and return an HTML figure embedding it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    (Path(out_dir) / f"{name}.png").write_bytes(buf.getvalue())
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{caption} <a href="{name}.png">PNG</a></figcaption></figure>')



def _axes_and_colours(ax, data, hue: str):
    """``ax`` (a new 5.5 x 4 inch figure's if None), the sorted levels of ``data[hue]`` as text, and a colour-blind
    safe colour per level."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    levels = sorted(data[hue].astype(str).unique())
    return ax, levels, dict(zip(levels, sns.color_palette("colorblind", max(3, len(levels)))))

def layer_profile(data: pd.DataFrame, *, x: str = "layer", y: str = "value", hue: str = "init",
                  theory: pd.DataFrame | None = None, ax=None, ylabel: str = "activation std at initialisation"):
    """A per-layer quantity against depth (log y), mean over seeds with each seed faint, and theoretical lines.

    Parameters
    ----------
    data : DataFrame with columns ``x``, ``y``, ``hue`` and ``run_id``
    theory : DataFrame with columns ``x``, ``y``, ``hue``, optional
        Drawn dashed in the hue's colour.

    Returns
    -------
    matplotlib Axes
    """
    ax, levels, colours = _axes_and_colours(ax, data, hue)
    for level in levels:
        d = data[data[hue].astype(str) == level]
        for _, r in d.groupby("run_id"):
            r = r.sort_values(x)
            ax.plot(r[x], r[y], color=colours[level], alpha=0.25, lw=0.8)
        m = d.groupby(x)[y].mean()
        ax.plot(m.index, m.to_numpy(), "o-", color=colours[level], ms=3, label=f"{level} (measured)")
        if theory is not None:
            t = theory[theory[hue].astype(str) == level].sort_values(x)
            ax.plot(t[x], t[y], "--", color=colours[level], lw=1.2, label=f"{level} (theory)")
    ax.set_yscale("log")
    ax.set_xlabel("hidden layer")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    return ax


def loss_curves(data: pd.DataFrame, *, x: str = "step", y: str = "value", hue: str = "init", ax=None,
                hline: float | None = None, hline_label: str = ""):
    """Training loss against epochs, one line per run, coloured by ``hue``; an optional horizontal reference line.

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    sns.lineplot(data=data, x=x, y=y, hue=hue, units="run_id", estimator=None, ax=ax, lw=1.0,
                 palette="colorblind")
    if hline is not None:
        ax.axhline(hline, color="grey", ls="--", lw=1, zorder=0)
        ax.annotate(hline_label, (data[x].max(), hline), ha="right", va="bottom", fontsize="small", color="grey")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    return ax


def layer_epoch_heatmap(data: pd.DataFrame, *, layer: str = "layer", epoch: str = "step", value: str = "value",
                        ax=None, cbar_label: str = "log10 activation std"):
    """A layer x epoch heatmap of ``value`` (mean over runs): readable at any depth.

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    grid = data.groupby([layer, epoch])[value].mean().unstack(epoch).sort_index(ascending=False)
    sns.heatmap(grid, ax=ax, cmap="viridis", cbar_kws={"label": cbar_label})
    ax.set_xlabel("epoch")
    ax.set_ylabel("hidden layer")
    return ax


def _layer_frame(hist: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Rows of ``layer{l}.probe.<kind>`` with an integer ``layer`` column."""
    h = hist[hist["metric"].str.fullmatch(rf"layer\d+\.probe\.{kind}")].copy()
    h["layer"] = h["metric"].str.extract(r"layer(\d+)\.", expand=False).astype(int)
    return h


def _he2015(ok: pd.DataFrame, uri: str, out_dir: Path) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    from .load import load_histories

    depth = int(pd.to_numeric(ok["model.depth"]).max())
    wanted = [f"layer{l}.probe.act_std" for l in range(1, depth + 1)] + ["train_loss"]
    hist = load_histories(uri, list(ok["run_id"]), metrics=wanted).merge(ok[["run_id", "init"]], on="run_id")
    std = _layer_frame(hist, "act_std")
    if not len(std):
        return []
    at0 = std[std["step"] == 0]
    first = at0[at0["layer"] == 1].groupby("init")["value"].mean()
    layers = np.arange(1, depth + 1)
    # Sec. 2.2: Var[z_l] = n Var[w] Var[z_{l-1}] / 2 for ReLU; the std of a_l scales the same way
    factor = {"lecun_normal": 2 ** -0.5, "xavier_normal": 2 ** -0.5, "he_normal": 1.0, "he_uniform": 1.0}
    theory = pd.DataFrame([(i, l, first[i] * factor[i] ** (l - 1)) for i in first.index if i in factor
                           for l in layers], columns=["init", "layer", "value"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    layer_profile(at0, theory=theory, ax=axes[0])
    axes[0].set_title("activation std at initialisation against depth")
    loss = hist[hist["metric"] == "train_loss"]
    loss_curves(loss, ax=axes[1], hline=math.log(10), hline_label="ln(10): chance on 10 classes")
    axes[1].set_title("training loss (He et al. 2015, Fig. 3)")
    parts = [_embed(fig, out_dir, "paper_he2015", "Left: std of each hidden layer's activations at initialisation "
                    "(probe batch; faint: seeds), dashed: the paper's theory from layer 1 (factor 2^(-1/2) per layer "
                    "for variance 1/n, 1 for 2/n). Right: training loss per seed; grey: ln(10).")]
    inits = sorted(std["init"].unique())
    fig, axes = plt.subplots(1, len(inits), figsize=(5.2 * len(inits), 5), layout="constrained", squeeze=False)
    for ax, i in zip(axes[0], inits):
        d = std[std["init"] == i].assign(value=lambda f: np.log10(f["value"].clip(lower=1e-30)))
        layer_epoch_heatmap(d, ax=ax)
        ax.set_title(f"init={i}")
    parts.append(_embed(fig, out_dir, "paper_he2015_heatmap", "log10 of each layer's activation std against "
                        "epochs (probe batch, mean over seeds): a layer x epoch view that stays readable at 30 layers."))
    return [("Paper figure: He et al. (2015)", "".join(parts))]


def born_dead_probability(width: int, depth: int) -> float:
    r"""Probability that a ReLU network with zero biases and symmetric weights is dead at one given input.

    :math:`1 - (1 - 2^{-N})^{L}` for :math:`L` hidden layers of :math:`N` units: a layer whose input is not zero
    has each unit's pre-activation :math:`w \cdot a` symmetric about 0, so all :math:`N` units are off with
    probability :math:`2^{-N}`, independently of the layers before. Dead on a whole set of inputs (born dead, in
    Lu et al. 2019's sense) is rarer: this bounds the measured fraction from above and tends to 1 with depth,
    as the paper proves the born-dead probability does.
    """
    return 1.0 - (1.0 - 0.5 ** width) ** depth


def born_dead(data: pd.DataFrame, *, x: str = "depth", y: str = "fraction", hue: str = "width", lo: str = "lo",
              hi: str = "hi", ax=None):
    """Fraction of networks born dead against depth, one line per width, with intervals and the paper's bound.

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    widths = sorted(data[hue].unique())
    colours = dict(zip(widths, sns.color_palette("viridis", len(widths))))
    for w in widths:
        d = data[data[hue] == w].sort_values(x)
        ax.errorbar(d[x], d[y], yerr=[d[y] - d[lo], d[hi] - d[y]], fmt="o-", ms=3, color=colours[w], capsize=2,
                    label=f"width {w}")
        xs = np.arange(int(d[x].min()), int(d[x].max()) + 1)
        ax.plot(xs, [born_dead_probability(int(w), int(v)) for v in xs], "--", color=colours[w], lw=1)
    ax.set_xlabel("depth (hidden layers)")
    ax.set_ylabel("fraction born dead")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="small", title="measured (dashed: dead at one input)", loc="lower right")
    return ax


def _lu2019(ok: pd.DataFrame, uri: str, out_dir: Path) -> list[tuple[str, str]]:
    from scipy import stats

    d = ok.assign(depth=pd.to_numeric(ok["model.depth"]), width=pd.to_numeric(ok["model.width"]),
                  n=pd.to_numeric(ok["replicas"]), fraction=pd.to_numeric(ok.get("dead_network"), errors="coerce"))
    d = d.dropna(subset=["fraction"])
    if not len(d):
        return []
    g = d.groupby(["width", "depth"]).apply(lambda f: pd.Series({"k": int(np.round(f["fraction"] * f["n"]).sum()),
                                                                 "n": int(f["n"].sum())}), include_groups=False)
    g = g.reset_index()
    ci = [stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="wilson") for k, n in zip(g["k"], g["n"])]
    g = g.assign(fraction=g["k"] / g["n"], lo=[c.low for c in ci], hi=[c.high for c in ci])
    g.to_csv(Path(out_dir) / "born_dead.csv", index=False)
    ax = born_dead(g)
    ax.set_title(f"networks born dead, {int(g['n'].median())} initialisations per point")
    caption = ("Fraction of ReLU networks born dead (some hidden layer off for every input) against depth, one line "
               "per width, with 95 % Wilson intervals; dashed: probability of being dead at one input, "
               "1 - (1 - 2^-width)^depth, an upper bound. Table: born_dead.csv.")
    return [("Paper figure: Lu et al. (2019)", _embed(ax.figure, out_dir, "paper_lu2019", caption))]


def time_to_threshold(data: pd.DataFrame, *, x: str = "depth", y: str = "epochs", hue: str = "init",
                      censored: float | None = None, ax=None):
    """Epochs to reach a loss threshold against depth, one line per ``hue``: median over runs, min-max band.

    Parameters
    ----------
    data : DataFrame with columns ``x``, ``y`` and ``hue``, one row per run
    censored : float, optional
        The value of a run that never reached the threshold (its last epoch + 1): drawn as a grey dashed line.

    Returns
    -------
    matplotlib Axes
    """
    ax, levels, colours = _axes_and_colours(ax, data, hue)
    for level in levels:
        g = data[data[hue].astype(str) == level].groupby(x)[y]
        stats = pd.DataFrame({"median": g.median(), "lo": g.min(), "hi": g.max()}).sort_index()
        ax.fill_between(stats.index, stats["lo"], stats["hi"], color=colours[level], alpha=0.2, lw=0)
        ax.plot(stats.index, stats["median"], "o-", color=colours[level], ms=4, label=level)
    if censored is not None:
        ax.axhline(censored, color="grey", ls="--", lw=1, zorder=0)
        ax.annotate("not reached", (data[x].min(), censored), va="bottom", fontsize="small", color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("depth (hidden layers)")
    ax.set_ylabel("epochs to threshold")
    ax.legend(title=hue, fontsize="small")
    return ax


def _saxe2013(ok: pd.DataFrame, uri: str, out_dir: Path) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    from .claims import claims_of, measure
    from .load import load_histories

    timed = [c for c in claims_of(ok) if c.first_below is not None]
    if not timed or "model.depth" not in ok:
        return []
    claim = timed[0]
    metric = claim.metrics()[0]
    hist = load_histories(uri, list(ok["run_id"]), metrics=[metric])
    if not len(hist):
        return []
    runs = ok.assign(depth=pd.to_numeric(ok["model.depth"]), epochs=measure(claim, ok, hist))
    runs = runs.dropna(subset=["epochs"])
    runs[["run_id", "init", "depth", "seed", "epochs"]].to_csv(Path(out_dir) / "time_to_threshold.csv", index=False)
    last = int(hist["step"].max())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    time_to_threshold(runs, censored=last + 1, ax=axes[0])
    axes[0].set_title(f"epochs until {metric} < {claim.first_below:g}")
    deepest = runs["depth"].max()
    curves = hist.merge(runs.loc[runs["depth"] == deepest, ["run_id", "init"]], on="run_id")
    curves = curves.sort_values(["init", "run_id", "step"], kind="stable")  # hue order (and colours) as on the left
    loss_curves(curves, ax=axes[1], hline=claim.first_below, hline_label="threshold")
    axes[1].set_yscale("log")
    axes[1].set_title(f"{metric} at depth {deepest:g}")
    caption = (f"Left: epochs until {metric} is below {claim.first_below:g} against depth, per initialisation: "
               f"median over seeds, band min to max (grey dashed: not reached within {last} epochs, counted as "
               f"{last + 1}); Saxe et al. (2013) plot learning time against depth this way. Right: {metric} of "
               f"every seed at depth {deepest:g}. Table: time_to_threshold.csv.")
    return [("Paper figure: Saxe et al. (2013)", _embed(fig, out_dir, "paper_saxe2013", caption))]


def percentile_bands(data: pd.DataFrame, *, x: str = "step", layer: str = "layer", ax=None):
    """Per-layer median against epochs with the 1-99 percentile band, as Glorot & Bengio's Figures 2-4 draw them.

    ``data`` has columns ``x``, ``layer``, ``p01``, ``p50``, ``p99`` (means over runs are taken). Returns the axes.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    m = data.groupby([layer, x])[["p01", "p50", "p99"]].mean().reset_index()
    layers = sorted(m[layer].unique())
    colours = dict(zip(layers, sns.color_palette("viridis", len(layers))))
    for l in layers:
        d = m[m[layer] == l]
        ax.plot(d[x], d["p50"], color=colours[l], lw=1.4, label=f"layer {l}")
        ax.fill_between(d[x], d["p01"], d["p99"], color=colours[l], alpha=0.12)
    ax.set_xlabel("epoch")
    ax.legend(fontsize="x-small", ncol=2)
    return ax


def load_histograms(uri: str, run_id: str, artifact_uri: str | None = None) -> dict | None:
    """A run's ``histograms*.npz`` artifact (:func:`nnexp.distributions.save_histograms`) as a dict, or None."""
    path = None
    if artifact_uri and artifact_uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        found = sorted(Path(unquote(urlparse(artifact_uri).path)).glob("histograms*.npz"))
        path = found[0] if found else None
    else:
        import tempfile

        from .. import tracking

        c = tracking.client(uri)
        names = [a.path for a in c.list_artifacts(run_id) if a.path.startswith("histograms")]
        if names:
            path = Path(c.download_artifacts(run_id, names[0], tempfile.mkdtemp(prefix="nnexp-h-")))
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def layer_histograms(h: dict, *, kind: str = "act", epoch_index: int = 0, ax=None):
    """Per-layer histograms (density, step lines) from :func:`load_histograms`'s arrays, as Glorot & Bengio's
    Figures 6 and 7 draw them; ``kind`` is ``act`` or ``delta``. Returns the axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    counts, edges = h[f"{kind}_counts"][epoch_index], h[f"{kind}_edges"][epoch_index]
    colours = sns.color_palette("viridis", counts.shape[0])
    for l in range(counts.shape[0]):
        widths = np.diff(edges[l])
        total = counts[l].sum()
        if not total:
            continue
        ax.stairs(counts[l] / (total * widths), edges[l], color=colours[l], label=f"layer {l + 1}", lw=1.2)
    ax.set_ylabel("density")
    ax.legend(fontsize="x-small")
    return ax


def _glorot2010_histograms(ok: pd.DataFrame, uri: str, out_dir: Path) -> str:
    """Figs. 6-7: tanh at initialisation, per-layer histograms of activations and back-propagated gradients."""
    import matplotlib.pyplot as plt

    inits = [i for i in ("standard", "normalized") if ((ok["activation"] == "tanh") & (ok["init"] == i)).any()]
    if not inits:
        return ""
    fig, axes = plt.subplots(len(inits), 2, figsize=(11, 3.6 * len(inits)), layout="constrained", squeeze=False)
    drawn = False
    for row, init in zip(axes, inits):
        run = ok[(ok["activation"] == "tanh") & (ok["init"] == init)].sort_values("seed").iloc[0]
        h = load_histograms(uri, run["run_id"], run.get("artifact_uri"))
        if h is None or 0 not in list(h["epochs"]):
            continue
        e0 = list(h["epochs"]).index(0)
        for ax, kind, what in zip(row, ("act", "delta"), ("activation value", "back-propagated gradient")):
            layer_histograms(h, kind=kind, epoch_index=e0, ax=ax)
            ax.set_xlabel(what)
            ax.set_title(f"tanh, init={init}, at initialisation (seed {run['seed']})")
        drawn = True
    if not drawn:
        plt.close(fig)
        return ""
    return _embed(fig, out_dir, "paper_glorot2010_histograms", "Per-layer histograms at initialisation, tanh "
                  "(Glorot & Bengio's Figs. 6 and 7): activations (left) and per-sample back-propagated gradients "
                  "(right), standard against normalized initialisation; from the runs' histograms.npz.")


def _glorot2010(ok: pd.DataFrame, uri: str, out_dir: Path) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    from .load import load_histories

    depth = int(pd.to_numeric(ok["model.depth"]).max())
    kinds = ("act_p01", "act_p50", "act_p99", "act_std", "delta_std")
    wanted = [f"layer{l}.probe.{k}" for l in range(1, depth + 1) for k in kinds]
    hist = load_histories(uri, list(ok["run_id"]), metrics=wanted)
    if not len(hist):
        return []
    hist = hist.merge(ok[["run_id", "activation", "init"]], on="run_id")
    hist["layer"] = hist["metric"].str.extract(r"layer(\d+)\.", expand=False).astype(int)
    hist["kind"] = hist["metric"].str.extract(r"probe\.(\w+)$", expand=False)
    wide = hist.pivot_table(index=["run_id", "activation", "init", "layer", "step"], columns="kind",
                            values="value").reset_index().rename(columns={"act_p01": "p01", "act_p50": "p50",
                                                                          "act_p99": "p99"})
    acts = [a for a in ("sigmoid", "tanh", "softsign") if a in set(wide["activation"])]
    inits = sorted(wide["init"].unique())
    fig, axes = plt.subplots(len(inits), len(acts), figsize=(4.6 * len(acts), 3.6 * len(inits)),
                             layout="constrained", squeeze=False, sharex=True)
    for i, init in enumerate(inits):
        for j, act in enumerate(acts):
            percentile_bands(wide[(wide["activation"] == act) & (wide["init"] == init)], ax=axes[i, j])
            axes[i, j].set_title(f"{act}, init={init}")
            axes[i, j].set_ylabel("activation")
    parts = [_embed(fig, out_dir, "paper_glorot2010_bands", "Median activation of each hidden layer against epochs "
                    "with the 1-99 percentile band (probe batch, mean over seeds), as Glorot & Bengio's Figures 2-4.")]
    at0 = wide[wide["step"] == 0].melt(id_vars=["run_id", "activation", "init", "layer"],
                                         value_vars=["act_std", "delta_std"], var_name="what", value_name="std")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, what, title in zip(axes, ("act_std", "delta_std"), ("activations", "back-propagated gradients")):
        d = at0[at0["what"] == what].assign(series=lambda f: f["activation"] + ", " + f["init"])
        layer_profile(d.rename(columns={"std": "value"}), hue="series", ax=ax, ylabel=f"std of {title} at init")
        ax.set_title(f"{title} at initialisation (Figs. 6, 7)")
    parts.append(_embed(fig, out_dir, "paper_glorot2010_init", "Std of each layer's activations and per-sample "
                        "back-propagated gradients at initialisation (probe batch; faint: seeds)."))
    parts.append(_glorot2010_histograms(ok, uri, out_dir))
    return [("Paper figure: Glorot & Bengio (2010)", "".join(parts))]


def moments_by_layer(data: pd.DataFrame, *, y: str, x: str = "layer", hue: str = "input_variance",
                     style: str = "activation", band: tuple[float, float] | None = None,
                     dashes: dict | None = None, ax=None):
    """A per-layer moment (mean or variance) against depth: one line per ``hue`` level (mean over runs, each run
    faint), line style per ``style`` level, and a shaded tolerance ``band``, as Klambauer et al.'s Fig. 2 reads.

    Parameters
    ----------
    data : DataFrame with columns ``x``, ``y``, ``hue``, ``style`` and ``run_id``
    band : (low, high), optional
        Shaded in grey: the interval the study's claims test.
    dashes : dict, optional
        Line style per ``style`` level (default: solid, dashed, dotted, ... in sorted order).

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    if band is not None:
        ax.axhspan(*band, color="grey", alpha=0.15, lw=0, zorder=0)
    levels = sorted(data[hue].unique())
    colours = dict(zip(levels, sns.color_palette("colorblind", max(3, len(levels)))))
    dashes = {**dict(zip(sorted(data[style].astype(str).unique()), ("-", "--", ":", "-."))), **(dashes or {})}
    for (level, st), d in data.groupby([hue, data[style].astype(str)]):
        for _, r in d.groupby("run_id"):
            r = r.sort_values(x)
            ax.plot(r[x], r[y], dashes[st], color=colours[level], alpha=0.2, lw=0.7)
        m = d.groupby(x)[y].mean()
        ax.plot(m.index, m.to_numpy(), dashes[st], color=colours[level], lw=1.6,
                label=f"{st}, {hue.replace('_', ' ')} {level:g}")
    ax.set_xlabel("hidden layer")
    ax.legend(fontsize="x-small", ncol=2)
    return ax


def _klambauer2017(ok: pd.DataFrame, uri: str, out_dir: Path) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    from .load import load_histories

    depth = int(pd.to_numeric(ok["model.depth"]).max())
    deep = ok[pd.to_numeric(ok["model.depth"]) == depth]
    wanted = [f"layer{l}.probe.act_{k}" for l in range(1, depth + 1) for k in ("mean", "std")]
    hist = load_histories(uri, list(deep["run_id"]), metrics=wanted)
    if not len(hist):
        return []
    runs = deep[["run_id", "activation"]].assign(
        input_variance=pd.to_numeric(deep.get("dataset.input_variance", pd.Series(1.0, index=deep.index))).fillna(1.0))
    hist = hist.merge(runs, on="run_id")
    hist["layer"] = hist["metric"].str.extract(r"layer(\d+)\.", expand=False).astype(int)
    hist["kind"] = hist["metric"].str.extract(r"act_(\w+)$", expand=False)
    wide = hist.pivot_table(index=["run_id", "activation", "input_variance", "layer", "step"], columns="kind",
                            values="value").reset_index()
    wide["variance"] = wide["std"] ** 2
    last = int(wide["step"].max())
    wide.to_csv(Path(out_dir) / "moments_by_layer.csv", index=False)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), layout="constrained", sharex=True)
    for j, (step, when) in enumerate(((0, "at initialisation"), (last, f"after {last} epochs"))):
        d = wide[wide["step"] == step]
        styles = {"selu": "-", "relu": "--"}
        moments_by_layer(d, y="mean", band=(-0.1, 0.1), dashes=styles, ax=axes[0, j])
        axes[0, j].set_ylabel("activation mean")
        axes[0, j].set_title(f"mean per layer, {when}")
        moments_by_layer(d, y="variance", band=(0.8, 1.2), dashes=styles, ax=axes[1, j])
        axes[1, j].set_yscale("log")
        axes[1, j].set_ylabel("activation variance")
        axes[1, j].set_title(f"variance per layer, {when}")
    caption = (f"Mean and variance of each hidden layer's activations (over the probe batch's samples and the layer's "
               f"units) against depth in the {depth}-layer networks, one colour per input variance; solid: SELU with "
               "LeCun normal weights, dashed: ReLU with He normal weights; faint: seeds. Grey: the tolerance the "
               "claims test (|mean| < 0.1, |variance - 1| < 0.2). Table: moments_by_layer.csv.")
    return [("Paper figure: Klambauer et al. (2017)", _embed(fig, out_dir, "paper_klambauer2017", caption))]


def loss_by_lr(data: pd.DataFrame, *, x: str = "lr", y: str = "value", hue: str = "activation", ax=None):
    """Final training loss against the learning rate (log-log), one line per ``hue`` level: the median over runs
    with a band from the lowest to the highest run, as Hendrycks & Gimpel report medians of five runs.

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    levels = sorted(data[hue].unique())
    colours = dict(zip(levels, sns.color_palette("colorblind", max(3, len(levels)))))
    for level in levels:
        g = data[data[hue] == level].groupby(x)[y]
        med, lo, hi = g.median(), g.min(), g.max()
        ax.fill_between(med.index, lo.to_numpy(), hi.to_numpy(), color=colours[level], alpha=0.2, lw=0)
        ax.plot(med.index, med.to_numpy(), "o-", color=colours[level], ms=4, label=f"{level} (median)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate (Adam)")
    ax.set_ylabel("final training loss")
    ax.legend(fontsize="small")
    return ax


def _hendrycks2016(ok: pd.DataFrame, uri: str, out_dir: Path) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    from .load import load_histories

    d = ok.assign(lr=pd.to_numeric(ok["optimizer.lr"]), value=pd.to_numeric(ok.get("train_loss"), errors="coerce"))
    d = d.dropna(subset=["value"])
    if not len(d):
        return []
    d[["activation", "lr", "seed", "value"]].to_csv(Path(out_dir) / "loss_by_lr.csv", index=False)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    loss_by_lr(d, ax=axes[0])
    axes[0].set_title(f"final training loss after {int(pd.to_numeric(d['epochs']).max())} epochs")
    best = d.groupby(["activation", "lr"])["value"].median().groupby("activation").idxmin()
    runs = d[[(a, l) in set(best) for a, l in zip(d["activation"], d["lr"])]]
    hist = load_histories(uri, list(runs["run_id"]), metrics=["train_loss"]).merge(
        runs[["run_id", "activation", "lr"]], on="run_id")
    hist["activation"] = [f"{a}, lr {l:g}" for a, l in zip(hist["activation"], hist["lr"])]
    loss_curves(hist, hue="activation", ax=axes[1])
    axes[1].set_yscale("log")
    axes[1].set_title("training loss at each activation's best rate (Fig. 2)")
    caption = ("Left: final training loss against Adam's learning rate, median over seeds (band: lowest to highest "
               "seed) per activation. Right: training loss against epochs at each activation's best learning rate, "
               "one line per seed, as the paper's Fig. 2. Table: loss_by_lr.csv.")
    return [("Paper figure: Hendrycks & Gimpel (2016)", _embed(fig, out_dir, "paper_hendrycks2016", caption))]


#: Study name -> function ``(finished runs, uri, out_dir) -> [(section title, html)]``.
STUDY_FIGURES: dict[str, Callable[[pd.DataFrame, str, Path], list[tuple[str, str]]]] = {
    "he2015_deep_relu": _he2015,
    "lu2019_dying_relu": _lu2019,
    "glorot2010_saturation": _glorot2010,
    "saxe2013_deep_linear": _saxe2013,
    "klambauer2017_selu": _klambauer2017,
    "hendrycks2016_gelu": _hendrycks2016,
}


def sections(study: str, ok: pd.DataFrame, uri: str, out_dir: str | Path) -> list[tuple[str, str]]:
    """The paper figure sections of ``study`` (empty for a study without one)."""
    draw = STUDY_FIGURES.get(study)
    return draw(ok, uri, Path(out_dir)) if draw is not None else []
