"""preflight's JobComposer gives exactly the configs and errors of Hydra's compose API, composing each defaults list once."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

JOBS = [
    ["activation=relu", "seed=1"],
    ["seed=2", "activation=relu", "optimizer.lr=0.05"],
    ["activation=leaky_relu", "activation.alpha=0.2", "model.hidden_sizes=[32,32]"],
    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=3"],
    ["+tracking=team"],
    ["experiment=xor_tutorial", "seed=4"],
    ["optimizer=adam", "optimizer.beta1=0.8", "init=he_normal"],
    ["dataset=moons", "dataset.noise=0.3", "batch_size=null"],
    ["tracking={uri: 'sqlite:///x.db'}"],
]
BAD = [["~study"], ["epochs=abc"], ["activation=relu", "optimizer.lr=x"], ["foo=1"], ["activation.alfa=1"], ["activation=rleu"]]


@pytest.fixture
def composer(compose):
    from nnexp.preflight import JobComposer

    return JobComposer()


@pytest.mark.parametrize("job", JOBS, ids=" ".join)
def test_same_config_as_hydra(compose, composer, job):
    expected, got = compose(job), composer(job)
    assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(expected)
    assert (OmegaConf.is_struct(got), OmegaConf.is_readonly(got)) == (OmegaConf.is_struct(expected),
                                                                       OmegaConf.is_readonly(expected))


@pytest.mark.parametrize("job", BAD, ids=" ".join)
def test_same_error_as_hydra(compose, composer, job):
    with pytest.raises(Exception) as expected:
        compose(job)
    with pytest.raises(Exception) as got:
        composer(job)
    assert type(got.value) is type(expected.value) and str(got.value) == str(expected.value)
    assert type(got.value.__cause__) is type(expected.value.__cause__)


def test_each_defaults_list_composed_once(composer):
    for seed in range(4):
        for act in ("relu", "tanh"):
            cfg = composer([f"activation={act}", f"seed={seed}", "optimizer.lr=0.2"])
            assert (cfg.activation.name, cfg.seed, cfg.optimizer.lr) == (act, seed, 0.2)
    assert sorted(composer.composed) == [("activation=relu",), ("activation=tanh",)]


def test_one_composer_for_a_whole_sweep_gives_each_job_its_own_config(compose, composer):
    """Shared parses and hydra-less composed configs: every job still equals Hydra's compose, and a returned
    config is the caller's own (changing it changes no later job)."""
    jobs = [[f"init={init}", f"seed={seed}", "hydra.sweeper.pack=false", "optimizer.lr=0.3"]
            for init in ("he_normal", "xavier_uniform") for seed in (0, 1)]
    jobs.append(["init=he_normal", "seed=0", "hydra.job.chdir=true", "optimizer.lr=0.3"])
    for job in jobs:
        got = composer(job)
        assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(compose(job))
        got.optimizer.lr = 99.0
    assert sorted(composer.composed) == [("init=he_normal", "hydra.job.chdir=true"),
                                         ("init=he_normal", "hydra.sweeper.pack=false"),
                                         ("init=xavier_uniform", "hydra.sweeper.pack=false")]
    assert composer(jobs[0]).optimizer.lr == 0.3
