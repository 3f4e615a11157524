"""Composing the jobs' configs in a sweep's process: Hydra's basic launcher against nnexp's (nnexp/launcher.py).

Hydra's basic launcher composes each job with ``ConfigLoaderImpl.load_sweep_config``; nnexp's composes each
distinct set of config-group choices once and applies the other overrides to a copy
(:class:`nnexp.launcher.JobConfigs`). This times both, in one process, on issue 11's 27-run moons study: packed
(the default: 3 jobs of 9 replicas, one per activation, so 3 distinct group choices) and unpacked
(``hydra.sweeper.pack=false``: 27 jobs, still 3 distinct group choices). CPU time of this thread, best of
``--rounds`` (a fresh :class:`JobConfigs` each round, so its first reads of the config files are counted).

    python benchmarks/bench_launcher.py [--rounds 5] [--json]

2026-11-30, 2 cores, load ~4: packed 0.26 s (Hydra) / 0.20 s (nnexp); unpacked 2.35 s / 0.37 s. In the command
itself (``python -m nnexp -m ...``, main thread CPU time in job-config work, load ~4): packed 0.30-0.33 s /
0.23-0.24 s, unpacked 3.56 s / 0.42 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

STUDY = ["activation=sigmoid,tanh,relu", "optimizer.lr=0.01,0.1,1.0", "seed=0,1,2", "dataset=moons", "epochs=200",
         "model.hidden_sizes=[16]", "batch_size=64", "tracking.progress=false"]


def _jobs(pack: bool) -> list[list[str]]:
    """The study's jobs as nnexp's sweeper gives them to the launcher (Hydra's cartesian product, then packed)."""
    from nnexp.packing import pack_jobs

    jobs = [[f"activation={a}", f"optimizer.lr={lr}", f"seed={s}", *STUDY[3:]]
            for a in ("sigmoid", "tanh", "relu") for lr in ("0.01", "0.1", "1.0") for s in "012"]
    return pack_jobs(jobs)[0] if pack else jobs


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from nnexp.config import register
    from nnexp.launcher import JobConfigs
    from nnexp.packing import register_plugin

    register()
    register_plugin()
    out = {}
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        loader = hydra.config_loader
        for pack in (True, False):
            argv_ = STUDY + ([] if pack else ["hydra.sweeper.pack=false"])
            master = hydra.compose_config("config", argv_, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
            jobs = _jobs(pack)
            best = {"hydra": float("inf"), "nnexp": float("inf")}
            for _ in range(args.rounds):
                for name in best:
                    t = time.thread_time()
                    if name == "hydra":
                        for job in jobs:
                            loader.load_sweep_config(master, job)
                    else:
                        compose = JobConfigs(loader, master)
                        for job in jobs:
                            compose(job)
                    best[name] = min(best[name], time.thread_time() - t)
            row = "packed" if pack else "unpacked"
            out[row] = {"jobs": len(jobs), "hydra_s": round(best["hydra"], 4), "nnexp_s": round(best["nnexp"], 4)}
            print(f"{row:9s} {len(jobs):3d} jobs: Hydra's load_sweep_config {best['hydra']:.3f} s, "
                  f"nnexp's JobConfigs {best['nnexp']:.3f} s (CPU, best of {args.rounds})")
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
