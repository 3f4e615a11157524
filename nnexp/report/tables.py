"""The report's tables as data: ``{"kind": "table", "columns": [...], "rows": [[cell, ...]], "best": [row, ...]}``.

Cells are plain strings (the template escapes them) or :class:`markupsafe.Markup`
(links). :mod:`nnexp.report.page` renders them; every table scrolls
horizontally in its own box instead of being cut (CSS ``overflow-x: auto``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from markupsafe import Markup

from . import fmt

__all__ = ["summary_blocks", "comparison_blocks", "bad_blocks", "runs_blocks", "duplicates_blocks", "link"]


def link(url: str, text: str) -> Markup:
    """A link to the MLflow UI; ``data-ui-path`` lets the page's UI-address box rewrite it for another host."""
    path = url[url.index("#"):] if "#" in url else ""
    return Markup('<a class="ui" href="{}" data-ui-path="{}">{}</a>').format(url, path, text)


def _table(df: pd.DataFrame, best=(), html_cols=("run",)) -> dict:
    """A table block; the cells of ``html_cols`` hold HTML built by :func:`link` (pandas keeps them as plain str)."""
    marked = [c in html_cols for c in df.columns]
    rows = [[Markup(c) if m else ("–" if fmt.is_missing(c) else str(c)) for c, m in zip(r, marked)]
            for r in df.itertuples(index=False)]
    return {"kind": "table", "columns": [str(c) for c in df.columns], "rows": rows, "best": list(best)}


def summary_blocks(ctx) -> list[dict]:
    """One row per configuration ranked by the primary metric; the best row(s) highlighted: one row when one
    configuration is significantly best, every activation's best row when several are indistinguishable."""
    from .sections import target_text

    t, keys, linked, m = ctx["table"].copy(), ctx["keys"], ctx["linked"], ctx["metric"]
    out = pd.DataFrame({"rank": t["rank"]})
    for k in keys + linked:
        out[k] = t[k].map(fmt.val)
    out["seeds"] = t["seeds"]
    metrics = [c[:-5] for c in t.columns if c.endswith(" mean") and c != "epochs mean"]
    for mm in metrics:
        if mm == "train_seconds":
            continue
        out[f"{mm}: mean ± std"] = [f"{fmt.g(a, 4)} ± {fmt.g(b, 2)}" for a, b in zip(t[f"{mm} mean"], t[f"{mm} std"])]
        out[f"{mm}: 95 % CI"] = [f"[{fmt.g(a, 4)}, {fmt.g(b, 4)}]" for a, b in zip(t[f"{mm} ci_lo"], t[f"{mm} ci_hi"])]
    if "epochs mean" in t:
        out["epochs to target (reached)"] = [f"{fmt.g(e, 3)} ({r}/{s})" for e, r, s in
                                             zip(t["epochs mean"], t["reached"], t["seeds"])]
    out["diverged"] = [f"{d}/{d + s} ({rate:.0%})" if d + s else "–"
                       for d, s, rate in zip(t["diverged"], t["seeds"], t["divergence rate"].fillna(0))]
    if "train_seconds mean" in t:
        out["wall time (s)"] = [f"{fmt.g(a, 3)} ± {fmt.g(b, 2)}"
                                for a, b in zip(t["train_seconds mean"], t["train_seconds std"])]
    best = ctx.get("group", ([0] if len(t) else [], 0))[0]
    best = [i for i in best if t["seeds"].iloc[i] > 0]  # a row with no finished seed is never the best
    intro = Markup(
        "One row per configuration, ranked by mean final <b>{}</b>; highlighted: {}. Means, standard deviations "
        "(ddof = 1) and 95 % Student-t intervals over the finished seeds (non-finite values and diverged runs excluded; "
        "intervals clipped to the metric's range: losses ≥ 0, accuracies in [0, 1]); epochs to target: mean first "
        "epoch at which {}, over the seeds that reached it. Divergence rate = diverged / (finished + diverged). Data: "
        "<a href='summary.csv'>summary.csv</a>, <a href='runs.csv'>runs.csv</a>.").format(
        m, "none, no configuration has a finished run" if not best else "the best configuration" if len(best) < 2
        else "the configurations that cannot be told apart from the best (Holm-adjusted Welch p ≥ 0.05)",
        target_text(ctx, short=True))
    return [{"kind": "p", "text": intro}, _table(out, best)]


def comparison_blocks(ctx) -> list[dict]:
    comp, m = ctx["comp"], ctx["metric"]
    out = pd.DataFrame({
        "activation": comp["activation"], "best configuration": comp["config"], "seeds": comp["n"],
        f"{m} mean ± std": [f"{fmt.g(a, 4)} ± {fmt.g(b, 2)}" for a, b in zip(comp["mean"], comp["std"])],
        "difference to best": [fmt.g(d, 3) if i else "(reference)" for i, d in enumerate(comp["diff"])],
        "Hedges' g": comp["hedges_g"].map(lambda v: fmt.g(v, 2)),
        "Welch p": comp["welch_p"].map(fmt.p), "Welch p (Holm)": comp["welch_p_holm"].map(fmt.p),
        "Mann–Whitney p": comp["mwu_p"].map(fmt.p), "Mann–Whitney p (Holm)": comp["mwu_p_holm"].map(fmt.p),
    })
    if "epochs_mean" in comp:
        out["epochs to target"] = [f"{fmt.g(e, 3)} ({r}/{n})"
                                   for e, r, n in zip(comp["epochs_mean"], comp["reached"], comp["n"])]
        out["epochs: MWU p (Holm)"] = comp["epochs_mwu_p_holm"].map(fmt.p)
    text = Markup(
        "Each activation at its best configuration (best mean {}) against the best activation, on the final {} of "
        "{}–{} seeds per side. Two-sided Welch's t-test and Mann–Whitney U test (scipy.stats), each Holm-corrected "
        "over the {}; Hedges' g = (activation − best) / pooled std, bias-corrected. Epochs to target compared with "
        "Mann–Whitney, seeds that never reached it ranked last. Data: <a href='comparison.csv'>comparison.csv</a>."
    ).format(m, m, int(comp["n"].min()), int(comp["n"].max()), fmt.n(len(comp) - 1, "comparison"))
    return [{"kind": "p", "text": text}, _table(out)]


def bad_blocks(runs: pd.DataFrame, keys, metric: str) -> list[dict]:
    finite = np.isfinite(runs[metric].astype(float).to_numpy())
    bad = runs[(runs["outcome"] != "finished") | ~finite].copy()
    if not len(bad):
        return [{"kind": "p", "text": "None: every selected run finished with finite metrics."}]
    bad.loc[(bad["outcome"] == "finished"), "outcome"] = f"finished, {metric} not finite"
    cols = [c for c in ("run_name", "outcome", "diverged_epoch", *keys, "seed", "error") if c in bad]
    t = bad[cols].copy()
    for c in cols:
        t[c] = t[c].map(fmt.val)
    for c in ("diverged_epoch", "error"):  # blank where a run has none (it failed, or it diverged: no error)
        if c in t:
            t[c] = [fmt.val(v) if not fmt.is_missing(v) else "" for v in bad[c]]
    t.insert(0, "run", [link(u, str(r)[:8]) for u, r in zip(bad["url"], bad["run_id"])])
    n_div = int((bad["outcome"] == "diverged").sum())
    if n_div == len(bad):
        counted = ("it counts" if len(bad) == 1 else "they count") + \
            " in the divergence rate but never in a mean, interval or test"
    elif n_div:
        counted = "the diverged ones count in the divergence rate; none counts in a mean, interval or test"
    else:
        counted = "none counts in a mean, interval or test, nor in the divergence rate (none diverged)"
    return [{"kind": "p", "text": f"{fmt.n(len(bad), 'run')} did not finish normally; {counted}."}, _table(t)]


def runs_blocks(ctx, ui_command: str) -> list[dict]:
    runs, keys = ctx["runs"], ctx["keys"]
    cols = [c for c in ("run_name", "outcome", *keys, "seed", ctx["metric"]) if c in runs]
    order = runs.assign(_o=[tuple(fmt.val(v) for v in r) for r in runs[[*keys]].itertuples(index=False)])
    t = order.sort_values(["_o", "seed"] if "seed" in runs else ["_o"])[["url", "run_id", *cols]].copy()
    run = [link(u, r) for u, r in zip(t["url"], t["run_id"])]
    t = t[cols].copy()
    for c in cols:
        t[c] = t[c].map(lambda v: fmt.g(v, 4) if isinstance(v, float) else fmt.val(v))
    t.insert(0, "run", run)
    intro = Markup("Every run links to its page in the MLflow UI. Start the UI from the launch directory with "
                   "<code>{}</code>, then follow a link; if your UI runs elsewhere, type its address here: ").format(
        ui_command)
    return [{"kind": "p", "text": intro}, {"kind": "ui_box"},
            {"kind": "details", "summary": fmt.n(len(t), "run"), "blocks": [_table(t)]}]


def duplicates_blocks(duplicates: pd.DataFrame, url) -> list[dict]:
    """The dropped duplicates, each with a link to the run kept in its place."""
    if not len(duplicates):
        return []
    from .build import superseded

    retried = superseded(duplicates)
    items = [Markup("{} ({}) {} kept run {}").format(link(url(e, r), Markup("<code>{}</code>").format(r)), s,
                                                     "is an unfinished attempt of" if u else "duplicates",
                                                     link(url(e, k), Markup("<code>{}</code>").format(k)))
             for e, r, s, k, u in zip(duplicates["experiment_id"], duplicates["run_id"], duplicates["status"],
                                      duplicates["kept_run_id"], retried)]
    n_dup, n_att = int((~retried).sum()), int(retried.sum())
    summary = ", ".join([*([fmt.n(n_dup, "duplicate run")] if n_dup else []),
                         *([fmt.n(n_att, "unfinished run")] if n_att else [])])
    return [{"kind": "details", "summary": f"{summary} dropped", "blocks": [{"kind": "list", "cls": "", "items": items}]}]
