r"""The claim check: a study's claims, declared in its experiment file, measured on its runs with their uncertainty.

A study (``experiments/<name>.yaml``) lists its paper's measurable claims under ``claims:``; each is a mapping::

    claims:
      - claim: "He init keeps the spread: activation std at layer 30 over layer 1, at initialisation"
        paper: "He et al. (2015), Sec. 2.2: ..."  # optional: where the paper says it
        metric: "`layer30.probe.act_std` / `layer1.probe.act_std`"  # a metric, or a pandas expression of metrics
        epoch: 0               # optional: the value at this epoch of the history (0 = initialisation); default final
        first_below: 2.2       # optional, instead of epoch: the first epoch at which the metric is below this
                               # (a run that never gets there counts as its last epoch + 1: censored)
        where: {init: he_normal}        # the runs measured (column = value; a list means any of the values)
        than: {init: xavier_normal}     # optional: a second group; the claim is then on mean(where) - mean(than)
        per_replica: false     # true: each run is a population (tracking.replica_runs=false) and the metric the
                               # fraction of its `replicas` networks with a 0/1 property: counts are pooled
        paired: false          # true (with than): the two groups' runs are paired by seed (the same initial weights
                               # under two settings); the claim is on the mean of the per-seed differences
        over: optimizer.lr     # optional: a run column swept within each group (e.g. a learning-rate grid) ...
        aggregate: min         # ... and how its levels are combined: min, max, mean, median or spread (max - min)
        compare: ">"           # ">", "<" or "between"
        threshold: 0.5         # a number, or [low, high] for "between"

:func:`evaluate` turns the claims and the runs (one row per run, :func:`nnexp.report.load.load_runs`) into one
row per claim: the estimate with its 95 % interval and a verdict,

- **reproduced**: the whole interval is on the claimed side of the threshold (inside it, for ``between``);
- **not reproduced**: the whole interval is on the other side (outside, for ``between``);
- **inconclusive**: the interval straddles the threshold, or fewer than two runs were measured.

A *paired* claim (``paired: true``, with ``than``) matches the runs of the two groups by ``seed`` and measures the
mean of the per-seed differences with its Student-t interval: right when a seed gives both groups the same
initial weights (a setting that does not change the architecture, such as the input's variance), where Welch's
unpaired interval would count the seed-to-seed spread that the pairing cancels.

A claim *across a grid* (``over`` and ``aggregate``; for example "GELU's best training loss over the learning
rates is lower than ReLU's", or "its spread over the learning rates is smaller") reads each group as a grid: the
value at each level of ``over`` is the **median** of that level's runs (the papers' "median of five runs"), and
the group's value is the ``aggregate`` of those medians over the levels:

.. math:: A = \operatorname{agg}_{v \in \text{levels}}
          \operatorname{median}\{x_r : r \in \text{group}, r[\text{over}] = v\}

(``spread`` is the max minus the min: how much the outcome depends on the swept value). With ``than`` the claim
is on :math:`A_\text{where} - A_\text{than}`. Its interval is a percentile bootstrap
(``scipy.stats.bootstrap``, :data:`BOOTSTRAP_RESAMPLES` resamples, a fixed generator so that a report is
reproducible) that resamples the runs within each level of each group independently; every level needs two runs.

Intervals: for one group, the mean's Student-t interval, or Wilson's score interval when every value is 0 or 1
(a fraction: ``scipy.stats.binomtest(k, n).proportion_ci``); for two groups, Welch's t interval of the
difference of means (Welch-Satterthwaite degrees of freedom, as ``scipy.stats.ttest_ind(equal_var=False)``).
With ``per_replica``, the runs' fractions and sizes are pooled into counts: Wilson's interval of the pooled
fraction, or the Wald interval of a difference of two fractions (fine at the 1,000 networks per population that
such studies use). A claim that does not
reproduce at the study's scale is reported as such: the threshold is the paper's, never tuned.
"""

from __future__ import annotations

import ast
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["Claim", "ClaimError", "parse_claims", "claims_of", "history_metrics", "measure", "evaluate", "sections",
           "CONFIDENCE", "VERDICTS", "AGGREGATES", "BOOTSTRAP_RESAMPLES"]

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
AGGREGATES = {"min": np.min, "max": np.max, "mean": np.mean, "median": np.median, "spread": np.ptp}
VERDICTS = ("reproduced", "not reproduced", "inconclusive")
COMPARISONS = (">", "<", "between")
_KEYS = {"claim", "paper", "metric", "epoch", "first_below", "where", "than", "compare", "threshold", "per_replica",
         "over", "aggregate", "paired"}
_NAME = re.compile(r"`([^`]+)`")


class ClaimError(ValueError):
    """A claim in an experiment file that cannot be evaluated: one line naming the key."""


@dataclass(frozen=True)
class Claim:
    """One claim; see the module docstring for the keys."""

    claim: str
    metric: str
    compare: str
    threshold: float | tuple[float, float]
    where: dict = field(default_factory=dict)
    than: dict | None = None
    epoch: int | None = None
    first_below: float | None = None
    paper: str = ""
    per_replica: bool = False
    over: str | None = None
    aggregate: str | None = None
    paired: bool = False

    def metrics(self) -> list[str]:
        """The metric names the claim reads: the backticked names of an expression, or the metric itself."""
        return _NAME.findall(self.metric) or [self.metric]


def parse_claims(raw: Any) -> list[Claim]:
    """Check and convert the ``claims:`` list of an experiment file.

    Raises
    ------
    ClaimError
        If it is not a list of mappings, a key is unknown or missing, ``compare`` is not one of
        :data:`COMPARISONS`, the threshold does not fit it, or both ``epoch`` and ``first_below`` are given.
    """
    if raw is None:
        return []
    if isinstance(raw, (DictConfig, ListConfig)):
        raw = OmegaConf.to_container(raw, resolve=True)
    if not isinstance(raw, (list, tuple)):
        raise ClaimError(f"claims must be a list of mappings, got {type(raw).__name__}")
    raw = [OmegaConf.to_container(c, resolve=True) if isinstance(c, DictConfig) else c for c in raw]
    out = []
    for i, c in enumerate(raw):
        where = f"claims[{i}]"
        if not isinstance(c, dict):
            raise ClaimError(f"{where} must be a mapping with keys {', '.join(sorted(_KEYS))}")
        unknown = sorted(set(c) - _KEYS)
        if unknown:
            raise ClaimError(f"{where}.{unknown[0]} is not a claim key; keys: {', '.join(sorted(_KEYS))}")
        for key in ("claim", "metric", "compare", "threshold"):
            if c.get(key) is None:
                raise ClaimError(f"{where}.{key} is missing")
        compare = str(c["compare"])
        if compare not in COMPARISONS:
            raise ClaimError(f"{where}.compare={compare!r} is not known; choose one of: {', '.join(COMPARISONS)}")
        t = c["threshold"]
        if compare == "between":
            if not (isinstance(t, (list, tuple)) and len(t) == 2 and float(t[0]) <= float(t[1])):
                raise ClaimError(f"{where}.threshold={t!r} must be [low, high] with low <= high for compare=between")
            threshold: float | tuple = (float(t[0]), float(t[1]))
        else:
            if not isinstance(t, (int, float)) or isinstance(t, bool):
                raise ClaimError(f"{where}.threshold={t!r} must be a number for compare={compare}")
            threshold = float(t)
        if c.get("epoch") is not None and c.get("first_below") is not None:
            raise ClaimError(f"{where}: give epoch or first_below, not both")
        for key in ("where", "than"):
            if c.get(key) is not None and not isinstance(c[key], dict):
                raise ClaimError(f"{where}.{key} must be a mapping of run columns to values, e.g. {{init: he_normal}}")
        if (c.get("over") is None) != (c.get("aggregate") is None):
            raise ClaimError(f"{where}: give over and aggregate together (over: a swept run column such as "
                             f"optimizer.lr; aggregate: one of {', '.join(AGGREGATES)})")
        if c.get("aggregate") is not None and str(c["aggregate"]) not in AGGREGATES:
            raise ClaimError(f"{where}.aggregate={c['aggregate']!r} is not known; "
                             f"choose one of: {', '.join(AGGREGATES)}")
        if c.get("over") is not None and c.get("per_replica"):
            raise ClaimError(f"{where}: over/aggregate and per_replica cannot be combined")
        if c.get("paired") and (c.get("than") is None or c.get("over") is not None or c.get("per_replica")):
            raise ClaimError(f"{where}.paired needs than (two groups to pair by seed) and neither over nor per_replica")
        out.append(Claim(str(c["claim"]), str(c["metric"]), compare, threshold, dict(c.get("where") or {}),
                         dict(c["than"]) if c.get("than") is not None else None,
                         None if c.get("epoch") is None else int(c["epoch"]),
                         None if c.get("first_below") is None else float(c["first_below"]), str(c.get("paper") or ""),
                         bool(c.get("per_replica", False)), None if c.get("over") is None else str(c["over"]),
                         None if c.get("aggregate") is None else str(c["aggregate"]), bool(c.get("paired", False))))
    return out


def claims_of(runs: pd.DataFrame) -> list[Claim]:
    """The claims the runs were launched with (their ``claims`` parameter), in order, each once."""
    if "claims" not in runs:
        return []
    seen, out = set(), []
    for text in runs["claims"].dropna().unique():
        raw = text
        if isinstance(text, str):
            try:
                raw = json.loads(text)
            except ValueError:
                raw = ast.literal_eval(text)
        for c in parse_claims(raw):
            if repr(c) not in seen:
                seen.add(repr(c))
                out.append(c)
    return out


def history_metrics(claims: list[Claim]) -> list[str]:
    """The metrics whose histories the claims need (those with ``epoch`` or ``first_below``)."""
    return sorted({m for c in claims if c.epoch is not None or c.first_below is not None for m in c.metrics()})


def _select(runs: pd.DataFrame, where: dict) -> pd.DataFrame:
    mask = np.ones(len(runs), bool)
    for key, value in where.items():
        if key not in runs:
            return runs.iloc[0:0]
        col = runs[key]
        values = value if isinstance(value, (list, tuple)) else [value]

        def same(v, values=values):
            return any(v == w or (isinstance(v, tuple) and list(v) == w) or str(v) == str(w) for w in values)

        mask &= col.map(same).to_numpy(bool)
    return runs[mask]


def measure(claim: Claim, runs: pd.DataFrame, hist: pd.DataFrame | None = None) -> pd.Series:
    """The claim's per-run value for every run: ``Series`` indexed like ``runs`` (NaN where not measurable).

    ``hist`` is the long history frame (``run_id, metric, step, value``) of :func:`history_metrics`.
    """
    names = claim.metrics()
    if claim.epoch is None and claim.first_below is None:
        frame = runs.reindex(columns=names).apply(pd.to_numeric, errors="coerce")
    else:
        h = hist if hist is not None else pd.DataFrame(columns=["run_id", "metric", "step", "value"])
        h = h[h["metric"].isin(names)]
        if claim.first_below is not None:
            last = h.groupby("run_id")["step"].max()
            below = h[h["value"] < claim.first_below].groupby(["run_id", "metric"])["step"].min().unstack()
            below = below.reindex(index=last.index, columns=names)
            frame = below.apply(lambda col: col.fillna(last + 1))  # censored: never below within the run
        else:
            frame = h[h["step"] == claim.epoch].pivot_table(index="run_id", columns="metric", values="value")
            frame = frame.reindex(columns=names)
        frame = frame.reindex(runs["run_id"]).set_axis(runs.index)
    if _NAME.search(claim.metric):
        safe = {n: f"m{i}" for i, n in enumerate(names)}
        expr = _NAME.sub(lambda m: safe[m.group(1)], claim.metric)
        with np.errstate(all="ignore"):
            values = frame.rename(columns=safe).astype(float).eval(expr, engine="python")
    else:
        values = frame[names[0]].astype(float)
    return pd.Series(values, index=runs.index, dtype=float)


def _interval(a: np.ndarray, b: np.ndarray | None) -> tuple[float, float, float]:
    """``(estimate, low, high)``: mean (or difference of means) and its :data:`CONFIDENCE` interval."""
    from scipy import stats

    if b is None:
        m = float(a.mean()) if a.size else math.nan
        if a.size < 2:
            return m, math.nan, math.nan
        if np.isin(a, (0.0, 1.0)).all():
            ci = stats.binomtest(int(a.sum()), a.size).proportion_ci(CONFIDENCE, method="wilson")
            return m, float(ci.low), float(ci.high)
        if np.ptp(a) == 0:
            return m, m, m
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
        return m, m - half, m + half
    d = float(a.mean() - b.mean()) if a.size and b.size else math.nan
    if a.size < 2 or b.size < 2:
        return d, math.nan, math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return d, d, d
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))  # Welch-Satterthwaite
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df) * math.sqrt(va + vb))
    return d, d - half, d + half


def _pooled(p: np.ndarray, n: np.ndarray) -> tuple[int, int]:
    """``(successes, trials)`` of populations with fractions ``p`` of sizes ``n``."""
    return int(np.round(p * n).sum()), int(n.sum())


def _interval_pooled(a, na, b, nb) -> tuple[float, float, float]:
    """``(estimate, low, high)`` for pooled fractions (Wilson) or their difference (Wald)."""
    from scipy import stats

    ka, Na = _pooled(a, na)
    if Na == 0:
        return math.nan, math.nan, math.nan
    if b is None:
        ci = stats.binomtest(ka, Na).proportion_ci(CONFIDENCE, method="wilson")
        return ka / Na, float(ci.low), float(ci.high)
    kb, Nb = _pooled(b, nb)
    if Nb == 0:
        return math.nan, math.nan, math.nan
    pa, pb = ka / Na, kb / Nb
    half = float(stats.norm.ppf(0.5 + CONFIDENCE / 2)) * math.sqrt(pa * (1 - pa) / Na + pb * (1 - pb) / Nb)
    return pa - pb, pa - pb - half, pa - pb + half


def _levels(values: np.ndarray, levels: np.ndarray) -> list[np.ndarray]:
    """The finite ``values`` split by ``levels``, in sorted level order (levels without a finite value dropped)."""
    ok = np.isfinite(values)
    values, levels = values[ok], levels[ok]
    return [values[levels == v] for v in sorted(set(levels.tolist()), key=str)]


def _interval_grid(a: list[np.ndarray], b: list[np.ndarray] | None, aggregate: str) -> tuple[float, float, float]:
    """``(estimate, low, high)`` of a claim across a grid (module docstring): the aggregate over levels of the
    per-level medians (minus the other group's), with a percentile bootstrap over the runs of every level."""
    from scipy import stats

    agg = AGGREGATES[aggregate]
    groups = [a] if b is None else [a, b]
    if any(not g for g in groups):
        return math.nan, math.nan, math.nan
    sizes = [len(g) for g in groups]

    def statistic(*samples):
        value = [agg([np.median(s) for s in samples[:sizes[0]]])]
        if b is not None:
            value.append(agg([np.median(s) for s in samples[sizes[0]:]]))
        return value[0] - value[1] if b is not None else value[0]

    samples = [s for g in groups for s in g]
    est = float(statistic(*samples))
    if any(s.size < 2 for s in samples):
        return est, math.nan, math.nan
    if all(np.ptp(s) == 0 for s in samples):
        return est, est, est
    res = stats.bootstrap(samples, statistic, n_resamples=BOOTSTRAP_RESAMPLES, vectorized=False, paired=False,
                          confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(0))
    return est, float(res.confidence_interval.low), float(res.confidence_interval.high)


def _paired_differences(values: pd.Series, runs: pd.DataFrame, where: dict, than: dict) -> np.ndarray:
    """Per-seed differences ``where - than`` over the seeds both groups have a finite value for (sorted by seed)."""
    if "seed" not in runs:
        return np.array([])

    def by_seed(group):
        idx = _select(runs, group).index
        v = pd.Series(values.loc[idx].to_numpy(float), index=pd.to_numeric(runs.loc[idx, "seed"]).to_numpy())
        v = v[np.isfinite(v.to_numpy())]
        return v[~v.index.duplicated()]

    a, b = by_seed(where), by_seed(than)
    seeds = sorted(set(a.index) & set(b.index))
    return (a.loc[seeds] - b.loc[seeds]).to_numpy(float)


def _t_interval(d: np.ndarray) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t :data:`CONFIDENCE` interval of a mean (no interval below two values)."""
    from scipy import stats

    m = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        return m, math.nan, math.nan
    if np.ptp(d) == 0:
        return m, m, m
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return m, m - half, m + half


def verdict(claim: Claim, low: float, high: float) -> str:
    """``reproduced`` / ``not reproduced`` / ``inconclusive`` for an interval ``[low, high]`` (module docstring)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    t = claim.threshold
    if claim.compare == ">":
        return "reproduced" if low > t else "not reproduced" if high <= t else "inconclusive"
    if claim.compare == "<":
        return "reproduced" if high < t else "not reproduced" if low >= t else "inconclusive"
    lo, hi = t
    if lo <= low and high <= hi:
        return "reproduced"
    return "not reproduced" if high < lo or low > hi else "inconclusive"


def _g(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.3g}"


def evaluate(claims: list[Claim], runs: pd.DataFrame, hist: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per claim: ``claim, paper, expected, measured, estimate, low, high, n, verdict``.

    Parameters
    ----------
    claims : list of Claim
    runs : DataFrame, one row per run
        Finished runs, with a ``run_id`` column and the columns the claims' ``where`` / ``than`` and metrics name.
    hist : DataFrame, optional
        Histories (``run_id, metric, step, value``) of :func:`history_metrics`, for claims at an epoch.

    Returns
    -------
    DataFrame
        ``estimate`` is the mean of the per-run values (of ``where`` minus ``than`` with a second group), ``low`` /
        ``high`` its :data:`CONFIDENCE` interval, ``n`` the runs measured (``"3 vs 3"`` with two groups),
        ``measured`` their text, ``verdict`` one of :data:`VERDICTS`.
    """
    rows = []
    for c in claims:
        values = measure(c, runs, hist)
        sizes = pd.to_numeric(runs.get("replicas", pd.Series(1, index=runs.index)), errors="coerce").fillna(1)

        def group(where):
            idx = _select(runs, where).index
            v, n = values.loc[idx].to_numpy(float), sizes.loc[idx].to_numpy(float)
            return v[np.isfinite(v)], n[np.isfinite(v)]

        def grid(where):
            idx = _select(runs, where).index
            column = runs[c.over] if c.over in runs else pd.Series(np.nan, index=runs.index)
            return _levels(values.loc[idx].to_numpy(float), column.loc[idx].to_numpy(object))

        (a, na), (b, nb) = group(c.where), (group(c.than) if c.than is not None else (None, None))
        if c.over is not None:
            ga, gb = grid(c.where), (grid(c.than) if c.than is not None else None)
            est, low, high = _interval_grid(ga, gb, c.aggregate)
            runs_of = lambda g: f"{sum(s.size for s in g)} runs at {len(g)} {c.over}"  # noqa: E731
            n = runs_of(ga) if gb is None else f"{runs_of(ga)} vs {runs_of(gb)}"
        elif c.paired:
            d = _paired_differences(values, runs, c.where, c.than)
            est, low, high = _t_interval(d)
            n = f"{d.size} seeds, paired"
        elif c.per_replica:
            est, low, high = _interval_pooled(a, na, b, nb)
            n = f"{int(na.sum())} networks" if b is None else f"{int(na.sum())} vs {int(nb.sum())} networks"
        else:
            est, low, high = _interval(a, b)
            n = f"{a.size}" if b is None else f"{a.size} vs {b.size}"
        what = "difference " if c.than is not None else ""
        measured = f"{what}{_g(est)} [{_g(low)}, {_g(high)}]" if math.isfinite(low) else f"{what}{_g(est)} (no interval)"
        t = c.threshold
        expected = f"in [{_g(t[0])}, {_g(t[1])}]" if c.compare == "between" else f"{c.compare} {_g(t)}"
        rows.append(dict(claim=c.claim, paper=c.paper, expected=expected, measured=measured, estimate=est, low=low,
                         high=high, n=n, verdict=verdict(c, low, high)))
    return pd.DataFrame(rows, columns=["claim", "paper", "expected", "measured", "estimate", "low", "high", "n",
                                       "verdict"])


_COLOURS = {"reproduced": "#1a7f37", "not reproduced": "#b42318", "inconclusive": "#9a6700"}


def table_html(rows: pd.DataFrame) -> str:
    """The claim-check table as HTML (claim, paper, expected, measured with 95 % interval, runs, verdict)."""
    head = "<tr><th>claim</th><th>expected</th><th>measured (95 % interval)</th><th>runs</th><th>verdict</th></tr>"
    body = []
    for r in rows.itertuples():
        paper = f"<br><small>{html.escape(r.paper)}</small>" if r.paper else ""
        body.append(f"<tr><td>{html.escape(r.claim)}{paper}</td><td>{html.escape(r.expected)}</td>"
                    f"<td>{html.escape(r.measured)}</td><td>{html.escape(r.n)}</td>"
                    f"<td style='color:{_COLOURS[r.verdict]};font-weight:bold'>{r.verdict}</td></tr>")
    return f"<table class='claims'>{head}{''.join(body)}</table>"


def sections(runs: pd.DataFrame, uri: str, out_dir: str | Path) -> list[tuple[str, str]]:
    """The report's study sections: ``[("Claim check", html), (figure title, html), ...]``; empty without claims.

    The one hook of :func:`nnexp.report.build_report`. Reads the claims from the runs' ``claims`` parameter,
    measures them on the finished runs (histories from the store when a claim needs them), writes
    ``claims.csv``, and adds the study's paper-style figure (:mod:`nnexp.report.paper_figures`) when it has one.
    """
    from .load import load_histories

    ok = runs[runs["outcome"] == "finished"] if "outcome" in runs else runs
    out: list[tuple[str, str]] = []
    out_dir = Path(out_dir)
    try:
        claims = claims_of(runs)
    except (ClaimError, ValueError, SyntaxError) as e:  # a mistake in the experiment file: say so, keep the report
        claims = []
        out.append(("Claim check", f"<p class='note'>nnexp: error: the study's claims cannot be read: "
                    f"{html.escape(str(e))}</p>"))
    if claims:
        need = history_metrics(claims)
        hist = load_histories(uri, list(ok["run_id"]), metrics=need) if need else None
        rows = evaluate(claims, ok, hist)
        rows.to_csv(out_dir / "claims.csv", index=False)
        counts = rows["verdict"].value_counts()
        summary = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts)
        out.append(("Claim check", f"<p>{len(rows)} claims of the paper, measured on {len(ok)} finished runs: "
                    f"{summary}. Intervals are {CONFIDENCE:.0%}: Student t for a mean, Wilson for a fraction, Welch "
                    "for a difference of means; a verdict needs the whole interval on one side of the paper's "
                    "threshold.</p>" + table_html(rows)))
    study = ok["study"].dropna().unique() if "study" in ok else []
    if len(study) == 1 and len(ok):
        from . import paper_figures

        out += paper_figures.sections(str(study[0]), ok, uri, out_dir)
    return out
