"""nnexp.config: what the run key (nnexp.identity) includes and leaves out; blas_threads is wired and documented; keys the schema
does not know are refused (documented ``+`` additions are not); glob sweeps over a group."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from nnexp import identity
from nnexp.config import ConfigError, check_keys, config_groups, register

register()


def _cfg(*overrides):
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        return compose("config", list(overrides))


def config_hash(cfg) -> str:
    """The run key of a composed config (3 classes: every dataset here takes cross-entropy under loss=auto)."""
    return identity.run_key(identity.config_id(identity.canonical(cfg, n_classes=3)), cfg.seed)




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
    # a key inside the tracking section is never a choice of the tracking config group (it said tracking=<option>)
    ("+tracking.foo=1", "tracking.foo is not a key; did you mean tracking.uri?"),
    ("+tracking.qqqqqqqqqqqqqqqqqq=1", "tracking.qqqqqqqqqqqqqqqqqq is not a key; tracking has: uri, experiment, "),
])
def test_unknown_keys_are_refused_with_the_closest_key(override, message):
    with pytest.raises(ConfigError) as e:
        check_keys(_cfg(override))
    assert str(e.value).split(" (")[0].startswith(message) and "tracking=" not in str(e.value)


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
        "dataset": ["breast_cancer", "circles", "csv", "digits", "gaussian", "iris", "linear_teacher", "moons", "spiral",
                    "wine", "xor"],
        "experiment": sorted(p.stem for p in (Path(__file__).parents[1] / "experiments").glob("*.yaml")),
        "init": ["auto", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform", "normal", "normalized", "orthogonal", "standard",
                 "uniform", "xavier_normal", "xavier_uniform", "zeros"],
        "optimizer": ["adam", "momentum", "nesterov", "sgd"],
        "tracking": ["team"],
    }


@pytest.mark.parametrize("overrides, sizes", [
    ([], [64]),
    (["model.hidden_sizes=[4,3]"], [4, 3]),
    (["model.depth=3", "model.width=5"], [5, 5, 5]),
    (["model.depth=2", "model.width=7", "model.hidden_sizes=[7,7]"], [7, 7]),  # the same layers, said twice
])
def test_depth_and_width_replace_hidden_sizes(overrides, sizes):
    from nnexp.config import hidden_sizes, validate

    cfg = _cfg(*overrides)
    validate(cfg)
    assert hidden_sizes(cfg) == sizes


def test_depth_changes_the_hash():
    assert config_hash(_cfg("model.depth=3", "model.width=5")) != config_hash(_cfg("model.depth=4", "model.width=5"))


@pytest.mark.parametrize("overrides, words", [
    (["model.depth=3"], "model.depth=3 and model.width=None go together"),
    (["model.width=8"], "model.depth=None and model.width=8 go together"),
    (["model.depth=0", "model.width=8"], "must both be integers >= 1"),
    (["model.depth=2", "model.width=8", "model.hidden_sizes=[4]"], "model.hidden_sizes=[4] conflicts with model.depth=2"),
    (["tracking.percentiles_every=0"], "tracking.percentiles_every=0 must be an integer >= 1 or null"),
    (["tracking.diagnostics_points=0"], "tracking.diagnostics_points=0 must be an integer >= 1 or null"),
    (["epochs=5", "tracking.histogram_epochs=[0,6]"], "tracking.histogram_epochs=[0, 6] must be a list of epochs in"),
    (["tracking.register_model='bad name/x'"], "tracking.register_model='bad name/x' must be a model name"),
    (["tracking.register_model=best", "tracking.log_model=false"], "needs tracking.log_model=true and tracking.save"),
    (["tracking.register_model=best", "tracking.save_weights=false"], "needs tracking.log_model=true and tracking.sav"),
])
def test_config_mistakes_are_one_line(overrides, words):
    from nnexp.config import validate

    with pytest.raises(ConfigError) as e:
        validate(_cfg(*overrides))
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["moons-best", "a b", "v1.2", "x..y", "über", " padded ", "a/b", "a:b", ".", "..",
                                  "../x", "..x", "", "   ", "/abs", "a\\b"])
def test_register_model_names_are_refused_exactly_when_mlflow_refuses_them(name):
    """The up-front check of tracking.register_model agrees with MLflow's own, which would only run at the sweep's
    end, after every run is trained."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    from nnexp.config import validate

    try:
        _validate_model_name(name)
        mlflow_accepts = True
    except MlflowException:
        mlflow_accepts = False
    cfg = _cfg()
    cfg.tracking.register_model = name
    try:
        validate(cfg)
        ours = True
    except ConfigError:
        ours = False
    assert ours == mlflow_accepts


def test_xor_tutorial_is_the_tutorials_network_and_its_contrast_is_not():
    """The tutorial's XOR network has a sigmoid output unit trained on the squared error; the contrast a linear one."""
    canon = {name: identity.canonical(_cfg(f"experiment={name}"), n_classes=2)
             for name in ("xor_tutorial", "xor_tutorial_linear_output")}
    assert (canon["xor_tutorial"]["model.loss"], canon["xor_tutorial"]["model.output"]) == ("sigmoid_mse", "sigmoid")
    assert (canon["xor_tutorial_linear_output"]["model.loss"],
            canon["xor_tutorial_linear_output"]["model.output"]) == ("mse", "identity")
    assert canon["xor_tutorial"]["model.hidden_sizes"] == [3] and canon["xor_tutorial"]["init"] == "normal"
    assert identity.config_id(canon["xor_tutorial"]) != identity.config_id(canon["xor_tutorial_linear_output"])
