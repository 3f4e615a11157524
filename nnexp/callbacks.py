"""Hydra callback that brackets a multirun with its MLflow parent run and report.

``on_multirun_start`` runs once in the launching process before any job: it
creates the store and the experiment (so parallel jobs never race on them),
marks runs orphaned by a killed sweep as KILLED, opens the sweep's parent run
and writes its id, and the canonical keys the sweep varies (for run names and
console lines), into the sweep directory, where every job (in this process or
in a launcher's worker) finds them; with ``tracking.report`` on it also starts the
report worker (:mod:`nnexp.report.worker`), which loads the report's libraries
while the jobs train. ``on_multirun_end`` prints a summary, writes the comparison
report (in the worker, else in this process) and ends the parent run FINISHED:
a child that failed or diverged never ends its parent.

The summary and the report count configurations the same way: one per
``nnexp.config_id`` (:mod:`nnexp.identity`), labelled by the keys whose
canonical values differ across the sweep's runs, one run per ``nnexp.run_key``.
A sweep in which no run finished (every run diverged, say) still prints its
table and writes its report; the command then exits 3 (see :mod:`nnexp.__main__`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from . import identity, tracking

log = logging.getLogger("nnexp")

#: Outcome of the last multirun in this process: ``{"parent_id", "failed", "finished", ...}``.
LAST_SWEEP: dict = {}
#: The printed summary's last line starts with this, then the varying keys its table leaves out (:func:`label_keys`).
HIDDEN_NOTE = "also differ across these rows:"


def sweep_name(launch_dir: Path, sweep_dir: Path) -> str:
    """A file-safe name for a sweep, from its directory (``multirun/2026-11-29/17-40-12`` -> ``2026-11-29_17-40-12``)."""
    try:
        rel = sweep_dir.resolve().relative_to(launch_dir.resolve())
        parts = rel.parts[1:] if len(rel.parts) > 1 and rel.parts[0] == "multirun" else rel.parts
    except ValueError:
        parts = sweep_dir.parts[-2:]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts)) or "sweep"


class SweepCallback(Callback):
    """Opens and closes the parent run of a multirun; see the module docstring."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from .app import PARENT_FILE, SWEPT_FILE

        launch = Path(config.hydra.runtime.cwd)
        sweep_dir = (launch / config.hydra.sweep.dir).resolve()
        uri = tracking.resolve_uri(config.tracking.uri, launch)
        c, exp_id = tracking.prepare_store(uri, config.tracking.experiment)  # refuses a deleted experiment
        sweep_dir.mkdir(parents=True, exist_ok=True)
        killed = tracking.mark_orphans_killed(c, exp_id)
        if killed:
            log.warning("marked %d run(s) left RUNNING by a killed sweep as KILLED", killed)
        overrides = list(config.hydra.overrides.task)
        name = sweep_name(launch, sweep_dir)
        swept = sweep_keys(overrides, config.hydra.sweeper.get("params") or {})
        parent = tracking.start_run(c, exp_id, run_name=f"sweep {name}", tags={
            f"{tracking.TAG}swept": json.dumps(swept),
            f"{tracking.TAG}kind": "sweep", f"{tracking.TAG}sweep": name,
            f"{tracking.TAG}sweep_dir": str(sweep_dir), f"{tracking.TAG}overrides": " ".join(overrides),
            f"{tracking.TAG}command": shlex.join(["python", "-m", "nnexp", "-m", *launch_overrides(config), *overrides]),
            **({f"{tracking.TAG}study": config.study} if config.get("study") else {}),
        })
        sweep_params = {f"sweep.{k}": v for k, v in (config.hydra.sweeper.get("params") or {}).items()}
        for o in overrides:
            k, _, v = o.partition("=")
            sweep_params[f"sweep.{k.lstrip('+~')}"] = v
        if sweep_params:
            tracking.log_params(c, parent, sweep_params)
        if str(config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher"):
            # jobs run in this process, one core busy: runs recorded on another
            tracking.start_metric_writer(uri, models=bool(config.tracking.get("log_model", True)
                                                          and config.tracking.get("save_weights", True)))
        if config.tracking.report:  # the report's libraries load in their own process while the jobs train
            from .report.worker import start_worker

            start_worker(uri, activations=swept_values(overrides, config.hydra.sweeper.get("params") or {},
                                                       "activation", OmegaConf.select(config, "activation.name")))
        (sweep_dir / SWEPT_FILE).write_text(json.dumps(swept))
        (sweep_dir / PARENT_FILE).write_text(parent)
        LAST_SWEEP.clear()
        LAST_SWEEP.update(parent_id=parent, uri=uri, experiment=config.tracking.experiment, experiment_id=exp_id,
                          sweep=name, sweep_dir=str(sweep_dir), swept=swept)
        log.info("sweep %s: parent run %s in experiment %r at %s", name, parent, config.tracking.experiment, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not LAST_SWEEP:
            return
        uri, parent = LAST_SWEEP["uri"], LAST_SWEEP["parent_id"]
        try:
            tracking.stop_metric_writer(uri)  # it records the runs handed to it: their end, FINISHED or FAILED
        except tracking.StoreUnavailable as e:  # runs neither it nor this process could record: exit 1
            LAST_SWEEP["store_error"] = str(e)
            return
        c = tracking.client(uri)
        launch = Path(config.hydra.runtime.cwd)
        try:
            from .report.load import drop_duplicates, duplicate_jobs, load_runs, summarize_outcomes

            lost = tracking.end_orphan_children(c, LAST_SWEEP["experiment_id"], parent, "FAILED")
            if lost:
                log.warning("%d job(s) ended without closing their run (a worker died?): marked FAILED", lost)
            loaded = load_runs(uri, LAST_SWEEP["experiment"], parent_id=parent)  # the report uses them too
            runs, dropped = drop_duplicates(loaded)
            counts = summarize_outcomes(runs, here=LAST_SWEEP.get("search_parents", ()))
            # runs trained twice (resume off, or parallel jobs), and jobs of this sweep not trained because another
            # of its jobs spelled the same configuration and seed (trained here, or reused from an earlier sweep)
            counts["duplicates"] = len(dropped) + duplicate_jobs(runs, [parent])
            LAST_SWEEP.update(counts)
            # a sweep that trained something but in which no run finished has no usable result (exit status 3)
            LAST_SWEEP["no_result"] = counts.get("finished", 0) == 0
            print(_summary_text(runs, counts, LAST_SWEEP.get("swept", [])))
            if config.tracking.get("register_model"):  # the best run's model in the Model Registry, alias "best"
                from .mlflow_model import register_best

                name = config.tracking.register_model
                try:
                    v = register_best(c, runs, name)
                except tracking.StoreUnavailable:
                    raise
                except Exception as e:  # e.g. the server refuses the name: the runs are safe; the report still follows
                    LAST_SWEEP["register_error"] = True
                    print(f"nnexp: error: tracking.register_model={name!r}: the best run's model was not registered: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
                else:
                    if v is not None:
                        print(f"model:  models:/{name}@best (version {v.version}, run {v.run_id})")
                    else:
                        print(f"model:  none registered under {name!r}: no finished run has a logged model")
            if config.tracking.report and counts.get("finished", 0) + counts.get("diverged", 0) > 0:
                from .report import worker

                out = launch / "reports" / LAST_SWEEP["experiment"] / LAST_SWEEP["sweep"]
                retry = report_command(LAST_SWEEP)
                try:  # in the report worker started with the sweep, else here
                    index = worker.build(worker.current_worker(), uri=uri, experiment=LAST_SWEEP["experiment"],
                                         parent_id=parent, out_dir=out, target=config.tracking.get("report_target"),
                                         ui=config.tracking.get("ui_url") or os.environ.get("NNEXP_UI_URL"),
                                         runs=loaded)
                except KeyboardInterrupt:  # every run is recorded; only the report is missing (see __main__)
                    LAST_SWEEP["report_interrupted"] = True
                    _tag_quietly(c, parent, {f"{tracking.TAG}report": f"interrupted; write it with: {retry}"})
                    raise
                except OSError as e:  # the report's folder cannot be written: one line, not the worker's traceback
                    from .report.__main__ import _under, unwritable_line

                    LAST_SWEEP["report_error"] = True
                    if not _under(e.filename, out):
                        log.exception("the report could not be built")
                        print(f"nnexp: error: the report failed (traceback above); the runs are recorded. Retry with: "
                              f"{retry}", file=sys.stderr)
                    else:
                        print(f"nnexp: error: {unwritable_line(e, out).split('; choose')[0]}; the runs are recorded. "
                              f"Write the report elsewhere with: {retry} --out DIR", file=sys.stderr)
                except Exception:  # the runs are safe in the store; say so, and how to retry
                    log.exception("the report could not be built")
                    LAST_SWEEP["report_error"] = True
                    print(f"nnexp: error: the report failed (traceback above); the runs are recorded. Retry with: "
                          f"{retry}", file=sys.stderr)
                else:
                    tracking.retry(c.log_artifacts, parent, str(out), "report")  # one call: the run looked up once
                    LAST_SWEEP["report"] = str(index)
                    print(f"report: {index}")
        finally:
            _stop_report_worker()
            tracking.end_run(c, parent, "FINISHED")
            LAST_SWEEP["ended"] = "FINISHED"
        from .context import view_url

        if uri.startswith(("http://", "https://")):
            print(f"runs:   {view_url(LAST_SWEEP['experiment_id'], uri.rstrip('/'))}")
        else:
            from .report.build import ui_command, ui_url

            base = ui_url(config.tracking.get("ui_url"))
            print(f"runs:   {ui_command(uri, base)}")
            print(f"        then open {view_url(LAST_SWEEP['experiment_id'], base)}")


def launch_overrides(config: DictConfig) -> list[str]:
    """The command line's overrides of Hydra's own config (``hydra/launcher=joblib hydra.launcher.n_jobs=4``), for
    the sweep's command as the user typed it; ``hydra.mode``, which ``-m`` sets, left out."""
    return [o for o in config.hydra.overrides.get("hydra", []) if not o.startswith("hydra.mode=")]


def report_command(sweep: dict) -> str:
    """The command that writes the report of ``sweep`` (:data:`LAST_SWEEP`) again: after a failed or interrupted one."""
    return shlex.join(["python", "-m", "nnexp.report", "--experiment", str(sweep["experiment"]),
                       "--sweep", str(sweep["sweep"])])


def _tag_quietly(c, run_id: str, tags: dict) -> None:
    """Set ``tags`` on ``run_id``; a store error is logged, never raised (the interrupt that called it goes on)."""
    try:
        tracking.set_tags(c, run_id, tags)
    except Exception:  # noqa: BLE001
        log.debug("could not tag run %s", run_id)


def abort_sweep(status: str = "KILLED") -> int:
    """End the parent run of the multirun in progress, and its children still RUNNING, with ``status``.

    Called when a sweep is interrupted (Ctrl-C): a job's own handler marks its
    run, but the jobs not yet started never will, and the parent would stay
    RUNNING. Returns the number of runs marked (0 when no sweep is open).
    """
    _stop_report_worker()
    if not LAST_SWEEP.get("parent_id") or LAST_SWEEP.get("ended"):
        return 0
    c, parent = tracking.client(LAST_SWEEP["uri"]), LAST_SWEEP["parent_id"]
    tracking.stop_metric_writer(LAST_SWEEP["uri"])
    running = tracking.retry(c.search_runs, [LAST_SWEEP["experiment_id"]],
                             filter_string=f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{parent}'",
                             max_results=5000)
    for r in running:
        tracking.end_run(c, r.info.run_id, status)
    tracking.end_run(c, parent, status)
    LAST_SWEEP["ended"] = status
    return len(running) + 1


def _stop_report_worker() -> None:
    """Stop the sweep's report worker, if one was started (it never outlives its sweep)."""
    mod = sys.modules.get(f"{__package__}.report.worker")
    if mod is not None:
        mod.stop_worker()


def swept_values(overrides: list[str], sweeper_params, key: str, default=None) -> list[str] | None:
    """The values a sweep gives ``key`` (a config group such as ``activation``), as strings, in the order given.

    ``overrides`` and ``sweeper_params`` as for :func:`sweep_keys`; the last override of ``key`` wins. A list of
    values (``activation=relu,tanh``) or ``choice(...)`` gives its values, a plain override its one value, no
    override ``[default]`` (None when ``default`` is None); a sweep whose values depend on the config's options
    (``glob(...)``, ``range(...)`` of a group) gives None.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    texts = [*(f"{k}={v}" for k, v in dict(sweeper_params).items()), *overrides]
    found = None if default is None else [str(default)]
    parser = OverridesParser.create()
    for text in texts:
        try:
            o = parser.parse_override(text)
        except Exception:  # noqa: BLE001 - Hydra has parsed these already
            continue
        if identity.canonical_key(o.key_or_group) != key:
            continue
        if not o.is_sweep_override():
            found = [str(o.value())]
        elif isinstance(o.value(), ChoiceSweep):
            found = [str(v) for v in o.sweep_string_iterator()]
        else:
            found = None
    return found


def sweep_keys(overrides: list[str], sweeper_params) -> list[str]:
    """The canonical keys (:func:`nnexp.identity.canonical_key`) that a sweep's overrides sweep over, seed aside.

    ``overrides`` are the command line's (``activation=relu,tanh``), ``sweeper_params`` the
    ``hydra.sweeper.params`` of the config (``{"seed": "0,1,2"}``); a key is swept when Hydra's parser reads
    its value as a sweep (a list of values, ``range(...)``, ``choice(...)``, ``glob(...)``, ...).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    texts = [*(f"{k}={v}" for k, v in dict(sweeper_params).items()), *overrides]
    keys = []
    parser = OverridesParser.create()
    for text in texts:
        try:
            o = parser.parse_override(text)
        except Exception:  # noqa: BLE001 - Hydra has parsed these already; a name is no reason to stop
            continue
        key = identity.canonical_key(o.key_or_group)
        if o.is_sweep_override() and key not in (None, "seed"):
            keys.append(key)
    return list(dict.fromkeys(keys))


def label_keys(runs, swept: list[str] = ()) -> tuple[list[str], list[str]]:
    """``(shown, hidden)``: the fewest varying keys that tell ``runs``' configurations apart, and the rest.

    The candidates are the keys whose canonical values differ across ``runs`` (:func:`nnexp.report.swept_keys`,
    activation first). ``activation`` and the keys the command line swept (``swept``, as :func:`sweep_keys`
    returns them) are shown whenever they vary; any other varying key is shown only when it splits rows the
    shown keys leave together (``optimizer.lr`` when two configurations differ only in it). A key that changes
    only along with the shown ones (Adam's ``optimizer.beta1`` when the sweep swept ``optimizer=sgd,adam``;
    ``init.gain`` with ``init``) is hidden: grouping by ``shown`` gives one group per ``config_id`` all the same.
    Both lists keep the candidates' order, as the run lines' labels (:func:`nnexp.identity.describe`) do.
    """
    from .report import swept_keys

    keys, linked = swept_keys(runs)
    varying = list(dict.fromkeys(keys + linked))
    first = ["activation", *(k for k in swept if k in varying and k != "activation")]
    ordered = list(dict.fromkeys(first + varying))

    def distinct(cols: list[str]) -> int:
        return len({tuple(repr(identity.comparable(v)) for v in row)
                    for row in zip(*(runs[c] if c in runs else [None] * len(runs) for c in cols))})

    shown: list[str] = []
    for k in ordered:
        # a key that splits no group of the shown ones is a function of them here, now and after later keys
        if k in first or distinct(shown + [k]) > distinct(shown):
            shown.append(k)
    return [k for k in varying if k in shown], [k for k in varying if k not in shown]


def _summary_text(runs, counts, swept: list[str] = ()) -> str:
    """The printed summary: outcome counts, then one row per configuration (``config_id``) with its seeds.

    The configuration columns are the fewest varying keys that tell the configurations apart
    (:func:`label_keys`: the swept ones first); a last line (:data:`HIDDEN_NOTE`) names the varying keys left
    out, which the report's ``summary.csv`` lists. ``seeds`` counts the finished runs.
    """
    import pandas as pd

    line = (f"sweep finished: {counts.get('finished', 0)} finished, {counts.get('diverged', 0)} diverged, "
            f"{counts.get('failed', 0)} failed, {counts.get('reused', 0)} reused from earlier sweeps"
            + (f", {counts['reused_here']} of this sweep's search trials reused as "
               + ("a final seed" if counts["reused_here"] == 1 else "final seeds") if counts.get("reused_here") else ""))
    if counts.get("duplicates"):
        line += f", {counts['duplicates']} duplicate(s) of another job's configuration and seed (counted once)"
    lines = [line]
    if not counts.get("finished", 0):  # exit status 3, unless a job failed (1)
        lines.append("no run finished: the sweep has no usable result"
                     + ("" if counts.get("failed", 0) else " (exit status 3)"))
    done = runs[runs["outcome"].isin(["finished", "diverged"])] if len(runs) else runs
    if len(done):
        # every run that trained: a configuration whose runs all diverged keeps its row
        label, hidden = label_keys(done, swept)
        cols = [c for c in ("val_loss", "val_accuracy", "test_accuracy") if c in done]
        rows = []
        for _, sub in done.groupby("config_id", sort=False):
            ok = sub[sub["outcome"] == "finished"]
            row = {k: identity.format_value(sub[k].iloc[0]) if k in sub else "null" for k in label}
            row.update(runs=len(sub), seeds=len(ok), diverged=int((sub["outcome"] == "diverged").sum()))
            for c in cols:
                v = pd.to_numeric(ok[c], errors="coerce")
                row[f"{c} mean"] = v.mean() if len(v) else float("nan")
                row[f"{c} std"] = v.std() if len(v) > 1 else float("nan")
            rows.append(row)
        table = pd.DataFrame(rows).set_index(label)
        if cols:
            table = table.sort_values(f"{cols[0]} mean", na_position="last")
        # "-": no value (a std needs two finished runs; a configuration whose runs all diverged has no mean)
        lines.append(table.to_string(float_format=lambda x: f"{x:.4f}", na_rep="-"))
        if hidden:
            lines.append(f"{HIDDEN_NOTE} {', '.join(hidden)}")
    return "\n".join(lines)
