r"""The machine code behind :mod:`nnexp.fastmath`: float64 ``exp``, ``tanh`` and logistic sigmoid loops built with llvmlite.

Imported by :func:`nnexp.fastmath.kernels` only, on first need.

What is built
-------------
One LLVM module with C functions:

- ``void f(double *x, double *out, int64 n)`` computing ``out[i] = f(x[i])`` for ``exp``, ``tanh``, ``expit``
  and ``tanh_derivative`` (``1 - x*x``, NumPy's two passes in one) (``x`` and ``out`` must not overlap), and
  ``void f_inplace(double *x, int64 n)``;
- fused layer kernels on a C-contiguous ``rows x cols`` matrix: ``bias_tanh`` / ``bias_expit(z, b, a, rows,
  cols)``, ``z += b`` (``b`` broadcast over the rows) then ``a = f(z)``, by row chunks of :data:`CHUNK`
  elements that stay in the L1 cache; ``tanh_backward`` / ``expit_backward(dA, a, db, rows, cols)``,
  ``dA *= 1 - a*a`` (or ``(1 - a) * a``) and ``db[j] = sum_i dA[i, j]`` in row order, in one pass.

Their loop bodies call no C library function, so LLVM's loop vectoriser turns them into SIMD code for the
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
import re
import time
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

__all__ = ["Kernels", "load", "build_ir", "target", "NAMES"]

NAMES = ("exp", "tanh", "expit", "tanh_derivative")
FUSED_FORWARD = ("tanh", "expit")
"""Activations with a fused ``bias_<name>(z, b, a, rows, cols)``: ``z += b`` (b broadcast over rows), ``a = f(z)``."""
FUSED_BACKWARD = {"tanh": "tanh_derivative", "expit": "expit_derivative"}
"""Activation -> its derivative from ``a``; each has a fused ``<name>_backward(dA, a, db, rows, cols)``:
``dA *= f'``, ``db = sum_rows dA``."""

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

    def expit_derivative(self, a):
        """(1 - a) * a with two roundings, as ``nnexp.activations.sigmoid_derivative``: the same bits."""
        return self.b.fmul(self.b.fsub(_c(1.0), a), a)

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


def _loop2(mod: ir.Module, name: str, n_ptrs: int, bodies, before=None, row_end=None) -> None:
    """``void name(double *p0, ..., int64 rows, int64 cols)`` over a C-contiguous ``rows x cols`` matrix.

    ``before(b, ptrs, col)`` runs first for every column; then, row by row, each of ``bodies``
    (``body(b, ptrs, idx, col)``, ``idx = row * cols + col``) in a loop over the row's columns. Inner loops run
    over columns, so that LLVM vectorises them across columns: a column's operations stay in row order whatever
    the vector width. ``row_end(b, ptrs, row_start_index, cols)`` then ends each row."""
    ptr = _D.as_pointer()
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ptr] * n_ptrs + [_I64, _I64]), name)
    for arg in fn.args[:n_ptrs]:
        arg.add_attribute("noalias")
    ptrs, rows, cols = fn.args[:n_ptrs], fn.args[n_ptrs], fn.args[n_ptrs + 1]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    done = fn.append_basic_block("done")

    def column_loop(emit, *args):
        """A loop over the columns from the builder's position, ``emit(col)`` its body; returns its exit block."""
        start, loop, end = b.block, fn.append_basic_block("cols"), fn.append_basic_block("cols_done")
        b.branch(loop)
        b.position_at_end(loop)
        c = b.phi(_I64)
        c.add_incoming(_i(0), start)
        emit(c)
        nxt = b.add(c, _i(1), flags=["nuw", "nsw"])
        c.add_incoming(nxt, b.block)
        b.cbranch(b.icmp_signed("<", nxt, cols), loop, end)
        b.position_at_end(end)

    ok = fn.append_basic_block("ok")
    b.cbranch(b.icmp_signed(">", cols, _i(0)), ok, done)
    b.position_at_end(ok)
    if before is not None:
        column_loop(lambda c: before(b, ptrs, c))
    outer, pre = fn.append_basic_block("rows"), b.block
    b.cbranch(b.icmp_signed(">", rows, _i(0)), outer, done)
    b.position_at_end(outer)
    r = b.phi(_I64)
    r.add_incoming(_i(0), pre)
    base = b.mul(r, cols, flags=["nuw", "nsw"])
    for body in bodies:
        column_loop(lambda c, body=body: body(b, ptrs, b.add(base, c, flags=["nuw", "nsw"]), c))
    if row_end is not None:
        row_end(b, ptrs, base, cols)
    r_next = b.add(r, _i(1), flags=["nuw", "nsw"])
    r.add_incoming(r_next, b.block)
    b.cbranch(b.icmp_signed("<", r_next, rows), outer, done)
    b.position_at_end(done)
    b.ret_void()


def _at(b: ir.IRBuilder, p, i):
    return b.gep(p, [i], inbounds=True)


CHUNK = 2048
"""Elements of ``z`` per chunk of rows in the fused forward kernels (16 KiB: ``z`` and ``a`` stay in the L1 cache)."""


def _bias_activation(mod: ir.Module, name: str) -> None:
    """``bias_<name>(z, b, a, rows, cols)``: ``z[i, j] += b[j]``, ``a[i, j] = f(z[i, j])``.

    By chunks of ``max(1, CHUNK // cols)`` rows: the chunk's ``z += b``, then the 1-D ``<name>`` loop over the
    chunk (called, not inlined: LLVM vectorises that loop better alone), while the chunk is in the L1 cache.
    """
    one_d = mod.globals[name]
    one_d.attributes.add("noinline")
    ptr = _D.as_pointer()
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr, _I64, _I64]), f"bias_{name}")
    for arg in fn.args[:3]:
        arg.add_attribute("noalias")
    z, bias, a, rows, cols = fn.args
    blocks = {k: fn.append_basic_block(k) for k in ("entry", "chunk", "row", "col", "row_end", "chunk_end", "done")}
    b = ir.IRBuilder(blocks["entry"])
    per = b.sdiv(_i(CHUNK), b.select(b.icmp_signed(">", cols, _i(0)), cols, _i(1)))
    per = b.select(b.icmp_signed(">", per, _i(0)), per, _i(1))
    ok = b.and_(b.icmp_signed(">", rows, _i(0)), b.icmp_signed(">", cols, _i(0)))
    b.cbranch(ok, blocks["chunk"], blocks["done"])
    b.position_at_end(blocks["chunk"])  # rows r0 .. r1 - 1
    r0 = b.phi(_I64)
    r0.add_incoming(_i(0), blocks["entry"])
    r1 = b.add(r0, per)
    r1 = b.select(b.icmp_signed("<", r1, rows), r1, rows)
    b.branch(blocks["row"])
    b.position_at_end(blocks["row"])
    r = b.phi(_I64)
    r.add_incoming(r0, blocks["chunk"])
    base = b.mul(r, cols, flags=["nuw", "nsw"])
    b.branch(blocks["col"])
    b.position_at_end(blocks["col"])
    c = b.phi(_I64)
    c.add_incoming(_i(0), blocks["row"])
    idx = b.add(base, c, flags=["nuw", "nsw"])
    b.store(b.fadd(b.load(_at(b, z, idx)), b.load(_at(b, bias, c))), _at(b, z, idx))
    c_next = b.add(c, _i(1), flags=["nuw", "nsw"])
    c.add_incoming(c_next, blocks["col"])
    b.cbranch(b.icmp_signed("<", c_next, cols), blocks["col"], blocks["row_end"])
    b.position_at_end(blocks["row_end"])
    r_next = b.add(r, _i(1), flags=["nuw", "nsw"])
    r.add_incoming(r_next, blocks["row_end"])
    b.cbranch(b.icmp_signed("<", r_next, r1), blocks["row"], blocks["chunk_end"])
    b.position_at_end(blocks["chunk_end"])
    start = b.mul(r0, cols, flags=["nuw", "nsw"])
    b.call(one_d, [_at(b, z, start), _at(b, a, start), b.mul(b.sub(r1, r0), cols, flags=["nuw", "nsw"])])
    r0.add_incoming(r1, blocks["chunk_end"])
    b.cbranch(b.icmp_signed("<", r1, rows), blocks["chunk"], blocks["done"])
    b.position_at_end(blocks["done"])
    b.ret_void()


def _backward(mod: ir.Module, name: str, derivative: str) -> None:
    """``<name>_backward(dA, a, db, rows, cols)``: ``dA[i, j] *= f'(a[i, j])``, ``db[j] = sum_i dA[i, j]`` (in row
    order from 0: ``((0 + dA[0, j]) + dA[1, j]) + ...``)."""
    def before(b, ptrs, col):
        b.store(_c(0.0), _at(b, ptrs[2], col))

    def body(b, ptrs, idx, col):
        dA, a, db = ptrs
        d = b.fmul(b.load(_at(b, dA, idx)), getattr(_Emit(b, mod), derivative)(b.load(_at(b, a, idx))))
        b.store(d, _at(b, dA, idx))
        b.store(b.fadd(b.load(_at(b, db, col)), d), _at(b, db, col))

    _loop2(mod, f"{name}_backward", 3, [body], before)


INTERLEAVE = {"exp": 4, "tanh": 4, "expit": 2}
"""Vector iterations LLVM interleaves in the 1-D loops (``llvm.loop.interleave.count``; its own choice is 1): the
polynomial is a chain of dependent FMAs, and independent vectors in flight hide its latency. Measured on 898 x 128
(AVX2 / AVX-512, microseconds): tanh 200 -> 160 / 124 -> 114, exp 184 -> 158 / 111 -> 104, expit 224 -> 211 /
137 -> 124 (4 did nothing for expit on AVX2). Each element's operations are unchanged, so are its bits."""


def _interleaved(text: str, name: str, count: int, ident: int) -> str:
    """``text`` with the back edge of function ``name``'s 1-D loop (:func:`_loop`) carrying loop metadata ``!ident``."""
    head = f'define void @"{name}"('
    start = text.index(head)
    end = text.index("\n}", start)
    body = re.sub(r'(br i1 %"[^"]+", label %"loop", label %"done")(?=\ndone:)', rf"\1, !llvm.loop !{ident}",
                  text[start:end], count=1)
    return (text[:start] + body + text[end:]
            + f'\n!{ident} = distinct !{{!{ident}, !{ident + 1}}}'
            + f'\n!{ident + 1} = !{{!"llvm.loop.interleave.count", i32 {count}}}')


def build_ir() -> str:
    """The LLVM IR of every function, as text."""
    mod = ir.Module("nnexp_fastmath")
    for name in NAMES:
        _loop(mod, name, inplace=False)
        _loop(mod, name, inplace=True)
    for name in FUSED_FORWARD:
        _bias_activation(mod, name)
    for name, derivative in FUSED_BACKWARD.items():
        _backward(mod, name, derivative)
    text = str(mod)
    ident = 9000
    for name, count in INTERLEAVE.items():
        for fn in (name, name + "_inplace"):
            text = _interleaved(text, fn, count, ident)
            ident += 2
    return text + "\n"


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
    _FUSED = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)

    def __init__(self, engine, info: dict):
        self._engine = engine  # owns the machine code: keep it alive as long as the functions
        self.info = info
        for name in NAMES:
            setattr(self, name, self._PAIR(engine.get_function_address(name)))
            setattr(self, name + "_inplace", self._ONE(engine.get_function_address(name + "_inplace")))
        for name in [f"bias_{n}" for n in FUSED_FORWARD] + [f"{n}_backward" for n in FUSED_BACKWARD]:
            setattr(self, name, self._FUSED(engine.get_function_address(name)))


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
