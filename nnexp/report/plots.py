"""The report's figure sections: draw with :mod:`nnexp.report.figures`, save PNG (and SVG on request), return blocks.

Each figure becomes ``{"kind": "figure", "name", "png" (base64), "caption"}``
for :mod:`nnexp.report.page`, and ``<name>.png`` (``<name>.svg`` too with ``svg=True``) in the
report's folder, rendered in parallel (:class:`Renderer`). Colours come from :data:`nnexp.report.figures.ACTIVATION_COLORS`
(one colour per activation in every report); long titles are wrapped to the
figure's width (:func:`nnexp.report.figures.fit_suptitle`).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from . import fmt

__all__ = ["figure_block", "figure_sections", "Renderer", "FORMATS"]


#: Formats of a report's figure files: PNG always (the page embeds it); SVG when a build asks (``svg=True``).
FORMATS = ("png",)


class Renderer:
    """Renders the report's figures into their files, in forked processes while the report draws the next figure.

    Drawing a figure (seaborn, matplotlib artists) is quick; rendering it (Agg's rasteriser for the PNG, the SVG
    writer) is most of a report's time, and one figure's rendering does not depend on another's. Inside
    ``with Renderer(...)`` (as :func:`nnexp.report.build.build_report` uses it), :func:`figure_block` hands each
    finished figure to a child process made with ``os.fork`` (it inherits the figure: nothing is pickled) and
    returns at once; at most ``processes`` children render at a time, and leaving the block waits for them and
    fills each block's ``png``. A child that fails (or a platform without ``fork``) leaves the figure to be rendered
    in this process, so the files are the same either way.

    Parameters
    ----------
    svg : bool
        Also write ``<name>.svg`` (about a third of the rendering time; the page links it when present).
    processes : int, optional
        Children rendering at once; default :data:`PROCESSES`, else the CPU count (``os.cpu_count()``); 0 renders
        in this process.
    """

    def __init__(self, svg: bool = False, processes: int | None = None):
        import os
        import sys

        self.formats = ("png", "svg") if svg else ("png",)
        forkable = hasattr(os, "fork") and sys.platform.startswith("linux")  # macOS: fork after a GUI lib is unsafe
        processes = PROCESSES if processes is None else processes
        self.processes = (os.cpu_count() or 1) if processes is None else int(processes)
        self.processes = self.processes if forkable else 0
        self.pending: list[tuple[int, object, Path, str, bool, dict]] = []

    def __enter__(self) -> "Renderer":
        global _ACTIVE
        self._outer, _ACTIVE = _ACTIVE, self
        return self

    def __exit__(self, *exc) -> None:
        global _ACTIVE
        try:
            while self.pending:
                self._finish(self.pending.pop(0))
        finally:
            _ACTIVE = self._outer

    def submit(self, fig, out_dir: Path, name: str, tight: bool, block: dict) -> None:
        """Render ``fig`` into ``out_dir`` (now, or in a child) and fill ``block["png"]`` by the block's end."""
        import os

        if self.processes < 1:
            block["png"] = _render(fig, out_dir, name, tight, self.formats)
            return
        while len(self.pending) >= self.processes:
            self._finish(self.pending.pop(0))
        pid = os.fork()
        if pid == 0:  # the child: render, write the files, leave without running the parent's exit handlers
            code = 1
            try:
                _render(fig, out_dir, name, tight, self.formats)
                code = 0
            finally:
                os._exit(code)
        self.pending.append((pid, fig, out_dir, name, tight, block))

    def _finish(self, job) -> None:
        import os

        pid, fig, out_dir, name, tight, block = job
        _, status = os.waitpid(pid, 0)
        png = out_dir / f"{name}.png"
        if status == 0 and png.exists():
            block["png"] = base64.b64encode(png.read_bytes()).decode()
        else:  # the child failed: render here, where an error shows its traceback
            block["png"] = _render(fig, out_dir, name, tight, self.formats)


#: Default of :class:`Renderer`'s ``processes`` (None: the CPU count; 0: render in the report's own process).
PROCESSES: int | None = None

#: The :class:`Renderer` of the report being built, if any.
_ACTIVE: Renderer | None = None


def _render(fig, out_dir: Path, name: str, tight: bool, formats=FORMATS) -> str:
    """Write ``fig`` as ``<name>.<format>`` for each of ``formats`` (PNG first); return the PNG as base64."""
    bbox = "tight" if tight else None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches=bbox)
    (out_dir / f"{name}.png").write_bytes(buf.getvalue())
    if "svg" in formats:
        if fig.get_layout_engine() is not None and not tight:
            fig.set_layout_engine("none")  # keep the positions just computed: the SVG needs no second layout pass
        fig.savefig(out_dir / f"{name}.svg", bbox_inches=bbox)
    return base64.b64encode(buf.getvalue()).decode()


def figure_block(fig, out_dir: Path, name: str, caption, tight: bool = False, written: set | None = None) -> dict:
    """Save ``fig`` as ``<name>.png`` (and ``<name>.svg`` when the report asks) in ``out_dir``; return its page block.

    The report's own figures use constrained layout, so they are saved as laid
    out (``tight=False``): a "tight" bounding box would cost a second drawing pass.
    ``written`` collects the file names (the report removes what an earlier build left).
    Inside a :class:`Renderer` the rendering happens in a child process and the block's ``png`` (base64) is
    filled when the renderer's block ends; otherwise here, before returning.
    """
    import matplotlib.pyplot as plt

    renderer = _ACTIVE
    formats = renderer.formats if renderer is not None else FORMATS
    block = {"kind": "figure", "name": name, "png": None, "caption": caption, "svg": "svg" in formats}
    if renderer is not None:
        renderer.submit(fig, out_dir, name, tight, block)
    else:
        block["png"] = _render(fig, out_dir, name, tight, formats)
    plt.close(fig)  # the figure object lives on in the renderer until it is rendered
    if written is not None:
        written.update(f"{name}.{f}" for f in formats)
    return block


def _sorted_levels(values) -> list:
    return sorted(pd.unique(pd.Series(list(values), dtype=object)).tolist(),
                  key=lambda v: (not fmt.is_number(v), v if fmt.is_number(v) else fmt.val(v)))


def figure_sections(ctx, out_dir: Path, uri: str, boundaries: bool, written: set) -> list[tuple[str, list[dict]]]:
    """``[(title, blocks), ...]``: learning curves, sensitivity, diagnostics, decision boundaries, gallery."""
    import matplotlib.pyplot as plt

    from . import figures as F

    ok, keys, curves, m = ctx["ok"], ctx["keys"], ctx["curves"], ctx["metric"]
    if not len(ok):
        return []
    sections = []

    def save(fig, name, caption, tight=False):
        return figure_block(fig, out_dir, name, caption, tight, written)

    palette = F.palette_for(ctx["runs"]["activation"].dropna())
    facets = keys[1:]
    col = facets[0] if facets else None
    row = facets[1] if len(facets) > 1 else None
    seeds = fmt.seed_text(ok.groupby([ok[k].map(fmt.val) for k in keys]).size())

    # learning curves: the primary metric with its training counterpart (solid / dashed) in one figure
    figs = []
    pair = [m, "train_" + m[4:]] if m.startswith("val_") else [m]
    for shown in [pair] + ([["val_loss", "train_loss"]] if "val_loss" not in pair else []):
        data = curves[curves["metric"].isin(shown)]
        if not len(data):
            continue
        fig = F.learning_curves(data, hue="activation", style="metric" if len(shown) > 1 else None, style_order=shown,
                                col=col, row=row, palette=palette, ylabel=F.label(shown[0]).replace("validation ", ""),
                                logy=not shown[0].endswith("accuracy"), target=ctx["target"] if m in shown else None)
        names = " and ".join(F.label(s) for s in shown)
        F.fit_suptitle(fig, f"{names}: mean and 95 % CI over {seeds} (clipped to the range)")
        figs.append(save(fig, f"curves_{shown[0]}", f"Learning curves of {names}"
                         + (f"; grey dashed line: the target {fmt.g(ctx['target'], 4)} of {m}" if m in shown else "")
                         + "."))
    sections.append(("Learning curves", figs))

    # final metric / learning-rate sensitivity / heatmaps
    parts = []
    if "optimizer.lr" in keys:
        other = [k for k in facets if k != "optimizer.lr"]
        levels = _sorted_levels(ok[other[0]]) if other else [None]
        fig, axes = plt.subplots(1, len(levels), figsize=(5.0 * len(levels) + 0.6, 4.0), squeeze=False, sharey=True,
                                 layout="constrained")
        trained = ctx["runs"][ctx["runs"]["outcome"].isin(["finished", "diverged"])]
        for ax, lv in zip(axes[0], levels):
            d = ok if lv is None else ok[fmt.matches(ok[other[0]], lv)]
            t = trained if lv is None else trained[fmt.matches(trained[other[0]], lv)]
            div = t.groupby(["activation", "optimizer.lr"]).agg(
                diverged=("outcome", lambda s: int((s == "diverged").sum())), trained=("outcome", "size")).reset_index()
            F.lr_sensitivity(d, y=m, diverged=div, ax=ax, palette=palette)
            if lv is not None:
                ax.set_title(f"{F.label(other[0])} = {fmt.val(lv)}")
        parts.append(save(fig, "lr_sensitivity",
                          f"Final {F.label(m)} against the learning rate: dots are seeds, lines connect means with "
                          f"95 % t-intervals (clipped to the metric's range); ×k/n above a point: k of n runs diverged "
                          f"(not plotted)."))
    else:
        order = list(ctx["comp"]["activation"]) if len(ctx["comp"]) else None
        fig, ax = plt.subplots(figsize=(1.5 + 1.2 * ok["activation"].nunique(), 4), layout="constrained")
        F.final_metric(ok, y=m, ax=ax, order=order, palette=palette)
        parts.append(save(fig, "final_metric",
                          f"Final {F.label(m)} per seed; black: mean and 95 % CI (clipped to the metric's range)."))
    table = ctx["table"]
    for other in [k for k in ("optimizer.lr", "init") if k in keys]:
        cells = ok.groupby(["activation", other])[m].agg(["mean", "std"]).reset_index()
        fig, ax = plt.subplots(figsize=(2.6 + 1.45 * cells[other].nunique(), 1.3 + 0.62 * cells["activation"].nunique()),
                               layout="constrained")
        F.heatmap(cells, index="activation", columns=other, value="mean", std="std", ax=ax,
                  higher_better=ctx["higher"], cbar_label=f"final {F.label(m)}")
        ax.set_title(f"final {F.label(m)}, mean ± std over seeds"
                     + (" (averaged over the other swept keys)" if len(facets) > 1 else ""))
        parts.append(save(fig, f"heatmap_activation_{other.replace('.', '_')}",
                          f"Activation × {F.label(other)}: final {F.label(m)} (lighter is better)."))
    if "init" in ctx["linked"]:
        pairs = ok.groupby("activation")["init"].first()
        parts.append({"kind": "note", "text": "The initialisation was not swept independently: it follows the "
                      "activation (" + ", ".join(f"{a} → {i}" for a, i in pairs.items())
                      + "), so no activation × init heatmap is drawn."})
    sections.append(("Sensitivity to the learning rate and initialisation" if "optimizer.lr" in keys
                     else "Final metric per seed", parts))

    # per-layer diagnostics
    diag = curves[curves["metric"].astype(str).str.match(r"layer\d+\.(grad_norm|saturation|dead_fraction)$")]
    if len(diag):
        if row is not None:  # keep the figure readable: the best value of the second facet key
            bestrow = table.iloc[0][row]
            diag = diag[fmt.matches(diag[row], bestrow)]
        fig = F.layer_diagnostics(diag, hue="activation", col=col, palette=palette)
        F.fit_suptitle(fig, f"Per-layer diagnostics: mean and 95 % CI over {seeds}"
                       + (f" ({row} = {fmt.val(bestrow)})" if row is not None else ""))
        sections.append(("Per-layer diagnostics", [save(
            fig, "layer_diagnostics",
            "Gradient norm per layer (RMS over batches of ‖dW‖, log scale: vanishing in early layers, exploding), "
            "fraction of saturated activations (bounded activations: within 2.5 % of either bound) and fraction of "
            "dead units (ReLU family: pre-activation ≤ 0 for every training sample of the epoch). Line style = layer.")]))

    if boundaries:
        b = _boundaries(ctx, uri, save)
        if b:
            sections.append(("Decision boundaries", b))
    g = _gallery(sorted(ctx["runs"]["activation"].dropna().unique()), save)
    if g:
        sections.append(("Activation gallery", g))
    return sections


def _boundaries(ctx, uri: str, save) -> list[dict]:
    from . import figures as F
    from .boundaries import probability_grid, test_points
    from .load import load_weights

    ok, keys, m = ctx["ok"], ctx["keys"], ctx["metric"]
    if "n_features" not in ok or not (ok["n_features"] == 2).all():
        return []
    col = "optimizer.lr" if "optimizer.lr" in keys else (keys[1] if len(keys) > 1 else None)
    others = [k for k in keys[1:] if k != col]
    # one network per panel: the seed with the median final metric of the panel's best configuration
    chosen = []
    panel = ok["activation"].map(fmt.val) + ("|" + ok[col].map(fmt.val) if col else "")
    for _, sub in ok.groupby(panel, sort=True):
        if others:
            means = sub.groupby([sub[k].map(fmt.val) for k in others])[m].mean()
            best = means.idxmax() if ctx["higher"] else means.idxmin()
            best = best if len(others) > 1 else (best,)
            for k, v in zip(others, best):
                sub = sub[sub[k].map(fmt.val) == v]
        sub = sub.sort_values(m)
        chosen.append(sub.iloc[(len(sub) - 1) // 2])
    if not chosen:
        return []
    points = test_points(chosen[0])
    if points is not None:
        pad = 0.15 * max(np.ptp(points["x1"]), np.ptp(points["x2"]))
        lims = (points["x1"].min() - pad, points["x1"].max() + pad, points["x2"].min() - pad, points["x2"].max() + pad)
    else:
        lims = (-3, 3, -3, 3)
    grids, titles = [], {}
    for r in chosen:
        w = load_weights(uri, r["run_id"], r.get("artifact_uri"))
        if w is None:
            continue
        g = probability_grid(w, r, lims, n=120)
        g["activation"] = r["activation"]
        if col:
            g[col] = pd.Series([r[col]] * len(g), dtype=object)
        grids.append(g)
        acc = r.get("test_accuracy")
        titles[(r["activation"], r[col] if col else None)] = (f"test acc {acc:.1%}, seed {fmt.val(r.get('seed'))}"
                                                              if fmt.is_number(acc) else "")
    if not grids:
        return [{"kind": "note", "text": "No run of this selection logged weights (tracking.save_weights=false)."}]
    fig = F.decision_boundaries(pd.concat(grids, ignore_index=True), points, row="activation", col=col, titles=titles)
    return [save(fig, "decision_boundaries",
                 f"Predicted probability of class 1 over the input plane (orange 0, blue 1; black line: 0.5) for one "
                 f"network per panel — the seed with the median final {m} of the panel's configuration — with the "
                 f"test points (regenerated from the run's logged dataset params).")]


def _gallery(activations: list[str], save) -> list[dict]:
    """The activation gallery of :mod:`nnexp.report.gallery`."""
    from . import gallery

    data = gallery.activation_frame(names=activations)
    fig = gallery.gallery(data, col_wrap=min(len(activations), 5))
    return [save(fig, "activation_gallery", Markup(
        "The activations of this report, f(z), and their derivatives f'(z), with default parameters (from "
        "<code>nnexp.report.gallery</code>)."), tight=True)]
