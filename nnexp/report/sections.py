"""The report's words: the Setup section and the Conclusion's sentences, computed as data.

Every function here takes the report's context ``ctx`` (a dict built by
:func:`nnexp.report.build.build_report`: ``runs``, ``ok``, ``keys``, ``linked``,
``metric``, ``higher``, ``target``, ``target_auto``, ``table``, ``comp``,
``curves``, ``epochs``, ``n_epochs``) and returns sentences as
:class:`markupsafe.Markup` (values escaped, emphasis kept) or blocks for
:mod:`nnexp.report.page`. Nothing here writes HTML pages or draws figures.

What the conclusion states, and from which numbers:

- **best** — each activation at its best configuration against the best one
  (:func:`nnexp.report.stats.compare_to_best`); when others are statistically
  indistinguishable from it (Holm-adjusted Welch p ≥ α), the group is named, not one winner;
- **metrics that disagree** — the configuration ranked first by the primary
  metric against the best by validation and test accuracy (and validation loss);
- **overfitting** — a configuration's mean validation loss rises by more than
  :data:`OVERFIT_RISE` above its minimum while its training loss keeps falling;
- **edge of the grid** — the best value of a swept numeric key is the smallest or
  largest value tried, so the optimum may lie outside the grid;
- **speed** — epochs to a target the user can choose (``--target``), the default explained.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from markupsafe import Markup

from . import fmt

__all__ = ["ALPHA", "OVERFIT_RISE", "conclusion", "setup_blocks", "best_sentences", "disagreement_sentences",
           "overfitting_sentences", "edge_sentences", "speed_sentences", "lr_sentences", "diagnostic_sentences",
           "target_text", "best_run", "fixed_keys", "dataset_facts", "indistinguishable", "config_group",
           "config_sentences"]

#: Significance level of the comparisons (Holm-adjusted Welch p below it: a real difference).
ALPHA = 0.05
#: Relative rise of the mean validation loss above its minimum that counts as overfitting (5 %).
OVERFIT_RISE = 0.05

#: Run columns that describe the run, not its configuration (never in the Setup's fixed keys).
NOT_CONFIG = {"run_id", "run_name", "status", "start_time", "end_time", "parent_id", "outcome", "diverged_epoch",
              "config_hash", "config_id", "run_key", "experiment_id", "artifact_uri", "error", "reused", "url",
              "seed", "sweep", "blas_threads", "study", "claims", "n_features", "n_classes", "n_train", "n_val", "n_test",
              "legacy", "repeated_by", "repeat_parents"}
DATASET_FACTS = ("n_features", "n_classes", "n_train", "n_val", "n_test")


def _m(text, *args) -> Markup:
    return Markup(text).format(*args)


def best_run(ctx, comp_row) -> pd.Series:
    """One finished run of a comparison row's configuration (its key values are the configuration's)."""
    ok = ctx["ok"]
    return ok[ok["run_id"].isin(comp_row["run_ids"])].iloc[0]


def _select(frame: pd.DataFrame, row, keys) -> np.ndarray:
    mask = np.ones(len(frame), bool)
    for k in keys:
        if k in frame:
            mask &= fmt.matches(frame[k], row[k])
    return mask


def config_group(ctx) -> tuple[list[int], int]:
    """``(rows, tested)``: the summary-table rows not shown to differ from the best configuration (row 0 first).

    Each configuration's final primary metric against the best one's: two-sided
    Welch t-test (scipy.stats), Holm-corrected over the ``tested`` comparisons
    (:func:`nnexp.report.stats.holm`). A configuration with fewer than two
    finished seeds cannot be tested and stays in the group.
    """
    from .stats import holm, welch_p

    table, ok, keys, m = ctx["table"], ctx["ok"], ctx["keys"] + ctx["linked"], ctx["metric"]
    if not len(table) or not len(ok):
        return [], 0
    by = ok.groupby(_labels(ok, keys))[m]
    groups = {k: v.to_numpy(float) for k, v in by}
    values = [groups.get(label, np.array([])) for label in _labels(table, keys)]
    best = values[0]
    pvals = np.full(len(values), np.nan)
    for i, v in enumerate(values[1:], start=1):
        pvals[i] = welch_p(v, best)  # NaN for fewer than 2 values, or two constant samples (equal or not)
        if np.isnan(pvals[i]) and len(v) > 1 and len(best) > 1:
            pvals[i] = 0.0 if v[0] != best[0] else 1.0
    tested = np.isfinite(pvals)
    adj = np.full(len(values), np.nan)
    if tested.any():
        adj[tested] = holm(pvals[tested])
    rows = [0] + [i for i in range(1, len(values)) if len(values[i]) and not (adj[i] < ALPHA)]
    return rows, int(tested.sum())


def _only(table: pd.DataFrame, comp: pd.DataFrame, runs: pd.DataFrame | None = None, metric: str = "") -> str:
    """Why one activation is compared: the only one selected, the only one with a finished run, or the only one
    whose finished runs have a final ``metric`` (``--metric layer1.dead_fraction``: relu's runs only log it)."""
    others = [a for a in dict.fromkeys(table["activation"]) if a not in set(comp["activation"])]
    if not others:
        return "the only activation in this selection"
    finished = set() if runs is None else set(runs.loc[runs["outcome"] == "finished", "activation"])
    if finished & set(others):
        return (f"the only activation whose finished runs have a final {metric} "
                f"({', '.join(map(str, others))}: {'none has' if finished >= set(others) else 'none finished or has it'})")
    return f"the only activation with a finished run ({', '.join(map(str, others))}: none finished)"


def config_sentences(ctx) -> list[Markup]:
    """When configurations (not only activations) were compared: which of them cannot be told from the best."""
    table, keys = ctx["table"], ctx["keys"] + ctx["linked"]
    rows, tested = ctx.get("group", ([0], 0))
    if len(table) < 2 or len(table) == len(ctx["comp"]):
        return []
    if tested == 0:  # one seed per configuration (or all equal): no test is possible, so no group is claimed
        finished = table[table["seeds"] > 0]
        if len(finished) < 2:  # the others have no finished run (they diverged or failed)
            rest = len(table) - len(finished)
            return [_m("Only {} has finished runs; {} none, so no configuration is compared with another.",
                       fmt.cfg(finished.iloc[0], keys) if len(finished) else "no configuration",
                       "the other configuration has" if rest == 1 else f"the other {rest} configurations have")]
        one = " the ranking of the {} configurations with a finished run below is one seed's.".format(len(finished)) \
            if finished["seeds"].max() <= 1 else ""
        return [_m("No configuration can be told apart from another: a test needs at least 2 finished seeds of "
                   "each (add seeds, e.g. seed=0,1,2);{}", one)]
    labels = [fmt.cfg(table.iloc[i], keys) for i in rows[1:9]]
    more = f" and {len(rows) - 9} more" if len(rows) > 9 else ""
    if len(rows) > 1:
        out = [_m("<b>{} of the other {} cannot be told apart from the best</b> ({}; Holm-adjusted Welch "
                  "p ≥ {} over {}, or fewer than 2 seeds): {}{}.", len(rows) - 1,
                  fmt.n(len(table) - 1, "configuration"), fmt.cfg(table.iloc[0], keys),
                  ALPHA, fmt.n(tested, "comparison"), "; ".join(labels), more)]
        split = _separated_activations(ctx, rows)
        if split:  # both statements hold, each in its own family of tests: say why they seem to disagree
            n_act = int(np.isfinite(ctx["comp"]["welch_p_holm"].to_numpy(float)[1:]).sum())
            out.append(_m("{} {} significantly worse in the comparison of activations above (Holm over {}) but not "
                          "here, where the correction is over {}: the same difference, corrected for more tests.",
                          " and ".join(split), "is" if len(split) == 1 else "are",
                          fmt.n(n_act, "comparison"), fmt.n(tested, "comparison")))
        return out
    return [_m("The best configuration, {}, is significantly better than {} (Holm-adjusted Welch p < {}).",
               fmt.cfg(table.iloc[0], keys),
               "the other one" if len(table) == 2 else f"each of the other {len(table) - 1}", ALPHA)]


def _separated_activations(ctx, rows: list[int]) -> list[str]:
    """Activations whose best configuration is in the configuration group ``rows`` (:func:`config_group`) although
    the comparison of activations (``ctx["comp"]``, Holm over fewer tests) found it significantly worse."""
    comp, table, keys = ctx["comp"], ctx["table"], ctx["keys"] + ctx["linked"]
    out = []
    for _, r in comp.iloc[1:].iterrows():
        if not (math.isfinite(r["welch_p_holm"]) and r["welch_p_holm"] < ALPHA):
            continue
        at = np.flatnonzero(_select(table, best_run(ctx, r), keys))
        if len(at) and int(at[0]) in rows[1:]:
            out.append(f"{r['activation']}'s best configuration")
    return out


def indistinguishable(comp: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``comp`` not shown to differ from the best: the best, and each with Holm p ≥ α or no p at all."""
    if not len(comp):
        return comp
    p = comp["welch_p_holm"].to_numpy(float)
    keep = np.ones(len(comp), bool)
    keep[1:] = ~(np.nan_to_num(p[1:], nan=1.0) < ALPHA)
    return comp[keep]


# -- Conclusion -------------------------------------------------------------------------------
def conclusion(ctx) -> list[dict]:
    """The Conclusion section's blocks: one list of sentences and the note on selection and seeds."""
    comp = ctx["comp"]
    if not len(comp):
        return [{"kind": "p", "text": "No finished run: nothing to compare. See the diverged and failed runs below."}]
    items = best_sentences(ctx)
    items += config_sentences(ctx)
    items += disagreement_sentences(ctx)
    items += overfitting_sentences(ctx)
    items += edge_sentences(ctx)
    items += speed_sentences(ctx)
    items += lr_sentences(ctx)
    items += diagnostic_sentences(ctx)
    table = ctx["table"]
    if table["diverged"].sum():
        bad = table[table["diverged"] > 0]
        items.append(_m("Divergence: {} (excluded from every mean).", "; ".join(
            f"{fmt.cfg(r, ctx['keys'])} diverged in {int(r['diverged'])}/{fmt.n(int(r['diverged'] + r['seeds']), 'run')}"
            for _, r in bad.iterrows())))
    n = int(comp.iloc[0]["n"])
    floor = 2 / math.comb(2 * n, n) if n > 0 else math.nan
    if len(comp) < 2:  # no test between activations was made: nothing about their p-values to qualify
        note = (f"Only one activation has finished runs with a final {ctx['metric']}, so no activations are "
                "compared; its best configuration is chosen on the same runs it is reported on, which flatters it "
                "slightly.")
        return [{"kind": "list", "cls": "conclusion", "items": items}, {"kind": "note", "text": note}]
    note = ("Each activation is compared at its own best configuration, chosen on the same runs; that selection "
            "favours the winner slightly, so treat p-values near 0.05 with care.")
    if floor > ALPHA:
        note += (f" With {fmt.n(n, 'seed')} a two-sided Mann–Whitney test cannot go below p = {fmt.p(floor)}: add seeds "
                 f"(seed=0,1,2,3,4) for it to show significance.")
    return [{"kind": "list", "cls": "conclusion", "items": items}, {"kind": "note", "text": note}]


def _over(ctx, n: int) -> str:
    """``3 seeds``; for runs that each record a population's means (``tracking.replica_runs=false``),
    ``1 run, a population of 1,000 networks``."""
    ok = ctx["ok"]
    sizes = pd.to_numeric(ok["population"], errors="coerce").dropna().unique() if "population" in ok else []
    if len(sizes) and max(sizes) > 1:
        size = f"{int(sizes[0]):,}" if len(sizes) == 1 else f"{int(min(sizes)):,}-{int(max(sizes)):,}"
        return f"{fmt.n(n, 'run')}, {'a population' if n == 1 else 'each a population'} of {size} networks"
    return fmt.n(n, "seed")


def best_sentences(ctx) -> list[Markup]:
    """The winner, or the group of activations indistinguishable from the best, then each other activation."""
    comp, m, higher = ctx["comp"], ctx["metric"], ctx["higher"]
    best = comp.iloc[0]
    n = int(best["n"])
    group = indistinguishable(comp)
    items = []
    linked = "".join(f", {k}={fmt.val(best_run(ctx, best)[k])}" for k in ctx["linked"])
    where = f" at {best['config']}" if best["config"] else ""
    if len(group) > 1:
        names = ", ".join(str(a) for a in group["activation"])
        items.append(_m("<b>No single winner: {} are statistically indistinguishable</b> on final {} (Holm-adjusted "
                        "Welch p ≥ {} against the best mean, or too few seeds to test). Best mean: {}{}{}, "
                        "{} ± {} (mean ± std over {}); more seeds would be needed to separate them.",
                        names, m, ALPHA, best["activation"], where, linked, fmt.g(best["mean"], 4),
                        fmt.g(best["std"], 2), _over(ctx, n)))
    elif len(comp) == 1 and len(ctx.get("group", ([0], 0))[0]) > 1:  # one activation, configurations not separated
        items.append(_m("<b>No clear winner</b>: lowest mean {}{}{}, final {} {} ± {} (mean ± std over {}), but other "
                        "configurations cannot be told apart from it (below).", best["activation"], where, linked, m,
                        fmt.g(best["mean"], 4), fmt.g(best["std"], 2), _over(ctx, n)))
    else:
        items.append(_m("<b>Best: {}{}{}</b>, final {} {} ± {} (mean ± std over {}); {}.", best["activation"], where,
                        linked, m, fmt.g(best["mean"], 4), fmt.g(best["std"], 2), _over(ctx, n),
                        _only(ctx["table"], comp, ctx.get("runs"), m) if len(comp) == 1
                        else f"every other activation is worse at Holm-adjusted α = {ALPHA}"
                        + (f" (over {len(comp) - 1} comparisons)" if len(comp) > 2 else "")))
    for _, r in comp.iloc[1:].iterrows():
        sig = math.isfinite(r["welch_p_holm"]) and r["welch_p_holm"] < ALPHA
        word = "worse" if (r["diff"] < 0) == higher else "better"
        at = f", {r['config']}" if r["config"] else ""
        items.append(_m("{} (its best configuration{}): {} ± {}, {} {} (Hedges' g = {}, Welch {}, Holm-adjusted {}, {} "
                        "vs {} seeds): {}",
                        r["activation"], at, fmt.g(r["mean"], 4), fmt.g(r["std"], 2), fmt.g(abs(r["diff"]), 3), word,
                        fmt.g(r["hedges_g"], 2), fmt.p_is(r["welch_p"]), fmt.p_is(r["welch_p_holm"]), int(r["n"]), n,
                        "a significant difference at α = 0.05." if sig
                        else "not significant at α = 0.05 with these seeds."))
    return items


def _config_label(row, keys) -> str:
    return fmt.cfg(row, keys) if len(keys) > 1 else fmt.val(row[keys[0]])


def disagreement_sentences(ctx) -> list[Markup]:
    """Say when the configuration ranked first by the primary metric is not the best by accuracy (or by val_loss).

    Compared on the summary table's means (one row per configuration); accuracies
    are higher-is-better, losses lower-is-better.
    """
    table, m, keys = ctx["table"], ctx["metric"], ctx["keys"]
    if not len(table) or len(table) < 2 or not np.isfinite(table[f"{m} mean"].to_numpy(float)).any():
        return []
    first = table.iloc[0]
    others = {}
    for other in ("val_accuracy", "test_accuracy", "val_loss"):
        col = f"{other} mean"
        if other == m or col not in table or not np.isfinite(table[col].to_numpy(float)).any():
            continue
        v = table[col].astype(float)
        i = v.idxmax() if other.endswith("accuracy") else v.idxmin()
        if i != table.index[0] and v[i] != v[table.index[0]]:
            others.setdefault(i, []).append(other)
    out = []
    for i, metrics in others.items():
        r = table.loc[i]
        what = " and ".join(f"the best {_label(o)} ({fmt.g(r[f'{o} mean'], 4)} against {fmt.g(first[f'{o} mean'], 4)})"
                            for o in metrics)
        kinds = {"loss" if x.endswith("loss") else "accuracy" if x.endswith("accuracy") else "other" for x in [m, *metrics]}
        why = (" Which is better depends on what you need: a calibrated probability (loss) or correct labels "
               "(accuracy)." if kinds == {"loss", "accuracy"} else "")
        out.append(_m("<b>Metrics disagree</b>: {} ranks first by mean final {} ({}), but {} has {}.{}",
                      _config_label(first, keys), m, fmt.g(first[f"{m} mean"], 4), _config_label(r, keys), what, why))
    return out


def _label(metric: str) -> str:
    from .figures import label

    return label(metric)


def overfitting_sentences(ctx) -> list[Markup]:
    """Configurations whose mean validation loss rose more than :data:`OVERFIT_RISE` above its minimum by the last
    epoch while the mean training loss kept falling over the same epochs."""
    curves, keys = ctx["curves"], ctx["keys"]
    if not len(curves) or not {"val_loss", "train_loss"} <= set(curves["metric"].astype(str)):
        return []
    c = curves[curves["metric"].isin(["val_loss", "train_loss"])].copy()
    c["metric"] = c["metric"].astype(str)
    c["g"] = _labels(c, keys)
    v = c[(c["metric"] == "val_loss") & np.isfinite(c["mean"].to_numpy(float))]
    t = c[c["metric"] == "train_loss"].set_index(["g", "step"])["mean"]
    if not len(v):
        return []
    lo = v.loc[v.groupby("g")["mean"].idxmin()].set_index("g")
    last = v.loc[v.groupby("g")["step"].idxmax()].set_index("g")
    n = v.groupby("g").size()
    d = pd.DataFrame({"e_min": lo["step"], "v_min": lo["mean"], "e_last": last["step"], "v_last": last["mean"], "n": n})
    d["t0"] = t.reindex(list(zip(d.index, d["e_min"]))).to_numpy()
    d["t1"] = t.reindex(list(zip(d.index, d["e_last"]))).to_numpy()
    hit = d[(d["n"] >= 3) & (d["v_min"] > 0) & (d["v_last"] > d["v_min"] * (1 + OVERFIT_RISE)) & (d["t1"] < d["t0"])]
    if not len(hit):
        return []
    hit = hit.assign(rise=hit["v_last"] / hit["v_min"]).sort_values("rise", ascending=False, kind="stable")
    parts = [f"{label} (validation loss {fmt.g(r.v_min, 3)} at epoch {int(r.e_min)} → {fmt.g(r.v_last, 3)} at epoch "
             f"{int(r.e_last)}; training loss {fmt.g(r.t0, 3)} → {fmt.g(r.t1, 3)})"
             for label, r in hit.head(6).iterrows()]
    more = f" and {len(hit) - 6} more" if len(hit) > 6 else ""
    return [_m("<b>Overfitting</b> (mean validation loss rising more than {:.0%} above its minimum while the training "
               "loss falls): {}{}. Their final values are past their best epoch; fewer epochs, weight decay or more "
               "data would help.", OVERFIT_RISE, "; ".join(parts), more)]


def _labels(frame: pd.DataFrame, keys) -> pd.Series:
    """The configuration label of each row (``relu`` or ``activation=relu, optimizer.lr=0.1``), as strings."""
    keys = [k for k in keys if k in frame]
    if len(keys) == 1:
        return frame[keys[0]].map(fmt.val)
    out = None
    for k in keys:
        part = k + "=" + frame[k].map(fmt.val).astype(str)
        out = part if out is None else out + ", " + part
    return out


def edge_sentences(ctx) -> list[Markup]:
    """For each swept numeric key, the best configurations whose value is the smallest or largest value tried."""
    comp, ok, keys = ctx["comp"], ctx["ok"], ctx["keys"]
    out = []
    for k in keys[1:]:
        levels = [v for v in ok[k].dropna().unique().tolist() if fmt.is_number(v)] if k in ok else []
        if len(levels) < 2 or len(levels) != ok[k].dropna().nunique():
            continue
        lo, hi = min(levels), max(levels)
        at = {"smallest": [], "largest": []}
        for _, r in comp.iterrows():
            v = best_run(ctx, r)[k]
            if fmt.is_number(v) and v in (lo, hi):
                at["smallest" if v == lo else "largest"].append(str(r["activation"]))
        grid = ", ".join(fmt.val(v) for v in sorted(levels))
        for edge, acts in at.items():
            if acts:
                value = lo if edge == "smallest" else hi
                out.append(_m("<b>Edge of the grid</b>: the best {} of {} is {}, the {} value tried ({}): the optimum "
                              "may lie {} it; extend the grid to find out.", k, ", ".join(acts), fmt.val(value), edge,
                              grid, "below" if edge == "smallest" else "above"))
    return out


def target_text(ctx, short: bool = False) -> Markup:
    """How the speed target was chosen: by the user, or the default, explained (``short``: named only)."""
    m, t = ctx["metric"], ctx["target"]
    rel = "≥" if ctx["higher"] else "≤"
    if short:
        return _m("target {} {} {} ({})", m, rel, fmt.g(t, 4),
                  "the default: the median final value, see the Conclusion" if ctx["target_auto"] else "chosen")
    if ctx["target_auto"]:
        how = _m("the default, the median final {} over the finished runs of this report: about half of them reach "
                 "it, so it ranks speed to this selection's typical level, which may be a poor model; choose an "
                 "absolute target with <code>--target</code> (<code>python -m nnexp.report</code>) or "
                 "<code>tracking.report_target=</code> in a sweep", m)
    else:
        how = Markup("chosen with <code>--target</code> / <code>tracking.report_target</code>")
    return _m("target {} {} {}: {}", m, rel, fmt.g(t, 4), how)


def speed_sentences(ctx) -> list[Markup]:
    """Epochs to target of every activation at its best configuration, and the fastest by a median that counts
    the seeds that never reached the target (a mean over the seeds that did would favour the unreliable)."""
    comp = ctx["comp"]
    if ctx["epochs"] is None or "epochs_mean" not in comp:
        return []
    order = comp.sort_values(["epochs_median", "reached"], ascending=[True, False], kind="stable")
    listed = ", ".join(
        f"{r['activation']} "
        + (f"{fmt.g(r['epochs_mean'], 3)} epoch{'' if r['epochs_mean'] == 1 else 's'} "
           f"({int(r['reached'])}/{int(r['n'])} seeds)" if r["reached"]
           else f"never (0/{int(r['n'])} seeds)")
        for _, r in order.iterrows())
    text = _m("Speed ({}), each activation at its best configuration, mean epochs over the seeds that reached the "
              "target: {}.", target_text(ctx), listed)
    med = order["epochs_median"].to_numpy(float)
    if len(order) >= 2 and math.isfinite(med[0]) and med[0] < med[1]:
        fast = order.iloc[0]
        others = ", ".join(f"{r['activation']} "
                           + (fmt.g(r["epochs_median"], 3) if math.isfinite(r["epochs_median"]) else "never")
                           for _, r in order.iloc[1:].iterrows())
        text += _m(" Fastest by the median over all seeds (a seed that never reached the target counts as never): "
                   "{}, {} epochs against {}.", fast["activation"], fmt.g(fast["epochs_median"], 3), others)
    elif len(order) >= 2:
        text += Markup(" No activation is faster by the median over all seeds (a seed that never reached it counts "
                       "as never).")
    return [text]


def lr_sentences(ctx) -> list[Markup]:
    """For each activation, the final metric over the learning rates with its other keys at its best configuration
    (the same configuration as the "Best" and comparison sentences)."""
    ok, m, comp, keys = ctx["ok"], ctx["metric"], ctx["comp"], ctx["keys"]
    if "optimizer.lr" not in keys or not len(comp):
        return []
    parts = []
    for _, c in comp.iterrows():
        ref = best_run(ctx, c)
        sel = _select(ok, ref, [k for k in keys if k != "optimizer.lr"])
        r = ok[sel].groupby("optimizer.lr")[m].mean().dropna()
        if len(r) < 2:
            continue
        bestlr = r.idxmax() if ctx["higher"] else r.idxmin()
        parts.append(f"{c['activation']} best at lr = {fmt.val(bestlr)} (final {m} ranges "
                     f"{fmt.g(r.min(), 3)}–{fmt.g(r.max(), 3)} over the learning rates)")
    return [_m("Learning rate: {}.", "; ".join(parts))] if parts else []


def diagnostic_sentences(ctx) -> list[Markup]:
    """Final-epoch diagnostics of each activation's best configuration: the "why"."""
    curves, comp, keys = ctx["curves"], ctx["comp"], ctx["keys"]
    if not len(comp) or not len(curves):
        return []
    last = curves[curves["step"] == curves.groupby("metric", observed=True)["step"].transform("max")]
    parts = []
    for _, r in comp.iterrows():
        sub = last[_select(last, best_run(ctx, r), keys)]
        sub = sub.groupby("metric", observed=True)["mean"].first()
        bits = []
        if "layer1.grad_norm" in sub:
            bits.append(f"first-layer gradient norm {fmt.g(sub['layer1.grad_norm'], 2)}")
        if "layer1.saturation" in sub:
            bits.append(f"{sub['layer1.saturation']:.0%} of first-layer units saturated")
        if "layer1.dead_fraction" in sub:
            bits.append(f"{sub['layer1.dead_fraction']:.0%} dead units in layer 1")
        if bits:
            parts.append(f"{r['activation']}: " + ", ".join(bits))
    return [_m("At the last epoch (best configuration of each): {}.", "; ".join(parts))] if parts else []


# -- Setup ------------------------------------------------------------------------------------
def _uniform(col: pd.Series):
    """``(True, value)`` when every run has the same value (None/NaN and lists included), else ``(False, None)``."""
    texts = col.map(fmt.val)
    return (True, col.iloc[0]) if texts.nunique() == 1 else (False, None)


def fixed_keys(runs: pd.DataFrame, varying: list[str], metrics: list[str] | None = None) -> dict:
    """``{key: value}`` of the configuration keys held fixed across ``runs`` (params only, not metrics or tags
    about the run), dataset keys apart; ``tracking.*`` and ``sweep.*`` left out. A key that is null in every run
    (``batch_size=null``, ``activation.alpha`` of an activation without one) is listed as ``null``.

    ``metrics``: the logged metric names (never config keys); default ``runs.attrs["metrics"]`` as
    :func:`nnexp.report.load.load_runs` sets it."""
    metrics = set(runs.attrs.get("metrics", []) if metrics is None else metrics)
    out = {}
    for k in sorted(runs.columns):
        if (k in NOT_CONFIG or k in metrics or k in varying or k.startswith(("tracking.", "sweep.", "dataset", "loss.",
                                                                               "init.resolved"))
                or (k.endswith(".name") and k[:-5] in runs) or (k == "loss" and "model.loss" in runs)):
            continue  # `optimizer.name` is the `optimizer` column already; the `loss` tag is `model.loss`
        same, v = _uniform(runs[k])
        if same:
            out[k] = v
    return out


def dataset_facts(runs: pd.DataFrame) -> dict:
    """The dataset's description: every ``dataset.*`` param and the sizes the runs logged (features, classes,
    training / validation / test samples); a value that differs across runs is listed as all its values."""
    out = {}
    cols = [c for c in runs.columns if (c == "dataset" and "dataset.name" not in runs) or c.startswith("dataset.")] \
        + [c for c in DATASET_FACTS if c in runs]  # the `dataset` tag is `dataset.name` already
    for k in cols:
        if runs[k].map(fmt.is_missing).all():
            continue
        same, v = _uniform(runs[k])
        out[k] = fmt.val(v) if same else ", ".join(sorted(set(runs[k].map(fmt.val))))
    return out


def _sorted_values(values: pd.Series) -> list:
    """The distinct values of ``values`` in order: numbers by value (2 before 10), the rest by their text."""
    distinct = {fmt.val(v): v for v in values}
    numbers = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and v == v
                  for v in distinct.values())  # a NaN (v != v) has no place among numbers: all sorted as text
    key = (lambda t: distinct[t]) if numbers else (lambda t: t)
    return [distinct[t] for t in sorted(distinct, key=key)]


def setup_blocks(ctx, *, commands: list[str], report_command: str) -> list[dict]:
    """The Setup section: what varied, what was held fixed, the data, the seeds and the commands."""
    runs, keys, linked = ctx["runs"], ctx["keys"], ctx["linked"]
    varying = [*keys, *linked]
    levels = {k: [fmt.val(v) for v in _sorted_values(runs[k])] for k in varying if k in runs}
    blocks = [{"kind": "p", "text": _m("Compared: {}.", "; ".join(
        f"{k} ∈ {{{', '.join(v)}}}" for k, v in levels.items()))}]
    if linked:
        blocks.append({"kind": "note", "text": _m("{} varied only together with the activation (not a sweep axis).",
                                                  ", ".join(linked))})
    fixed = fixed_keys(runs, varying, ctx.get("metrics"))
    unset = [k for k, v in fixed.items() if fmt.is_missing(v) and k != "batch_size"]  # batch_size=null: full batch
    if fixed:
        blocks.append({"kind": "table", "caption": "Held fixed in every run",
                       "columns": ["key", "value"],
                       "rows": [[k, fmt.val(v) + (" (full batch)" if k == "batch_size" and fmt.is_missing(v) else "")]
                                for k, v in fixed.items() if k not in unset]})
    if unset:
        blocks.append({"kind": "note", "text": _m("Null (unused or default) in every run: {}.", ", ".join(unset))})
    data = dataset_facts(runs)
    if data:
        blocks.append({"kind": "table", "caption": "Data",
                       "columns": ["dataset", "value"], "rows": [[k, v] for k, v in data.items()]})
    if "seed" in runs:
        seeds = sorted({int(s) for s in runs["seed"].dropna()})
        blocks.append({"kind": "p", "text": _m("Seeds: {} ({} per configuration at most).", ", ".join(map(str, seeds)),
                                               len(seeds))})
    for cmd in commands:
        blocks.append({"kind": "code", "caption": "Command that ran the sweep", "text": cmd})
    blocks.append({"kind": "code", "caption": "Command that rebuilds this report", "text": report_command})
    return blocks
