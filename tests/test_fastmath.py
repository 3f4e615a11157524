"""nnexp.fastmath: the vectorised float64 tanh / exp / sigmoid kernels and when they are used.

Accuracy is measured in ulp against NumPy (``np.tanh``, ``np.exp``) and SciPy (``scipy.special.expit``) over the
whole float64 range; the selection logic is checked on NumPy CPU-feature tables of a CPU with and without
AVX-512, and once in a process started under ``benchmarks/cpu_emulation.py``'s environment.
"""

from __future__ import annotations

import json
import platform
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit as scipy_expit

from nnexp import activations, fastmath

ROOT = Path(__file__).resolve().parents[1]
X86 = platform.machine().lower() in ("x86_64", "amd64")

AVX512 = {"AVX2": True, "FMA3": True, "X86_V3": True, "AVX512F": True, "AVX512_SKX": True, "X86_V4": True}
# NumPy 2.4 under NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR": AVX512F still reads True, X86_V4 not
AVX2_ONLY = {"AVX2": True, "FMA3": True, "X86_V3": True, "AVX512F": True, "AVX512_SKX": False, "X86_V4": False}
OLD_NUMPY_AVX512 = {"AVX2": True, "FMA3": True, "AVX512F": True, "AVX512_SKX": True}  # NumPy < 2.3: no X86_V4 key
NO_FMA = {"AVX2": False, "FMA3": False, "X86_V4": False}


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of float64 values between a and b (0 when both are nan; +0 and -0 are 1 apart)."""
    ia, ib = a.view(np.int64), b.view(np.int64)
    ia = np.where(ia < 0, np.int64(-(2**63)) - ia, ia)  # order-preserving map of the bit patterns
    ib = np.where(ib < 0, np.int64(-(2**63)) - ib, ib)
    return np.where(np.isnan(a) & np.isnan(b), 0, np.abs(ia - ib))


def edge_points() -> np.ndarray:
    tiny, big = np.finfo(np.float64).tiny, np.finfo(np.float64).max
    edges = [0.0, 5e-324, tiny, 1e-300, 1e-20, 1e-8, 0.2554128118829953, 0.5493061443340549, 1.0, 19.06, 22.0, 30.0,
             708.3964185322641, 709.782712893384, 709.7827128933841, 745.1332191019411, 745.1332191019412, 1e300,
             big, np.inf]
    edges = np.array(edges)
    return np.concatenate([edges, -edges, [np.nan, -np.nan]])


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    rng = np.random.default_rng(11)
    n = 250_000
    return np.concatenate([
        rng.integers(0, 2**64, n, dtype=np.uint64).view(np.float64),  # every exponent, subnormals, inf, nan
        rng.uniform(-40, 40, n), rng.standard_normal(n), rng.uniform(-746, 710, n), edge_points()])


@pytest.fixture(scope="module")
def kernels():
    k = fastmath.kernels()
    if k is None and X86:
        pytest.fail(f"the kernels did not load on x86-64: {fastmath.LOAD.get('error')}")
    if k is None:
        pytest.skip(f"no kernels here: {fastmath.LOAD.get('error')}")
    return k


def run(k, name: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    getattr(k, name)(x.ctypes.data, out.ctypes.data, x.size)
    return out


@pytest.mark.parametrize("name, reference, max_ulp", [("exp", np.exp, 1), ("tanh", np.tanh, 3), ("expit", None, 4)])
def test_kernels_are_within_a_few_ulp_of_numpy_over_the_whole_range(kernels, points, name, reference, max_ulp):
    with np.errstate(all="ignore"):
        if reference is None:  # SciPy's expit gives 0 below -709.78, where the true value is exp(x), subnormal
            ref = np.where(points < -709, np.exp(points), scipy_expit(points))
        else:
            ref = reference(points)
    got = run(kernels, name, points)
    assert int(ulp_distance(got, ref).max()) <= max_ulp
    np.testing.assert_array_equal(np.isnan(got), np.isnan(points))  # nan in, nan out; never a new nan
    signed = np.isinf(points) | (points == 0)
    np.testing.assert_array_equal(np.signbit(got[signed]), np.signbit(ref[signed]))  # tanh(-0) = -0


def test_an_element_gets_the_same_bits_alone_in_place_and_in_a_strided_stack(kernels):
    rng = np.random.default_rng(3)
    x = rng.normal(scale=4, size=(3, 700, 37))
    for name, public in (("tanh", fastmath.tanh), ("exp", fastmath.exp), ("expit", fastmath.expit)):
        whole = run(kernels, name, x)
        alone = np.array([run(kernels, name, np.array([v]))[0] for v in x.ravel()[:300]])
        np.testing.assert_array_equal(alone, whole.ravel()[:300])  # scalar remainder = vector body
        inplace = x.copy()
        getattr(kernels, name + "_inplace")(inplace.ctypes.data, inplace.size)
        np.testing.assert_array_equal(inplace, whole)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NNEXP_FASTMATH", "on")
            view = x[:, 100:600]  # one replica's rows are contiguous, the stack is not
            np.testing.assert_array_equal(public(view, out=np.empty_like(view)), whole[:, 100:600])
            y = x.copy()
            assert public(y, out=y) is y
            np.testing.assert_array_equal(y, whole)


@pytest.mark.parametrize("features, expect", [(AVX512, False), (OLD_NUMPY_AVX512, False), (AVX2_ONLY, True),
                                              (NO_FMA, False)])
def test_selection_takes_numpy_on_avx512_and_the_kernel_below_it(features, expect):
    big = np.zeros((1, 1797, 128))
    assert fastmath.use_kernel(big, big, features=features, machine="x86_64", fastmath="auto") is expect
    assert fastmath.numpy_has_simd_f64(features) is (features.get("X86_V4", features.get("AVX512_SKX")) is True)


def test_selection_rules_dtype_size_machine_and_switch():
    big, small = np.zeros((4, 1797, 128)), np.zeros((4, 64, 16))
    kw = dict(features=AVX2_ONLY, machine="x86_64", fastmath="auto")
    assert fastmath.use_kernel(big, **kw)
    assert not fastmath.use_kernel(big.astype(np.float32), **kw)  # NumPy's float32 loops are vectorised on AVX2
    assert not fastmath.use_kernel(small, **kw)  # 1,024 elements per replica: not worth loading the kernels
    assert fastmath.use_kernel(big[:1], **kw) == fastmath.use_kernel(big, **kw)  # replicas decide as one network
    assert not fastmath.use_kernel(big, np.zeros((4, 1797, 127)), **kw)
    assert not fastmath.use_kernel(big, features=AVX2_ONLY, machine="aarch64", fastmath="auto")
    assert not fastmath.use_kernel(big, features=AVX2_ONLY, machine="x86_64", fastmath="off")
    assert fastmath.use_kernel(small, features=AVX512, machine="x86_64", fastmath="on")
    assert not fastmath.use_kernel(3.0, features=AVX2_ONLY, machine="x86_64", fastmath="on")


def test_an_unknown_switch_value_is_refused_naming_the_accepted_ones(monkeypatch):
    monkeypatch.setenv("NNEXP_FASTMATH", "fast")
    with pytest.raises(ValueError, match="NNEXP_FASTMATH='fast' is not known; choose one of: auto, on, off"):
        fastmath.mode()


@pytest.mark.skipif(not X86, reason="x86-64 only")
def test_an_emulated_cpu_without_avx512_selects_the_kernel_and_this_one_as_numpy_says():
    env = runpy.run_path(str(ROOT / "benchmarks" / "cpu_emulation.py"))["haswell_env"]()
    code = ("import json, numpy as np; from nnexp import fastmath; x = np.ones((1797, 128)); "
            "print(json.dumps([fastmath.use_kernel(x, x), fastmath.numpy_has_simd_f64()]))")
    import os

    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env, "NNEXP_FASTMATH": "auto"},
                         capture_output=True, text=True, check=True)
    use, numpy_fast = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = fastmath._cpu_features()
    assert numpy_fast is False
    assert use is bool(cpu.get("AVX2") and cpu.get("FMA3"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NNEXP_FASTMATH", "auto")
        assert fastmath.use_kernel(np.ones((1797, 128))) is (not fastmath.numpy_has_simd_f64()
                                                            and bool(cpu.get("AVX2") and cpu.get("FMA3")))


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "silu", "softplus", "elu", "mish"])
def test_activations_with_the_kernels_match_numpy_within_a_few_ulp(kernels, monkeypatch, name):
    z = np.random.default_rng(5).normal(scale=3, size=(2, 600, 20))
    act = activations.get_activation(name)
    monkeypatch.setenv("NNEXP_FASTMATH", "off")
    a_ref = act.forward(z)
    d_ref = act.derivative(z, a_ref)
    monkeypatch.setenv("NNEXP_FASTMATH", "on")
    a = act.forward(z)
    d = act.derivative(z, a)
    np.testing.assert_allclose(a, a_ref, rtol=4e-15, atol=1e-300)
    np.testing.assert_allclose(d, d_ref, rtol=1e-14, atol=1e-15)


def test_the_tanh_derivative_kernel_gives_numpys_bits(kernels, points, monkeypatch):
    a = np.tanh(points[np.isfinite(points)])
    np.testing.assert_array_equal(run(kernels, "tanh_derivative", a), np.subtract(1, a * a))
    monkeypatch.setenv("NNEXP_FASTMATH", "on")
    z = np.random.default_rng(2).normal(size=(3, 600, 40))
    a = np.tanh(z)
    np.testing.assert_array_equal(activations.get_activation("tanh").derivative(z, a), 1 - a * a)
