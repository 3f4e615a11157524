"""Time hyperparameter importance (nnexp.report.importance) and its parallel-coordinates figure on synthetic runs.

    python benchmarks/bench_importance.py [--json] [--sizes 100,1000] [--fanova]

Synthetic runs: activation (3 levels), a log-spread learning rate that drives the loss, hidden sizes (3 levels)
and a weight decay (noise). Each size is timed over 3 rounds after a warm-up (Optuna's import is paid there),
keeping the best round.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd


def runs(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-4, 0, n)
    return pd.DataFrame({"activation": rng.choice(["sigmoid", "tanh", "relu"], n), "optimizer.lr": lr,
                         "model.hidden_sizes": rng.choice(["[4]", "[16]", "[4, 4]"], n),
                         "optimizer.weight_decay": rng.uniform(0, 1e-3, n),
                         "val_loss": (np.log10(lr) + 1.5) ** 2 + 0.05 * rng.normal(size=n)})


def best_of(fn, rounds: int = 3) -> float:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--fanova", action="store_true", help="also time fANOVA (40 s at 1,000 runs)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnexp.report import importance as imp

    keys = ["activation", "optimizer.lr", "model.hidden_sizes", "optimizer.weight_decay"]
    t = time.perf_counter()
    imp.importance(runs(50), keys, "val_loss")
    result = {"first_call_s": time.perf_counter() - t}
    for n in map(int, args.sizes.split(",")):
        d = runs(n)
        result[f"ped_anova_{n}_s"] = best_of(lambda: imp.importance(d, keys, "val_loss"))
        if args.fanova:
            result[f"fanova_{n}_s"] = best_of(lambda: imp.importance(d, keys, "val_loss", method="fanova"), 1)
        result[f"figure_{n}_s"] = best_of(lambda: (imp.parallel_coordinates(d, keys, "val_loss"), plt.close("all")))
    for k, v in result.items():
        print(f"{k:24s} {v:8.3f}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
