"""The report's figure renderer (:class:`nnexp.report.plots.Renderer`): files and page blocks are the same whether
figures render in child processes or in this one."""

import base64

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from nnexp.report import plots  # noqa: E402


def _figures():
    out = []
    for k in range(3):
        fig, ax = plt.subplots(figsize=(3, 2), layout="constrained")
        ax.plot(np.arange(50), np.sin(np.arange(50) / (k + 2)), label=f"f{k}")
        ax.set_title(f"figure {k}")
        out.append(fig)
    return out


def _build(out_dir, **kw):
    out_dir.mkdir()
    written = set()
    with plots.Renderer(**kw):
        blocks = [plots.figure_block(f, out_dir, f"fig{k}", f"caption {k}", written=written)
                  for k, f in enumerate(_figures())]
    return blocks, written


@pytest.mark.parametrize("svg", [False, True])
def test_children_render_the_same_files_as_this_process(tmp_path, svg):
    serial, w1 = _build(tmp_path / "serial", processes=0, svg=svg)
    forked, w2 = _build(tmp_path / "forked", processes=2, svg=svg)
    expected = {f"fig{k}.{ext}" for k in range(3) for ext in (("png", "svg") if svg else ("png",))}
    assert w1 == w2 == expected
    assert {p.name for p in (tmp_path / "forked").iterdir()} == expected
    for a, b in zip(serial, forked):
        assert a == b and a["svg"] is svg
        png = base64.b64decode(b["png"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == (tmp_path / "forked" / f"{b['name']}.png").read_bytes()


def test_a_failed_child_leaves_the_figure_to_this_process(tmp_path, monkeypatch):
    import os

    real = plots._render
    parent = os.getpid()

    def fails_in_child(*args, **kw):
        if os.getpid() != parent:
            raise RuntimeError("child failure")
        return real(*args, **kw)

    monkeypatch.setattr(plots, "_render", fails_in_child)
    blocks, written = _build(tmp_path / "out", processes=2)
    assert written == {"fig0.png", "fig1.png", "fig2.png"}
    assert all(base64.b64decode(b["png"])[:4] == b"\x89PNG" for b in blocks)


def test_without_a_renderer_figure_block_renders_at_once(tmp_path):
    fig = _figures()[0]
    block = plots.figure_block(fig, tmp_path, "alone", "c")
    assert block["png"] and (tmp_path / "alone.png").read_bytes() == base64.b64decode(block["png"])
    assert not (tmp_path / "alone.svg").exists()


def _pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def _savefig_png(fig, **kw) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=plots.DPI, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("tight", [False, True])
def test_png_bytes_are_the_pixels_savefig_draws_as_rgb(tight):
    """The faster PNG holds exactly the pixels of matplotlib's own PNG (constrained layout, text, a log axis), as
    RGB since every pixel is opaque, with matplotlib's resolution and Software entry."""
    import io

    from PIL import Image

    def figure():
        fig, axes = plt.subplots(1, 2, figsize=(4, 2.5), layout="constrained", sharey=True)
        for k, ax in enumerate(axes):
            ax.plot(np.arange(1, 30), np.exp(-np.arange(1, 30) / (k + 3)), label="decay")
            ax.fill_between(np.arange(1, 30), 0.01, 0.02, alpha=0.3)
            ax.set_yscale("log")
            ax.set_title(f"panel {k} ‖dW‖")
        fig.legend(loc="outside right center")
        return fig

    # two figures drawn alike: a figure saved twice may be laid out a little differently the second time
    ref = _savefig_png(figure(), bbox_inches="tight" if tight else None)
    png = plots.png_bytes(figure(), tight=tight)
    image = Image.open(io.BytesIO(png))
    assert image.mode == "RGB" and Image.open(io.BytesIO(ref)).mode == "RGBA"
    assert _pixels(png).shape == _pixels(ref).shape
    assert (_pixels(png) == _pixels(ref)).all()
    assert image.info["Software"].startswith("Matplotlib version")
    assert image.info["dpi"] == pytest.approx((plots.DPI, plots.DPI), abs=0.01)
    if not tight:
        assert image.size == (round(4 * plots.DPI), round(2.5 * plots.DPI))


def test_png_bytes_keep_transparency():
    """A figure with transparent pixels stays RGBA, alpha included."""
    import io

    from PIL import Image

    def figure():
        fig, ax = plt.subplots(figsize=(2, 1.5))
        fig.patch.set_alpha(0.0)
        ax.plot([0, 1], [1, 0])
        return fig

    png = plots.png_bytes(figure())
    assert Image.open(io.BytesIO(png)).mode == "RGBA"
    assert (_pixels(png) == _pixels(_savefig_png(figure()))).all()
    assert _pixels(png)[0, 0, 3] == 0


def test_seaborn_heatmap_draws_nothing_and_keeps_what_the_report_sets():
    """seaborn.heatmap draws the whole figure (to turn overlapping tick labels); the report's wrapper does not, and
    once the report has set its tick labels both give the same cells, labels and rotations."""
    import pandas as pd
    import seaborn as sns

    from nnexp.report import figures as F

    grid = pd.DataFrame(np.arange(12.0).reshape(3, 4), index=["relu", "tanh", "sigmoid"],
                        columns=[0.001, 0.01, 0.1, 1.0])
    drawn = {}
    result = {}
    for name, heat in [("seaborn", lambda g, ax: sns.heatmap(g, ax=ax, annot=True)),
                       ("report", lambda g, ax: F.seaborn_heatmap(g, ax=ax, annot=True))]:
        fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
        drawn[name] = 0
        fig.canvas.mpl_connect("draw_event", lambda e, n=name: drawn.__setitem__(n, drawn[n] + 1))
        heat(grid, ax)
        assert fig.get_visible()
        ax.set_xticklabels([t.get_text() for t in ax.get_xticklabels()], rotation=0)
        ax.tick_params(axis="y", rotation=0)
        result[name] = ([(t.get_text(), t.get_rotation()) for t in ax.get_xticklabels() + ax.get_yticklabels()],
                        [t.get_text() for t in ax.texts], ax.collections[0].get_array().tolist())
        plt.close(fig)
    assert drawn == {"seaborn": 1, "report": 0}
    assert result["seaborn"] == result["report"]
    assert [t for t, _ in result["report"][0]] == ["0.001", "0.01", "0.1", "1.0", "relu", "tanh", "sigmoid"]
    assert result["report"][1] == [f"{v:.2g}" for v in np.arange(12.0)]


def _group(out_dir, tag, *, written):
    """A figure group as the report draws one: two figures and a note, a warning logged."""
    import logging

    logging.getLogger("nnexp").warning("group %s drawn in process %d", tag, __import__("os").getpid())
    blocks = [plots.figure_block(f, out_dir, f"{tag}{k}", f"caption {k}", written=written)
              for k, f in enumerate(_figures()[:2])]
    return blocks + [{"kind": "note", "text": f"note {tag}"}]


@pytest.mark.parametrize("svg", [False, True])
def test_a_group_drawn_in_a_child_gives_the_blocks_files_and_log_records_of_this_process(tmp_path, svg, caplog):
    import os

    results = {}
    for processes in (0, 2):
        out_dir = tmp_path / f"p{processes}"
        out_dir.mkdir()
        written = set()
        caplog.clear()
        with plots.Renderer(processes=processes, svg=svg) as r:
            blocks = r.later(_group, out_dir, "g", written=written)
            if processes:
                assert blocks == []  # filled when the block ends
        results[processes] = (blocks, written, sorted(p.name for p in out_dir.iterdir()))
        pids = [int(rec.getMessage().split()[-1]) for rec in caplog.records if rec.getMessage().startswith("group g")]
        assert len(pids) == 1 and (pids[0] == os.getpid()) is (processes == 0)
    assert results[0] == results[2]
    blocks, written, files = results[2]
    names = {f"g{k}.{ext}" for k in range(2) for ext in (("png", "svg") if svg else ("png",))}
    assert written == names and set(files) == names
    assert [b["kind"] for b in blocks] == ["figure", "figure", "note"]
    assert base64.b64decode(blocks[0]["png"]) == (tmp_path / "p2" / "g0.png").read_bytes()


def test_a_failed_group_is_drawn_again_in_this_process(tmp_path, monkeypatch):
    import os

    parent = os.getpid()

    def group(out_dir, *, written):
        if os.getpid() != parent:
            raise RuntimeError("child failure")
        return _group(out_dir, "h", written=written)

    written = set()
    with plots.Renderer(processes=2) as r:
        blocks = r.later(group, tmp_path, written=written)
    assert [b["kind"] for b in blocks] == ["figure", "figure", "note"] and written == {"h0.png", "h1.png"}
    with pytest.raises(ValueError, match="raised here too"):
        with plots.Renderer(processes=2) as r:
            r.later(lambda *, written: (_ for _ in ()).throw(ValueError("raised here too")), written=set())


def test_a_gallery_drawn_ahead_is_rendered_as_the_report_would_draw_it(tmp_path, monkeypatch):
    """The report worker draws the gallery, then renders it: a report coming in between renders the figure drawn
    (not drawing it again), one coming after uses the PNG; all three give the same pixels."""
    monkeypatch.setattr(plots, "_PREDRAWN", {})
    monkeypatch.setattr(plots, "_PRERENDERED", {})
    acts = ["relu", "tanh"]
    outs = {}
    for case in ("drawn here", "drawn ahead", "rendered ahead"):
        out = tmp_path / case.replace(" ", "_")
        out.mkdir()
        monkeypatch.setenv("NNEXP_CACHE_DIR", str(out / "cache"))  # each case starts without a cached gallery
        if case == "drawn ahead":
            plots.predraw_gallery(acts)
            assert plots.gallery_prerendered(acts)
        if case == "rendered ahead":
            plots.prerender_gallery(acts)
            assert plots.gallery_prerendered(acts) and not plots._PREDRAWN
        written = set()
        blocks = plots.gallery_blocks(acts, out, written=written)
        assert written == {"activation_gallery.png"} and not plots._PREDRAWN
        outs[case] = _pixels(base64.b64decode(blocks[0]["png"]))
        assert (outs[case] == _pixels((out / "activation_gallery.png").read_bytes())).all()
    assert (outs["drawn here"] == outs["drawn ahead"]).all() and (outs["drawn here"] == outs["rendered ahead"]).all()


def test_the_gallery_is_rendered_once_per_activation_set_then_taken_from_the_user_cache(tmp_path, monkeypatch):
    """A later report (a new process: nothing in memory) takes the gallery PNG from nnexp's user cache, byte for byte
    what was rendered, without drawing; another activation set, another theme or a damaged file is drawn again."""
    from nnexp.report import gallery

    monkeypatch.setenv("NNEXP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(plots, "_PREDRAWN", {})
    monkeypatch.setattr(plots, "_PRERENDERED", {})
    acts = ["relu", "tanh"]
    drawn = []
    real = gallery.gallery
    monkeypatch.setattr(gallery, "gallery", lambda *a, **k: drawn.append(1) or real(*a, **k))

    def report(name, activations=acts):
        plots._PRERENDERED.clear()  # as in a new process
        out = tmp_path / name
        out.mkdir()
        written = set()
        block = plots.gallery_blocks(activations, out, written=written)[0]
        assert written == {"activation_gallery.png"}
        assert base64.b64decode(block["png"]) == (out / "activation_gallery.png").read_bytes()
        return (out / "activation_gallery.png").read_bytes()

    first = report("first")
    assert len(drawn) == 1 and plots.gallery_cache_path(acts).read_bytes() == first
    assert report("second") == first and len(drawn) == 1  # from the cache: not drawn again
    plots._PRERENDERED.clear()
    assert plots.gallery_prerendered(acts)  # the report builds it at once, not in a child
    plots.prerender_gallery(acts)  # the report worker's warm-up: nothing to draw either
    assert len(drawn) == 1

    other = report("other", ["relu", "sigmoid"])
    assert len(drawn) == 2 and other != first
    assert plots.gallery_cache_path(["relu", "sigmoid"]) != plots.gallery_cache_path(acts)

    plain = plots.gallery_cache_path(acts)
    with matplotlib.rc_context({"lines.linewidth": 3.0}):  # a user's matplotlibrc: other pixels, another file
        assert plots.gallery_cache_path(acts) != plain
        themed = report("themed")
    assert len(drawn) == 3 and themed != first

    path = plots.gallery_cache_path(acts)
    path.write_bytes(first[: len(first) // 2])  # cut short (a full disk): not a whole PNG, drawn again
    assert report("repaired") == first and len(drawn) == 4 and path.read_bytes() == first


def test_the_gallery_cache_file_is_named_alike_in_every_process():
    """The name depends on what draws the pixels, not on the process: two interpreters, one before and one after
    pyplot chose its backend, name the same file (a name that changed per process would never be found again)."""
    import subprocess
    import sys

    code = ("import sys; from nnexp.report import plots\n"
            "if sys.argv[1] == 'pyplot': import matplotlib.pyplot\n"
            "print(plots.gallery_cache_path(['relu', 'tanh']))")
    names = {subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True, check=True).stdout
             for how in ("plain", "pyplot", "plain")}
    assert len(names) == 1 and names.pop().strip().endswith(".png")


def test_a_report_that_fails_drops_its_groups_and_keeps_its_error(tmp_path):
    import os

    parent = os.getpid()
    ran = []

    def group(*, written):
        ran.append(os.getpid())
        raise RuntimeError("the group's own error")

    with pytest.raises(KeyError, match="the report's error"):
        with plots.Renderer(processes=2) as r:
            r.later(group, written=set())
            raise KeyError("the report's error")
    assert parent not in ran and not r.groups
