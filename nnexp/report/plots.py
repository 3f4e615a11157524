"""The report's figure sections: draw with :mod:`nnexp.report.figures`, save PNG (and SVG on request), return blocks.

Per-layer diagnostics are line plots (one line style per layer) up to :data:`LINE_PLOT_MAX_LAYERS` layers and a
layer x epoch heatmap per diagnostic (:func:`layer_heatmaps`) from :data:`HEATMAP_MIN_LAYERS` on, so they stay
readable at 30 layers and more.

Each figure becomes ``{"kind": "figure", "name", "png" (base64), "caption"}``
for :mod:`nnexp.report.page`, and ``<name>.png`` (``<name>.svg`` too with ``svg=True``) in the
report's folder, rendered in parallel (:class:`Renderer`). Colours come from :data:`nnexp.report.figures.ACTIVATION_COLORS`
(one colour per activation in every report); long titles are wrapped to the
figure's width (:func:`nnexp.report.figures.fit_suptitle`).
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from . import fmt

__all__ = ["figure_block", "figure_sections", "Renderer", "FORMATS", "png_bytes", "DPI", "prerender_gallery",
           "predraw_gallery", "gallery_blocks", "gallery_prerendered", "gallery_cache_path", "boundary_blocks",
           "draws_boundaries", "local_artifacts", "warm_up", "kill_renderers", "layer_epoch_matrix", "layer_heatmaps",
           "LAYER_KINDS", "LINE_PLOT_MAX_LAYERS", "HEATMAP_MIN_LAYERS", "HEATMAP_MAX_PANELS"]

log = logging.getLogger(__name__)

#: The per-layer diagnostics a run logs (``layer<l>.<kind>``, :mod:`nnexp.train`), in the order the report draws them.
LAYER_KINDS = ("act_std", "act_mean", "grad_norm", "saturation", "dead_fraction")
#: The line plots tell layers apart by line style (six of them): past this many layers they repeat, so only the
#: heatmaps are drawn.
LINE_PLOT_MAX_LAYERS = 6
#: From this many layers (hidden layers plus the output layer of ``grad_norm``) on, each per-layer diagnostic also
#: gets a layer x epoch heatmap.
HEATMAP_MIN_LAYERS = 4
#: At most this many configurations get a heatmap panel each; past it, only those with the best value of the second
#: facet key (as in the line plots).
HEATMAP_MAX_PANELS = 16

_HEATMAP_TEXT = {
    "act_std": "activation std per layer (log colour scale: a signal that shrinks or grows geometrically with depth "
               "shows as a gradient from top to bottom)",
    "act_mean": "activation mean per layer",
    "grad_norm": "gradient norm per layer (RMS over batches of ‖dW‖, log colour scale: vanishing in early layers, "
                 "exploding)",
    "saturation": "fraction of saturated activations per layer (bounded activations: within 2.5 % of either bound)",
    "dead_fraction": "fraction of dead units per layer (ReLU family: pre-activation ≤ 0 for every training sample of "
                     "the epoch)",
}


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

    A group of figures that needs none of the report's later work (the decision boundaries, the activation gallery,
    the hyperparameter importance) is drawn in a child too, from its start (:meth:`later`): the report's own
    process then only computes, and the second core, idle while it did, draws.

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
        self.groups: list[tuple[int, int, list, set, object, tuple]] = []

    def __enter__(self) -> "Renderer":
        global _ACTIVE
        self._outer, _ACTIVE = _ACTIVE, self
        return self

    def __exit__(self, *exc) -> None:
        global _ACTIVE
        try:
            while self.pending:
                self._finish(self.pending.pop(0))
            while self.groups:
                if exc[0] is None:
                    self._finish_group(self.groups.pop(0))
                else:  # the report failed: its groups are not needed, and must not hide the error
                    self._drop_group(self.groups.pop(0))
        finally:
            _ACTIVE = self._outer

    def later(self, fn, *args, written: set) -> list:
        """``fn(*args, written=written)``, a list (of page blocks or sections), drawn in a forked child; returns
        a list that holds its items when the ``with`` block ends (at once without children).

        ``fn`` draws its figures with :func:`figure_block` (rendered in the child itself) and returns picklable
        items; the file names it adds to its ``written`` and the ``nnexp`` log records it emits come back with them.
        If the child fails, ``fn`` runs again here at the block's end, so the result (or the exception) is the same.
        """
        import os

        if self.processes < 1:
            return fn(*args, written=written)
        out: list = []
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: draw and render in this process, send the result, leave at once
            code = 1
            try:
                os.close(read)
                code = _run_group(fn, args, write, self.formats)
            finally:
                os._exit(code)
        os.close(write)
        self.groups.append((pid, read, out, written, fn, args))
        return out

    @staticmethod
    def _drop_group(job) -> None:
        import os
        import signal

        pid, read = job[:2]
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        os.close(read)
        os.waitpid(pid, 0)

    def _finish_group(self, job) -> None:
        import logging
        import os
        import pickle

        pid, read, out, written, fn, args = job
        with os.fdopen(read, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        try:
            items, names, records = pickle.loads(data) if status == 0 else (None, None, None)
        except Exception:  # noqa: BLE001 - a truncated answer: as a failed child
            items = None
        if items is None:  # the child failed: draw here, where an error shows its traceback
            out[:] = fn(*args, written=written)
            return
        for r in records:
            logging.getLogger(r["name"]).handle(logging.makeLogRecord(r))
        written |= names
        out[:] = items

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


def _run_group(fn, args, fd: int, formats: tuple) -> int:
    """In a child of :meth:`Renderer.later`: ``fn(*args, written=...)``, figures rendered here in ``formats``;
    write ``(items, written, log records)`` pickled to ``fd``; return the exit code."""
    import logging
    import os
    import pickle

    global _ACTIVE
    _ACTIVE = Renderer(svg="svg" in formats, processes=0)  # figures render in this child, not in grandchildren
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("nnexp")
    logger.handlers, logger.propagate = [handler], False  # shown once, by the parent
    written: set = set()
    items = fn(*args, written=written)
    sent = []
    for r in records:
        d = dict(r.__dict__)
        d["msg"], d["args"], d["exc_info"], d["exc_text"] = r.getMessage(), None, None, None
        sent.append(d)
    data = pickle.dumps((list(items), written, sent))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return 0


#: Default of :class:`Renderer`'s ``processes`` (None: the CPU count; 0: render in the report's own process).
PROCESSES: int | None = None

#: The :class:`Renderer` of the report being built, if any.
_ACTIVE: Renderer | None = None

#: Figures rendered before the report asked for them (:func:`prerender_gallery`): ``{(name, key): PNG bytes}``.
_PRERENDERED: dict[tuple, bytes] = {}
#: Figures drawn before the report asked for them, not rendered yet (:func:`predraw_gallery`):
#: ``{(name, key): Figure}``.
_PREDRAWN: dict[tuple, object] = {}


def kill_renderers() -> None:
    """Kill the rendering children of the report being built in this process (its process is ending)."""
    import os
    import signal

    r = _ACTIVE
    while r is not None:
        for job in [*r.pending, *r.groups]:
            try:
                os.kill(job[0], signal.SIGKILL)
            except OSError:
                pass
        r = r._outer


def warm_up() -> None:
    """Draw and render one small figure (constrained layout, title, legend, log axis, text) and throw it away.

    The first figure of a process pays for loading the fonts and setting up the Agg renderer; a report worker
    (:mod:`nnexp.report.worker`) pays it while the sweep trains. Call it after the report's theme is set
    (:func:`nnexp.report.figures.set_theme`).
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), layout="constrained")
    ax.plot([1, 2, 3], [1, 10, 100], label="a")
    ax.fill_between([1, 2, 3], [0.5, 5, 50], [2, 20, 200], alpha=0.2)
    ax.set_yscale("log")
    ax.set_title("warm-up")
    ax.text(0.5, 0.5, "×1/3 ‖dW‖ – ±", transform=ax.transAxes)
    ax.legend(frameon=False)
    fig.savefig(io.BytesIO(), format="png", dpi=130)
    plt.close(fig)


def predraw_gallery(activations: list[str]) -> None:
    """Draw the activation gallery of ``activations`` now, the first half of :func:`prerender_gallery`: a report of
    exactly those activations renders this figure instead of drawing it again."""
    from . import gallery

    names = sorted(activations)
    fig = gallery.gallery(gallery.activation_frame(names=names), col_wrap=min(len(names), 5))
    _PREDRAWN[("activation_gallery", tuple(names))] = fig


def prerender_gallery(activations: list[str]) -> None:
    """Draw (unless :func:`predraw_gallery` did) and render the activation gallery of ``activations`` now; a report
    of exactly those activations (PNG only) then uses it instead of drawing it again. Byte for byte the PNG the
    report would render."""
    import matplotlib.pyplot as plt

    key = ("activation_gallery", tuple(sorted(activations)))
    if _cached_gallery(list(key[1])) is not None:  # the report takes it from the cache
        drawn = _PREDRAWN.pop(key, None)
        if drawn is not None:
            plt.close(drawn)
        return
    if key not in _PREDRAWN:
        predraw_gallery(activations)
    fig = _PREDRAWN.pop(key)
    png = png_bytes(fig, tight=True)
    plt.close(fig)
    _PRERENDERED[key] = png
    _cache_gallery(list(key[1]), png)


def gallery_cache_path(activations: list[str]) -> Path:
    """Where nnexp's user cache (:mod:`nnexp.cache`, ``figures/``) keeps the gallery PNG of ``activations``.

    The gallery depends on nothing a sweep trains, only on the activations: drawing and rendering it is about 2 s
    of CPU on a 2-core machine (seaborn's ``relplot``), a large share of a small study's report. The file is named
    by everything that determines its pixels: the activations in panel order, their values on the gallery's grid
    (:func:`nnexp.report.gallery.activation_frame`, so an activation whose formula changes gets a new file), the
    source of the modules that draw and encode it (``gallery``, ``figures``, ``plots``), matplotlib's settings at
    the time (the report's theme, a user's ``matplotlibrc``), :data:`DPI`, :data:`PNG_COMPRESS_LEVEL` and the
    versions of NumPy, pandas, matplotlib, seaborn and Pillow.
    """
    import hashlib

    import matplotlib as mpl
    import PIL
    import seaborn as sns

    from ..cache import cache_dir, key_of
    from . import gallery

    values = gallery.activation_frame(names=list(activations))["value"].to_numpy()
    # the settings that can change pixels: not the GUI backend (the PNG is always Agg's), nor a value whose repr is
    # an object's address (it would differ in every process, and so would the file's name)
    rc = hashlib.sha256(repr(sorted((k, repr(v)) for k, v in dict.items(mpl.rcParams)
                                    if not k.startswith(("backend", "interactive", "webagg.", "toolbar"))
                                    and " at 0x" not in repr(v))).encode()).hexdigest()
    key = key_of({"activations": list(activations), "values": hashlib.sha256(values.tobytes()).hexdigest(),
                  "source": _drawing_source(), "rc": rc, "dpi": DPI, "compress_level": PNG_COMPRESS_LEVEL,
                  "numpy": np.__version__, "pandas": pd.__version__, "matplotlib": mpl.__version__,
                  "seaborn": sns.__version__, "pillow": PIL.__version__})
    return cache_dir("figures") / f"activation_gallery-{key}.png"


@functools.lru_cache(maxsize=1)
def _drawing_source() -> str:
    """SHA-256 of the modules that draw and encode the gallery (read once per process: they do not change)."""
    import hashlib
    import sys

    from . import figures, gallery

    source = hashlib.sha256()
    for module in (gallery, figures, sys.modules[__name__]):
        source.update(Path(module.__file__).read_bytes())
    return source.hexdigest()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _cached_gallery(activations: list[str]) -> bytes | None:
    """The cached gallery PNG of ``activations``, or None (not cached, unreadable, or not a whole PNG file)."""
    try:
        png = gallery_cache_path(activations).read_bytes()
    except OSError:
        return None
    return png if png.startswith(_PNG_SIGNATURE) and png.endswith(_PNG_END) else None


def _cache_gallery(activations: list[str], png: bytes) -> None:
    """Keep ``png`` as the gallery of ``activations`` in the user cache; a cache that cannot be written is skipped."""
    from ..cache import atomic_write

    try:
        atomic_write(gallery_cache_path(activations), lambda tmp: tmp.write_bytes(png))
    except OSError as e:
        log.debug("activation gallery not cached: %s", e)


#: Resolution of the report's PNG files (dots per inch).
DPI = 130
#: zlib level of the PNG files: 3 encodes in about half the time of Pillow's default 6, and an opaque figure saved
#: as RGB (:func:`png_bytes`) is then no larger than the RGBA file matplotlib writes at level 6.
PNG_COMPRESS_LEVEL = 3


def png_bytes(fig, tight: bool = False, dpi: int = DPI) -> bytes:
    """``fig`` as a PNG file's bytes: the pixels ``fig.savefig(format="png", dpi=dpi)`` draws, encoded faster.

    matplotlib's PNG is RGBA at zlib level 6, whatever the figure; the PNG encoding is about a quarter of a
    report figure's rendering time. Here Agg draws the figure exactly as for ``savefig`` (``format="rgba"``, the
    same layout and bounding box), and Pillow writes it as RGB when every pixel is opaque (the report's figures:
    a quarter less to compress, the same colours) at :data:`PNG_COMPRESS_LEVEL`, with matplotlib's metadata
    (``Software``, the resolution). A figure with transparent pixels stays RGBA.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    tight : bool
        Crop to the drawn content (``bbox_inches="tight"``), as :meth:`~matplotlib.figure.Figure.savefig` does.
    dpi : int
        Resolution; the image is ``figure size (inches) * dpi`` pixels (cropped when ``tight``).

    Returns
    -------
    bytes
        A PNG file. When the figure's canvas is not matplotlib's Agg canvas, ``savefig``'s own PNG.
    """
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    bbox = "tight" if tight else None
    raw = io.BytesIO()
    fig.savefig(raw, format="rgba", dpi=dpi, bbox_inches=bbox)
    renderer = getattr(fig.canvas, "renderer", None)  # the Agg renderer that drew it (its size: the image's)
    if not isinstance(fig.canvas, FigureCanvasAgg) or renderer is None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches=bbox)
        return buf.getvalue()
    size = (int(renderer.width), int(renderer.height))
    data = raw.getbuffer()
    if size[0] * size[1] * 4 != data.nbytes:  # not the renderer that drew it: matplotlib's PNG
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches=bbox)
        return buf.getvalue()
    image = Image.frombuffer("RGBA", size, data, "raw", "RGBA", 0, 1)
    if image.getchannel("A").getextrema() == (255, 255):
        image = image.convert("RGB")
    info = PngInfo()
    info.add_text("Software", f"Matplotlib version{mpl.__version__}, https://matplotlib.org/")  # as savefig's
    buf = io.BytesIO()
    image.save(buf, format="png", pnginfo=info, dpi=(dpi, dpi), compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _render(fig, out_dir: Path, name: str, tight: bool, formats=FORMATS) -> str:
    """Write ``fig`` as ``<name>.<format>`` for each of ``formats`` (PNG first); return the PNG as base64."""
    png = png_bytes(fig, tight)
    (out_dir / f"{name}.png").write_bytes(png)
    if "svg" in formats:
        if fig.get_layout_engine() is not None and not tight:
            fig.set_layout_engine("none")  # keep the positions just computed: the SVG needs no second layout pass
        fig.savefig(out_dir / f"{name}.svg", bbox_inches="tight" if tight else None)
    return base64.b64encode(png).decode()


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


def figure_sections(ctx, out_dir: Path, uri: str, bounds: list[dict] | None, written: set,
                    gallery: list[dict] | None = None) -> list[tuple[str, list[dict]]]:
    """``[(title, blocks), ...]``: learning curves, sensitivity, diagnostics, decision boundaries, gallery.

    ``bounds`` are the decision boundaries' blocks, drawn before the rest (:func:`boundary_blocks`; a list
    :meth:`Renderer.later` fills); None when the report draws none. ``gallery``: the activation gallery's blocks
    when drawn already (:func:`gallery_blocks`), else drawn here.
    """
    from . import figures as F

    ok, keys = ctx["ok"], ctx["keys"]
    if not len(ok):
        return []

    def save(fig, name, caption, tight=False):
        return figure_block(fig, out_dir, name, caption, tight, written)

    palette = F.palette_for(ctx["runs"]["activation"].dropna())
    facets = keys[1:]
    col = facets[0] if facets else None
    row = facets[1] if len(facets) > 1 else None
    seeds = fmt.seed_text(ok.groupby([ok[k].map(fmt.val) for k in keys]).size())
    fig_args = (ctx, save, palette, col, row, seeds)

    # Drawn slowest to render first (the decision boundaries already are): inside a Renderer each figure renders in
    # a child process while the next ones are drawn. The page keeps its reading order.
    layer_blocks = _layer_blocks(*fig_args)
    sections = [("Learning curves", _curve_blocks(*fig_args)),
                ("Sensitivity to the learning rate and initialisation" if "optimizer.lr" in keys
                 else "Final metric per seed", _sensitivity_blocks(*fig_args))]
    if layer_blocks:
        sections.append(("Per-layer diagnostics", layer_blocks))
    if bounds is not None:
        sections.append(("Decision boundaries", bounds))
    if gallery is None:
        gallery = gallery_blocks(sorted(ctx["runs"]["activation"].dropna().unique()), out_dir, written=written)
    sections.append(("Activation gallery", gallery))
    return sections


def _curve_blocks(ctx, save, palette, col, row, seeds) -> list[dict]:
    """The learning curves: the primary metric with its training counterpart (solid / dashed) in one figure."""
    from . import figures as F

    curves, m = ctx["curves"], ctx["metric"]
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
    return figs



def _sensitivity_blocks(ctx, save, palette, col, row, seeds) -> list[dict]:
    """The final metric against the learning rate (else per seed), and the activation x key heatmaps."""
    import matplotlib.pyplot as plt

    from . import figures as F

    ok, keys, m = ctx["ok"], ctx["keys"], ctx["metric"]
    facets = keys[1:]
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
    return parts


def _layer_blocks(ctx, save, palette, col, row, seeds) -> list[dict]:
    """Per-layer diagnostics: line plots for few layers, a layer x epoch heatmap per diagnostic for many."""
    from . import figures as F

    keys, curves, table = ctx["keys"], ctx["curves"], ctx["table"]
    layered = curves[curves["metric"].astype(str).str.match(r"layer\d+\.")]
    n_layers = int(layered["metric"].astype(str).str.extract(r"layer(\d+)\.", expand=False).astype(int).max()) \
        if len(layered) else 0
    best = {}  # keep a figure readable: the best value of the second facet key
    if row is not None and len(layered):
        best = {row: table.iloc[0][row]}
    blocks = []
    diag = layered[layered["metric"].astype(str).str.match(r"layer\d+\.(grad_norm|saturation|dead_fraction)$")]
    if len(diag) and n_layers <= LINE_PLOT_MAX_LAYERS:
        where = "".join(f" ({k} = {fmt.val(v)})" for k, v in best.items())
        for k, v in best.items():
            diag = diag[fmt.matches(diag[k], v)]
        fig = F.layer_diagnostics(diag, hue="activation", col=col, palette=palette)
        F.fit_suptitle(fig, f"Per-layer diagnostics: mean and 95 % CI over {seeds}{where}")
        blocks.append(save(
            fig, "layer_diagnostics",
            "Gradient norm per layer (RMS over batches of ‖dW‖, log scale: vanishing in early layers, exploding), "
            "fraction of saturated activations (bounded activations: within 2.5 % of either bound) and fraction of "
            "dead units (ReLU family: pre-activation ≤ 0 for every training sample of the epoch). Line style = layer."))
    if n_layers >= HEATMAP_MIN_LAYERS:
        heat, where = layered, ""
        configs = layered.groupby([layered[k].map(fmt.val) for k in keys]).ngroups if keys else 1
        if configs > HEATMAP_MAX_PANELS and best:
            where = "".join(f" ({k} = {fmt.val(v)})" for k, v in best.items())
            for k, v in best.items():
                heat = heat[fmt.matches(heat[k], v)]
        for kind in LAYER_KINDS:
            if not heat["metric"].astype(str).str.fullmatch(rf"layer\d+\.{kind}").any():
                continue
            fig = layer_heatmaps(heat, kind, [k for k in keys if k not in best or not where])
            F.fit_suptitle(fig, f"{_kind_label(kind)} per layer and epoch: mean over {seeds}{where}")
            blocks.append(save(fig, f"layer_heatmap_{kind}",
                               f"Layer × epoch heatmap of the {_HEATMAP_TEXT[kind]}, one panel per configuration, "
                               f"mean over seeds; the deepest layer at the top; blank cells: no finite value, grey cells "
                               f"(log scales): 0."))
    return blocks



def draws_boundaries(ok: pd.DataFrame) -> bool:
    """Whether :func:`boundary_blocks` draws (or explains the lack of) decision boundaries for the finished runs
    ``ok``: some, each with 2 features."""
    return bool(len(ok)) and "n_features" in ok and bool((ok["n_features"] == 2).all())


def local_artifacts(ok: pd.DataFrame) -> bool:
    """Whether every run of ``ok`` keeps its artifacts in local files (read in place, without MLflow's client:
    safe in a forked process)."""
    return "artifact_uri" in ok and bool(ok["artifact_uri"].astype(str).str.startswith("file://").all())


def boundary_blocks(ok: pd.DataFrame, keys: list[str], m: str, higher: bool, uri: str, out_dir: Path,
                    written: set) -> list[dict]:
    """The decision-boundary figure's blocks: one panel per activation x the first other key (the learning rate
    when swept), none unless every finished run (``ok``) has 2 features; a note when no run logged weights.

    The figure is about a third of a report's rendering time, and needs only the finished runs and their weights:
    :func:`nnexp.report.build.build_report` draws it first.
    """
    from . import figures as F
    from .boundaries import probability_grid, test_points
    from .load import load_weights

    if not draws_boundaries(ok):
        return []

    def save(fig, name, caption):
        return figure_block(fig, out_dir, name, caption, False, written)

    col = "optimizer.lr" if "optimizer.lr" in keys else (keys[1] if len(keys) > 1 else None)
    others = [k for k in keys[1:] if k != col]
    # one network per panel: the seed with the median final metric of the panel's best configuration
    chosen = []
    panel = ok["activation"].map(fmt.val) + ("|" + ok[col].map(fmt.val) if col else "")
    for _, sub in ok.groupby(panel, sort=True):
        if others:
            means = sub.groupby([sub[k].map(fmt.val) for k in others])[m].mean()
            best = means.idxmax() if higher else means.idxmin()
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


def gallery_prerendered(activations: list[str]) -> bool:
    """Whether the gallery of ``activations`` (sorted) is drawn already: rendered by :func:`prerender_gallery` or in
    nnexp's user cache (:func:`gallery_cache_path`; when the report writes PNG only), or drawn by
    :func:`predraw_gallery` (it then only renders)."""
    formats = _ACTIVE.formats if _ACTIVE is not None else FORMATS
    key = ("activation_gallery", tuple(activations))
    return (formats == ("png",) and (key in _PRERENDERED or _cached_gallery(list(activations)) is not None)
            or key in _PREDRAWN)


def gallery_blocks(activations: list[str], out_dir: Path, *, written: set) -> list[dict]:
    """The activation gallery of :mod:`nnexp.report.gallery`. When the report writes PNG only, the PNG is taken
    as :func:`prerender_gallery` rendered it, else from nnexp's user cache (:func:`gallery_cache_path`), else
    rendered here and cached; a figure :func:`predraw_gallery` drew is rendered instead of being drawn again."""
    from . import gallery

    caption = Markup("The activations of this report, f(z), and their derivatives f'(z), with default parameters "
                     "(from <code>nnexp.report.gallery</code>).")
    formats = _ACTIVE.formats if _ACTIVE is not None else FORMATS
    key = ("activation_gallery", tuple(activations))
    png = (_PRERENDERED.get(key) or _cached_gallery(list(activations))) if formats == ("png",) else None
    if png is not None:
        drawn = _PREDRAWN.pop(key, None)
        if drawn is not None:
            import matplotlib.pyplot as plt

            plt.close(drawn)
        (out_dir / "activation_gallery.png").write_bytes(png)
        written.add("activation_gallery.png")
        return [{"kind": "figure", "name": "activation_gallery", "png": base64.b64encode(png).decode(),
                 "caption": caption, "svg": False}]
    fig = _PREDRAWN.pop(key, None)
    if fig is None:
        fig = gallery.gallery(gallery.activation_frame(names=activations), col_wrap=min(len(activations), 5))
    block = figure_block(fig, out_dir, "activation_gallery", caption, True, written)
    if formats == ("png",) and block.get("png"):  # rendered here (not in a Renderer's child, which fills it later)
        _cache_gallery(list(activations), base64.b64decode(block["png"]))
    return [block]


def _kind_label(kind: str) -> str:
    from . import figures as F

    return {"act_mean": "activation mean"}.get(kind, F.label(kind))


def _layer_rows(curves: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows of ``curves`` for ``layer<l>.<kind>`` with an integer ``layer`` column."""
    d = curves[curves["metric"].astype(str).str.fullmatch(rf"layer\d+\.{kind}")].copy()
    d["layer"] = d["metric"].astype(str).str.extract(r"layer(\d+)\.", expand=False).astype(int)
    return d


def layer_epoch_matrix(curves: pd.DataFrame, kind: str) -> pd.DataFrame:
    """One configuration's ``layer<l>.<kind>`` as a layers x epochs matrix of the mean over seeds.

    Parameters
    ----------
    curves : DataFrame
        One configuration's rows of :func:`nnexp.report.stats.aggregate_curves` (columns ``metric``, ``step``,
        ``mean``: the mean over seeds of each metric at each epoch).
    kind : str
        A per-layer diagnostic, one of :data:`LAYER_KINDS`.

    Returns
    -------
    DataFrame
        Index ``layer`` (the deepest layer first, so it is drawn at the top), columns ``epoch`` (ascending), values
        the mean over seeds; NaN where no seed logged a finite value.
    """
    d = _layer_rows(curves, kind)
    grid = d.pivot_table(index="layer", columns="step", values="mean", aggfunc="mean", dropna=False)
    grid = grid.sort_index(ascending=False).sort_index(axis=1)
    grid.index.name, grid.columns.name = "layer", "epoch"
    return grid


def _nice_step(n: int, most: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that labels at most ``most`` of ``n`` positions."""
    step = 1
    while math.ceil(n / step) > most:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2
    return step


def _sparse_ticks(ax, labels, axis: str, most: int) -> None:
    """Label at most ``most`` cells of a heatmap's axis: the lowest value and every multiple of a nice step."""
    step = _nice_step(len(labels), most)
    first = min(int(v) for v in labels)
    keep = [i for i, v in enumerate(labels)
            if int(v) == first or (int(v) % step == 0 and int(v) - first >= 0.75 * step)]
    if axis == "x":
        ax.set_xticks([i + 0.5 for i in keep], [str(int(labels[i])) for i in keep], rotation=0)
    else:
        ax.set_yticks([i + 0.5 for i in keep], [str(int(labels[i])) for i in keep], rotation=0)


def _norm(kind: str, values: np.ndarray):
    """Colour map and normalisation shared by every panel of ``kind``: log for spreads and gradient norms (and a
    positive mean spanning two decades or more), [0, 1] for fractions, centred at 0 for a mean of both signs."""
    from matplotlib.colors import CenteredNorm, LogNorm, Normalize

    v = values[np.isfinite(values)]
    if kind in ("saturation", "dead_fraction"):
        return "rocket_r", Normalize(0.0, 1.0), ""
    spans_decades = len(v) and v.min() > 0 and v.max() >= 100 * v.min()  # a positive mean (ReLU) shrinking with depth
    if (kind in ("grad_norm", "act_std") and (v > 0).any()) or (kind == "act_mean" and spans_decades):
        pos = v[v > 0]
        lo, hi = float(pos.min()), float(pos.max())
        return "viridis", LogNorm(lo, hi if hi > lo else lo * 10), " (log)"
    if kind == "act_mean" and len(v) and v.min() < 0 < v.max():
        return "vlag", CenteredNorm(0.0), ""
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    return "viridis", Normalize(lo, hi if hi > lo else lo + 1), ""


def layer_heatmaps(curves: pd.DataFrame, kind: str, keys: list[str], *, col_wrap: int = 4):
    """A layer x epoch heatmap of ``layer<l>.<kind>`` per configuration (mean over seeds), one colour scale.

    Readable at any depth: a cell per (layer, epoch), the deepest layer at the top, at most 10 layer and 8 epoch
    ticks per panel, one colour bar for all panels (log scale for ``act_std`` and ``grad_norm``, 0 to 1 for the
    fractions). Panels are the configurations (distinct values of ``keys``), ``col_wrap`` to a row, each with its
    own layer axis (a sweep over ``model.depth`` has panels of different depths).

    Parameters
    ----------
    curves : DataFrame
        :func:`nnexp.report.stats.aggregate_curves` output: ``*keys, metric, step, mean``.
    kind : str
        One of :data:`LAYER_KINDS`.
    keys : list of str
        The swept keys; panels are titled with :func:`nnexp.identity.describe`.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.layer_matrices`` holds the ``[(panel title, matrix)]`` drawn (:func:`layer_epoch_matrix`).

    Raises
    ------
    ValueError
        If no configuration logged ``layer<l>.<kind>``.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.cm import ScalarMappable

    from ..identity import describe
    from . import figures as F

    d = _layer_rows(curves, kind)
    if not len(d):
        raise ValueError(f"no configuration logged layer<l>.{kind}")
    panels = []
    for _, sub in d.groupby([d[k].map(fmt.val) for k in keys] if keys else [np.zeros(len(d))], sort=True):
        title = textwrap.fill(describe(sub.iloc[0], keys), 38) if keys else ""
        panels.append((title, layer_epoch_matrix(sub, kind)))
    name, norm, scale = _norm(kind, d["mean"].to_numpy(float))
    cmap = sns.color_palette(name, as_cmap=True).with_extremes(bad="0.7")  # grey: 0 on a log scale
    ncol = min(col_wrap, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    depth = max(len(m) for _, m in panels)
    height = min(max(2.2, 1.0 + 0.09 * depth), 5.0)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(3.4 * ncol + 1.0, 6.0), height * nrow + 0.8), squeeze=False,
                             layout="constrained")
    for ax, (title, grid) in zip(axes.flat, panels):
        F.seaborn_heatmap(grid, ax=ax, cmap=cmap, norm=norm, cbar=False, rasterized=True)  # ticks turned below
        _sparse_ticks(ax, list(grid.index), "y", 10)
        _sparse_ticks(ax, list(grid.columns), "x", 8)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.set_ylabel("layer")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.9,
                 label=_kind_label(kind) + scale)
    fig.layer_matrices = panels
    return fig
