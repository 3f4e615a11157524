"""nnexp.config: what the resume hash includes and leaves out; blas_threads is wired and documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from nnexp.config import config_hash, register

register()


def _cfg(*overrides):
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        return compose("config", list(overrides))




@pytest.mark.parametrize("override", ["epochs=61", "seed=1", "optimizer.lr=0.05", "activation=relu",
                                      "model.hidden_sizes=[32]", "batch_size=null", "dataset=iris",
                                      "divergence_threshold=100", "init=he_normal", "optimizer=adam"])
def test_what_a_run_computes_changes_the_hash(override):
    assert config_hash(_cfg(override)) != config_hash(_cfg())


@pytest.mark.parametrize("override", ["tracking.experiment=other", "tracking.log_every=5", "tracking.resume=false",
                                      "tracking.report=false", "tracking.uri=sqlite:////tmp/x.db", "blas_threads=2",
                                      "tracking.progress=false", "tracking.diagnostics=false"])
def test_where_and_how_it_is_recorded_does_not(override):
    assert config_hash(_cfg(override)) == config_hash(_cfg())


def test_hash_is_stable_text():
    h = config_hash(_cfg("dataset=xor"))
    assert len(h) == 16 and h == config_hash(_cfg("dataset=xor"))


def test_blas_threads_is_documented_in_the_base_config():
    text = (Path(__file__).parents[1] / "conf" / "config.yaml").read_text()
    line = next(l for l in text.splitlines() if l.startswith("blas_threads:"))
    assert "null" in line and "parallel launcher" in line
