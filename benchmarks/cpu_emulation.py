"""Emulate an x86 CPU without AVX-512 (an AMD EPYC with OpenBLAS's Haswell kernel) on a machine that has it.

Three switches do it, all read when the libraries load, so they apply to a new process only:

- ``NPY_DISABLE_CPU_FEATURES``: NumPy's runtime dispatch skips the listed SIMD targets. Here: every target NumPy
  was built to dispatch to that needs AVX-512 (``X86_V4``, ``AVX512_*``; ``AVX512F``, ``AVX512_SKX``... in NumPy
  < 2.3), taken from ``numpy._core._multiarray_umath.__cpu_dispatch__`` so that the names fit the NumPy installed.
  What stays is AVX2 + FMA3 (``X86_V3``): NumPy's float64 ``tanh`` and ``exp`` then take the scalar C library loop.
- ``OPENBLAS_CORETYPE=Haswell``: OpenBLAS takes its AVX2 kernels (``threadpoolctl`` reports
  ``architecture: Haswell``).
- ``NNEXP_FASTMATH_CPU=x86-64-v3``: nnexp's own vectorised ``tanh``/``exp`` (``nnexp/fastmath.py``) are compiled
  for AVX2 + FMA3 instead of this CPU.

Usage::

    eval "$(python benchmarks/cpu_emulation.py)"       # export both in this shell
    python benchmarks/cpu_emulation.py --check         # start a Python under them; exit 1 unless both took

Used by ``benchmarks/run.py`` (the trainer's emulated-Haswell column) and by ``.ci/run`` (the CPU-dependent
tests, run a second time under the emulation).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

CHECK = """
import json, numpy
from threadpoolctl import threadpool_info
try:
    from numpy._core._multiarray_umath import __cpu_dispatch__ as targets, __cpu_features__ as on
except ImportError:  # NumPy < 2
    from numpy.core._multiarray_umath import __cpu_dispatch__ as targets, __cpu_features__ as on
# as numpy.show_runtime()'s "found": the dispatch targets still taken (a disabled one reads False)
print(json.dumps({"avx512": sorted(t for t in targets if on.get(t) and t.startswith(("AVX512", "X86_V4"))),
                  "blas": sorted({i.get("architecture") or "?" for i in threadpool_info() if i["user_api"] == "blas"})}))
"""


def avx512_dispatch_targets() -> list[str]:
    """NumPy's dispatch targets that need AVX-512, in NumPy's own spelling (empty on a non-x86 build)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__
    return [f for f in __cpu_dispatch__ if f.startswith(("AVX512", "X86_V4"))]


def haswell_env() -> dict[str, str]:
    """The environment variables that make a new process see an AVX2 CPU with OpenBLAS's Haswell kernel."""
    return {"NPY_DISABLE_CPU_FEATURES": " ".join(avx512_dispatch_targets()), "OPENBLAS_CORETYPE": "Haswell",
            "NNEXP_FASTMATH_CPU": "x86-64-v3"}


def check(env: dict[str, str] | None = None) -> dict:
    """Start a Python under ``env`` (default :func:`haswell_env`) and report what NumPy and OpenBLAS took.

    Returns ``{"avx512": [NumPy's AVX-512 features still on], "blas": [OpenBLAS kernels], "ok": bool}``;
    ``ok`` is true when no AVX-512 feature is left and every BLAS kernel is Haswell.
    """
    env = {**os.environ, **(env or haswell_env())}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got["ok"] = not got["avx512"] and got["blas"] == ["Haswell"]
    return got


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        got = check()
        print(f"emulated CPU: NumPy AVX-512 features left: {got['avx512'] or 'none'}; OpenBLAS kernel: {got['blas']}")
        return 0 if got["ok"] else 1
    for k, v in haswell_env().items():
        print(f"export {k}={shlex.quote(v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
