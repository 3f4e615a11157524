"""Hydra callback that brackets a multirun with its MLflow parent run and report.

``on_multirun_start`` runs once in the launching process before any job: it
creates the store and the experiment (so parallel jobs never race on them),
marks runs orphaned by a killed sweep as KILLED, opens the sweep's parent run
and writes its id into the sweep directory, where every job (in this process
or in a launcher's worker) finds it. ``on_multirun_end`` prints a summary,
writes the comparison report and ends the parent run FINISHED: a child that
failed or diverged never ends its parent.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from . import tracking

log = logging.getLogger("nnexp")

#: Outcome of the last multirun in this process: ``{"parent_id", "failed", "finished", ...}``.
LAST_SWEEP: dict = {}


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
        from .app import PARENT_FILE

        launch = Path(config.hydra.runtime.cwd)
        sweep_dir = (launch / config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        uri = tracking.resolve_uri(config.tracking.uri, launch)
        c, exp_id = tracking.prepare_store(uri, config.tracking.experiment)
        killed = tracking.mark_orphans_killed(c, exp_id)
        if killed:
            log.warning("marked %d run(s) left RUNNING by a killed sweep as KILLED", killed)
        overrides = list(config.hydra.overrides.task)
        name = sweep_name(launch, sweep_dir)
        parent = tracking.start_run(c, exp_id, run_name=f"sweep {name}", tags={
            f"{tracking.TAG}kind": "sweep", f"{tracking.TAG}sweep": name,
            f"{tracking.TAG}sweep_dir": str(sweep_dir), f"{tracking.TAG}overrides": " ".join(overrides),
            f"{tracking.TAG}command": " ".join(["python -m nnexp -m", *overrides]),
            **({f"{tracking.TAG}study": config.study} if config.get("study") else {}),
        })
        sweep_params = {f"sweep.{k}": v for k, v in (config.hydra.sweeper.get("params") or {}).items()}
        for o in overrides:
            k, _, v = o.partition("=")
            sweep_params[f"sweep.{k.lstrip('+~')}"] = v
        if sweep_params:
            tracking.log_params(c, parent, sweep_params)
        if str(config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher"):
            tracking.start_metric_writer(uri)  # jobs run in this process, one core busy: metrics written on another
        (sweep_dir / PARENT_FILE).write_text(parent)
        LAST_SWEEP.clear()
        LAST_SWEEP.update(parent_id=parent, uri=uri, experiment=config.tracking.experiment, experiment_id=exp_id,
                          sweep=name, sweep_dir=str(sweep_dir))
        log.info("sweep %s: parent run %s in experiment %r at %s", name, parent, config.tracking.experiment, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not LAST_SWEEP:
            return
        uri, parent = LAST_SWEEP["uri"], LAST_SWEEP["parent_id"]
        tracking.stop_metric_writer(uri)  # every job flushed its metrics through it before ending its runs
        c = tracking.client(uri)
        launch = Path(config.hydra.runtime.cwd)
        try:
            from .report.load import load_runs, summarize_outcomes

            lost = tracking.end_orphan_children(c, LAST_SWEEP["experiment_id"], parent, "FAILED")
            if lost:
                log.warning("%d job(s) ended without closing their run (a worker died?): marked FAILED", lost)
            runs = load_runs(uri, LAST_SWEEP["experiment"], parent_id=parent)
            counts = summarize_outcomes(runs)
            LAST_SWEEP.update(counts)
            print(_summary_text(runs, counts))
            if config.tracking.get("register_model"):  # the best run's model in the Model Registry, alias "best"
                from .mlflow_model import register_best

                v = register_best(c, runs, config.tracking.register_model)
                if v is not None:
                    print(f"model:  models:/{config.tracking.register_model}@best (version {v.version}, run {v.run_id})")
            if config.tracking.report and counts.get("finished", 0) + counts.get("diverged", 0) > 0:
                from .report import build_report

                out = launch / "reports" / LAST_SWEEP["experiment"] / LAST_SWEEP["sweep"]
                try:
                    index = build_report(uri, LAST_SWEEP["experiment"], parent_id=parent, out_dir=out)
                except Exception:  # the runs are safe in the store; say so, and how to retry
                    log.exception("the report could not be built")
                    LAST_SWEEP["report_error"] = True
                    print(f"nnexp: error: the report failed (traceback above); the runs are recorded. Retry with: "
                          f"python -m nnexp.report --experiment {LAST_SWEEP['experiment']} --sweep {LAST_SWEEP['sweep']}",
                          file=sys.stderr)
                else:
                    for f in sorted(out.iterdir()):
                        if f.is_file():
                            tracking.retry(c.log_artifact, parent, str(f), "report")
                    LAST_SWEEP["report"] = str(index)
                    print(f"report: {index}")
        finally:
            tracking.end_run(c, parent, "FINISHED")
            LAST_SWEEP["ended"] = "FINISHED"
        if uri.startswith(("http://", "https://")):
            print(f"runs:   {uri}")
        else:
            print(f"runs:   mlflow ui --backend-store-uri {uri} --host 127.0.0.1")


def abort_sweep(status: str = "KILLED") -> int:
    """End the parent run of the multirun in progress, and its children still RUNNING, with ``status``.

    Called when a sweep is interrupted (Ctrl-C): a job's own handler marks its
    run, but the jobs not yet started never will, and the parent would stay
    RUNNING. Returns the number of runs marked (0 when no sweep is open).
    """
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


def _summary_text(runs, counts) -> str:
    lines = [f"sweep finished: {counts.get('finished', 0)} finished, {counts.get('diverged', 0)} diverged, "
             f"{counts.get('failed', 0)} failed, {counts.get('reused', 0)} reused from earlier sweeps"]
    done = runs[runs["outcome"].isin(["finished", "diverged"])] if len(runs) else runs
    if len(done):
        # the swept keys, from every run that trained (a configuration whose runs all diverged keeps its row)
        keys = [k for k in ("activation", "optimizer.lr", "init") if k in done and done[k].nunique() > 1] or ["activation"]
        ok = done[done["outcome"] == "finished"]
        cols = [c for c in ("val_loss", "val_accuracy", "test_accuracy") if c in done]
        table = ok.groupby(keys)[cols].agg(["mean", "std"])
        table.columns = [f"{a} {b}" for a, b in table.columns]
        n = done.groupby(keys)["outcome"].agg(runs="size", diverged=lambda o: int((o == "diverged").sum()))
        table = n.join(table, how="left")
        if len(table.columns) > 2:
            table = table.sort_values(table.columns[2], na_position="last")
        # "-": no value (a std needs two finished runs; a configuration whose runs all diverged has no mean)
        lines.append(table.to_string(float_format=lambda x: f"{x:.4f}", na_rep="-"))
    return "\n".join(lines)
