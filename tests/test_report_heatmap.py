"""The report's layer x epoch heatmaps: drawn for deep networks, their matrices equal the per-layer means in MLflow,
readable (ticks, colour scales) at 30+ layers."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from nnexp.report import build_report
from nnexp.report.plots import LAYER_KINDS, LINE_PLOT_MAX_LAYERS, layer_heatmaps

DEPTH, EPOCHS = 12, 4


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """relu and tanh, 12 hidden layers of 8 units, 4 epochs on xor, 2 seeds (replicas): 4 runs."""
    cwd = tmp_path_factory.mktemp("deep")
    proc = run_cli(["-m", "activation=relu,tanh", "dataset=xor", f"model.depth={DEPTH}", "model.width=8",
                    f"epochs={EPOCHS}", "replicas=2", "hydra.sweeper.params.seed=0", "tracking.experiment=deep",
                    "tracking.progress=false", "tracking.save_weights=false"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    out = cwd / "report"
    index = build_report(uri, "deep", out_dir=out, boundaries=False)
    return {"uri": uri, "index": index, "out": out}


def _mlflow_means(uri: str, kind: str) -> dict[str, pd.DataFrame]:
    """Per activation, the layers x epochs matrix of ``layer<l>.<kind>`` averaged over runs, read with MLflow's client."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("deep")
    runs = [r for r in c.search_runs([exp.experiment_id]) if any(re.fullmatch(r"layer\d+\." + kind, k)
                                                                  for k in r.data.metrics)]
    rows = []
    for r in runs:
        for key in r.data.metrics:
            m = re.fullmatch(r"layer(\d+)\." + kind, key)
            if m:
                rows += [(r.data.tags["activation"], int(m.group(1)), p.step, p.value)
                         for p in c.get_metric_history(r.info.run_id, key)]
    d = pd.DataFrame(rows, columns=["activation", "layer", "epoch", "value"])
    return {a: g.pivot_table(index="layer", columns="epoch", values="value", aggfunc="mean")
            for a, g in d.groupby("activation")}


def test_deep_sweep_report_draws_one_heatmap_per_diagnostic(deep):
    text = deep["index"].read_text()
    shown = re.findall(r'alt="(layer_[a-z_]+)"', text)
    # relu logs dead units, tanh saturation; both log activation std/mean and gradient norms
    assert shown == [f"layer_heatmap_{k}" for k in LAYER_KINDS]
    assert DEPTH + 1 > LINE_PLOT_MAX_LAYERS  # so the line plots (layers told apart by 6 line styles) are left out
    for name in shown:
        assert (deep["out"] / f"{name}.png").stat().st_size > 5000


@pytest.mark.parametrize("kind", ["grad_norm", "act_std", "dead_fraction"])
def test_heatmap_matrix_equals_the_per_layer_means_in_mlflow(deep, kind, monkeypatch):
    """The matrices handed to seaborn, drawn from the report's curves.csv, are MLflow's per-layer means over seeds."""
    import seaborn as sns

    passed = []
    real = sns.heatmap
    monkeypatch.setattr(sns, "heatmap", lambda data, **kw: passed.append(data) or real(data, **kw))
    curves = pd.read_csv(deep["out"] / "curves.csv")
    layer_heatmaps(curves, kind, ["activation"])
    expected = _mlflow_means(deep["uri"], kind)
    assert len(passed) == len(expected) == (1 if kind == "dead_fraction" else 2)
    n_layers = DEPTH + 1 if kind == "grad_norm" else DEPTH  # the gradient norm also of the output layer
    for grid, (activation, want) in zip(passed, sorted(expected.items())):
        assert grid.shape == (n_layers, EPOCHS) == want.shape
        assert list(grid.index) == list(range(n_layers, 0, -1))  # the deepest layer at the top
        assert list(grid.columns) == list(range(1, EPOCHS + 1))
        np.testing.assert_allclose(grid.to_numpy(), want.sort_index(ascending=False).to_numpy(), rtol=1e-9)
    if kind == "dead_fraction":
        assert sorted(expected) == ["relu"]


def _synthetic(layers: int, epochs: int, kind: str) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [("relu", f"layer{l}.{kind}", e, float(rng.uniform(1e-4, 1) * (0.7 ** l if kind == "grad_norm" else 1)))
            for l in range(1, layers + 1) for e in range(1, epochs + 1)]
    return pd.DataFrame(rows, columns=["activation", "metric", "step", "mean"])


@pytest.mark.parametrize("layers, epochs", [(30, 30), (64, 200)])
def test_ticks_stay_readable_at_depth(layers, epochs):
    fig = layer_heatmaps(_synthetic(layers, epochs, "grad_norm"), "grad_norm", ["activation"])
    ax = fig.axes[0]
    ys = [t.get_text() for t in ax.get_yticklabels()]
    xs = [t.get_text() for t in ax.get_xticklabels()]
    assert 4 <= len(ys) <= 10 and 4 <= len(xs) <= 8
    assert ys[-1] == "1" and xs[0] == "1"  # the first layer (at the bottom) and epoch are always labelled
    # labels sit on their cells: the deepest layer is row 0, so layer l is at row (layers - l) + 0.5
    for tick, text in zip(ax.get_yticks(), ys):
        assert tick == layers - int(text) + 0.5
    for tick, text in zip(ax.get_xticks(), xs):
        assert tick == int(text) - 1 + 0.5


def test_colour_scales():
    from matplotlib.colors import LogNorm

    grad = layer_heatmaps(_synthetic(30, 5, "grad_norm"), "grad_norm", ["activation"])
    assert isinstance(grad.axes[0].collections[0].norm, LogNorm)
    dead = layer_heatmaps(_synthetic(30, 5, "dead_fraction"), "dead_fraction", ["activation"])
    norm = dead.axes[0].collections[0].norm
    assert (norm.vmin, norm.vmax) == (0.0, 1.0)
