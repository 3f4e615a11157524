"""Comparison reports built from MLflow runs: ``reports/<experiment>/<sweep>/index.html``.

:func:`build_report` reads the runs of a sweep, an experiment or an MLflow
filter (:mod:`nnexp.report.load`), computes the statistics
(:mod:`nnexp.report.stats`), draws the figures (:mod:`nnexp.report.figures`)
and writes one self-contained HTML page (figures embedded as PNG), each figure
also as PNG and SVG, and the tidy data as CSV:

``runs.csv``
    one row per run (params, final metrics, outcome, MLflow UI link);
``summary.csv``
    one row per configuration (mean, std, 95 % CI over seeds; divergence; epochs to target);
``comparison.csv``
    each activation's best configuration against the best overall (tests, effect sizes);
``curves.csv``
    mean and 95 % CI per (configuration, metric, epoch);
``duplicates.csv``
    only when some were dropped: the runs that repeat a kept run's configuration
    and seed (same ``nnexp.run_key``), each with the ``kept_run_id`` counted instead
    (:func:`nnexp.report.load.drop_duplicates`).

Whatever the selection (a sweep, a filter, the whole experiment), one run per
run key (configuration and seed, :mod:`nnexp.identity`) enters the report: a single run that repeats a sweep's run,
or two identical sweeps run at once, would otherwise count one seed twice.

The page answers: which activation, at which learning rate and
initialisation, and why (learning curves, sensitivity, per-layer diagnostics,
decision boundaries). The report reads MLflow only; it rebuilds networks with
the public :class:`nnexp.model.MLP` to draw decision boundaries.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .load import (ReportError, check_metric, drop_duplicates, lists_as_text, load_histories, load_runs, run_url,
                   summarize_outcomes)
from .stats import (aggregate_curves, compare_to_best, default_target, epochs_to_target, higher_is_better,
                    metric_range, summary_table)

__all__ = ["build_report", "ReportError", "summary_table", "swept_keys", "PRIMARY"]

#: The default primary metric: what "best" means.
PRIMARY = "val_loss"

def swept_keys(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(keys, linked)``: the configuration keys, and the varying keys that are functions of the activation.

    The varying keys are the canonical keys whose values differ across ``runs``
    (:func:`nnexp.identity.varying_keys`: nulls and lists included, ``legacy``
    when old and new runs mix), never a fixed list. ``keys`` starts with
    ``activation`` followed by every varying key that varies *within* some
    activation (a real sweep axis). A key that varies only together with the
    activation (``init`` when ``init=auto`` resolves to He for ReLU and Xavier
    for tanh) is ``linked``: shown in tables, never a facet. Grouping by
    ``keys`` (or ``keys + linked``) gives one group per ``config_id``.
    """
    from ..identity import comparable, varying_keys

    keys, linked = ["activation"], []
    for k in varying_keys(runs):
        if k == "activation":
            continue
        values = runs[k].map(comparable).map(repr)
        if (values.groupby(runs["activation"].map(repr)).nunique() > 1).any():
            keys.append(k)
        else:
            linked.append(k)
    return keys, linked


# -- formatting -------------------------------------------------------------------------------
def _g(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:.{digits}g}"


def _p(p) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return "&lt; 0.001" if p < 0.001 else f"{p:.3f}"


def _p_is(p) -> str:
    """``p = 0.013`` or ``p < 0.001``, for running text."""
    text = _p(p)
    return f"p {text}" if text.startswith("&lt;") else f"p = {text}"


def _val(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _cfg(row, keys) -> str:
    """``activation=relu, optimizer.lr=0.1, model.hidden_sizes=[4, 4]``: every key as ``key=value``
    (:func:`nnexp.identity.format_value`: nulls as ``null``, lists as lists)."""
    from ..identity import format_value

    return ", ".join(f"{k}={format_value(row[k])}" for k in keys)


def _fig_html(fig, out_dir: Path, name: str, caption: str, tight: bool = False) -> str:
    """Save ``fig`` as PNG and SVG and return the HTML figure embedding the PNG.

    The report's own figures use constrained layout, so they are saved as laid
    out (``tight=False``): a "tight" bounding box would cost a second drawing pass.
    """
    import matplotlib.pyplot as plt

    bbox = "tight" if tight else None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches=bbox)
    (out_dir / f"{name}.png").write_bytes(buf.getvalue())
    if fig.get_layout_engine() is not None and not tight:
        fig.set_layout_engine("none")  # keep the positions just computed: the SVG needs no second layout pass
    fig.savefig(out_dir / f"{name}.svg", bbox_inches=bbox)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{caption} <a href="{name}.png">PNG</a> · <a href="{name}.svg">SVG</a></figcaption></figure>')


def _table(df: pd.DataFrame, cls: str = "") -> str:
    return '<div class="scroll">' + df.to_html(index=False, border=0, escape=False, na_rep="–", classes=cls) + "</div>"


# -- the report -------------------------------------------------------------------------------
def build_report(uri: str, experiment: str, *, parent_id: str | None = None, filter_string: str = "",
                 out_dir: str | Path, title: str | None = None, metric: str = PRIMARY,
                 target: float | None = None, boundaries: bool = True) -> Path:
    """Write the report for a sweep (``parent_id``), a filter, or a whole experiment.

    Parameters
    ----------
    uri : str
        MLflow tracking URI.
    experiment : str
        Experiment name.
    parent_id : str, optional
        Only this sweep's runs.

        Whatever the selection, runs sharing an ``nnexp.run_key`` count once
        (:func:`nnexp.report.load.drop_duplicates`); the page says how many were
        dropped and ``duplicates.csv`` lists them.
    filter_string : str
        MLflow search filter (``params.`dataset.name` = 'moons'``; ``params.dataset``
        is accepted for the flattened ``params.`dataset.name```).
    out_dir : path
        Folder of ``index.html`` and its files.
    metric : str, default "val_loss"
        The primary metric: what "best" means (lower is better, higher for
        ``*accuracy``); summary ranking, tests and conclusion use it.
    target : float, optional
        Threshold of "epochs to target" on ``metric``; default the median final
        ``metric`` of the finished runs (:func:`nnexp.report.stats.default_target`).
    boundaries : bool
        Draw decision boundaries when the data are 2-D and weights were logged.

    Returns
    -------
    Path
        The ``index.html`` written.

    Raises
    ------
    ReportError
        If the experiment does not exist, the filter is invalid or matches
        nothing, no selected run logged ``metric``, or ``target`` is not a finite
        value in the metric's range (≥ 0 for losses, [0, 1] for accuracies).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    runs = load_runs(uri, experiment, parent_id=parent_id, filter_string=filter_string)
    if runs.empty:
        raise ReportError(f"no runs in experiment {experiment!r} match"
                          + (f" the filter {filter_string!r}" if filter_string else "")
                          + (f" in sweep {parent_id}" if parent_id else ""))
    runs, duplicates = drop_duplicates(runs)
    runs = lists_as_text(runs)  # model.hidden_sizes=[4, 4] is one value in tables and figures
    check_metric(runs, metric)
    if metric not in runs:  # no run finished (every run diverged before logging it): the report says so
        runs[metric] = np.nan
    _check_target(target, metric)
    runs, left_out = _one_dataset(runs)
    from .figures import set_theme

    set_theme()
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_duplicates(duplicates, out_dir, metric)
    keys, linked = swept_keys(runs)
    higher = higher_is_better(metric)
    runs["url"] = [run_url(e, r) for e, r in zip(runs["experiment_id"], runs["run_id"])]
    ok = runs[runs["outcome"] == "finished"]
    ok = ok[np.isfinite(ok[metric].astype(float))]
    n_epochs = int(pd.to_numeric(runs.get("epochs"), errors="coerce").max()) if "epochs" in runs else None

    # only the histories a figure or a number uses (the diagnostics plotted, not act_mean / act_std)
    want = {metric, "train_loss", "val_loss", "train_" + metric[4:] if metric.startswith("val_") else metric}
    want |= {k for k in runs.attrs.get("metrics", []) if re.fullmatch(r"layer\d+\.(grad_norm|saturation|dead_fraction)", k)}
    hist = load_histories(uri, list(ok["run_id"]), metrics=sorted(want))
    hist["metric"] = hist["metric"].astype("category")
    target_auto = target is None
    if target is None:
        target = default_target(ok, metric)
    epochs = epochs_to_target(hist[hist["metric"] == metric], target, higher=higher) if len(hist) else None
    if epochs is not None:
        epochs = epochs.reindex(ok["run_id"])

    final = [m for m in dict.fromkeys([metric, "train_loss", "val_loss", "test_accuracy", "train_seconds"]) if m in runs]
    table = summary_table(runs[runs["outcome"].isin(["finished", "diverged"])], keys + linked, final, primary=metric,
                          epochs=epochs)
    table.to_csv(out_dir / "summary.csv", index=False)
    comp = compare_to_best(ok, keys, metric, epochs=epochs, censor_at=(n_epochs or 0) + 1) if len(ok) else pd.DataFrame()
    if len(comp):
        comp.drop(columns=["run_ids"]).to_csv(out_dir / "comparison.csv", index=False)
    run_cols = [c for c in ("run_id", "run_name", "config_id", "run_key", "outcome", "diverged_epoch", "dataset",
                            *keys, *linked, "seed", *final, "test_loss", "val_accuracy", "reused", "legacy",
                            "repeated_by", "error", "url") if c in runs]
    runs[list(dict.fromkeys(run_cols))].to_csv(out_dir / "runs.csv", index=False)

    hist = hist.merge(ok[["run_id", *keys]], on="run_id")
    curves = aggregate_curves(hist, keys)
    curves.to_csv(out_dir / "curves.csv", index=False)

    sections = []
    ctx = dict(runs=runs, ok=ok, keys=keys, linked=linked, metric=metric, higher=higher, target=target,
               target_auto=target_auto, table=table, comp=comp, curves=curves, epochs=epochs, n_epochs=n_epochs)
    sections.append(("Conclusion", _conclusion(ctx)))
    sections.append(("Summary", _summary_html(ctx)))
    if len(comp) > 1:
        sections.append(("Statistical comparison with the best activation", _comparison_html(ctx)))
    sections += _figure_sections(ctx, out_dir, uri, boundaries)
    sections.append(("Diverged and failed runs (never averaged in)", _bad_html(runs, keys, metric)))
    sections.append(("All runs in MLflow", _runs_html(ctx, uri) + _duplicates_html(duplicates)))

    counts = summarize_outcomes(runs)
    title = title or f"nnexp report: {experiment}"
    selection = _sweep_html(uri, runs, parent_id) if parent_id else "the whole experiment"
    if filter_string:
        selection += f", filter <code>{html.escape(filter_string)}</code>"
    seeds = ok.groupby(keys).size() if len(ok) else pd.Series(dtype=int)
    # configurations (nnexp.config_id) that trained, finished or not: a sweep in which every run diverged has some
    trained = runs[runs["outcome"].isin(["finished", "diverged"])]
    n_configs = trained["config_id"].nunique() if "config_id" in trained else len(seeds)
    datasets = ", ".join(sorted(runs["dataset"].dropna().astype(str).unique())) if "dataset" in runs else "?"
    meta = (f"Experiment <b>{html.escape(experiment)}</b>, {selection}; dataset {html.escape(datasets)}; "
            f"{len(runs)} runs ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}); "
            f"{_n(n_configs, 'configuration')} of {html.escape(', '.join(keys))}, "
            f"{_seed_text(seeds)} each; primary metric <b>{html.escape(metric)}</b> "
            f"({'higher' if higher else 'lower'} is better); store <code>{html.escape(uri)}</code>.")
    if len(duplicates):
        meta += _duplicates_note(duplicates)
    repeats = int(runs["repeats"].sum()) if "repeats" in runs else 0
    if repeats:  # jobs of the sweep that spelled a run's configuration and seed again (init=auto and its pick)
        meta += (f" <b>{_n(repeats, 'duplicate job')}</b> of the sweep repeated the configuration and seed of a run "
                 f"here (same <code>nnexp.run_key</code>): trained once, counted once (column repeated_by of "
                 f"<a href='runs.csv'>runs.csv</a>).")
    if left_out:
        meta += _left_out_note(left_out, datasets, experiment, parent_id, filter_string)
    toc = " · ".join(f'<a href="#s{i}">{html.escape(h)}</a>' for i, (h, _) in enumerate(sections))
    body = "\n".join(f'<section id="s{i}"><h2>{html.escape(h)}</h2>{content}</section>'
                     for i, (h, content) in enumerate(sections))
    built = f"Built in {time.perf_counter() - t0:.1f} s by <code>python -m nnexp.report</code>."
    page = _PAGE.format(title=html.escape(title), meta=meta, toc=toc, body=body, built=built)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _write_duplicates(duplicates: pd.DataFrame, out_dir: Path, metric: str) -> None:
    """``duplicates.csv`` when runs were dropped; no file (an earlier build's removed) when none were."""
    path = out_dir / "duplicates.csv"
    if not len(duplicates):
        path.unlink(missing_ok=True)
        return
    cols = [c for c in ("run_id", "kept_run_id", "run_key", "config_id", "run_name", "status", "outcome", "parent_id",
                        "activation", "seed", metric, "start_time", "end_time") if c in duplicates]
    duplicates[cols].to_csv(path, index=False)


def _duplicates_note(duplicates: pd.DataFrame) -> str:
    """The meta line's note: how many duplicate runs were dropped, and why."""
    n = len(duplicates)
    return (f" <b>{_n(n, 'duplicate run')} dropped</b>: {'it repeats' if n == 1 else 'each repeats'} the configuration "
            f"and seed of a run kept here (same <code>nnexp.run_key</code>, e.g. a single run or a concurrent "
            f"sweep that trained it again), so no seed counts twice; of each configuration the report keeps the "
            f"FINISHED run that ended last (<a href='duplicates.csv'>duplicates.csv</a>).")


def _duplicates_html(duplicates: pd.DataFrame) -> str:
    """The dropped duplicates, each with a link to the run kept in its place."""
    if not len(duplicates):
        return ""
    rows = "".join(
        f"<li><a href='{run_url(e, r)}'><code>{html.escape(str(r))}</code></a> "
        f"({html.escape(str(s))}) duplicates kept run <a href='{run_url(e, k)}'><code>{html.escape(str(k))}</code></a></li>"
        for e, r, s, k in zip(duplicates["experiment_id"], duplicates["run_id"], duplicates["status"],
                              duplicates["kept_run_id"]))
    return f"<details><summary>{_n(len(duplicates), 'duplicate run')} dropped</summary><ul>{rows}</ul></details>"


def _check_target(target: float | None, metric: str) -> None:
    """Raise a ReportError unless ``target`` is None or a finite value in the range of ``metric``."""
    if target is None:
        return
    lo, hi = metric_range(metric)
    if not math.isfinite(target) or not lo <= target <= hi:
        where = "≥ 0" if hi == math.inf and lo == 0 else (f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else "finite")
        raise ReportError(f"--target-loss {target:g}: a target of {metric} must be a finite number {where}")


def _sweep_html(uri: str, runs: pd.DataFrame, parent_id: str) -> str:
    """``sweep <b>name</b>`` (the parent run's ``nnexp.sweep`` tag) with the parent run id as a small link."""
    from .. import tracking

    try:
        parent = tracking.retry(tracking.client(uri).get_run, parent_id)
        name, exp_id = parent.data.tags.get(f"{tracking.TAG}sweep"), parent.info.experiment_id
    except Exception:  # the parent run is gone: the id is all there is
        name, exp_id = None, runs["experiment_id"].iloc[0]
    link = f"<a href='{run_url(exp_id, parent_id)}'><code>{html.escape(parent_id)}</code></a>"
    if not name:
        return f"sweep {link}"
    return f"sweep <b>{html.escape(name)}</b> <small>(parent run {link})</small>"


def _one_dataset(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The runs of the dataset with the most runs, and ``{dataset: runs}`` of the datasets left out.

    Losses on different datasets are not comparable, so a report compares within
    one dataset (the ``dataset`` tag, else the ``dataset.name`` param). Ties go to
    the dataset first in alphabetical order.
    """
    if "dataset.name" in runs:
        runs["dataset"] = runs["dataset"].fillna(runs["dataset.name"]) if "dataset" in runs else runs["dataset.name"]
    if "dataset" not in runs or runs["dataset"].dropna().nunique() < 2:
        return runs, {}
    counts = runs["dataset"].dropna().astype(str).value_counts()
    keep = sorted(counts.index, key=lambda d: (-counts[d], d))[0]
    left_out = {d: int(counts[d]) for d in sorted(counts.index) if d != keep}
    kept = runs[runs["dataset"].astype(str) == keep].copy()
    kept.attrs.update(runs.attrs)
    return kept, left_out


def _left_out_note(left_out: dict[str, int], kept: str, experiment: str, parent_id: str | None,
                   filter_string: str) -> str:
    """A visible note naming the datasets left out and the command that builds a report for each."""
    sweep = f" --sweep {parent_id}" if parent_id else ""
    cmds = []
    for d, n in left_out.items():
        f = f"tags.dataset = '{d}'" + (f" and {filter_string}" if filter_string else "")
        cmd = f'python -m nnexp.report --experiment {experiment}{sweep} --filter "{f}"'
        cmds.append(f"<li>{html.escape(d)} ({_n(n, 'run')}): <code>{html.escape(cmd)}</code></li>")
    return (f"</p><p class='note' style='border-left:4px solid #d73a49;padding-left:.6em;color:#222'><b>Only dataset "
            f"{html.escape(kept)} is compared here</b> (the dataset with the most runs): losses on different datasets "
            f"are not comparable. Left out:</p><ul class='note'>{''.join(cmds)}</ul><p class='meta'>")


def _n(count: int, noun: str) -> str:
    """``1 run``, ``3 runs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _seed_text(seeds: pd.Series) -> str:
    if not len(seeds):
        return "no finished seeds"
    lo, hi = int(seeds.min()), int(seeds.max())
    return f"{lo} seed{'s' if lo != 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}}
table{{border-collapse:collapse;font-size:.85em;margin:.6em 0}}td,th{{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}}
th{{background:#f4f5f7}}tr.best td{{background:#eef7ee}}img{{max-width:100%;height:auto}}h2{{margin-top:1.8em;border-bottom:2px solid #eee}}
.meta,figcaption,.note{{color:#555;font-size:.9em}}figure{{margin:1em 0}}code{{background:#f4f5f7;padding:0 .2em}}
nav{{font-size:.9em;margin:1em 0}}.scroll{{overflow-x:auto}}ul.conclusion li{{margin:.3em 0}}details summary{{cursor:pointer;color:#0366d6}}
</style></head><body>
<h1>{title}</h1><p class="meta">{meta}</p><nav>{toc}</nav>
{body}
<p class="note">{built}</p>
</body></html>"""


# -- sections ---------------------------------------------------------------------------------
def _target_text(ctx) -> str:
    m, t = ctx["metric"], ctx["target"]
    rel = "≥" if ctx["higher"] else "≤"
    how = ("the median final value over all finished runs (so about half the runs reach it); set it with "
           "<code>--target-loss</code>") if ctx["target_auto"] else "set with <code>--target-loss</code>"
    return f"target {html.escape(m)} {rel} {_g(t, 4)}: {how}"


def _conclusion(ctx) -> str:
    comp, keys, m = ctx["comp"], ctx["keys"], ctx["metric"]
    items = []
    if not len(comp):
        return "<p>No finished run: nothing to compare. See the diverged and failed runs below.</p>"
    best = comp.iloc[0]
    n = int(best["n"])
    cfg = f" at {best['config']}" if best["config"] else ""
    linked = ""
    row = ctx["ok"][ctx["ok"]["run_id"].isin(best["run_ids"])].iloc[0]
    for k in ctx["linked"]:
        linked += f", {k}={_val(row[k])}"
    items.append(f"<b>Best: {html.escape(str(best['activation']))}{html.escape(cfg + linked)}</b>, final {m} "
                 f"{_g(best['mean'], 4)} ± {_g(best['std'], 2)} (mean ± std over {_n(n, 'seed')}).")
    for _, r in comp.iloc[1:].iterrows():
        sig = r["welch_p_holm"] < 0.05 if math.isfinite(r["welch_p_holm"]) else False
        word = "worse" if (r["diff"] < 0) == ctx["higher"] else "better"
        items.append(
            f"{html.escape(str(r['activation']))} (best{' at ' + html.escape(r['config']) if r['config'] else ''}): "
            f"{_g(r['mean'], 4)} ± {_g(r['std'], 2)}, {_g(abs(r['diff']), 3)} {word} "
            f"(Hedges' g = {_g(r['hedges_g'], 2)}, Welch {_p_is(r['welch_p'])}, Holm-adjusted "
            f"{_p_is(r['welch_p_holm'])}, {int(r['n'])} vs {n} seeds): "
            + ("a significant difference at α = 0.05." if sig else "not significant at α = 0.05 with these seeds."))
    items += _speed_sentences(ctx)
    items += _lr_sentences(ctx)
    items += _diagnostic_sentences(ctx)
    div = ctx["table"]
    if div["diverged"].sum():
        bad = div[div["diverged"] > 0]
        items.append("Divergence: " + "; ".join(
            f"{html.escape(_cfg(r, keys))} diverged in {int(r['diverged'])}/{int(r['diverged'] + r['seeds'])} runs"
            for _, r in bad.iterrows()) + " (excluded from every mean).")
    floor = _mwu_floor(n)
    note = ("<p class='note'>Each activation is compared at its own best configuration, chosen on the same runs; "
            "that selection favours the winner slightly, so treat p-values near 0.05 with care."
            + (f" With {n} seeds a two-sided Mann–Whitney test cannot go below p = {_p(floor)}: add seeds "
               f"(<code>seed=0,1,2,3,4</code>) for it to show significance." if floor > 0.05 else "")
            + "</p>")
    return "<ul class='conclusion'>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" + note


def _mwu_floor(n: int) -> float:
    return 2 / math.comb(2 * n, n) if n > 0 else math.nan


def _speed_sentences(ctx) -> list[str]:
    """Epochs to target of every activation at its best configuration, and the fastest by a median that counts
    the seeds that never reached the target (a mean over the seeds that did would favour the unreliable)."""
    comp = ctx["comp"]
    if ctx["epochs"] is None or "epochs_mean" not in comp:
        return []
    order = comp.sort_values(["epochs_median", "reached"], ascending=[True, False], kind="stable")
    listed = ", ".join(
        f"{html.escape(str(r['activation']))} "
        + (f"{_g(r['epochs_mean'], 3)} epochs ({int(r['reached'])}/{int(r['n'])} seeds)" if r["reached"]
           else f"never (0/{int(r['n'])} seeds)")
        for _, r in order.iterrows())
    text = (f"Speed ({_target_text(ctx)}), each activation at its best configuration, mean epochs over the seeds "
            f"that reached the target: {listed}.")
    med = order["epochs_median"].to_numpy(float)
    if len(order) >= 2 and math.isfinite(med[0]) and med[0] < med[1]:
        fast = order.iloc[0]
        others = ", ".join(f"{html.escape(str(r['activation']))} "
                           + (_g(r["epochs_median"], 3) if math.isfinite(r["epochs_median"]) else "never")
                           for _, r in order.iloc[1:].iterrows())
        text += (f" Fastest by the median over all seeds (a seed that never reached the target counts as never): "
                 f"{html.escape(str(fast['activation']))}, {_g(fast['epochs_median'], 3)} epochs against {others}.")
    elif len(order) >= 2:
        text += " No activation is faster by the median over all seeds (a seed that never reached it counts as never)."
    return [text]


def _lr_sentences(ctx) -> list[str]:
    """For each activation, the final metric over the learning rates with its other keys at its best configuration
    (the same configuration as the "Best" and comparison sentences)."""
    ok, m, comp = ctx["ok"], ctx["metric"], ctx["comp"]
    if "optimizer.lr" not in ctx["keys"] or not len(comp):
        return []
    parts = []
    for _, c in comp.iterrows():
        sel = ok["activation"] == c["activation"]
        for k, v in _parse_config(c["config"], ctx["keys"], ok).items():
            if k != "optimizer.lr":
                sel &= ok[k].map(lambda x, v=v: x == v).astype(bool)
        r = ok[sel].groupby("optimizer.lr")[m].mean().dropna()
        if len(r) < 2:
            continue
        bestlr = r.idxmax() if ctx["higher"] else r.idxmin()
        parts.append(f"{html.escape(str(c['activation']))} best at lr = {_val(bestlr)} (final {m} ranges "
                     f"{_g(r.min(), 3)}–{_g(r.max(), 3)} over the learning rates)")
    return ["Learning rate: " + "; ".join(parts) + "."] if parts else []


def _diagnostic_sentences(ctx) -> list[str]:
    """Final-epoch diagnostics of each activation's best configuration: the "why"."""
    curves, comp, keys = ctx["curves"], ctx["comp"], ctx["keys"]
    if not len(comp) or not len(curves):
        return []
    last = curves[curves["step"] == curves.groupby("metric")["step"].transform("max")]
    parts = []
    for _, r in comp.iterrows():
        sel = last["activation"] == r["activation"]
        for k, v in _parse_config(r["config"], keys, ctx["ok"]).items():
            sel &= last[k].map(lambda x, v=v: x == v).astype(bool)
        sub = last[sel].set_index("metric")["mean"]
        bits = []
        g1 = sub.get("layer1.grad_norm")
        if g1 is not None:
            bits.append(f"first-layer gradient norm {_g(g1, 2)}")
        sat = sub.get("layer1.saturation")
        if sat is not None:
            bits.append(f"{sat:.0%} of first-layer units saturated")
        dead = sub.get("layer1.dead_fraction")
        if dead is not None:
            bits.append(f"{dead:.0%} dead units in layer 1")
        if bits:
            parts.append(f"{html.escape(str(r['activation']))}: " + ", ".join(bits))
    return ["At the last epoch (best configuration of each): " + "; ".join(parts) + "."] if parts else []


def _parse_config(config: str, keys: list[str], ok: pd.DataFrame) -> dict:
    """The values of a label ``k=v, ...`` (:func:`nnexp.identity.describe`), as they are in ``ok``."""
    from ..identity import format_value

    out = {}
    if not config:
        return out
    text = f", {config}, "
    for k in keys:
        if k in ok:
            match = [x for x in ok[k].drop_duplicates() if f", {k}={format_value(x)}, " in text]
            if match:
                out[k] = match[0]
    return out


def _summary_html(ctx) -> str:
    t, keys, linked, m = ctx["table"].copy(), ctx["keys"], ctx["linked"], ctx["metric"]
    out = pd.DataFrame({"rank": t["rank"]})
    for k in keys + linked:
        out[k] = t[k].map(_val)
    out["seeds"] = t["seeds"]
    metrics = [c[:-5] for c in t.columns if c.endswith(" mean") and c != "epochs mean"]
    for mm in metrics:
        if mm == "train_seconds":
            continue
        out[f"{mm}: mean ± std"] = [f"{_g(a, 4)} ± {_g(b, 2)}" for a, b in zip(t[f"{mm} mean"], t[f"{mm} std"])]
        out[f"{mm}: 95 % CI"] = [f"[{_g(a, 4)}, {_g(b, 4)}]" for a, b in zip(t[f"{mm} ci_lo"], t[f"{mm} ci_hi"])]
    if "epochs mean" in t:
        out["epochs to target (reached)"] = [f"{_g(e, 3)} ({r}/{s})" for e, r, s in
                                             zip(t["epochs mean"], t["reached"], t["seeds"])]
    out["diverged"] = [f"{d}/{d + s} ({rate:.0%})" if d + s else "–"
                       for d, s, rate in zip(t["diverged"], t["seeds"], t["divergence rate"].fillna(0))]
    if "train_seconds mean" in t:
        out["wall time (s)"] = [f"{_g(a, 3)} ± {_g(b, 2)}" for a, b in zip(t["train_seconds mean"], t["train_seconds std"])]
    html_table = out.to_html(index=False, border=0, escape=True, na_rep="–")
    html_table = html_table.replace("<tr>\n      <td>1</td>", "<tr class='best'>\n      <td>1</td>", 1)
    html_table = f'<div class="scroll">{html_table}</div>'
    return (f"<p>One row per configuration, ranked by mean final <b>{html.escape(m)}</b>; means, standard deviations "
            f"(ddof = 1) and 95 % Student-t intervals over the finished seeds (non-finite values and diverged runs "
            f"excluded; intervals clipped to the metric's range: losses ≥ 0, accuracies in [0, 1]); epochs to target: mean first epoch at which {_target_text(ctx)}, over the seeds that "
            f"reached it. Divergence rate = diverged / (finished + diverged). Data: "
            f"<a href='summary.csv'>summary.csv</a>, <a href='runs.csv'>runs.csv</a>.</p>" + html_table)


def _comparison_html(ctx) -> str:
    comp, m = ctx["comp"], ctx["metric"]
    out = pd.DataFrame({
        "activation": comp["activation"], "best configuration": comp["config"], "seeds": comp["n"],
        f"{m} mean ± std": [f"{_g(a, 4)} ± {_g(b, 2)}" for a, b in zip(comp["mean"], comp["std"])],
        "difference to best": [_g(d, 3) if i else "(reference)" for i, d in enumerate(comp["diff"])],
        "Hedges' g": comp["hedges_g"].map(lambda v: _g(v, 2)),
        "Welch p": comp["welch_p"].map(_p), "Welch p (Holm)": comp["welch_p_holm"].map(_p),
        "Mann–Whitney p": comp["mwu_p"].map(_p), "Mann–Whitney p (Holm)": comp["mwu_p_holm"].map(_p),
    })
    if "epochs_mean" in comp:
        out["epochs to target"] = [f"{_g(e, 3)} ({r}/{n})" for e, r, n in zip(comp["epochs_mean"], comp["reached"], comp["n"])]
        out["epochs: MWU p (Holm)"] = comp["epochs_mwu_p_holm"].map(_p)
    n = int(comp["n"].min())
    return (f"<p>Each activation at its best configuration (lowest mean {html.escape(m)}"
            f"{' — highest' if ctx['higher'] else ''}) against the best activation, on the final {html.escape(m)} of "
            f"{n}–{int(comp['n'].max())} seeds per side. Two-sided Welch's t-test and Mann–Whitney U test "
            f"(scipy.stats), each Holm-corrected over the {_n(len(comp) - 1, 'comparison')}; Hedges' g = (activation − best) / "
            f"pooled std, bias-corrected. Epochs to target compared with Mann–Whitney, seeds that never reached it "
            f"ranked last. Data: <a href='comparison.csv'>comparison.csv</a>.</p>" + _table(out))


def _bad_html(runs: pd.DataFrame, keys, metric: str) -> str:
    finite = np.isfinite(runs[metric].astype(float).to_numpy())
    bad = runs[(runs["outcome"] != "finished") | ~finite].copy()
    if not len(bad):
        return "<p>None: every selected run finished with finite metrics.</p>"
    bad.loc[(bad["outcome"] == "finished"), "outcome"] = f"finished, {metric} not finite"
    cols = [c for c in ("run_name", "outcome", "diverged_epoch", *keys, "seed", "error") if c in bad]
    t = bad[cols].copy()
    t.insert(0, "run", [f"<a href='{u}'>{html.escape(str(r)[:8])}</a>" for u, r in zip(bad["url"], bad["run_id"])])
    for c in cols:
        t[c] = t[c].map(lambda v: html.escape(_val(v)) if v is not None and v == v else "–")
    return (f"<p>{_n(len(bad), 'run')} did not finish normally; they count in the divergence rate but never in a mean, "
            f"interval or test.</p>" + _table(t))


def _runs_html(ctx, uri) -> str:
    runs, keys = ctx["runs"], ctx["keys"]
    cols = [c for c in ("run_name", "outcome", *keys, "seed", ctx["metric"]) if c in runs]
    t = runs.sort_values([*keys, "seed"] if "seed" in runs else keys)[["url", "run_id", *cols]].copy()
    t["run"] = [f"<a href='{u}'>{html.escape(r)}</a>" for u, r in zip(t["url"], t["run_id"])]
    t = t[["run", *cols]]
    for c in cols:
        t[c] = t[c].map(lambda v: html.escape(_g(v, 4) if isinstance(v, float) else str(v)))
    return (f"<p>Every run links to its page in the MLflow UI. Start the UI from the launch directory with "
            f"<code>mlflow ui --backend-store-uri {html.escape(uri)} --host 127.0.0.1 --port 5000</code>, then follow "
            f"a link.</p><details><summary>{len(t)} runs</summary>" + _table(t) + "</details>")


def _figure_sections(ctx, out_dir: Path, uri: str, boundaries: bool) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    from . import figures as F

    ok, keys, curves, m = ctx["ok"], ctx["keys"], ctx["curves"], ctx["metric"]
    sections = []
    if not len(ok):
        return sections
    palette = F.palette_for(ctx["runs"]["activation"])
    facets = keys[1:]
    col = facets[0] if facets else None
    row = facets[1] if len(facets) > 1 else None
    seeds = _seed_text(ok.groupby(keys).size())

    # learning curves: the primary metric with its training counterpart (solid / dashed) in one figure
    figs = []
    pair = [m, "train_" + m[4:]] if m.startswith("val_") else [m]
    for shown in [pair] + ([["val_loss", "train_loss"]] if "val_loss" not in pair else []):
        data = curves[curves["metric"].isin(shown)]
        if not len(data):
            continue
        fig = F.learning_curves(data, hue="activation", style="metric" if len(shown) > 1 else None, style_order=shown,
                                col=col, row=row,
                                palette=palette, ylabel=F.label(shown[0]).replace("validation ", ""),
                                logy=not shown[0].endswith("accuracy"), target=ctx["target"] if m in shown else None)
        fig.suptitle(f"{' and '.join(F.label(s) for s in shown)}: mean and 95 % CI over {seeds} (clipped to the range)")
        figs.append(F_html(fig, out_dir, f"curves_{shown[0]}",
                           f"Learning curves of {' and '.join(F.label(s) for s in shown)}"
                           + (f"; grey dashed line: the target {_g(ctx['target'], 4)} of {html.escape(m)}"
                              if m in shown else "") + "."))
    sections.append(("Learning curves", "".join(figs)))

    # final metric / learning-rate sensitivity / heatmaps
    parts = []
    if "optimizer.lr" in keys:
        other = [k for k in facets if k != "optimizer.lr"]
        levels = sorted(ok[other[0]].dropna().unique()) if other else [None]
        fig, axes = plt.subplots(1, len(levels), figsize=(5.0 * len(levels) + 0.6, 4.0), squeeze=False, sharey=True,
                                 layout="constrained")
        trained = ctx["runs"][ctx["runs"]["outcome"].isin(["finished", "diverged"])]
        for ax, lv in zip(axes[0], levels):
            d = ok if lv is None else ok[ok[other[0]] == lv]
            t = trained if lv is None else trained[trained[other[0]] == lv]
            div = t.groupby(["activation", "optimizer.lr"]).agg(
                diverged=("outcome", lambda s: int((s == "diverged").sum())), trained=("outcome", "size")).reset_index()
            F.lr_sensitivity(d, y=m, diverged=div, ax=ax, palette=palette)
            if lv is not None:
                ax.set_title(f"{F.label(other[0])} = {_val(lv)}")
        parts.append(F_html(fig, out_dir, "lr_sensitivity",
                            f"Final {F.label(m)} against the learning rate: dots are seeds, lines connect means with "
                            f"95 % t-intervals (clipped to the metric's range); ×k/n above a point: k of n runs diverged (not plotted)."))
    else:
        order = list(ctx["comp"]["activation"]) if len(ctx["comp"]) else None
        fig, ax = plt.subplots(figsize=(1.5 + 1.2 * ok["activation"].nunique(), 4), layout="constrained")
        F.final_metric(ok, y=m, ax=ax, order=order, palette=palette)
        parts.append(F_html(fig, out_dir, "final_metric", f"Final {F.label(m)} per seed; black: mean and 95 % CI (clipped to the metric's range)."))
    table = ctx["table"]
    for other in [k for k in ("optimizer.lr", "init") if k in keys]:
        cells = ok.groupby(["activation", other])[m].agg(["mean", "std"]).reset_index()
        fig, ax = plt.subplots(figsize=(2.6 + 1.45 * cells[other].nunique(), 1.3 + 0.62 * cells["activation"].nunique()),
                               layout="constrained")
        F.heatmap(cells, index="activation", columns=other, value="mean", std="std", ax=ax,
                  higher_better=ctx["higher"], cbar_label=f"final {F.label(m)}")
        ax.set_title(f"final {F.label(m)}, mean ± std over seeds"
                     + (" (averaged over the other swept keys)" if len(facets) > 1 else ""))
        parts.append(F_html(fig, out_dir, f"heatmap_activation_{other.replace('.', '_')}",
                            f"Activation × {F.label(other)}: final {F.label(m)} (lighter is better)."))
    if "init" in ctx["linked"]:
        pairs = ok.groupby("activation")["init"].first()
        parts.append("<p class='note'>The initialisation was not swept independently: it follows the activation ("
                     + ", ".join(f"{html.escape(str(a))} → {html.escape(str(i))}" for a, i in pairs.items())
                     + "), so no activation × init heatmap is drawn.</p>")
    sections.append(("Sensitivity to the learning rate and initialisation" if "optimizer.lr" in keys
                     else "Final metric per seed", "".join(parts)))

    # per-layer diagnostics
    diag = curves[curves["metric"].str.match(r"layer\d+\.(grad_norm|saturation|dead_fraction)$")]
    if len(diag):
        if row is not None:  # keep the figure readable: the best value of the second facet key
            bestrow = table.iloc[0][row]
            diag = diag[diag[row] == bestrow]
        fig = F.layer_diagnostics(diag, hue="activation", col=col, palette=palette)
        fig.suptitle(f"Per-layer diagnostics: mean and 95 % CI over {seeds}"
                     + (f" ({row} = {_val(bestrow)})" if row is not None else ""))
        sections.append(("Per-layer diagnostics", F_html(
            fig, out_dir, "layer_diagnostics",
            "Gradient norm per layer (RMS over batches of ‖dW‖, log scale: vanishing in early layers, exploding), "
            "fraction of saturated activations (bounded activations: within 2.5 % of either bound) and fraction of "
            "dead units (ReLU family: pre-activation ≤ 0 for every training sample of the epoch). Line style = layer.")))

    if boundaries:
        b = _boundaries_html(ctx, out_dir, uri, palette)
        if b:
            sections.append(("Decision boundaries", b))
    g = _gallery_html(out_dir, sorted(ctx["runs"]["activation"].dropna().unique()))
    if g:
        sections.append(("Activation gallery", g))
    return sections


def F_html(fig, out_dir, name, caption, tight=False):  # noqa: N802 - short alias used by the sections above
    return _fig_html(fig, out_dir, name, caption, tight)


def _boundaries_html(ctx, out_dir: Path, uri: str, palette) -> str:
    from . import figures as F
    from .boundaries import probability_grid, test_points
    from .load import load_weights

    ok, keys, m = ctx["ok"], ctx["keys"], ctx["metric"]
    if "n_features" not in ok or not (ok["n_features"] == 2).all():
        return ""
    col = "optimizer.lr" if "optimizer.lr" in keys else (keys[1] if len(keys) > 1 else None)
    group = ["activation"] + ([col] if col else [])
    others = [k for k in keys[1:] if k != col]
    # one network per panel: the seed with the median final metric of the panel's best configuration
    chosen = []
    for _, sub in ok.groupby(group, sort=True):
        if others:
            means = sub.groupby(others)[m].mean()
            bestcfg = means.idxmax() if ctx["higher"] else means.idxmin()
            bestcfg = bestcfg if isinstance(bestcfg, tuple) else (bestcfg,)
            for k, v in zip(others, bestcfg):
                sub = sub[sub[k] == v]
        sub = sub.sort_values(m)
        chosen.append(sub.iloc[(len(sub) - 1) // 2])
    if not chosen:
        return ""
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
            g[col] = r[col]
        grids.append(g)
        acc = r.get("test_accuracy")
        titles[(r["activation"], r[col] if col else None)] = (f"test acc {acc:.1%}, seed {_val(r.get('seed'))}"
                                                              if acc == acc and acc is not None else "")
    if not grids:
        return "<p class='note'>No run of this selection logged weights (tracking.save_weights=false).</p>"
    fig = F.decision_boundaries(pd.concat(grids, ignore_index=True), points, row="activation", col=col, titles=titles)
    return F_html(fig, out_dir, "decision_boundaries",
                  "Predicted probability of class 1 over the input plane (orange 0, blue 1; black line: 0.5) for "
                  "one network per panel — the seed with the median final " + html.escape(m) + " of the panel's "
                  "configuration — with the test points (regenerated from the run's logged dataset params).")


def _gallery_html(out_dir: Path, activations: list[str]) -> str:
    """The activation gallery of :mod:`nnexp.report.gallery`, when that module exists."""
    try:
        from . import gallery
    except ImportError:
        return ""
    if not (callable(getattr(gallery, "gallery", None)) and callable(getattr(gallery, "activation_frame", None))):
        return ""
    data = gallery.activation_frame(names=activations)
    fig = gallery.gallery(data, col_wrap=min(len(activations), 5))
    return F_html(fig, out_dir, "activation_gallery",
                  "The activations of this report, f(z), and their derivatives f'(z), with default parameters "
                  "(from <code>nnexp.report.gallery</code>).", tight=True)
