r"""The machine code behind :mod:`nnexp.fastmath`: float64 ``exp``, ``tanh`` and logistic sigmoid loops built with llvmlite.

Imported by :func:`nnexp.fastmath.kernels` only, on first need.

What is built
-------------
One LLVM module with eight C functions, ``void f(double *x, double *out, int64 n)`` computing ``out[i] = f(x[i])``
for ``exp``, ``tanh``, ``expit`` and ``tanh_derivative`` (``1 - x*x``, NumPy's two passes in one) (``x`` and
``out`` must not overlap), and ``void f_inplace(double *x, int64 n)``. Their loop bodies call no C library function, so LLVM's loop vectoriser turns them into SIMD code for the
CPU they are compiled for (AVX2 + FMA3: 4 doubles per instruction; AVX-512: 8). Every step is an IEEE
operation, a ``select`` or a fused multiply-add (``llvm.fma``; no fast-math flags, no implicit contraction),
so an element's result is the same on any x86-64 CPU with FMA, at any vector width, wherever the element
sits in the array.

Why llvmlite and not numba: the same LLVM, without numba's 0.5 s import and 1.2-1.6 s to load six cached
functions per process (measured, 2-core AMD EPYC, load 8). Here importing llvmlite takes 0.06-0.13 s, and
the object code is cached (``<nnexp cache>/fastmath/<key>.o``, a few ms to load; 0.3-0.5 s to build when
absent), keyed by the IR, the llvmlite version, the target triple, CPU name and features.

Algorithm (Cody-Waite range reduction, as in fdlibm's ``e_exp.c``)::

    k = round(t / ln 2)                          by adding and subtracting 1.5 * 2**52
    r = t - k ln2_hi - k ln2_lo                  |r| <= ln(2)/2; ln2_hi has 32 trailing zero bits
    expm1(r) = r + r^2 (1/2! + r/3! + ... + r^11/13!)   Taylor, Horner with FMA; truncation < 1.2e-17 relative
    exp(t) = 2^k (1 + expm1(r))                  2^k from the bits of k, as 2^(k1) 2^(k2) to reach subnormals
    expm1(t) = 2^k expm1(r) + (2^k - 1)
    tanh(x) = sign(x) * (-u / (u + 2)),  u = expm1(-2|x|) in (-1, 0]     (musl's tanh, without its branches)
    sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below,  e = exp(-|x|)

Accuracy against NumPy / SciPy on 4 x 10^7 points (random bit patterns over the whole float64 range,
uniform on [-40, 40] and [-746, 710], N(0, 1); 0, -0, +-inf, nan, subnormals, the overflow and underflow
thresholds): ``exp`` within 1 ulp of ``np.exp``, ``tanh`` within 3 ulp of ``np.tanh``, the sigmoid within
4 ulp of ``scipy.special.expit`` (which returns 0 below -709.78, where this one returns ``exp(x)``,
the subnormal it rounds to). ``tests/test_fastmath.py`` checks 10^6 points.

References
----------
Cody & Waite (1980), "Software Manual for the Elementary Functions", Prentice-Hall;
Sun Microsystems fdlibm ``e_exp.c`` (1993); musl libc ``src/math/tanh.c``.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import time
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

__all__ = ["Kernels", "load", "build_ir", "target", "NAMES"]

NAMES = ("exp", "tanh", "expit", "tanh_derivative")

_D = ir.DoubleType()
_I64 = ir.IntType(64)
_INV_LN2 = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # fdlibm's ln2_hi
_LN2_LO = 1.90821492927058770002e-10
_SHIFT = 6755399441055744.0  # 1.5 * 2**52: t + _SHIFT rounds t to an integer, held in the low bits
_SHIFT_BITS = 0x4338000000000000
_COEFS = [1.0 / math.factorial(n) for n in range(13, 1, -1)]  # 1/13!, ..., 1/2!
_EXP_MAX = 709.782712893384  # exp overflows above it


def _c(v: float) -> ir.Constant:
    return ir.Constant(_D, v)


def _i(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


class _Emit:
    """Emits one element's computation at the builder's position."""

    def __init__(self, b: ir.IRBuilder, mod: ir.Module):
        self.b = b

        def intrinsic(name, n):
            return mod.globals.get(name) or ir.Function(mod, ir.FunctionType(_D, [_D] * n), name)

        self._fma, self._fabs = intrinsic("llvm.fma.f64", 3), intrinsic("llvm.fabs.f64", 1)
        self._copysign = intrinsic("llvm.copysign.f64", 2)

    def fma(self, a, x, y):
        return self.b.call(self._fma, [a, x, y])

    def isnan(self, x):
        return self.b.fcmp_unordered("uno", x, x)

    def clamp(self, x, lo: float, hi: float):
        """x limited to [lo, hi], nan replaced by 0 (the caller puts nan back at the end)."""
        b = self.b
        x = b.select(b.fcmp_ordered(">", x, _c(hi)), _c(hi), x)
        x = b.select(b.fcmp_ordered("<", x, _c(lo)), _c(lo), x)
        return b.select(self.isnan(x), _c(0.0), x)

    def pow2(self, k):
        """2^k for an int64 k in [-1022, 1023], from its bits."""
        return self.b.bitcast(self.b.shl(self.b.add(k, _i(1023)), _i(52)), _D)

    def reduce(self, t):
        """(k, r) with t = k ln2 + r, |r| <= ln2 / 2, k an int64."""
        b = self.b
        y = self.fma(t, _c(_INV_LN2), _c(_SHIFT))
        kf = b.fsub(y, _c(_SHIFT))
        k = b.sub(b.bitcast(y, _I64), _i(_SHIFT_BITS))
        nk = b.fneg(kf)
        return k, self.fma(nk, _c(_LN2_LO), self.fma(nk, _c(_LN2_HI), t))

    def expm1_small(self, r):
        p = self.fma(_c(_COEFS[0]), r, _c(_COEFS[1]))
        for coef in _COEFS[2:]:
            p = self.fma(p, r, _c(coef))
        return self.fma(self.b.fmul(r, r), p, r)

    def exp(self, x):
        b = self.b
        k, r = self.reduce(self.clamp(x, -746.0, 709.8))
        p = b.fadd(_c(1.0), self.expm1_small(r))
        k1 = b.ashr(k, _i(1))
        res = b.fmul(b.fmul(p, self.pow2(k1)), self.pow2(b.sub(k, k1)))
        res = b.select(b.fcmp_ordered(">", x, _c(_EXP_MAX)), _c(math.inf), res)
        return b.select(self.isnan(x), x, res)

    def tanh(self, x):
        b = self.b
        t = self.clamp(b.fmul(_c(-2.0), b.call(self._fabs, [x])), -60.0, 0.0)  # tanh(30) rounds to 1
        k, r = self.reduce(t)
        s = self.pow2(k)
        u = self.fma(s, self.expm1_small(r), b.fsub(s, _c(1.0)))  # expm1(-2|x|)
        res = b.call(self._copysign, [b.fdiv(b.fneg(u), b.fadd(u, _c(2.0))), x])
        return b.select(self.isnan(x), x, res)

    def tanh_derivative(self, a):
        """1 - a*a with two roundings, as NumPy's ``np.subtract(1, a * a)``: the same bits, one pass."""
        return self.b.fsub(_c(1.0), self.b.fmul(a, a))

    def expit(self, x):
        b = self.b
        e = self.exp(b.fneg(b.call(self._fabs, [x])))
        num = b.select(b.fcmp_ordered(">=", x, _c(0.0)), _c(1.0), e)
        res = b.fdiv(num, b.fadd(_c(1.0), e))
        return b.select(self.isnan(x), x, res)


def _loop(mod: ir.Module, name: str, inplace: bool) -> None:
    ptr = _D.as_pointer()
    params = [ptr] if inplace else [ptr, ptr]
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [*params, _I64]), name + ("_inplace" if inplace else ""))
    for arg in fn.args[:-1]:
        arg.add_attribute("noalias")
    x, n = fn.args[0], fn.args[-1]
    out = x if inplace else fn.args[1]
    entry, body, done = (fn.append_basic_block(s) for s in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", n, _i(0)), body, done)
    b.position_at_end(body)
    i = b.phi(_I64)
    i.add_incoming(_i(0), entry)
    value = getattr(_Emit(b, mod), name)(b.load(b.gep(x, [i], inbounds=True)))
    b.store(value, b.gep(out, [i], inbounds=True))
    nxt = b.add(i, _i(1), flags=["nuw", "nsw"])
    i.add_incoming(nxt, body)
    b.cbranch(b.icmp_signed("<", nxt, n), body, done)
    b.position_at_end(done)
    b.ret_void()


def build_ir() -> str:
    """The LLVM IR of the eight functions, as text."""
    mod = ir.Module("nnexp_fastmath")
    for name in NAMES:
        _loop(mod, name, inplace=False)
        _loop(mod, name, inplace=True)
    return str(mod)


def target() -> tuple[str, str]:
    """(CPU name, feature string) to compile for: this CPU, or ``$NNEXP_FASTMATH_CPU`` with its default features.

    ``NNEXP_FASTMATH_CPU=x86-64-v3`` (AVX2 + FMA3, NumPy's ``X86_V3``) is what ``benchmarks/cpu_emulation.py``
    sets to emulate a CPU without AVX-512.
    """
    cpu = os.environ.get("NNEXP_FASTMATH_CPU", "").strip()
    if cpu:
        return cpu, ""
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


class Kernels:
    """The compiled functions as ctypes callables, and how they were obtained.

    ``exp``, ``tanh``, ``expit``: ``(x_address, out_address, n) -> None``; ``exp_inplace``, ...:
    ``(x_address, n) -> None``. Addresses of 1-D contiguous float64 buffers. ctypes releases the GIL
    during each call, so row blocks on threads run them in parallel.
    ``info``: ``{"cpu", "cached", "seconds_build"}``.
    """

    _PAIR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    _ONE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)

    def __init__(self, engine, info: dict):
        self._engine = engine  # owns the machine code: keep it alive as long as the functions
        self.info = info
        for name in NAMES:
            setattr(self, name, self._PAIR(engine.get_function_address(name)))
            setattr(self, name + "_inplace", self._ONE(engine.get_function_address(name + "_inplace")))


def _object_code(tm, text: str) -> bytes:
    mod = llvm.parse_assembly(text)
    mod.triple = llvm.get_process_triple()
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_object(mod)


def load(cache: Path | None) -> Kernels:
    """Compile the kernels for :func:`target` (or load their object code from ``cache``) into this process.

    ``cache``: a folder for the object code, None for none. Raises whatever llvmlite raises when it cannot
    compile (the caller falls back to NumPy).
    """
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    cpu, features = target()
    tm = llvm.Target.from_default_triple().create_target_machine(cpu=cpu, features=features, opt=3, jit=True)
    text = build_ir()
    key = hashlib.sha256("\n".join([text, llvmlite.__version__, llvm.get_process_triple(), cpu,
                                    features]).encode()).hexdigest()[:20]
    path = None if cache is None else cache / f"{key}.o"
    t0 = time.perf_counter()
    obj = path.read_bytes() if path is not None and path.is_file() else None
    cached = obj is not None
    if obj is None:
        obj = _object_code(tm, text)
        if path is not None:
            from .cache import atomic_write

            atomic_write(path, lambda tmp: tmp.write_bytes(obj))
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return Kernels(engine, {"cpu": cpu, "cached": cached, "seconds_build": time.perf_counter() - t0})
