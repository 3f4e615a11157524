"""Comparison reports built from MLflow runs: ``reports/<experiment>/<sweep>/index.html``.

:func:`build_report` reads the runs of one or more sweeps, an experiment or an
MLflow filter (:mod:`nnexp.report.load`), computes the statistics
(:mod:`nnexp.report.stats`), words the Setup and the Conclusion
(:mod:`nnexp.report.sections`), lays out the tables (:mod:`nnexp.report.tables`),
draws the figures (:mod:`nnexp.report.plots`, :mod:`nnexp.report.figures`) and
renders one self-contained HTML page from the Jinja2 template
``templates/report.html.j2`` (:mod:`nnexp.report.page`; figures embedded as PNG),
each figure also as a PNG file (and SVG with ``svg=True`` or ``--svg``), and the tidy data as CSV:

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
decision boundaries), and states its evidence (what was held fixed, the data,
the seeds and the command; where metrics disagree; which configurations cannot
be told apart). The report reads MLflow only; it rebuilds networks with the
public :class:`nnexp.model.MLP` to draw decision boundaries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["build_report", "ReportError", "summary_table", "swept_keys", "PRIMARY"]

#: Where each public name lives: imported on first use, so that a submodule (the report worker,
#: :mod:`nnexp.report.worker`, which starts a fresh interpreter) can be imported without pandas and MLflow.
_LAZY = {"build_report": "build", "PRIMARY": "build", "ReportError": "load", "summary_table": "stats"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
