"""Time :func:`nnexp.report.build_report` on a large synthetic store.

The store imitates a sweep of 4 activations × 3 learning rates × 3
initialisations × 5 seeds = 180 runs of 1000 epochs on a 2-D dataset, with the
metrics a real run logs (losses, accuracies, per-layer diagnostics: 11 metrics,
about 2 million points) and a ``weights.npz`` per run. Nothing is trained: the
curves are exponential decays with noise, logged through MLflow's client
(``log_batch``, 1000 points per call); a few sigmoid runs at the largest
learning rate are marked diverged.

Usage::

    python benchmarks/bench_report.py                 # build the store (cached) and time the report
    python benchmarks/bench_report.py --repeat 3 --json
    python benchmarks/bench_report.py --runs-per-config 1 --epochs 200   # a smaller store

The store is kept in ``benchmarks/results/store-<shape>/`` (git-ignored) and reused.

Each round builds the report twice: as it is built by default (figures rendered in forked child processes while
the next is drawn, PNG only) and the former way (every figure rendered in the report's own process, PNG and SVG);
the JSON gives both, their ratio, and each figure's rendering seconds in the latter.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu")
LRS = (0.01, 0.1, 1.0)
INITS = ("xavier_uniform", "he_normal", "lecun_normal")


def build_store(root: Path, *, seeds: int = 5, epochs: int = 1000, hidden: int = 16) -> tuple[str, str]:
    """Create the synthetic store under ``root``; return ``(uri, parent_run_id)``."""
    from mlflow.entities import Metric, Param

    from nnexp import tracking

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    c, exp_id = tracking.prepare_store(uri, "bench")
    parent = c.create_run(exp_id, run_name="sweep bench", tags={"nnexp.kind": "sweep", "nnexp.sweep": "bench"}).info.run_id
    rng = np.random.default_rng(0)
    steps = np.arange(1, epochs + 1)
    speed = {"sigmoid": 0.3, "tanh": 1.0, "relu": 1.4, "elu": 1.2}
    init_bonus = {"xavier_uniform": 1.0, "he_normal": 1.1, "lecun_normal": 0.95}
    now = int(time.time() * 1000)
    for act, lr, init, seed in itertools.product(ACTIVATIONS, LRS, INITS, range(seeds)):
        tau = 120 / (speed[act] * init_bonus[init] * (lr / 0.1) ** 0.5)
        floor = 0.08 + 0.04 * (act == "sigmoid") + 0.02 * rng.standard_normal() ** 2
        noise = 0.01 * rng.standard_normal(epochs)
        val = floor + 0.6 * np.exp(-steps / tau) + noise
        train = val - 0.02
        acc = 1 - val / 2
        diverged = act == "sigmoid" and lr == 1.0 and seed < 2
        name = f"{act}-sgd-lr{lr:g}-{init}-s{seed}"
        tags = {"activation": act, "init": init, "optimizer": "sgd", "dataset": "moons", "loss": "binary_cross_entropy",
                "mlflow.parentRunId": parent, "nnexp.config_hash": f"{name}",
                "nnexp.outcome": "diverged" if diverged else "finished"}
        if diverged:
            tags["nnexp.diverged_epoch"] = "7"
        run = c.create_run(exp_id, run_name=name, tags=tags)
        rid = run.info.run_id
        params = {"activation.name": act, "optimizer.name": "sgd", "optimizer.lr": lr, "init.name": init,
                  "init.resolved": init, "dataset.name": "moons", "dataset.n_samples": 400, "dataset.noise": 0.2,
                  "dataset.split_seed": 0, "dataset.val_fraction": 0.2, "dataset.test_fraction": 0.2,
                  "dataset.standardize": True, "model.hidden_sizes": f"[{hidden}]", "epochs": epochs, "seed": seed,
                  "n_features": 2, "n_classes": 2, "loss.resolved": "binary_cross_entropy", "batch_size": 64}
        series = {"train_loss": train, "val_loss": val, "val_accuracy": acc, "train_accuracy": acc + 0.01,
                  "layer1.grad_norm": 0.05 * np.exp(-steps / tau) + 0.01 * speed[act],
                  "layer2.grad_norm": 0.2 * np.exp(-steps / tau) + 0.02,
                  "layer1.act_mean": np.full(epochs, 0.1), "layer1.act_std": np.full(epochs, 0.5)}
        if act in ("sigmoid", "tanh"):
            series["layer1.saturation"] = np.clip(0.3 * (1 - np.exp(-steps / 300)) * lr, 0, 1)
        else:
            series["layer1.dead_fraction"] = np.clip(0.1 * lr * (1 - np.exp(-steps / 200)), 0, 1)
        n = epochs
        if diverged:
            n = 7
        metrics = [Metric(k, float(v[i]), now, int(steps[i])) for k, v in series.items() for i in range(n)]
        if not diverged:
            metrics += [Metric("test_accuracy", float(acc[-1]), now, epochs), Metric("test_loss", float(val[-1]), now, epochs)]
        metrics.append(Metric("train_seconds", 30 + 5 * rng.random(), now, epochs))
        c.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()])
        for i in range(0, len(metrics), 1000):
            c.log_batch(rid, metrics=metrics[i:i + 1000])
        with tempfile.TemporaryDirectory() as d:
            w = {"W1": rng.standard_normal((2, hidden)), "b1": rng.standard_normal(hidden) * 0.1,
                 "W2": rng.standard_normal((hidden, 1)), "b2": np.zeros(1),
                 "feature_mean": np.zeros(2), "feature_scale": np.ones(2)}
            np.savez(Path(d) / "weights.npz", **w)
            c.log_artifact(rid, str(Path(d) / "weights.npz"))
        c.set_terminated(rid, "FINISHED")
    c.set_terminated(parent, "FINISHED")
    return uri, parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-per-config", type=int, default=5, help="seeds per configuration (36 configurations)")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=1, help="time the build this many times")
    p.add_argument("--store", help="folder of the store (default benchmarks/results/store-<shape>)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)

    from nnexp.report import build_report

    shape = f"{len(ACTIVATIONS) * len(LRS) * len(INITS) * args.runs_per_config}x{args.epochs}"
    root = Path(args.store) if args.store else Path(__file__).resolve().parent / "results" / f"store-{shape}"
    t = time.perf_counter()
    marker = root / ".complete"
    if not marker.exists():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        uri, parent = build_store(root, seeds=args.runs_per_config, epochs=args.epochs)
        marker.write_text(parent)
    uri, parent = f"sqlite:///{root / 'mlflow.db'}", marker.read_text().strip()
    setup = time.perf_counter() - t
    import matplotlib.pyplot  # noqa: F401 - imports are not the report's work: time them apart
    import mlflow  # noqa: F401
    import scipy.stats  # noqa: F401
    import seaborn  # noqa: F401

    import resource

    from nnexp.report import plots

    def children_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    # the default (figures rendered in forked children, PNG only) against the former way (in the report's process,
    # PNG and SVG), interleaved; per figure, the seconds of rendering it in the report's process (PNG, then SVG)
    variants = {"default": (None, False), "serial, png+svg": (0, True)}
    times: dict = {v: [] for v in variants}
    cpu: dict = {v: [] for v in variants}
    child: dict = {v: [] for v in variants}
    per_figure: dict = {}
    render = plots._render

    def timed_render(fig, out_dir, name, tight, formats=plots.FORMATS):
        t0 = time.perf_counter()
        try:
            return render(fig, out_dir, name, tight, formats)
        finally:
            per_figure[name] = round(time.perf_counter() - t0, 3)

    plots._render = timed_render
    for _ in range(args.repeat):
        for name, (processes, svg) in variants.items():
            plots.PROCESSES = processes
            out = Path(tempfile.mkdtemp(prefix="nnexp-bench-report-"))
            t, c, k = time.perf_counter(), time.process_time(), children_cpu()
            build_report(uri, "bench", parent_id=parent, out_dir=out, svg=svg)
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            child[name].append(children_cpu() - k)
    plots._render, plots.PROCESSES = render, None
    result = {"runs": int(shape.split("x")[0]), "epochs": args.epochs, "store_setup_s": round(setup, 2),
              "build_s_min": round(min(times["default"]), 2), "build_s_median": round(float(np.median(times["default"])), 2),
              "build_cpu_s_min": round(min(cpu["default"]), 2),
              "render_children_cpu_s_min": round(min(child["default"]), 2),
              "serial_png_svg_build_s_min": round(min(times["serial, png+svg"]), 2),
              "serial/default": round(min(times["serial, png+svg"]) / min(times["default"]), 2),
              "render_s_per_figure (serial, png+svg)": per_figure,
              "load_average_1min": round(__import__("os").getloadavg()[0], 1),
              "repeats": args.repeat, "python": platform.python_version(), "report": str(out / "index.html")}
    if args.json:
        print(json.dumps(result))
    else:
        w = max(len(k) for k in result)
        print("\n".join(f"{k:<{w}}  {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
