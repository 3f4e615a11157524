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
