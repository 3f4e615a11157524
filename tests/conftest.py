"""Shared fixtures: no Hydra global state or open figure leaks between tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_hydra_and_figures():
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close("all")


def run_cli(args: list[str], cwd: Path, *, module: str = "nnexp", timeout: float = 300, env: dict | None = None):
    """Run ``python -m <module> <args>`` in ``cwd`` with a clean MLflow environment; return the CompletedProcess."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=e)


@pytest.fixture
def cli():
    return run_cli
