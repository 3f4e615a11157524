"""Run ends on a SQLite store: :func:`nnexp.tracking.apply_ends` (one transaction per batch) vs MLflow's client
(:meth:`nnexp.tracking.RunEnd.apply`, ``NNEXP_END_PATH=mlflow``).

Each run end is what a trained moons run of the 27-run study hands to the metric writer: its ``config.yaml`` and
``weights.npz`` artifacts, the three moons dataset inputs, a pyfunc model, four tags, FINISHED. ``--runs`` runs
are ended in batches of ``--batch`` (a packed job hands its 9 ends over together), after one warm-up end per path
(the first model's ``save_model``); the paths alternate ``--repeats`` times, each time in a fresh store. Prints
milliseconds per run end, wall and CPU of this process, best and median over the repeats.

    python benchmarks/bench_run_ends.py                 # 27 runs in batches of 9, 3 repeats
    python benchmarks/bench_run_ends.py --runs 90 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _ends(c, exp: str, folder: Path, inputs: list, n: int) -> list:
    from nnexp import tracking

    parent = tracking.start_run(c, exp, run_name="sweep")
    ids, _ = tracking.start_runs(c, exp, [tracking.NewRun(f"run-{i}", {}, {"seed": i}) for i in range(n)],
                                 parent_id=parent)
    ends = []
    for i, run_id in enumerate(ids):
        out = folder / str(i)
        out.mkdir(parents=True)
        (out / "config.yaml").write_text(f"activation:\n  name: relu\nseed: {i}\nepochs: 200\n")
        np.savez(out / "weights.npz", W0=np.random.default_rng(i).normal(size=(2, 16)), b0=np.zeros(16),
                 W1=np.random.default_rng(i).normal(size=(16, 1)), b1=np.zeros(1))
        model = dict(weights=out / "weights.npz", config=out / "config.yaml", example=np.arange(10.0).reshape(5, 2),
                     n_classes=2, step=200, tags={"activation": "relu", "dataset": "moons"})
        ends.append(tracking.RunEnd(run_id, exp, {"nnexp.outcome": "finished", "nnexp.seconds.setup": "0.1",
                                                  "nnexp.seconds.train": "0.2", "nnexp.seconds.log": "0.01"},
                                    [out / "config.yaml", out / "weights.npz"], inputs, model))
    return ends


def bench(path: str, runs: int, batch: int, inputs: list) -> tuple[float, float]:
    """Milliseconds per run end (wall, CPU) of ``runs`` ends through ``path`` ("sqlite" or "mlflow")."""
    from nnexp import tracking

    root = Path(tempfile.mkdtemp(prefix="nnexp-bench-ends-"))
    c, exp = tracking.prepare_store(f"sqlite:///{root / 'mlflow.db'}", "bench")
    if path == "mlflow":
        os.environ[tracking.END_PATH_ENV] = "mlflow"
    else:
        os.environ.pop(tracking.END_PATH_ENV, None)
    assert tracking.apply_ends(c, _ends(c, exp, root / "warm", inputs, 1)) == [None]
    ends = _ends(c, exp, root / "runs", inputs, runs)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, runs, batch):
        assert tracking.apply_ends(c, ends[i:i + batch]) == [None] * len(ends[i:i + batch])
    return (time.perf_counter() - t0) * 1e3 / runs, (time.process_time() - c0) * 1e3 / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=27)
    parser.add_argument("--batch", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from nnexp.data import load
    from nnexp.mlflow_model import dataset_inputs, warm_up

    warm_up()
    inputs = dataset_inputs(load("moons"), "moons")
    results = {"mlflow": [], "sqlite": []}
    for _ in range(args.repeats):
        for path in results:
            results[path].append(bench(path, args.runs, args.batch, inputs))
    print(f"{args.runs} run ends in batches of {args.batch}, {args.repeats} repeats (load {os.getloadavg()[0]:.2f})")
    for path, times in results.items():
        wall, cpu = zip(*times)
        print(f"{path:7s} ms per run end: wall best {min(wall):6.2f} median {statistics.median(wall):6.2f}, "
              f"CPU best {min(cpu):6.2f} median {statistics.median(cpu):6.2f}")


if __name__ == "__main__":
    main()
