"""Tracking throughput: SQLite file vs MLflow tracking server on PostgreSQL.

Measures what a sweep asks of the store, without training: ``--workers``
processes each record ``--runs`` runs the way :func:`nnexp.app.run_job` does
(create the run, log ~40 params in one batch, ``--epochs`` x ``--metrics``
metric points through :class:`nnexp.tracking.MetricBuffer`, set the outcome
tags, end the run), and reports runs per minute and metric points per second
per store; then reads the histories back with :func:`nnexp.report.load.load_histories`.

    python benchmarks/bench_tracking.py                     # both stores, JSON + table
    python benchmarks/bench_tracking.py --stores sqlite --runs 50

The server store is started with :mod:`nnexp.team_server` in a temporary
folder (PostgreSQL's ``initdb`` and ``psycopg2`` needed) and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _record_runs(uri: str, experiment_id: str, n_runs: int, epochs: int, n_metrics: int,
                 seed: int) -> tuple[list[str], float]:
    """Record ``n_runs`` runs as a job does; return their ids and the seconds it took (imports excluded)."""
    from nnexp import tracking

    c = tracking.client(uri)
    params = {f"group{i // 8}.key{i}": i * 0.5 for i in range(40)}
    ids = []
    t0 = time.perf_counter()
    for r in range(n_runs):
        run_id = tracking.start_run(c, experiment_id, run_name=f"bench-{seed}-{r}", tags={"nnexp.config_hash": f"{seed}-{r}"})
        tracking.log_params(c, run_id, params)
        buf = tracking.MetricBuffer(c, run_id)
        for e in range(1, epochs + 1):
            buf.add(e, {f"m{k}": 1.0 / (e + k) for k in range(n_metrics)})
        buf.flush()
        tracking.set_tags(c, run_id, {"nnexp.outcome": "finished"})
        tracking.end_run(c, run_id)
        ids.append(run_id)
    return ids, time.perf_counter() - t0


def _worker(args):
    return _record_runs(*args)


def bench_store(uri: str, *, workers: int, runs: int, epochs: int, metrics: int) -> dict:
    from nnexp import tracking
    from nnexp.report.load import load_histories

    c, exp_id = tracking.prepare_store(uri, f"bench-{int(time.time() * 1000)}")
    tasks = [(uri, exp_id, runs, epochs, metrics, w) for w in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_worker, tasks)
    ids = [i for part, _ in parts for i in part]
    write_s = max(seconds for _, seconds in parts)  # the workers record side by side
    t0 = time.perf_counter()
    hist = load_histories(uri, ids, [f"m{k}" for k in range(metrics)])
    read_s = time.perf_counter() - t0
    points = len(ids) * epochs * metrics
    assert len(hist) == points, (len(hist), points)
    return {"runs": len(ids), "points": points, "write_seconds": round(write_s, 2),
            "runs_per_minute": round(len(ids) / write_s * 60, 1), "points_per_second": round(points / write_s),
            "read_seconds": round(read_s, 2), "read_points_per_second": round(points / read_s)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", default="sqlite,server", help="comma-separated: sqlite, server")
    p.add_argument("--workers", type=int, default=2, help="processes recording at once (default: 2)")
    p.add_argument("--runs", type=int, default=30, help="runs per worker (default: 30)")
    p.add_argument("--epochs", type=int, default=60, help="steps per metric (default: 60, nnexp's default epochs)")
    p.add_argument("--metrics", type=int, default=12, help="metrics per step (default: 12, about nnexp's with diagnostics)")
    p.add_argument("--server-workers", type=int, default=2, help="mlflow server worker processes (default: 2)")
    args = p.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average": [round(x, 2) for x in os.getloadavg()]},
               "workload": {"workers": args.workers, "runs_per_worker": args.runs, "epochs": args.epochs,
                            "metrics": args.metrics}}
    tmp = Path(tempfile.mkdtemp(prefix="nnexp-bench-"))
    tmp.chmod(0o755)  # PostgreSQL runs as 'postgres' when this runs as root
    server = None
    try:
        for store in stores:
            if store == "sqlite":
                uri = f"sqlite:///{tmp / 'mlflow.db'}"
            elif store == "server":
                from nnexp.team_server import TeamServer, free_port

                server = TeamServer(tmp, port=free_port(), pg_port=free_port(), workers=args.server_workers)
                uri = server.start()
            else:
                p.error(f"unknown store {store!r}; choose sqlite or server")
            results[store] = bench_store(uri, workers=args.workers, runs=args.runs, epochs=args.epochs,
                                         metrics=args.metrics)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=1))
    cols = ["runs", "points", "write_seconds", "runs_per_minute", "points_per_second", "read_seconds",
            "read_points_per_second"]
    print("\n| store | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1))
    for store in stores:
        print(f"| {store} | " + " | ".join(str(results[store][c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
