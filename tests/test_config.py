"""nnexp.config: what the resume hash includes and leaves out; blas_threads is wired and documented; keys the schema
does not know are refused (documented ``+`` additions are not); glob sweeps over a group."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from nnexp.config import ConfigError, check_keys, config_groups, config_hash, register

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


def _documented_additions() -> list[str]:
    """Every ``+group=option`` that README.md, docs/ and conf/ show."""
    root = Path(__file__).parents[1]
    texts = [root / "README.md", *(root / "docs").glob("*.md"), *(root / "conf").rglob("*.yaml")]
    return sorted({m for f in texts for m in re.findall(r"(?<![\w+])\+\w+=\w+", f.read_text())})


def test_documented_additions_are_known_keys():
    additions = _documented_additions()
    assert "+tracking=team" in additions
    for a in additions:
        check_keys(_cfg(a))  # raises ConfigError for a key the schema does not know


@pytest.mark.parametrize("override,message", [
    ("+activaton=relu", "activaton is not a key; did you mean activation=relu?"),
    ("+optimizer.lrr=5", "optimizer.lrr is not a key; did you mean optimizer.lr?"),
    ("+model.hiddn=[8]", "model.hiddn is not a key; did you mean model.hidden_sizes?"),
    ("+dataset.taget=y", "dataset.taget is not a key; did you mean dataset.target?"),
    ("+tracking.reume=false", "tracking.reume is not a key; did you mean tracking.resume?"),
    ("+experimnt=xor_tutorial", "experimnt is not a key; did you mean experiment=xor_tutorial?"),
    ("+activation.alfa=0.1", "activation.alfa is not a key; did you mean activation.alpha?"),
])
def test_unknown_keys_are_refused_with_the_closest_key(override, message):
    with pytest.raises(ConfigError) as e:
        check_keys(_cfg(override))
    assert str(e.value).split(" (")[0] == message


def test_a_glob_sweep_over_a_group_runs_every_option():
    from nnexp.preflight import expand_jobs

    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        jobs, multirun = expand_jobs(["-m", "activation=glob(*)", "epochs=1"])
        some, _ = expand_jobs(["-m", "activation=glob(s*,exclude=softsign)"])
    files = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "activation").glob("*.yaml"))
    assert multirun and len(files) == 14 and len(jobs) == 14 * 3  # every activation, with the 3 default seeds
    assert sorted({o for j in jobs for o in j if o.startswith("activation=")}) == [f"activation={f}" for f in files]
    assert sorted({o for j in some for o in j if o.startswith("activation=")}) == [
        "activation=selu", "activation=sigmoid", "activation=silu", "activation=softplus"]


def test_config_groups_are_the_conf_folders_and_experiments():
    assert config_groups() == {
        "activation": sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "activation").glob("*.yaml")),
        "dataset": ["breast_cancer", "circles", "csv", "digits", "gaussian", "iris", "moons", "spiral", "wine", "xor"],
        "experiment": ["moons_tuned_lr", "xor_tutorial"],
        "init": ["auto", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform", "normal", "orthogonal", "uniform",
                 "xavier_normal", "xavier_uniform", "zeros"],
        "optimizer": ["adam", "momentum", "nesterov", "sgd"],
        "tracking": ["team"],
    }
