"""nnexp's speed and memory benchmarks: competitors timed side by side in one run, reported as ratios.

Usage::

    python benchmarks/run.py                      # every section, a table each
    python benchmarks/run.py --json               # the same, then one JSON object on the last line
    python benchmarks/run.py --quick              # fewer epochs and repeats (a smoke run, about a minute)
    python benchmarks/run.py --only trainer,replicas

Sections
--------
trainer
    Milliseconds per epoch of full-batch SGD (lr 0.1, momentum 0, no weight decay) on the same data and
    architecture: nnexp (``bare``: no metrics until the last epoch; ``logged``: metrics every epoch,
    with a validation pass over a fifth of the samples;
    ``logged+diag``: metrics and per-layer diagnostics every epoch), scikit-learn's ``MLPClassifier``
    (``solver="sgd"``, ``batch_size=n``, ``momentum=0``, ``alpha=0``, ``shuffle=False``), PyTorch on the CPU
    when installed, and the GEMM floor: the five matrix products of one training step alone
    (``np.matmul(..., out=)`` into preallocated arrays: two forward, ``dW2``, ``dA1``, ``dW1``; no
    gradient with respect to the inputs), BLAS threading them as it will. On digits three more rows: nnexp
    with ``threads=1`` and one BLAS thread (its two row blocks in turn, as in a parallel sweep's job), the GEMM
    floor on one BLAS thread (both timed in CPU seconds of the process; the one-core pair is what goal 3 of
    issue 11 is read from when the machine is
    loaded: multithreaded BLAS suffers most from other processes), and the GEMM floor as nnexp
    schedules a batch of 1024 rows or more: the products per row block, the two blocks on two threads with
    one BLAS thread each. Digits 64-128-10 tanh with softmax cross-entropy (all 1797
    samples, standardised) for 500 epochs and XOR 2-8-1 tanh with a sigmoid output for 2000 epochs,
    in float64 and float32. Each timing is the best of ``--repeats`` rounds, the competitors interleaved.
replicas
    nnexp with K = 1, 4, 16 seed replicas trained as one batch (XOR 2-8-1, digits 64-128-10):
    cost per epoch relative to K = 1.
harness
    A whole ``python -m nnexp -m ...`` digits sweep (3 activations x 3 seeds) in a temporary
    directory, split into start-up (process start to the sweep's parent run: imports, store set-up),
    per job set-up, training, metric logging (the ``nnexp.seconds.*`` tags of each run), and the
    rest, once with metrics every epoch and once every 10 epochs; then the joblib launcher with 2
    workers against the basic launcher on CPU-bound sweeps (mini-batch jobs of 3000 epochs, one metric point
    each): 4 jobs, and 16 jobs (without ``--quick``), since each worker's start-up (about 3 s of imports)
    is a fixed cost that a longer sweep spreads thinner.
    nnexp's user cache (store template, prepared datasets; ``$NNEXP_CACHE_DIR``) is used as it is, and
    the output says whether it was warm at the start. Under the basic launcher "metric logging" is
    what a job waits for its metrics; a writer process stores them on the other core meanwhile.
study
    Issue 11's small study, 27 runs on moons (``activation=sigmoid,tanh,relu optimizer.lr=0.01,0.1,1.0`` x the
    seeds 0, 1, 2, 200 epochs, ``model.hidden_sizes=[16]``, ``batch_size=64``), as ``python -m nnexp -m ...``
    with its report, against its conventional peer ``benchmarks/conventional/study.py`` (Hydra's basic
    launcher, scikit-learn's ``MLPClassifier.partial_fit`` per epoch, ``mlflow.log_metric`` per metric and epoch
    into SQLite): wall time of each in a fresh folder, alternated over ``--study-rounds`` rounds (the best of
    each kept), and their ratio (goal 1: at least 15); nnexp's wall split into start-up, job set-up, training,
    metric logging, the rest of each job, and what follows the last job (summary, report); and goal 1's other
    ratio, wall / summed training, against its budget 1.5 x training + 3 s (``goal1`` in the JSON). ``--quick``: 20
    epochs.
memory
    Peak resident memory (``ru_maxrss`` of the child process) of one job training digits:
    ``python -m nnexp`` with MLflow, and the trainer alone.

Emulated CPU without AVX-512: the trainer section runs a second time in a subprocess under
``benchmarks/cpu_emulation.py``'s environment (NumPy without its AVX-512 loops, OpenBLAS's Haswell kernel: an AMD
EPYC of the issue's kind), reported as a second column of ms per epoch and of nnexp / GEMM floor
(``--no-emulation`` leaves it out). The two columns run one after the other, not interleaved: compare the ratios
within each column.

BLAS: on machines that set ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` (a work-around for old
OpenBLAS bugs that slows a current NumPy), the benchmark re-runs itself without both, unless
``--keep-blas-env``; the JSON says which BLAS kernel ran (``threadpoolctl.threadpool_info()``).
Optional competitor: ``pip install torch==2.13.0`` (CPU wheel), or the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SECTIONS = ("trainer", "replicas", "harness", "memory", "study")
LR = 0.1


# --- helpers -----------------------------------------------------------------------------------
SETTLE_S = 0.3


def best_of(fns: dict, repeats: int) -> dict:
    """Run every callable once per round, interleaved; return each one's best (smallest) result.

    Before each call the benchmark sleeps :data:`SETTLE_S`: OpenBLAS's idle worker threads spin for about a
    tenth of a second after their last product, and would otherwise steal a core from the next competitor
    (notably from one that runs its own threads with BLAS limited to one).
    """
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            time.sleep(SETTLE_S)
            best[k] = min(best[k], fn())
    return best


def table(title: str, header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in header]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([f"\n## {title}", line(cells[0]), line(["-" * w for w in widths]), *map(line, cells[1:])])


def digits_data(dtype):
    from sklearn.datasets import load_digits

    d = load_digits()
    scale = d.data.std(axis=0)
    scale[scale == 0] = 1
    X = np.ascontiguousarray((d.data - d.data.mean(axis=0)) / scale, dtype=dtype)
    return X, d.target.astype(np.int64)


def xor_data(dtype):
    return np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype), np.array([0, 1, 1, 0])


def blas_info() -> list[dict]:
    from threadpoolctl import threadpool_info

    return [{k: v for k, v in i.items() if k in ("internal_api", "version", "architecture", "num_threads",
                                                 "threading_layer", "prefix")} for i in threadpool_info()]


# --- trainer -----------------------------------------------------------------------------------
def nnexp_runner(X, y, hidden, epochs, dtype, *, log_every, diagnostics, replicas=1, threads=None):
    from nnexp.activations import get_activation
    from nnexp.data import Dataset
    from nnexp.initializers import get_bias_initializer, get_initializer
    from nnexp.losses import get_loss
    from nnexp.model import MLP
    from nnexp.optimizers import make_optimizer
    from nnexp.train import fit

    n_classes = int(y.max()) + 1
    n_out = 1 if n_classes == 2 else n_classes
    loss = get_loss("binary_cross_entropy" if n_out == 1 else "cross_entropy")
    n_val = max(4, X.shape[0] // 5)  # validation: a fifth of the samples, as in a 60/20/20 split (all of XOR)
    data = Dataset("bench", X, y, X[:n_val], y[:n_val], X[:n_val], y[:n_val], n_classes)
    act = get_activation("tanh")

    def run() -> float:
        rngs = [np.random.default_rng(k) for k in range(replicas)]
        model = MLP([X.shape[1], hidden, n_out], act, replicas=replicas, dtype=dtype)
        model.initialize(get_initializer("xavier_uniform"), get_bias_initializer("zeros", 0.0), rngs, gain=act.gain)
        opt = make_optimizer("sgd", model.params())
        t = time.perf_counter()
        fit(model, loss, opt, lambda e: LR, data, epochs=epochs, rngs=rngs, log_every=log_every,
            diagnostics=diagnostics, threads=threads)
        return (time.perf_counter() - t) / epochs * 1e3

    return run


def numpy_math(run):
    """``run`` with nnexp's kernels switched off (``NNEXP_FASTMATH=off``): NumPy's tanh/exp loops, and none of the
    fused layer kernels (bias add + activation, derivative product + bias gradient)."""
    def with_numpy() -> float:
        old = os.environ.get("NNEXP_FASTMATH")
        os.environ["NNEXP_FASTMATH"] = "off"
        try:
            return run()
        finally:
            if old is None:
                del os.environ["NNEXP_FASTMATH"]
            else:
                os.environ["NNEXP_FASTMATH"] = old

    return with_numpy


def sklearn_runner(X, y, hidden, epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def run() -> float:
        clf = MLPClassifier(hidden_layer_sizes=(hidden,), activation="tanh", solver="sgd", batch_size=X.shape[0],
                            learning_rate_init=LR, momentum=0.0, alpha=0.0, shuffle=False, max_iter=epochs,
                            tol=0.0, n_iter_no_change=epochs + 1, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t = time.perf_counter()
            clf.fit(X, y)
            dt = time.perf_counter() - t
        assert clf.n_iter_ == epochs and clf.coefs_[0].dtype == X.dtype
        return dt / epochs * 1e3

    return run


def torch_runner(X, y, hidden, epochs, threads):
    import torch

    torch.set_num_threads(threads)
    dtype = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}[X.dtype]
    Xt = torch.from_numpy(X)
    n_classes = int(y.max()) + 1
    binary = n_classes == 2
    yt = torch.from_numpy(y.astype(X.dtype)).reshape(-1, 1) if binary else torch.from_numpy(y)
    loss_fn = torch.nn.BCEWithLogitsLoss() if binary else torch.nn.CrossEntropyLoss()

    def run() -> float:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.Tanh(),
                                  torch.nn.Linear(hidden, 1 if binary else n_classes)).to(dtype)
        opt = torch.optim.SGD(net.parameters(), lr=LR)
        t = time.perf_counter()
        for _ in range(epochs):
            opt.zero_grad(set_to_none=False)
            loss_fn(net(Xt), yt).backward()
            opt.step()
        return (time.perf_counter() - t) / epochs * 1e3

    return run


def gemm_floor_runner(X, hidden, n_out, epochs):
    rng = np.random.default_rng(0)
    dt, n = X.dtype, X.shape[0]
    W1, W2 = rng.normal(size=(X.shape[1], hidden)).astype(dt), rng.normal(size=(hidden, n_out)).astype(dt)
    Z1, Z2, dA = np.empty((n, hidden), dt), np.empty((n, n_out), dt), np.empty((n, hidden), dt)
    dW1, dW2 = np.empty_like(W1), np.empty_like(W2)
    mm = np.matmul

    def run() -> float:
        t = time.perf_counter()
        for _ in range(epochs):
            mm(X, W1, out=Z1)
            mm(Z1, W2, out=Z2)
            mm(Z1.T, Z2, out=dW2)
            mm(Z2, W2.T, out=dA)
            mm(X.T, dA, out=dW1)
        return (time.perf_counter() - t) / epochs * 1e3

    return run


def one_blas_thread(run, epochs: int):
    """``run`` with BLAS limited to one thread, timed in CPU seconds of this process (``time.process_time``).

    The single-core timings that load on a shared machine bends least: other processes' time on the core is
    not counted (wall-clock ratios moved by 0.3 between identical runs at load average 15; these by 0.1).
    Milliseconds per epoch, model set-up included (under 0.1 %).
    """
    from threadpoolctl import threadpool_limits

    def limited() -> float:
        with threadpool_limits(1, user_api="blas"):
            t = time.process_time()
            run()
            return (time.process_time() - t) / epochs * 1e3

    return limited


def gemm_blocks_runner(X, hidden, n_out, epochs, threads):
    """The GEMM floor as nnexp schedules a large batch: the five products per row block, blocks on threads
    with one BLAS thread each, then the blocks' weight gradients added (see ``nnexp.model.MLP.gradients``)."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from nnexp.model import row_blocks

    rng = np.random.default_rng(0)
    dt = X.dtype
    W1, W2 = rng.normal(size=(X.shape[1], hidden)).astype(dt), rng.normal(size=(hidden, n_out)).astype(dt)
    blocks = []
    for r0, r1 in row_blocks(X.shape[0]):
        m = r1 - r0
        blocks.append((X[r0:r1], np.empty((m, hidden), dt), np.empty((m, n_out), dt), np.empty((m, hidden), dt),
                       np.empty_like(W1), np.empty_like(W2)))
    mm = np.matmul

    def block(b):
        Xb, Z1, Z2, dA, dW1, dW2 = b
        mm(Xb, W1, out=Z1)
        mm(Z1, W2, out=Z2)
        mm(Z1.T, Z2, out=dW2)
        mm(Z2, W2.T, out=dA)
        mm(Xb.T, dA, out=dW1)

    def run() -> float:
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(max(1, min(threads, len(blocks)) - 1)) as pool:
            t = time.perf_counter()
            for _ in range(epochs):
                futures = [pool.submit(block, b) for b in blocks[1:]]
                block(blocks[0])
                for f in futures:
                    f.result()
                for b in blocks[1:]:
                    blocks[0][4].__iadd__(b[4])
                    blocks[0][5].__iadd__(b[5])
            return (time.perf_counter() - t) / epochs * 1e3

    return run


def bench_trainer(quick: bool, repeats: int) -> dict:
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    threads = max(i["num_threads"] for i in blas_info()) if blas_info() else 1
    problems = [("digits 64-128-10", digits_data, 128, 50 if quick else 500),
                ("xor 2-8-1", xor_data, 8, 200 if quick else 2000)]
    out = {}
    for name, loader, hidden, epochs in problems:
        fns = {}  # both dtypes in the same rounds, so that their ratio does not drift with the machine's load
        for dtype in (np.float64, np.float32):
            X, y = loader(dtype)
            n_out = 1 if y.max() == 1 else int(y.max()) + 1
            key = f"{name} {np.dtype(dtype).name}"
            fns[key, "nnexp bare"] = nnexp_runner(X, y, hidden, epochs, dtype, log_every=epochs, diagnostics=False)
            fns[key, "nnexp logged"] = nnexp_runner(X, y, hidden, epochs, dtype, log_every=1, diagnostics=False)
            fns[key, "nnexp logged+diag"] = nnexp_runner(X, y, hidden, epochs, dtype, log_every=1, diagnostics=True)
            fns[key, "sklearn"] = sklearn_runner(X, y, hidden, epochs)
            fns[key, "gemm floor"] = gemm_floor_runner(X, hidden, n_out, epochs)
            if X.shape[0] >= 1024:  # split into row blocks by nnexp (2 * ROW_BLOCK rows and more)
                fns[key, "gemm floor, row blocks"] = gemm_blocks_runner(X, hidden, n_out, epochs, threads)
                fns[key, "nnexp bare, 1 thread"] = one_blas_thread(nnexp_runner(X, y, hidden, epochs, dtype,
                                                                                log_every=epochs, diagnostics=False,
                                                                                threads=1), epochs)
                fns[key, "gemm floor, 1 thread"] = one_blas_thread(gemm_floor_runner(X, hidden, n_out, epochs), epochs)
                if dtype == np.float64:  # goal 3: the same with NumPy's tanh/exp instead of nnexp.fastmath's
                    fns[key, "nnexp bare, numpy math"] = numpy_math(fns[key, "nnexp bare"])
                    fns[key, "nnexp bare, 1 thread, numpy math"] = numpy_math(fns[key, "nnexp bare, 1 thread"])
            if have_torch:
                fns[key, "torch"] = torch_runner(X, y, hidden, epochs, threads)
        for fn in fns.values():  # warm-up: imports, first allocations, BLAS threads
            fn()
        for (key, impl), ms in best_of(fns, repeats).items():
            out.setdefault(key, {"epochs": epochs, "ms_per_epoch": {}})["ms_per_epoch"][impl] = ms
    return out


FASTMATH_LOAD = """
import json, time
from nnexp import fastmath
k = fastmath.kernels()
print(json.dumps(fastmath.LOAD))
"""


def bench_fastmath(repeats: int) -> dict:
    """nnexp.fastmath on this CPU: whether the trainer takes its kernels, what they cost to load, their speed.

    ``load_cold`` / ``load_warm``: ``fastmath.LOAD`` of a new process with an empty cache folder (the kernels
    compiled) and again with it filled (loaded): the seconds a job pays on its first large ``tanh``.
    ``ms``: one call on digits' hidden layer (1797 x 128) and logits (1797 x 10), float64, one thread; and a
    row block's (898 x 128) hidden-layer passes, NumPy's steps against the fused kernels: ``bias+tanh 898x128``
    (``z += b; a = tanh(z)``) and ``backward 898x128`` (``dA *= 1 - a*a; db = ones @ dA``).
    """
    from nnexp import fastmath

    loads = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NNEXP_CACHE_DIR": tmp}
        for name in ("load_cold", "load_warm"):
            out = subprocess.run([sys.executable, "-c", FASTMATH_LOAD], env=env, capture_output=True, text=True,
                                 check=True)
            loads[name] = json.loads(out.stdout.strip().splitlines()[-1])
    k = fastmath.kernels()
    rng = np.random.default_rng(0)
    hidden, logits = rng.normal(size=(1797, 128)), rng.normal(size=(1797, 10))
    oh, ol = np.empty_like(hidden), np.empty_like(logits)
    fns = {("tanh 1797x128", "numpy"): lambda: np.tanh(hidden, out=oh),
           ("exp 1797x10", "numpy"): lambda: np.exp(logits, out=ol)}
    # repeated calls leave the values in range: b and a are small, so that z and dA barely move
    z, a, dA = hidden[None, :898].copy(), np.empty((1, 898, 128)), rng.normal(size=(1, 898, 128))
    b, db, ones = 1e-9 * rng.normal(size=(1, 1, 128)), np.empty((1, 1, 128)), np.ones((1, 898))
    a_small, deriv = 1e-3 * np.tanh(z), np.empty_like(z)

    def numpy_backward():
        np.multiply(a_small, a_small, out=deriv)
        np.subtract(1, deriv, out=deriv)
        dA.__imul__(deriv)
        np.matmul(ones, dA, out=db)

    fns["bias+tanh 898x128", "numpy"] = lambda: np.tanh(z.__iadd__(b), out=a)
    fns["backward 898x128", "numpy"] = numpy_backward
    if k is not None:
        fns["tanh 1797x128", "kernel"] = lambda: k.tanh(hidden.ctypes.data, oh.ctypes.data, hidden.size)
        fns["exp 1797x10", "kernel"] = lambda: k.exp(logits.ctypes.data, ol.ctypes.data, logits.size)
        fns["bias+tanh 898x128", "kernel"] = lambda: k.bias_tanh(z.ctypes.data, b.ctypes.data, a.ctypes.data, 898, 128)
        fns["backward 898x128", "kernel"] = lambda: k.tanh_backward(dA.ctypes.data, a_small.ctypes.data,
                                                                     db.ctypes.data, 898, 128)

    def timed(fn):
        def run() -> float:
            t = time.perf_counter()
            for _ in range(50):
                fn()
            return (time.perf_counter() - t) / 50 * 1e3
        return run

    ms = {}
    for (what, impl), v in best_of({key: timed(fn) for key, fn in fns.items()}, repeats).items():
        ms.setdefault(what, {})[impl] = v
    return {"kernel_for_digits": fastmath.use_kernel(np.empty((1, 1797, 128))),
            "numpy_has_simd_f64": fastmath.numpy_has_simd_f64(), "mode": fastmath.mode(),
            "kernel_cpu": fastmath.LOAD.get("cpu"), "load_cold": loads["load_cold"], "load_warm": loads["load_warm"],
            "ms": ms}


def trainer_ratios(res: dict) -> dict:
    ratios = {}
    for key, r in res.items():
        ms = r["ms_per_epoch"]
        q = {}
        for mode in ("nnexp bare", "nnexp logged", "nnexp logged+diag"):
            short = mode.split(" ", 1)[1]
            q[f"sklearn/{short}"] = ms["sklearn"] / ms[mode]
            if "torch" in ms:
                q[f"torch/{short}"] = ms["torch"] / ms[mode]
            q[f"{short}/gemm floor"] = ms[mode] / ms["gemm floor"]
        ratios[key] = q
    for name in ("digits 64-128-10", "xor 2-8-1"):
        a, b = res.get(f"{name} float64"), res.get(f"{name} float32")
        if a and b:
            ratios[f"{name} float64/float32"] = {m: a["ms_per_epoch"][m] / b["ms_per_epoch"][m]
                                                 for m in a["ms_per_epoch"] if m in b["ms_per_epoch"]}
    return ratios


def bench_trainer_emulated(quick: bool, repeats: int, threads: int | None) -> dict:
    """The trainer section again, in a subprocess on the emulated CPU without AVX-512 (cpu_emulation.py)."""
    from cpu_emulation import check, haswell_env

    env = {**os.environ, **haswell_env()}
    cmd = [sys.executable, __file__, "--only", "trainer", "--json", "--keep-blas-env", "--no-emulation",
           "--repeats", str(repeats), *(["--quick"] if quick else []), *(["--threads", str(threads)] if threads else [])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"emulated trainer run failed:\n{out.stderr[-3000:]}")
    child = json.loads(out.stdout.strip().splitlines()[-1])
    return {"env": haswell_env(), "check": check(), "blas": child["machine"]["blas"], **child["trainer"]}


GOAL3_PROBLEM = "digits 64-128-10 float64"
GOAL3_TARGET = 1.6


def goal3(trainer: dict) -> dict:
    """Issue 11, goal 3: nnexp (bare) / the five matrix products alone, digits float64, on both kinds of CPU."""
    def ratio(results):
        ms = results[GOAL3_PROBLEM]["ms_per_epoch"]
        return ms["nnexp bare"] / ms["gemm floor"]

    def one_core(results):  # both on one core: what a parallel sweep's job sees, and steadier under load
        ms = results[GOAL3_PROBLEM]["ms_per_epoch"]
        return ms["nnexp bare, 1 thread"] / ms["gemm floor, 1 thread"]

    def numpy_math(results):  # the same pairs with NumPy's tanh/exp: what nnexp.fastmath changes
        ms = results[GOAL3_PROBLEM]["ms_per_epoch"]
        return {"all_cores": ms["nnexp bare, numpy math"] / ms["gemm floor"],
                "one_core": ms["nnexp bare, 1 thread, numpy math"] / ms["gemm floor, 1 thread"]}

    def kernels(fm):
        return {"used": fm["kernel_for_digits"], "cpu": fm["kernel_cpu"],
                "load_cold_s": fm["load_cold"].get("seconds"), "load_warm_s": fm["load_warm"].get("seconds"),
                "tanh_1797x128_ms": fm["ms"]["tanh 1797x128"], "bias_tanh_898x128_ms": fm["ms"]["bias+tanh 898x128"],
                "backward_898x128_ms": fm["ms"]["backward 898x128"]}

    out = {"problem": GOAL3_PROBLEM, "target": GOAL3_TARGET, "this_cpu": ratio(trainer["results"]),
           "this_cpu_one_core": one_core(trainer["results"])}
    if "emulated_haswell" in trainer:
        out["emulated_haswell"] = ratio(trainer["emulated_haswell"]["results"])
        out["emulated_haswell_one_core"] = one_core(trainer["emulated_haswell"]["results"])
    # met only if every pair is: a loaded machine inflates the threaded floor and so flatters its ratio
    out["met"] = all(v <= GOAL3_TARGET for k, v in out.items() if k.startswith(("this_cpu", "emulated_haswell")))
    out["numpy_math"] = {"this_cpu": numpy_math(trainer["results"])}
    out["fastmath"] = {"this_cpu": kernels(trainer["fastmath"])}
    if "emulated_haswell" in trainer:
        out["numpy_math"]["emulated_haswell"] = numpy_math(trainer["emulated_haswell"]["results"])
        out["fastmath"]["emulated_haswell"] = kernels(trainer["emulated_haswell"]["fastmath"])
    return out


# --- replicas ----------------------------------------------------------------------------------
def bench_replicas(quick: bool, repeats: int) -> dict:
    out = {}
    for name, loader, hidden, epochs in [("xor 2-8-1", xor_data, 8, 200 if quick else 2000),
                                         ("digits 64-128-10", digits_data, 128, 10 if quick else 100)]:
        X, y = loader(np.float64)
        for mode, log_every, diag in [("bare", epochs, False), ("logged+diag", 1, True)]:
            fns = {K: nnexp_runner(X, y, hidden, epochs, np.float64, log_every=log_every, diagnostics=diag,
                                   replicas=K) for K in (1, 4, 16)}
            for fn in fns.values():
                fn()
            ms = best_of(fns, repeats)
            out[f"{name} {mode}"] = {"epochs": epochs, "ms_per_epoch": {str(k): v for k, v in ms.items()},
                                     "cost_vs_K1": {str(k): v / ms[1] for k, v in ms.items()}}
    return out


# --- harness -----------------------------------------------------------------------------------
def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def run_sweep(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess, float]:
    t_launch = time.time()
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "nnexp", "-m", *args], cwd=cwd, capture_output=True, text=True,
                       env=_clean_env())
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"sweep failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return wall, p, t_launch


def sweep_breakdown(db: Path, wall: float, t_launch: float) -> dict:
    """Split a finished sweep's wall time using the store: run start/end times and the nnexp.seconds.* tags."""
    con = sqlite3.connect(db)
    try:
        runs = con.execute("SELECT run_uuid, start_time, end_time FROM runs").fetchall()
        tags = dict(((r, k), v) for r, k, v in con.execute(
            "SELECT run_uuid, key, value FROM tags WHERE key LIKE 'nnexp.%'"))
    finally:
        con.close()
    parents = [r for r in runs if tags.get((r[0], "nnexp.kind")) == "sweep"]
    children = [r for r in runs if r not in parents]
    # the runs of one job (several when the sweep packed them, nnexp.packing) share its process and its set-up and
    # training times: count each job once; its logging time is that of its last run (nnexp.app._record)
    by_job: dict[tuple, list[float]] = {}
    for r in children:
        t = lambda key: tags.get((r[0], f"nnexp.{key}"), "nan")  # noqa: E731
        job = (t("pid"), t("seconds.setup"), t("seconds.train"))
        by_job.setdefault(job, []).append(float(t("seconds.log")))
    train = sum(float(j[2]) for j in by_job)
    setup = sum(float(j[1]) for j in by_job)
    log = sum(max(v) for v in by_job.values())
    parent_start = parents[0][1] / 1e3
    last_end = max(r[2] for r in children) / 1e3
    startup = parent_start - t_launch
    after = wall - (last_end - t_launch)
    jobs_span = last_end - parent_start
    n = len(by_job)
    return {
        "runs": len(children), "jobs": n, "wall_s": wall, "startup_s": startup, "train_s": train, "log_s": log,
        "job_setup_s": setup,
        "after_last_job_s": after,
        "per_job_overhead_s": (jobs_span - train) / n,
        "per_job_other_s": (jobs_span - train - log - setup) / n,
        "wall/train": wall / train,
    }


def cache_state() -> dict:
    """Whether nnexp's user cache already held the store template, the digits arrays and an activation gallery
    (else the first sweep makes them)."""
    from nnexp.cache import cache_dir
    from nnexp.tracking import store_template_path

    return {"dir": str(cache_dir("")), "store_template": store_template_path().exists(),
            "digits": any(cache_dir("datasets").glob("digits-*.npz")),
            "gallery": any(cache_dir("figures").glob("activation_gallery-*.png"))}


def bench_harness(quick: bool) -> dict:
    epochs = 200 if quick else 2000
    out = {"cache_at_start": cache_state()}
    with tempfile.TemporaryDirectory(prefix="nnexp-bench-") as tmp:
        if not all(v for k, v in out["cache_at_start"].items() if k != "dir"):
            # a cold cache is filled once per machine (and MLflow version): time that apart, then measure sweeps
            # as every later command runs them
            warm = Path(tmp) / "warm-up"
            warm.mkdir()
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "nnexp", "dataset=digits", "epochs=1", "tracking.progress=false"],
                               cwd=warm, capture_output=True, text=True, env=_clean_env())
            if p.returncode != 0:
                raise RuntimeError(f"warm-up failed ({p.returncode}):\n{p.stderr[-3000:]}")
            out["cache_fill_run_s"] = time.perf_counter() - t
        d = Path(tmp) / "sweep"
        d.mkdir()
        args = ["dataset=digits", "activation=sigmoid,tanh,relu", f"epochs={epochs}", "tracking.report=false",
                "tracking.progress=false"]
        wall, _, t0 = run_sweep(args, d)
        out["sweep"] = {"command": "python -m nnexp -m " + " ".join(args), **sweep_breakdown(d / "mlflow.db", wall, t0)}
        for every in (10,):
            d2 = Path(tmp) / f"sweep_every{every}"
            d2.mkdir()
            a2 = [*args, f"tracking.log_every={every}"]
            wall, _, t0 = run_sweep(a2, d2)
            out[f"sweep log_every={every}"] = {"command": "python -m nnexp -m " + " ".join(a2),
                                               **sweep_breakdown(d2 / "mlflow.db", wall, t0)}
        # CPU-bound: mini-batch training (batches of 64, the default), one metric point per job; a small sweep
        # (4 jobs) and a study-sized one (16 jobs): each loky worker pays a fixed start-up (importing MLflow, Hydra
        # and nnexp, about 3 s), which a longer sweep spreads over more training
        cpu_epochs = 600 if quick else 3000
        common = [f"epochs={cpu_epochs}", f"tracking.log_every={cpu_epochs}", "tracking.diagnostics=false",
                  "tracking.report=false", "tracking.progress=false"]
        sweeps = {"launchers": ["dataset=digits", "activation=tanh,relu", "seed=0,1", *common]}
        if not quick:
            sweeps["launchers, 16 jobs"] = ["dataset=digits", "activation=tanh,relu,sigmoid,elu", "seed=0,1,2,3",
                                            *common]
        for name, cpu in sweeps.items():
            walls = {}
            for launcher, extra in [("basic", []),
                                    ("joblib n_jobs=2", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])]:
                dl = Path(tmp) / f"{name.replace(' ', '').replace(',', '_')}-{launcher.split()[0]}"
                dl.mkdir()
                wall, _, t0 = run_sweep([*cpu, *extra], dl)
                walls[launcher] = {"wall_s": wall, **{k: v for k, v in
                                                      sweep_breakdown(dl / "mlflow.db", wall, t0).items()
                                                      if k in ("jobs", "train_s", "startup_s")}}
            out[name] = {"command": "python -m nnexp -m " + " ".join(cpu)
                         + " [hydra/launcher=joblib hydra.launcher.n_jobs=2]",
                         **walls, "basic/joblib": walls["basic"]["wall_s"] / walls["joblib n_jobs=2"]["wall_s"]}
    return out


# --- study: the 27-run moons study against the conventional script ----------------------------------------------
STUDY_ARGS = ["activation=sigmoid,tanh,relu", "optimizer.lr=0.01,0.1,1.0", "dataset=moons", "model.hidden_sizes=[16]",
              "batch_size=64"]
CONVENTIONAL = Path(__file__).resolve().parent / "conventional" / "study.py"


def bench_study(quick: bool, rounds: int) -> dict:
    """Wall of the 27-run study, nnexp (with its report) against the conventional script, alternated."""
    epochs = 20 if quick else 200
    nnexp_args = [*STUDY_ARGS, f"epochs={epochs}", "tracking.progress=false"]
    conv_cmd = [sys.executable, str(CONVENTIONAL), "-m", f"epochs={epochs}"]
    walls: dict[str, list[float]] = {"nnexp": [], "conventional": []}
    nnexp_parts = []
    cache = cache_state()  # a cold cache (first round) makes the store template, the moons arrays, the gallery
    with tempfile.TemporaryDirectory(prefix="nnexp-study-") as tmp:
        for r in range(rounds):
            d = Path(tmp) / f"nnexp{r}"
            d.mkdir()
            wall, _, t0 = run_sweep(nnexp_args, d)
            walls["nnexp"].append(wall)
            nnexp_parts.append(sweep_breakdown(d / "mlflow.db", wall, t0))
            d = Path(tmp) / f"conventional{r}"
            d.mkdir()
            t = time.perf_counter()
            p = subprocess.run(conv_cmd, cwd=d, capture_output=True, text=True, env=_clean_env())
            if p.returncode != 0:
                raise RuntimeError(f"conventional study failed ({p.returncode}):\n{p.stderr[-3000:]}")
            walls["conventional"].append(time.perf_counter() - t)
            con = sqlite3.connect(d / "mlflow.db")
            try:
                n_runs, n_points = con.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM metrics)"
                                               ).fetchone()
            finally:
                con.close()
            if n_runs != 27:
                raise RuntimeError(f"conventional study stored {n_runs} runs, not 27")
    best = min(range(rounds), key=lambda i: walls["nnexp"][i])
    train = nnexp_parts[best]["train_s"]
    return {"epochs": epochs, "rounds": rounds, "cache_at_start": cache,
            "nnexp_command": "python -m nnexp -m " + " ".join(nnexp_args),
            "conventional_command": "python benchmarks/conventional/study.py -m " + f"epochs={epochs}",
            "nnexp_wall_s": min(walls["nnexp"]), "conventional_wall_s": min(walls["conventional"]),
            "walls_s": walls, "conventional_metric_points": n_points, "nnexp_breakdown": nnexp_parts[best],
            "conventional/nnexp": min(walls["conventional"]) / min(walls["nnexp"]),
            "wall/train": min(walls["nnexp"]) / train,
            # goal 1's budget: 1.5 x the summed training plus a fixed start-up of 3 s
            "budget_s": 1.5 * train + GOAL1_STARTUP_S}


#: Goal 1 of issue 11: the study's wall (with its report) <= 1.5 x its summed training + this fixed start-up, and
#: at least this many times faster than the conventional script.
GOAL1_STARTUP_S = 3.0
GOAL1_SPEEDUP = 15.0


def goal1(study: dict) -> dict:
    """Issue 11, goal 1, from the study section: wall / summed training, wall against its budget, conventional / nnexp."""
    b = study["nnexp_breakdown"]
    return {"wall_s": study["nnexp_wall_s"], "train_s": b["train_s"], "wall/train": study["wall/train"],
            "budget_s": study["budget_s"], "wall/budget": study["nnexp_wall_s"] / study["budget_s"],
            "conventional/nnexp": study["conventional/nnexp"], "target_speedup": GOAL1_SPEEDUP,
            "startup_s": b["startup_s"], "log_s": b["log_s"], "job_setup_s": b["job_setup_s"],
            "per_job_other_s": b["per_job_other_s"], "after_last_job_s (summary, report)": b["after_last_job_s"],
            "epochs": study["epochs"]}


# --- memory ------------------------------------------------------------------------------------
def peak_rss_mb(cmd: list[str], cwd: Path) -> float:
    """Peak resident memory of ``cmd``, measured by a small wrapper process.

    The wrapper starts ``cmd`` and reads ``RUSAGE_CHILDREN``: a child's ``ru_maxrss`` counts the pages
    it had right after ``fork``, so starting it straight from this (large) process would report ours.
    """
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
               "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    p = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=cwd, env=_clean_env(), capture_output=True,
                       text=True)
    code, kib = p.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{cmd} failed: {p.stderr[-2000:]}")
    return int(kib) / 1024  # KiB on Linux


TRAINER_ONLY = """
import numpy as np
from nnexp.data import load
from nnexp.activations import get_activation
from nnexp.initializers import get_initializer, get_bias_initializer
from nnexp.losses import get_loss
from nnexp.model import MLP
from nnexp.optimizers import make_optimizer
from nnexp.train import fit
data = load("digits")
rngs = [np.random.default_rng(0)]
m = MLP([64, 64, 10], get_activation("tanh"))
m.initialize(get_initializer("xavier_uniform"), get_bias_initializer("zeros", 0.0), rngs, gain=1.0)
fit(m, get_loss("cross_entropy"), make_optimizer("sgd", m.params()), lambda e: 0.1, data, epochs=200, rngs=rngs,
    batch_size=64)
"""


def bench_memory(quick: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="nnexp-mem-") as tmp:
        job = [sys.executable, "-m", "nnexp", "dataset=digits", f"epochs={50 if quick else 200}",
               "tracking.progress=false"]
        return {"job_mb": peak_rss_mb(job, Path(tmp)), "job_command": " ".join(job[1:]),
                "trainer_only_mb": peak_rss_mb([sys.executable, "-c", TRAINER_ONLY], Path(tmp)),
                "python_numpy_mb": peak_rss_mb([sys.executable, "-c", "import numpy"], Path(tmp))}


# --- main --------------------------------------------------------------------------------------
def report_tables(res: dict) -> str:
    parts = []
    if "trainer" in res:
        rows = []
        for key, r in res["trainer"]["results"].items():
            ms = r["ms_per_epoch"]
            for comp, v in ms.items():
                rows.append([key, comp, v, ms["sklearn"] / v, ms["torch"] / v if "torch" in ms else "-",
                             v / ms["gemm floor"]])
        parts.append(table("trainer: ms per epoch (full batch SGD); speed-up = competitor time / this time",
                           ["problem", "implementation", "ms/epoch", "sklearn/this", "torch/this", "this/gemm floor"],
                           rows))
        f = res["trainer"]["ratios"]
        rows = [[k, *(f[k].get(m, float("nan")) for m in ("nnexp bare", "nnexp logged", "nnexp logged+diag",
                                                          "sklearn", "torch", "gemm floor"))]
                for k in f if "float64/float32" in k]
        parts.append(table("trainer: float64 time / float32 time",
                           ["problem", "bare", "logged", "logged+diag", "sklearn", "torch", "gemm floor"], rows))
        emu = res["trainer"].get("emulated_haswell")
        if emu:
            rows = []
            for key, r in res["trainer"]["results"].items():
                e = emu["results"][key]["ms_per_epoch"]
                for comp, v in r["ms_per_epoch"].items():
                    rows.append([key, comp, v, v / r["ms_per_epoch"]["gemm floor"], e[comp], e[comp] / e["gemm floor"]])
            parts.append(table("trainer: this CPU against an emulated CPU without AVX-512 (OpenBLAS "
                               f"{'/'.join(emu['check']['blas'])}, NumPy without {emu['env']['NPY_DISABLE_CPU_FEATURES']})",
                               ["problem", "implementation", "ms/epoch", "this/gemm floor", "emulated ms/epoch",
                                "emulated this/gemm floor"], rows))
    if "replicas" in res:
        rows = [[k, *(r["ms_per_epoch"][K] for K in ("1", "4", "16")), *(r["cost_vs_K1"][K] for K in ("4", "16"))]
                for k, r in res["replicas"].items()]
        parts.append(table("replicas: ms per epoch of K replicas trained as one batch",
                           ["problem", "K=1", "K=4", "K=16", "K=4/K=1", "K=16/K=1"], rows))
    if "harness" in res:
        rows = []
        cs = res["harness"]["cache_at_start"]
        warm = "warm at start" if cs["store_template"] and cs["digits"] else (
            f"cold at start; filled by a one-epoch run first, which took {res['harness']['cache_fill_run_s']:.1f} s")
        parts.append(f"\nnnexp cache {cs['dir']}: {warm}")
        for k, r in res["harness"].items():
            if k.startswith("sweep"):
                rows.append([k, r["jobs"], r["wall_s"], r["startup_s"], r["train_s"], r["log_s"], r["job_setup_s"],
                             r["per_job_overhead_s"], r["after_last_job_s"], r["wall/train"]])
        parts.append(table("harness: digits sweep, 3 activations x 3 seeds, tracking.report=false (seconds)",
                           ["sweep", "jobs", "wall", "start-up", "train (sum)", "log (sum)", "job set-up (sum)",
                            "overhead/job", "after last job", "wall/train"], rows))
        rows = []
        for name, L in res["harness"].items():
            if name.startswith("launchers"):
                rows += [[f"{L['basic']['jobs']} jobs", k, L[k]["wall_s"], L[k]["train_s"],
                          L["basic"]["wall_s"] / L[k]["wall_s"]] for k in ("basic", "joblib n_jobs=2")]
        parts.append(table("harness: CPU-bound sweeps, basic vs joblib launcher",
                           ["sweep", "launcher", "wall s", "train s (sum)", "basic/this"], rows))
    if "study" in res:
        st = res["study"]
        b = st["nnexp_breakdown"]
        parts.append(table(f"study: 27 runs on moons, {st['epochs']} epochs (best of {st['rounds']} rounds, seconds)",
                           ["implementation", "wall", "train (sum)", "conventional/this"],
                           [["nnexp, with its report", st["nnexp_wall_s"], b["train_s"], st["conventional/nnexp"]],
                            ["conventional script", st["conventional_wall_s"], "-", 1.0]]))
        parts.append(table("study: where nnexp's wall goes (seconds)",
                           ["start-up", "job set-up (sum)", "train (sum)", "metric logging (sum)",
                            "other per job (sum)", "after the last job (summary, report)", "wall"],
                           [[b["startup_s"], b["job_setup_s"], b["train_s"], b["log_s"],
                             b["per_job_other_s"] * b["jobs"], b["after_last_job_s"], b["wall_s"]]]))
    if "memory" in res:
        m = res["memory"]
        parts.append(table("memory: peak resident set (MB)", ["process", "MB"],
                           [[m["job_command"], m["job_mb"]], ["trainer only (digits, 200 epochs)", m["trainer_only_mb"]],
                            ["python -c 'import numpy'", m["python_numpy_mb"]]]))
    return "\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object (last line) after the tables")
    ap.add_argument("--quick", action="store_true", help="fewer epochs and repeats")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--repeats", type=int, default=None, help="rounds per timing (default 5, 2 with --quick)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS (and PyTorch) threads for the in-process timings (default: as configured)")
    ap.add_argument("--keep-blas-env", action="store_true", help=f"keep {' and '.join(BLAS_ENV)} if set")
    ap.add_argument("--study-rounds", type=int, default=1, help="rounds of the study section (default 1)")
    ap.add_argument("--no-emulation", action="store_true",
                    help="skip the trainer's second run on an emulated CPU without AVX-512 (cpu_emulation.py)")
    a = ap.parse_args(argv)
    if not a.keep_blas_env and any(k in os.environ for k in BLAS_ENV):
        env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
        env["NNEXP_BENCH_UNSET_BLAS_ENV"] = ",".join(f"{k}={os.environ[k]}" for k in BLAS_ENV if k in os.environ)
        return subprocess.call([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])], env=env)
    sections = [s for s in a.only.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section {unknown[0]}; choose from {', '.join(SECTIONS)}")
    repeats = a.repeats or (2 if a.quick else 5)
    if a.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(a.threads, user_api="blas")
    res: dict = {"machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
                             "platform": platform.platform(), "blas": blas_info(),
                             "unset_blas_env": os.environ.get("NNEXP_BENCH_UNSET_BLAS_ENV", ""),
                             "blas_env": {k: os.environ[k] for k in BLAS_ENV if k in os.environ},
                             "load_average_at_start": os.getloadavg()},
                 "quick": a.quick, "repeats": repeats}
    t0 = time.perf_counter()
    if "trainer" in sections:
        r = bench_trainer(a.quick, repeats)
        res["trainer"] = {"results": r, "ratios": trainer_ratios(r), "fastmath": bench_fastmath(repeats)}
        if not a.no_emulation:
            res["trainer"]["emulated_haswell"] = bench_trainer_emulated(a.quick, repeats, a.threads)
        res["goal3"] = goal3(res["trainer"])
    if "replicas" in sections:
        res["replicas"] = bench_replicas(a.quick, repeats)
    if "harness" in sections:
        res["harness"] = bench_harness(a.quick)
    if "memory" in sections:
        res["memory"] = bench_memory(a.quick)
    if "study" in sections:
        res["study"] = bench_study(a.quick, a.study_rounds)
        res["goal1"] = goal1(res["study"])
    res["seconds"] = time.perf_counter() - t0
    res["machine"]["load_average_at_end"] = os.getloadavg()
    print(report_tables(res))
    if "goal3" in res:
        g = res["goal3"]
        print(f"\ngoal 3 ({g['problem']}, nnexp / matrix products alone, target <= {g['target']}): this CPU "
              f"{g['this_cpu']:.2f} (one core {g['this_cpu_one_core']:.2f})"
              + (f", emulated CPU without AVX-512 {g['emulated_haswell']:.2f} (one core "
                 f"{g['emulated_haswell_one_core']:.2f})" if "emulated_haswell" in g else ""))
        for col, nm in g["numpy_math"].items():
            fm = g["fastmath"][col]
            tanh = fm["tanh_1797x128_ms"]
            print(f"  {col}: without nnexp's kernels (NNEXP_FASTMATH=off) {nm['all_cores']:.2f} (one core "
                  f"{nm['one_core']:.2f}); nnexp.fastmath "
                  f"{'used' if fm['used'] else 'not used'} (compiled for {fm['cpu']}), loads in {fm['load_warm_s']:.2f} s "
                  f"({fm['load_cold_s']:.2f} s compiling); tanh 1797x128 NumPy {tanh['numpy']:.3f} ms"
                  + (f", kernel {tanh['kernel']:.3f} ms" if "kernel" in tanh else "")
                  + "".join(f"; {what} NumPy {fm[key]['numpy']:.3f} ms, fused {fm[key]['kernel']:.3f} ms"
                            for what, key in (("bias+tanh 898x128", "bias_tanh_898x128_ms"),
                                              ("backward", "backward_898x128_ms")) if "kernel" in fm[key]))
    if "goal1" in res:
        g = res["goal1"]
        print(f"\ngoal 1 (27-run moons study, {g['epochs']} epochs, with its report): wall {g['wall_s']:.1f} s = "
              f"{g['wall/train']:.1f} x the summed training {g['train_s']:.1f} s; budget 1.5 x train + "
              f"{GOAL1_STARTUP_S:g} s = {g['budget_s']:.1f} s (wall/budget {g['wall/budget']:.2f}); "
              f"conventional/nnexp {g['conventional/nnexp']:.1f} (target >= {GOAL1_SPEEDUP:g})")
    m = res["machine"]
    print(f"\nBLAS: {m['blas']}; unset for this run: {m['unset_blas_env'] or 'nothing'}; "
          f"load average {m['load_average_at_start'][0]:.2f} -> {m['load_average_at_end'][0]:.2f}; {res['seconds']:.0f} s")
    if a.json:
        print(json.dumps(res, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
