"""The sweep's process outside training: issue 11's 27-run moons study (3 packed jobs of 9 replicas) under nnexp's
basic launcher, timed from the first job's start to the last job's end.

Each round runs ``python -m nnexp -m <study>`` in a fresh temporary folder, in a child process that wraps
:meth:`nnexp.launcher.ComposingLauncher.launch` and :func:`nnexp.app.fit` with timers, and reports for the main
process: ``launch`` (wall seconds of the jobs), ``launch_cpu`` (its CPU seconds, every thread of the process),
``train`` (the training loops, ``History.seconds``), ``callbacks`` (the metric buffering in ``on_epoch``),
``outside`` = ``launch - train`` (what issue 11 asks to cut), ``gc`` (seconds of garbage collection in the
jobs) and ``wall`` (the command). Best and median of ``--rounds``; ``--report`` keeps the report on (its worker
warms up beside the jobs). ``NNEXP_RUN_PATH=create_run`` in the environment creates the runs through MLflow's
``create_run`` (one transaction per run) instead of :func:`nnexp.tracking.start_runs`' one per job.

    python benchmarks/bench_job_overhead.py [--rounds 3] [--report] [--json]

2026-12-01, 2 cores, quiet (load < 1.5), report off, best of 3: before this benchmark's changes (2c93484)
outside 1.22 s of 1.79 s (train 0.55-0.60, callbacks 0.15-0.17, one full collection 0.19 s); after 0.73 s
of 1.26 s (train 0.53-0.55, callbacks 0.05).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

STUDY = ["activation=sigmoid,tanh,relu", "optimizer.lr=0.01,0.1,1.0", "seed=0,1,2", "dataset=moons", "epochs=200",
         "model.hidden_sizes=[16]", "batch_size=64", "tracking.progress=false"]
MARK = "NNEXP_JOB_OVERHEAD "


def _child(argv: list[str]) -> int:
    """Run the command in this process with timers around the launch, training and garbage collection."""
    import atexit
    import gc

    from nnexp import app, launcher

    t = {"launch": 0.0, "launch_cpu": 0.0, "train": 0.0, "callbacks": 0.0, "gc": 0.0}
    state = {"in": False, "gc0": 0.0}

    def on_gc(phase, info):
        if phase == "start":
            state["gc0"] = time.perf_counter()
        elif state["in"]:
            t["gc"] += time.perf_counter() - state["gc0"]

    gc.callbacks.append(on_gc)
    launch, fit = launcher.ComposingLauncher.launch, app.fit

    def timed_launch(self, *a, **k):
        w0, c0, state["in"] = time.perf_counter(), time.process_time(), True
        try:
            return launch(self, *a, **k)
        finally:
            state["in"] = False
            t["launch"] += time.perf_counter() - w0
            t["launch_cpu"] += time.process_time() - c0

    def timed_fit(*a, **k):
        hist = fit(*a, **k)
        t["train"] += hist.seconds
        t["callbacks"] += hist.info.get("callback_seconds", 0.0)
        return hist

    launcher.ComposingLauncher.launch, app.fit = timed_launch, timed_fit
    atexit.register(lambda: print(MARK + json.dumps(t), file=sys.stderr, flush=True))
    sys.argv = ["nnexp", *argv]
    from nnexp.__main__ import main

    return main()


def run_once(report: bool) -> dict:
    argv = ["-m", *STUDY, f"tracking.report={str(report).lower()}"]
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, __file__, "--child", *argv], cwd=d, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"the study failed ({p.returncode}):\n{p.stderr[-2000:]}")
    line = [l for l in p.stderr.splitlines() if l.startswith(MARK)][-1]
    t = json.loads(line[len(MARK):])
    return {**t, "outside": t["launch"] - t["train"], "wall": wall}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        sys.exit(_child(argv[1:]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--report", action="store_true", help="keep the report on")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rounds = [run_once(args.report) for _ in range(args.rounds)]
    out = {"rounds": rounds, "load": os.getloadavg()[0],
           "best": {k: min(r[k] for r in rounds) for k in rounds[0]},
           "median": {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for r in rounds:
            print("  ".join(f"{k} {v:.3f}" for k, v in r.items()))
        print("best   " + "  ".join(f"{k} {v:.3f}" for k, v in out["best"].items()))
        print("median " + "  ".join(f"{k} {v:.3f}" for k, v in out["median"].items()))
    return out


if __name__ == "__main__":
    main()
