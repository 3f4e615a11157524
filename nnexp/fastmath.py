r"""Float64 ``tanh``, ``exp`` and the logistic sigmoid, vectorised, and fused layer kernels, on x86-64 CPUs.

Why
---
NumPy vectorises float64 ``tanh`` and ``exp`` for AVX-512 only (its ``X86_V4`` / ``AVX512_SKX`` dispatch
targets). Below it, on AVX2 CPUs such as an AMD EPYC before Zen 4, each element goes through the C
library's scalar ``tanh``: ``np.tanh`` on digits' 1797 x 128 hidden layer costs 1.4-2.2 ms against 0.38 ms
with AVX-512, as much as the layer's matrix product. ``scipy.special.expit`` is a scalar loop everywhere.
:mod:`nnexp.fastmath_kernels` builds, with llvmlite (numba's LLVM binding, without numba), loops whose
bodies call no C library function (Cody-Waite range reduction, a degree-13 polynomial with FMA, ``2^k``
from the bits of ``k``), so LLVM vectorises them: 0.32 ms for the same ``tanh`` on AVX2, 0.23 ms with
AVX-512 (898 x 128 row blocks, one core: 160 and 114 us against NumPy's 193 us with AVX-512). Accuracy over
the whole float64 range: ``exp`` within 1 ulp of NumPy's, ``tanh`` within 3 ulp, the sigmoid within 4 ulp of
SciPy's (``tests/test_fastmath.py``). An element's bits do not depend on the vector width (AVX2 or AVX-512)
nor on where it sits in the array.

Fused layer kernels
-------------------
What remains of a training step besides the matrix products are passes over the hidden layers' memory.
:func:`bias_activation` does a layer's ``z += b`` and ``a = f(z)`` (tanh, sigmoid) in row chunks that stay in
the L1 cache; :func:`activation_backward` does ``dA *= f'`` from ``a`` and the bias gradient's batch sum in
one pass (no ``f'`` buffer, no separate ``ones @ dA`` product). Used by :class:`nnexp.model.MLP` through
:meth:`nnexp.activations.BoundActivation.bias_forward` / ``backward`` under the same rule as the kernels.

When the kernels are used
-------------------------
:func:`tanh`, :func:`exp` and :func:`expit` take a kernel when :func:`use_kernel` says so, else NumPy's
``np.tanh`` / ``np.exp`` or ``scipy.special.expit``. A kernel is used when all of these hold:

- the array and ``out`` are float64 (NumPy's float32 loops are vectorised on AVX2 already);
- the CPU is x86-64 with AVX2 and FMA3 (:func:`cpu_suits`), whether or not NumPy's runtime has its AVX-512
  float64 loops (:func:`numpy_has_simd_f64`): measured on an AMD EPYC with AVX-512 (digits 64-128-10 tanh,
  one core), nnexp / the five matrix products is 1.39 with the kernels and 1.51-1.56 with NumPy's AVX-512
  loops (its ``tanh`` takes 193 us where the kernel takes 114), so the kernels are taken there too (until
  issue 11's fused kernels they were not);
- the array has at least :data:`MIN_ELEMENTS` elements per replica (the product of its last two axes):
  importing llvmlite and loading the cached kernels costs 0.1-0.2 s per process (0.4-0.6 s the first
  time on a machine, to compile them), which small networks would not win back. The choice depends on a
  replica's shape, never on the number of replicas, so a stacked network stays bit-identical to its
  replicas trained alone (:mod:`nnexp.model`); the row blocks of a large batch (>= 512 rows each) take
  the kernels as the whole batch does as long as a block has :data:`MIN_ELEMENTS` elements;
- llvmlite imports and compiles (a dependency on x86-64 only); otherwise NumPy, silently (:data:`LOAD`
  says why).

``NNEXP_FASTMATH=off`` never uses the kernels, ``on`` uses them for every float64 array whatever the CPU
and size (tests, benchmarks), ``auto`` (the default) as above. The kernels' object code is compiled once
per machine and CPU target into nnexp's user cache (``<cache>/fastmath``, :mod:`nnexp.cache`).
"""

from __future__ import annotations

import functools
import os
import platform
import threading
import time

import numpy as np

__all__ = ["tanh", "exp", "expit", "tanh_derivative", "bias_activation", "activation_backward", "use_kernel",
           "numpy_has_simd_f64", "cpu_suits", "mode", "kernels",
           "MIN_ELEMENTS", "LOAD"]

MIN_ELEMENTS = 8192
"""Elements per replica from which the kernels are used under ``NNEXP_FASTMATH=auto`` (1797 x 128 = 230,016
for digits' hidden layer; 64 x 16 = 1,024 for a moons network's batch)."""

MODES = ("auto", "on", "off")

LOAD: dict = {}
"""How the kernels loaded in this process: ``{"seconds": import + load, "error": str or None, "cached": bool, "cpu": str}``; empty until tried."""

_lock = threading.Lock()
_kernels = None


def mode() -> str:
    """``$NNEXP_FASTMATH``: ``auto`` (default), ``on`` or ``off``; ``ValueError`` naming the accepted values otherwise."""
    value = os.environ.get("NNEXP_FASTMATH", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"NNEXP_FASTMATH={value!r} is not known; choose one of: {', '.join(MODES)}")
    return value


def _cpu_features() -> dict:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return __cpu_features__


def numpy_has_simd_f64(features: dict | None = None) -> bool:
    """Whether NumPy's runtime takes its AVX-512 float64 ``tanh``/``exp`` loops.

    ``features`` is NumPy's ``__cpu_features__`` (default: this process's). NumPy >= 2.3 names the level
    ``X86_V4``, older NumPy ``AVX512_SKX``; a target disabled by ``NPY_DISABLE_CPU_FEATURES`` reads False.
    """
    features = _cpu_features() if features is None else features
    return bool(features.get("X86_V4", features.get("AVX512_SKX", False)))


def cpu_suits(features: dict | None = None, machine: str | None = None) -> bool:
    """Whether the kernels run here: x86-64 with AVX2 and FMA3 (with or without NumPy's AVX-512 loops, which
    they beat too; see the module docstring)."""
    features = _cpu_features() if features is None else features
    machine = (platform.machine() if machine is None else machine).lower()
    return machine in ("x86_64", "amd64") and bool(features.get("AVX2")) and bool(features.get("FMA3"))


def _per_replica(x: np.ndarray) -> int:
    return x.shape[-2] * x.shape[-1] if x.ndim >= 2 else x.size


def use_kernel(x, out=None, *, features: dict | None = None, machine: str | None = None,
               fastmath: str | None = None) -> bool:
    """Whether :func:`tanh`, :func:`exp`, :func:`expit` take a kernel for ``x`` (see the module docstring).

    ``features``, ``machine`` and ``fastmath`` stand for NumPy's CPU features, ``platform.machine()`` and
    ``$NNEXP_FASTMATH`` (defaults: this process's). Does not import llvmlite.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        return False
    if out is not None and (not isinstance(out, np.ndarray) or out.dtype != np.float64 or out.shape != x.shape):
        return False
    fastmath = mode() if fastmath is None else fastmath
    if fastmath != "auto":
        return fastmath == "on"
    if _per_replica(x) < MIN_ELEMENTS:
        return False
    return _this_cpu_suits() if features is None and machine is None else cpu_suits(features, machine)


@functools.cache
def _this_cpu_suits() -> bool:
    return cpu_suits()


def kernels():
    """The compiled kernels (:class:`nnexp.fastmath_kernels.Kernels`), loaded on first call; None when they cannot be.

    The first call in a process imports llvmlite and loads the kernels' object code from nnexp's user
    cache (``<cache>/fastmath``, :mod:`nnexp.cache`), compiling it when absent; :data:`LOAD` records the
    seconds it took and whether the cache had it, or the error (then NumPy does the work).
    """
    global _kernels
    if _kernels is not None or LOAD:
        return _kernels
    with _lock:
        if _kernels is not None or LOAD:
            return _kernels
        t0 = time.perf_counter()
        try:
            from . import fastmath_kernels
            from .cache import cache_dir

            loaded = fastmath_kernels.load(cache_dir("fastmath"))
        except Exception as e:  # llvmlite missing or unable to compile: NumPy does the work
            LOAD.update(seconds=time.perf_counter() - t0, error=f"{type(e).__name__}: {e}")
            return None
        LOAD.update(seconds=time.perf_counter() - t0, error=None, **loaded.info)
        _kernels = loaded
        return _kernels


def _pieces(x: np.ndarray, out: np.ndarray):
    """``x`` and ``out`` as pairs of 1-D contiguous views (one per replica when the stack is not contiguous), or None."""
    if x.flags.c_contiguous and out.flags.c_contiguous:
        return [(x.reshape(-1), out.reshape(-1))]
    if x.ndim < 3:
        return None
    pairs = []
    for idx in np.ndindex(*x.shape[:-2]):
        xi, oi = x[idx], out[idx]
        if not (xi.flags.c_contiguous and oi.flags.c_contiguous):
            return None
        pairs.append((xi.reshape(-1), oi.reshape(-1)))
    return pairs


def _apply(name: str, numpy_fn, x, out):
    if out is None and isinstance(x, np.ndarray):
        out = np.empty_like(x)
    k = kernels() if use_kernel(x, out) else None
    pairs = _pieces(x, out) if k is not None else None
    if pairs is None:
        return numpy_fn(x, out=out)
    pair, inplace = getattr(k, name), getattr(k, name + "_inplace")
    for xi, oi in pairs:
        xa, oa = xi.__array_interface__["data"][0], oi.__array_interface__["data"][0]
        if xa == oa:
            inplace(oa, oi.size)
        elif np.may_share_memory(xi, oi):
            numpy_fn(xi, out=oi)
        else:
            pair(xa, oa, oi.size)
    return out


def _scipy_expit(x, out=None):
    from scipy.special import expit as _expit  # 0.2 s to import: on first use only

    return _expit(x, out=out)


def tanh(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r""":math:`\tanh(x)` elementwise, as ``np.tanh(x, out=out)``.

    ``x``: ndarray of any shape; ``out``: None or an array of the same shape and dtype (it may be ``x``).
    Returns ``out`` (a new array when None). Within 3 ulp of ``np.tanh`` when a kernel is used.
    """
    return _apply("tanh", np.tanh, x, out)


def exp(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r""":math:`e^x` elementwise, as ``np.exp(x, out=out)`` (within 1 ulp when a kernel is used; no overflow warning)."""
    return _apply("exp", np.exp, x, out)


def expit(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r"""The logistic sigmoid :math:`1/(1 + e^{-x})`, as ``scipy.special.expit(x, out=out)`` (within 3 ulp with a kernel).

    The kernel computes :math:`e = e^{-|x|}` and returns :math:`1/(1+e)` for :math:`x \ge 0`, :math:`e/(1+e)`
    below, which keeps full relative precision for negative ``x``, as ``expit`` does.
    """
    return _apply("expit", _scipy_expit, x, out)


def _one_minus_square(x, out=None):
    out = np.multiply(x, x, out=out)
    return np.subtract(1, out, out=out)


def tanh_derivative(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    r""":math:`1 - a^2` elementwise (``tanh'`` from ``a = tanh(z)``), as ``np.subtract(1, a * a)``: the same bits.

    With a kernel one pass over memory instead of two; ``out`` must not alias ``a`` partially.
    """
    return _apply("tanh_derivative", _one_minus_square, a, out)


def _stack_address(x: np.ndarray) -> int | None:
    """Address of a (replicas, rows, cols) float64 array whose replicas are each C-contiguous, else None."""
    if x.ndim != 3 or x.dtype != np.float64 or x.strides[2] != 8 or (x.shape[1] > 1 and x.strides[1] != 8 * x.shape[2]):
        return None
    return x.__array_interface__["data"][0]


def _fused(x: np.ndarray, other: np.ndarray, vector: np.ndarray):
    """(kernels, addresses of x, vector, other) when a fused kernel applies to them, else None."""
    if not (isinstance(x, np.ndarray) and isinstance(other, np.ndarray) and isinstance(vector, np.ndarray)):
        return None
    if other.shape != x.shape or x.ndim != 3 or vector.shape != (x.shape[0], 1, x.shape[2]) or not use_kernel(x, other):
        return None
    addresses = (_stack_address(x), _stack_address(vector), _stack_address(other))
    if None in addresses or np.may_share_memory(x, other) or np.may_share_memory(x, vector) \
            or np.may_share_memory(other, vector):
        return None
    k = kernels()
    return None if k is None else (k, addresses)


FUSED = ("tanh", "expit")
"""The activations :func:`bias_activation` and :func:`activation_backward` take."""


def bias_activation(name: str, z: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    r"""``z += b`` then ``out = f(z)`` in one pass over memory, ``f`` the kernel ``name`` (``tanh`` or ``expit``).

    ``z``, ``out``: float64 arrays of shape (n_replicas, n_samples, n_units), each replica's rows C-contiguous
    (row slices of a workspace are); ``b``: (n_replicas, 1, n_units). The same bits as ``z += b`` followed by
    :func:`tanh` / :func:`expit` with a kernel (row chunks of the L1 cache's size: the add, then the function).
    Returns True when done; False, touching nothing, when :func:`use_kernel` says no or the arrays do not fit
    (the caller then does the two steps itself).
    """
    if name not in FUSED:
        raise ValueError(f"no fused kernel for {name!r}; choose one of: {', '.join(FUSED)}")
    got = _fused(z, out, b)
    if got is None:
        return False
    k, (zp, bp, ap) = got
    fn = getattr(k, f"bias_{name}")
    (zs, bs, as_), (_, m, h) = (z.strides[0], b.strides[0], out.strides[0]), z.shape
    for r in range(z.shape[0]):
        fn(zp + r * zs, bp + r * bs, ap + r * as_, m, h)
    return True


def activation_backward(name: str, dA: np.ndarray, a: np.ndarray, db: np.ndarray) -> bool:
    r"""``dA *= f'`` from ``a = f(z)`` and ``db = `` the batch sum of the result, in one pass over memory.

    ``name``: ``tanh`` (:math:`f' = 1 - a^2`, computed as ``1 - a * a``) or ``expit`` (:math:`f' = (1 - a) a`);
    the product has the bits of NumPy's ``dA *= 1 - a * a`` / ``dA *= (1 - a) * a``. ``dA``, ``a``: float64
    (n_replicas, n_samples, n_units), each replica's rows C-contiguous; ``db``: (n_replicas, 1, n_units),
    written with each column's sum over the rows in row order from 0 (``((0 + d_0) + d_1) + ...``: the same bits at
    any vector width, unlike a BLAS product, whose order depends on its kernel). Returns True when done; False,
    touching nothing, when :func:`use_kernel` says no or the arrays do not fit.
    """
    if name not in FUSED:
        raise ValueError(f"no fused kernel for {name!r}; choose one of: {', '.join(FUSED)}")
    got = _fused(dA, a, db)
    if got is None:
        return False
    k, (dp, bp, ap) = got
    fn = getattr(k, f"{name}_backward")
    (ds, bs, as_), (_, m, h) = (dA.strides[0], db.strides[0], a.strides[0]), dA.shape
    for r in range(dA.shape[0]):
        fn(dp + r * ds, ap + r * as_, bp + r * bs, m, h)
    return True
