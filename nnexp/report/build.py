"""Build one report: select and load runs, compute the statistics, draw, render, write the folder.

:func:`build_report` is the whole pipeline; the words come from
:mod:`nnexp.report.sections`, the tables from :mod:`nnexp.report.tables`, the
figures from :mod:`nnexp.report.plots`, the page from :mod:`nnexp.report.page`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import re
import shlex
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from markupsafe import Markup

from . import fmt
from .load import (ReportError, check_metric, drop_duplicates, duplicate_jobs, lists_as_text, load_histories,
                   load_runs, run_url, summarize_outcomes)
from .stats import (aggregate_curves, compare_to_best, default_target, epochs_to_target, higher_is_better,
                    metric_range, summary_table)

log = logging.getLogger("nnexp")

__all__ = ["build_report", "PRIMARY", "DEFAULT_UI_URL", "ui_url", "ui_command", "MANIFEST"]

#: The default primary metric: what "best" means.
PRIMARY = "val_loss"
#: Where the MLflow UI is assumed to listen when neither ``ui_url=`` nor ``$NNEXP_UI_URL`` says otherwise.
DEFAULT_UI_URL = "http://127.0.0.1:5000"
#: The list of files the last build wrote in a report folder (a rebuild removes those it no longer writes).
MANIFEST = ".nnexp-report.json"


def ui_url(url: str | None = None) -> str:
    """The MLflow UI address the report links to: ``url``, else ``$NNEXP_UI_URL``, else :data:`DEFAULT_UI_URL`."""
    return (url or os.environ.get("NNEXP_UI_URL") or DEFAULT_UI_URL).rstrip("/")


def ui_command(uri: str, url: str) -> str:
    """The ``mlflow ui`` command that serves ``uri`` at ``url``'s host and port, paths quoted for a POSIX shell."""
    u = urlparse(url if "//" in url else f"http://{url}")
    port = u.port or (443 if u.scheme == "https" else 80)
    return (f"mlflow ui --backend-store-uri {shlex.quote(uri)} --host {shlex.quote(u.hostname or '127.0.0.1')} "
            f"--port {port}")


def build_report(uri: str, experiment: str, *, parent_id: str | list[str] | None = None, filter_string: str = "",
                 out_dir: str | Path, title: str | None = None, metric: str = PRIMARY,
                 target: float | None = None, boundaries: bool = True, ui: str | None = None,
                 svg: bool = False, runs: pd.DataFrame | None = None) -> Path:
    """Write the report for one or more sweeps (``parent_id``), a filter, or a whole experiment.

    Parameters
    ----------
    uri : str
        MLflow tracking URI.
    experiment : str
        Experiment name.
    parent_id : str or list of str, optional
        Only these sweeps' runs (several: compared in one report).

        Whatever the selection, runs sharing an ``nnexp.run_key`` count once
        (:func:`nnexp.report.load.drop_duplicates`); the page says how many were
        dropped and ``duplicates.csv`` lists them.
    filter_string : str
        MLflow search filter (``params.`dataset.name` = 'moons'``; ``params.dataset``
        is accepted for the flattened ``params.`dataset.name```).
    out_dir : path
        Folder of ``index.html`` and its files. Files an earlier build wrote there
        and this one does not (a figure no longer drawn) are removed, never left stale.
    metric : str, default "val_loss"
        The primary metric: what "best" means (lower is better, higher for
        ``*accuracy``); summary ranking, tests and conclusion use it.
    target : float, optional
        Threshold of "epochs to target" on ``metric``; default the median final
        ``metric`` of the finished runs (:func:`nnexp.report.stats.default_target`), explained on the page.
    boundaries : bool
        Draw decision boundaries when the data are 2-D and weights were logged.
    ui : str, optional
        Address of the MLflow UI the run links point to (default ``$NNEXP_UI_URL``, else
        ``http://127.0.0.1:5000``); the page prints the matching ``mlflow ui`` command.
    runs : DataFrame, optional
        The selection as :func:`nnexp.report.load.load_runs` returned it, when the caller has loaded it already
        (the sweep's callback, for its summary): the store is not asked twice. Only with ``parent_id`` one sweep
        (or none) and no ``filter_string``.
    svg : bool
        Also write each figure as ``<name>.svg`` (vector, for papers). Off by default: the page embeds the PNG,
        and the SVG writer is about a third of the figures' rendering time.

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

    Notes
    -----
    Unless the caller froze objects already (the sweep's report worker does), the objects that exist when the
    build starts (imported modules: numpy, pandas, matplotlib, MLflow, about half a million) are moved out of the
    cyclic garbage collector's reach for its duration (:func:`gc.freeze`, :func:`_frozen_heap`): a full
    collection would otherwise walk them all (0.3 s and more, in some builds) and, in a forked rendering child,
    touch (copy) every page they live on.
    """
    with _frozen_heap():
        return _build(uri, experiment, parent_id=parent_id, filter_string=filter_string, out_dir=out_dir, title=title,
                      metric=metric, target=target, boundaries=boundaries, ui=ui, svg=svg, runs=runs)


@contextlib.contextmanager
def _frozen_heap():
    """Inside the block the objects that existed before it are out of the cyclic garbage collector's reach.

    :func:`gc.freeze` moves every tracked object to the collector's permanent generation, so the collections the
    block triggers walk only the objects created inside it (forked children inherit that). On leaving, one
    collection frees the block's own cyclic garbage (the figures: matplotlib's artists refer to each other) while
    the rest is still frozen -- it walks only the block's objects -- and :func:`gc.unfreeze` hands the older
    objects back to the collector. Python's documentation recommends the freeze before a ``fork`` for the
    copy-on-write reason (https://docs.python.org/3/library/gc.html#gc.freeze).

    A caller that froze objects itself (the sweep's command and its report worker do, after their imports) keeps
    its own policy: nothing is frozen, collected or unfrozen here.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.collect()
        gc.unfreeze()


def _build(uri: str, experiment: str, *, parent_id, filter_string: str, out_dir, title, metric: str, target,
           boundaries: bool, ui, svg: bool, runs) -> Path:
    """The body of :func:`build_report` (same arguments)."""
    from . import swept_keys
    from .plots import figure_sections
    from .sections import conclusion, setup_blocks
    from .tables import bad_blocks, comparison_blocks, duplicates_blocks, runs_blocks, summary_blocks

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    parents = [parent_id] if isinstance(parent_id, str) else list(parent_id or [])
    if runs is not None and len(parents) <= 1 and not filter_string:
        runs = runs.copy()  # the caller's frame is left as it was
    else:
        runs = _load(uri, experiment, parents, filter_string)
    if runs.empty:
        raise ReportError(f"no runs in experiment {experiment!r} match"
                          + (f" the filter {filter_string!r}" if filter_string else "")
                          + (f" in sweep {', '.join(parents)}" if parents else ""))
    runs, duplicates = drop_duplicates(runs)
    runs = lists_as_text(runs)  # model.hidden_sizes=[4, 4] is one value in tables, figures and CSV files
    check_metric(runs, metric)
    if metric not in runs:  # no run finished (every run diverged before logging it): the report says so
        runs[metric] = np.nan
        runs.attrs["metrics"] = sorted({*runs.attrs.get("metrics", []), metric})  # a metric, not a config key
    _check_target(target, metric)
    runs, left_out = _one_dataset(runs)
    from .figures import set_theme

    set_theme()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"index.html", "summary.csv", "runs.csv", "curves.csv"}
    if len(duplicates):
        _write_duplicates(duplicates, out_dir, metric)
        written.add("duplicates.csv")
    keys, linked = _swept(swept_keys(runs))
    # pandas deep-copies a frame's attrs into every frame and column derived from it (thousands here): the logged
    # metric names go into ``ctx["metrics"]`` instead, and the frames of the report carry none
    logged = list(runs.attrs.get("metrics", []))
    runs.attrs = {}
    higher = higher_is_better(metric)
    base = ui_url(ui)
    url = lambda e, r: run_url(e, r, host=base)  # noqa: E731
    runs["url"] = [url(e, r) for e, r in zip(runs["experiment_id"], runs["run_id"])]
    ok = runs[runs["outcome"] == "finished"]
    ok = ok[np.isfinite(ok[metric].astype(float))]
    n_epochs = int(pd.to_numeric(runs.get("epochs"), errors="coerce").max()) if "epochs" in runs else None
    from .plots import (Renderer, boundary_blocks, draws_boundaries, gallery_blocks, gallery_prerendered,
                        local_artifacts)

    # figures render in child processes while the next is drawn; all are done at the block's end
    with Renderer(svg=svg) as renderer:
        # Three groups of figures need nothing computed below: drawn (and rendered) in child processes from now on,
        # while this one loads the histories and computes; their lists are filled when the block ends. The
        # decision boundaries first, the slowest figure to render; drawn here if their weights come through
        # MLflow's client (not shared with a forked process).
        bounds = None
        if boundaries and draws_boundaries(ok):
            bounds = (renderer.later if local_artifacts(ok) else _now)(
                boundary_blocks, ok, keys, metric, higher, uri, out_dir, written=written)
        activations = sorted(runs["activation"].dropna().unique())
        gallery = None
        if len(ok):
            gallery = (_now if gallery_prerendered(activations) else renderer.later)(
                gallery_blocks, activations, out_dir, written=written)
        shape = renderer.later(_shape_sections, ok, keys, metric, higher, out_dir, written=written)

        # only the histories a figure or a number uses (per-layer diagnostics: line plots and layer x epoch heatmaps)
        want = {metric, "train_loss", "val_loss", "train_" + metric[4:] if metric.startswith("val_") else metric}
        want |= {k for k in logged
                 if re.fullmatch(r"layer\d+\.(grad_norm|saturation|dead_fraction|act_mean|act_std)", k)}
        hist = load_histories(uri, list(ok["run_id"]), metrics=sorted(want))
        hist["metric"] = hist["metric"].astype("category")
        target_auto = target is None
        if target is None:
            target = default_target(ok, metric)
        epochs = epochs_to_target(hist[hist["metric"] == metric], target, higher=higher) if len(hist) else None
        if epochs is not None:
            epochs = epochs.reindex(ok["run_id"])

        final = [m for m in dict.fromkeys([metric, "train_loss", "val_loss", "val_accuracy", "test_accuracy",
                                           "train_seconds"]) if m in runs]
        table = summary_table(runs[runs["outcome"].isin(["finished", "diverged"])], keys + linked, final,
                              primary=metric, epochs=epochs)
        csv = table.copy()
        for k in keys + linked:  # a key null in some rows (batch_size=null,32) is written 32, not 32.0
            if k in csv and csv[k].dtype.kind == "f":
                v = csv[k].dropna()
                if len(v) and np.isfinite(v).all() and (v == v.round()).all():
                    csv[k] = csv[k].astype("Int64")
        csv.to_csv(out_dir / "summary.csv", index=False)
        comp = (compare_to_best(ok, keys, metric, epochs=epochs, censor_at=(n_epochs or 0) + 1) if len(ok)
                else pd.DataFrame())
        if len(comp):
            comp.drop(columns=["run_ids"]).to_csv(out_dir / "comparison.csv", index=False)
            written.add("comparison.csv")
        run_cols = [c for c in ("run_id", "run_name", "config_id", "run_key", "outcome", "diverged_epoch",
                                "dataset", "sweep", *keys, *linked, "seed", *final, "test_loss", "reused", "legacy",
                                "repeated_by", "error", "url") if c in runs]
        runs[list(dict.fromkeys(run_cols))].to_csv(out_dir / "runs.csv", index=False)

        hist = hist.merge(ok[["run_id", *keys]], on="run_id")
        curves = aggregate_curves(hist, keys)
        curves.to_csv(out_dir / "curves.csv", index=False)

        ctx = dict(runs=runs, ok=ok, keys=keys, linked=linked, metric=metric, higher=higher, target=target,
                   target_auto=target_auto, table=table, comp=comp, curves=curves, epochs=epochs, n_epochs=n_epochs,
                   metrics=logged)
        from .sections import config_group

        ctx["group"] = config_group(ctx)
        commands, sweep_names = _sweep_commands(uri, runs, parents)
        command = _report_command(experiment, sweep_names or parents, filter_string, metric,
                                  None if target_auto else target)
        # the figures first: each renders in a child process while this one writes the sentences and tables
        figures = figure_sections(ctx, out_dir, uri, bounds, written, gallery=gallery)
        sections = [("Conclusion", conclusion(ctx)),
                    ("Setup", setup_blocks(ctx, commands=commands, report_command=command)),
                    ("Summary", summary_blocks(ctx))]
        if len(comp) > 1:
            sections.append(("Statistical comparison with the best activation", comparison_blocks(ctx)))
        sections += figures
    sections = [(title, blocks) for title, blocks in sections if blocks or blocks is not bounds]
    sections += shape
    sections.append(("Diverged and failed runs (never averaged in)", bad_blocks(runs, keys, metric)))
    sections.append(("All runs in MLflow",
                     runs_blocks(ctx, ui_command(uri, base)) + duplicates_blocks(duplicates, url)))
    sections[:0] = _study_sections(runs, uri, out_dir, written)  # a study's claim check and paper figure open the page

    counts = summarize_outcomes(runs)
    counts["reused"] = counts.get("reused", 0) + counts.pop("reused_here", 0)  # the meta line: reused, from anywhere
    selection = _selection(uri, runs, parents, sweep_names, url)
    if filter_string:
        selection += Markup(", filter <code>{}</code>").format(filter_string)
    seeds = ok.groupby([ok[k].map(fmt.val) for k in keys]).size() if len(ok) else pd.Series(dtype=int)
    # configurations (nnexp.config_id) that trained, finished or not: a sweep in which every run diverged has some
    trained = runs[runs["outcome"].isin(["finished", "diverged"])]
    n_configs = trained["config_id"].nunique() if "config_id" in trained else len(seeds)
    datasets = ", ".join(sorted(runs["dataset"].dropna().astype(str).unique())) if "dataset" in runs else "?"
    meta = Markup("Experiment <b>{}</b>, {}; dataset {}; {} ({}); {} of {}, {} each; primary metric <b>{}</b> "
                  "({} is better); store <code>{}</code>.").format(
        experiment, selection, datasets, fmt.n(len(runs), "run"), ", ".join(f"{v} {k}" for k, v in counts.items() if v),
        fmt.n(n_configs, "configuration"), ", ".join(keys), fmt.seed_text(seeds), metric,
        "higher" if higher else "lower", uri)
    unlogged = runs[(runs["outcome"] == "finished") & runs[metric].isna()] if metric in runs else runs.iloc[:0]
    if len(unlogged):  # --metric layer1.dead_fraction: only relu's runs log it
        meta += Markup(" <b>{} have no final {}</b> ({}; not logged, or not finite): left out of every "
                       "comparison, listed below.").format(
            fmt.n(len(unlogged), "finished run"), metric, ", ".join(map(str, dict.fromkeys(unlogged["activation"]))))
    if len(duplicates):
        meta += _duplicates_note(duplicates)
    repeats = duplicate_jobs(runs, parents or None)
    if repeats:  # jobs of the sweep that spelled a run's configuration and seed again (init=auto and its pick)
        meta += Markup(" <b>{}</b> of {} repeated the configuration and seed of a run here (same "
                       "<code>nnexp.run_key</code>): trained once, counted once (column repeated_by of "
                       "<a href='runs.csv'>runs.csv</a>).").format(
            fmt.n(repeats, "duplicate job"), "the sweep" if len(parents) == 1 else "the sweeps")
    meta_blocks = _left_out_blocks(left_out, datasets, experiment, sweep_names or parents, filter_string) \
        if left_out else []
    built = Markup("Built in {:.1f} s by <code>python -m nnexp.report</code>.").format(time.perf_counter() - t0)
    from .page import render

    page = render(title=title or f"nnexp report: {experiment}", meta=meta, meta_blocks=meta_blocks,
                  sections=sections, built=built, ui_url=base)
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    _clean_stale(out_dir, written)
    return index


def _now(fn, *args, written: set):
    """``fn(*args, written=written)``, in this process (as :meth:`nnexp.report.plots.Renderer.later` in a child)."""
    return fn(*args, written=written)


def _shape_sections(ok: pd.DataFrame, keys: list[str], metric: str, higher: bool, out_dir: Path,
                    written: set[str]) -> list:
    """The shape of the sweep: hyperparameter importance of ``metric`` and a parallel-coordinates figure
    (:func:`nnexp.report.importance.importance_section`), as one page section; none when no key varies."""
    if len(keys) < 2 and ok["activation"].nunique() < 2:
        return []
    from .importance import importance_section
    from .plots import figure_block

    try:
        shape = importance_section(ok, keys, metric, higher)
    except Exception as e:  # an optional section: the report still stands without it, and says why
        log.warning("hyperparameter importance could not be computed: %s", e)
        return [("Which hyperparameter matters", [{"kind": "note", "text": f"Importance could not be computed: {e}"}])]
    if shape is None:
        return []
    blocks = []
    if shape["importance"] is not None:
        imp = shape["importance"]
        blocks.append({"kind": "table", "caption": Markup("Importance of each swept key for {} ({}, {} finished runs)")
                       .format(metric, shape["method"], shape["n_runs"]),
                       "columns": ["key", "importance"], "rows": [[k, f"{v:.3f}"] for k, v in imp.items()]})
        blocks.append({"kind": "note", "text": shape["caveat"]})
    else:
        blocks.append({"kind": "note", "text": shape["reason"]})
    blocks.append(figure_block(shape["figure"], out_dir, "parallel_coordinates",
                               Markup("Each finished run as a line through its swept values and {}, coloured by "
                                      "activation (the report's fixed colours).").format(metric), False, written))
    return [("Which hyperparameter matters", blocks)]


def _study_sections(runs: pd.DataFrame, uri: str, out_dir: Path, written: set[str]) -> list:
    """The claim check and paper-style figure of a study (:mod:`nnexp.report.claims`), as page sections; the files
    they write join ``written``."""
    from . import claims

    start = time.time() - 1
    found = claims.sections(runs, uri, out_dir)
    written |= {f.name for f in out_dir.iterdir() if f.is_file() and f.stat().st_mtime >= start}
    return [(title, [{"kind": "html", "html": Markup(text)}]) for title, text in found]


def _swept(result) -> tuple[list[str], list[str]]:
    """``(keys, linked)`` from :func:`nnexp.report.swept_keys`, whether it returns that pair or only the keys."""
    if isinstance(result, tuple) and len(result) == 2 and all(isinstance(x, (list, tuple)) for x in result):
        keys, linked = result
    else:
        keys, linked = result, []
    keys = list(keys)
    if "activation" not in keys:
        keys.insert(0, "activation")
    return keys, list(linked)


def _load(uri: str, experiment: str, parents: list[str], filter_string: str) -> pd.DataFrame:
    """The runs of each sweep in ``parents`` (a ``sweep`` column says which), or of the experiment."""
    if not parents:
        return load_runs(uri, experiment, filter_string=filter_string)
    frames = []
    for pid in parents:
        f = load_runs(uri, experiment, parent_id=pid, filter_string=filter_string)
        if len(parents) > 1 and len(f):
            f["sweep"] = pid
        frames.append(f)
    frames = [f for f in frames if len(f)] or frames[:1]
    runs = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(frames) > 1:  # a run a later sweep reused (resume) belongs to both: one run, listed once, where it trained
        runs = runs.sort_values("reused", kind="stable").drop_duplicates("run_id").sort_index()
    runs.attrs["metrics"] = sorted({m for f in frames for m in f.attrs.get("metrics", [])})
    return runs


def _clean_stale(out_dir: Path, written: set[str]) -> None:
    """Remove the files the previous build listed in :data:`MANIFEST` and this one did not write; list the new ones.

    Only files a report wrote are ever removed: a folder the user chose keeps
    everything else it holds.
    """
    manifest = out_dir / MANIFEST
    try:
        before = set(json.loads(manifest.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        before = {"duplicates.csv", "comparison.csv"}  # an older report: the files it may have left
    for name in sorted(before - written):
        if "/" not in name and name != MANIFEST:
            (out_dir / name).unlink(missing_ok=True)
    manifest.write_text(json.dumps({"files": sorted(written)}, indent=0))


def _write_duplicates(duplicates: pd.DataFrame, out_dir: Path, metric: str) -> None:
    cols = [c for c in ("run_id", "kept_run_id", "run_key", "config_id", "run_name", "status", "outcome", "parent_id",
                        "activation", "seed", metric, "start_time", "end_time") if c in duplicates]
    duplicates[cols].to_csv(out_dir / "duplicates.csv", index=False)


def superseded(duplicates: pd.DataFrame) -> pd.Series:
    """Which dropped runs are unfinished attempts rather than duplicates: killed or failed runs whose configuration
    and seed another run has (a sweep interrupted, then resumed)."""
    if "status" not in duplicates:
        return pd.Series(False, index=duplicates.index)
    return duplicates["status"].ne("FINISHED")


def _duplicates_note(duplicates: pd.DataFrame) -> Markup:
    """The meta line's note: how many runs were dropped, and why: duplicates, and unfinished attempts."""
    retried = superseded(duplicates)
    n_dup, n_att = int((~retried).sum()), int(retried.sum())
    parts = []
    if n_dup:
        parts.append(Markup("<b>{} dropped</b>: {} the configuration and seed of a run kept here (same "
                            "<code>nnexp.run_key</code>, e.g. a single run or a concurrent sweep that trained it "
                            "again), so no seed counts twice").format(fmt.n(n_dup, "duplicate run"),
                                                                       "it repeats" if n_dup == 1 else "each repeats"))
    if n_att:
        parts.append(Markup("<b>{} dropped</b>: {} killed or failed, and another run of the same configuration "
                            "and seed is kept here").format(
            fmt.n(n_att, "unfinished run"), "it was" if n_att == 1 else "each was"))
    return Markup(" ") + Markup("; ").join(parts) + Markup(
        ". Of each configuration and seed the report keeps the FINISHED run that ended last "
        "(<a href='duplicates.csv'>duplicates.csv</a>).")


def _check_target(target: float | None, metric: str) -> None:
    """Raise a ReportError unless ``target`` is None or a finite value in the range of ``metric``."""
    if target is None:
        return
    lo, hi = metric_range(metric)
    if not math.isfinite(target) or not lo <= target <= hi:
        where = "≥ 0" if hi == math.inf and lo == 0 else (f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else "finite")
        raise ReportError(f"--target {target:g}: a target of {metric} must be a finite number {where}")


def _parent_runs(uri: str, runs: pd.DataFrame, parents: list[str]) -> list[tuple[str, dict | None]]:
    """``[(run_id, tags), ...]`` of the sweep parent runs of the selection (those named, else the parents of the
    selected runs, at most 5); tags None for a parent the store no longer has."""
    from .load import run_tags

    ids = parents
    if not ids and "parent_id" in runs:
        ids = list(runs["parent_id"].dropna().astype(str).unique()[:5])
    tags = run_tags(uri, ids)
    return [(pid, tags[pid]) for pid in ids]


def _sweep_commands(uri: str, runs: pd.DataFrame, parents: list[str]) -> tuple[list[str], list[str]]:
    """``(commands, names)``: the ``nnexp.command`` tag and the ``nnexp.sweep`` name of each sweep parent."""
    from .. import tracking

    commands, names = [], []
    for pid, tags in _parent_runs(uri, runs, parents):
        tags = tags or {}
        cmd = tags.get(f"{tracking.TAG}command")
        if cmd and cmd not in commands:
            commands.append(cmd)
        if pid in parents:
            names.append(tags.get(f"{tracking.TAG}sweep") or pid)
    return commands, names


def _report_command(experiment: str, sweeps: list[str], filter_string: str, metric: str, target) -> str:
    """The ``python -m nnexp.report`` command that rebuilds this report, each argument quoted for a POSIX shell."""
    args = ["python", "-m", "nnexp.report", "--experiment", experiment]
    for s in sweeps:
        args += ["--sweep", s]
    if filter_string:
        args += ["--filter", filter_string]
    if metric != PRIMARY:
        args += ["--metric", metric]
    if target is not None:
        args += ["--target", f"{target:g}"]
    return " ".join(shlex.quote(a) for a in args)


def _selection(uri: str, runs: pd.DataFrame, parents: list[str], names: list[str], url) -> Markup:
    """``sweep <b>name</b> (parent run <id>)`` for each sweep, or "the whole experiment"."""
    if not parents:
        return Markup("the whole experiment")
    parts = []
    exp_id = runs["experiment_id"].iloc[0]
    for pid, name in zip(parents, names or parents):
        link = Markup("<a href='{}'><code>{}</code></a>").format(url(exp_id, pid), pid)
        parts.append(Markup("sweep {}").format(link) if name == pid else
                     Markup("sweep <b>{}</b> <small>(parent run {})</small>").format(name, link))
    return Markup(" compared with ").join(parts)


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


def _left_out_blocks(left_out: dict[str, int], kept: str, experiment: str, sweeps: list[str],
                     filter_string: str) -> list[dict]:
    """A visible note naming the datasets left out and the command that builds a report for each."""
    items = []
    for d, n in left_out.items():
        f = f"tags.dataset = '{d}'" + (f" and {filter_string}" if filter_string else "")
        items.append(Markup("{} ({}): <code>{}</code>").format(
            d, fmt.n(n, "run"), _report_command(experiment, sweeps, f, PRIMARY, None)))
    return [{"kind": "warn", "text": Markup("<b>Only dataset {} is compared here</b> (the dataset with the most runs): "
                                            "losses on different datasets are not comparable. Left out:").format(kept)},
            {"kind": "list", "cls": "note", "items": items}]
