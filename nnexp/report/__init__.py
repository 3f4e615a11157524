"""Comparison reports built from MLflow runs: ``reports/<experiment>/<sweep>/index.html``.

:func:`build_report` reads the runs of a sweep, an experiment or an MLflow
filter (:mod:`nnexp.report.load`), draws the figures
(:mod:`nnexp.report.figures`) and writes one self-contained HTML file (figures
embedded as PNG), each figure also as PNG and SVG, and the tidy data as CSV.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .load import ReportError, load_histories, load_runs, summarize_outcomes

__all__ = ["build_report", "ReportError", "summary_table"]

PRIMARY = "val_loss"


def summary_table(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, std and 95 % t-interval per group of ``keys`` over finished runs, ranked by the first metric."""
    from .figures import t_interval

    rows = []
    for group, sub in runs.groupby(keys, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        row = dict(zip(keys, group))
        row["runs"] = len(sub)
        for m in metrics:
            v = sub[m].astype(float)
            lo, hi = t_interval(v)
            row[f"{m} mean"] = v.mean()
            row[f"{m} std"] = v.std(ddof=1) if len(v) > 1 else np.nan
            row[f"{m} 95% CI"] = f"[{lo:.4g}, {hi:.4g}]"
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(f"{metrics[0]} mean", ignore_index=True)


def _fig_html(fig, out_dir: Path, name: str) -> str:
    fig.savefig(out_dir / f"{name}.png", dpi=110, bbox_inches="tight")
    fig.savefig(out_dir / f"{name}.svg", bbox_inches="tight")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>'


def _swept_keys(runs: pd.DataFrame) -> list[str]:
    keys = ["activation"]
    for k in ("optimizer.lr", "init", "optimizer", "dataset", "model.hidden_sizes", "batch_size"):
        if k in runs and runs[k].astype(str).nunique() > 1:
            keys.append(k)
    return keys


def build_report(uri: str, experiment: str, *, parent_id: str | None = None, filter_string: str = "",
                 out_dir: str | Path, title: str | None = None) -> Path:
    """Write the report for a sweep (``parent_id``), a filter, or a whole experiment.

    Returns
    -------
    Path
        The ``index.html`` written.

    Raises
    ------
    ReportError
        If the experiment does not exist or nothing matches the selection.
    """
    import matplotlib.pyplot as plt

    from .figures import final_metric, learning_curves, set_theme

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    runs = load_runs(uri, experiment, parent_id=parent_id, filter_string=filter_string)
    if runs.empty:
        raise ReportError(f"no runs in experiment {experiment!r} match"
                          + (f" the filter {filter_string!r}" if filter_string else "")
                          + (f" sweep parent {parent_id}" if parent_id else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    set_theme()
    ok = runs[runs["outcome"] == "finished"].copy()
    keys = _swept_keys(runs)
    hist = load_histories(uri, list(ok["run_id"]), ["train_loss", "val_loss", "val_accuracy"])
    hist = hist.merge(ok[["run_id", *keys, "seed"]], on="run_id")
    runs.to_csv(out_dir / "runs.csv", index=False)
    hist.to_csv(out_dir / "histories.csv", index=False)

    sections = []
    metrics = [m for m in ("val_loss", "val_accuracy", "test_accuracy", "train_seconds") if m in ok]
    if len(ok):
        table = summary_table(ok, keys, metrics)
        sections.append(("Summary", table.to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0)))
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        vl = hist[hist["metric"] == "val_loss"]
        learning_curves(vl, ax=axes[0], ylabel="validation loss")
        learning_curves(hist[hist["metric"] == "train_loss"], ax=axes[1], ylabel="training loss")
        fig.suptitle("Learning curves: mean and 95 % CI over seeds")
        sections.append(("Learning curves", _fig_html(fig, out_dir, "learning_curves")))
        order = list(table["activation"].drop_duplicates())
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        final_metric(ok, y="val_loss", ax=axes[0], order=order)
        if "val_accuracy" in ok:
            final_metric(ok, y="val_accuracy", ax=axes[1], order=order)
        fig.suptitle("Final validation loss and accuracy per run (diamond: mean, 95 % CI)")
        sections.append(("Final metrics", _fig_html(fig, out_dir, "final_metrics")))
    bad = runs[runs["outcome"] != "finished"]
    if len(bad):
        cols = [c for c in ("run_name", "outcome", "diverged_epoch", "error", "run_id") if c in bad]
        sections.append(("Diverged and failed runs (not averaged in)", bad[cols].to_html(index=False, border=0)))
    counts = summarize_outcomes(runs)
    title = title or f"nnexp report: {experiment}"
    meta = (f"{len(runs)} runs ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}); "
            f"seeds per configuration: {int(ok.groupby(keys).size().min()) if len(ok) else 0}; store {html.escape(uri)}; "
            f"built in {time.perf_counter() - t0:.1f} s")
    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>{content}</section>" for h, content in sections)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;font-size:.9em}}td,th{{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:right}}
img{{max-width:100%}}h2{{margin-top:1.6em}}.meta{{color:#666}}</style></head><body>
<h1>{html.escape(title)}</h1><p class="meta">{meta}</p>
{body}
</body></html>"""
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
