"""Every option of every config group composes with Hydra's compose API and passes validation."""

from __future__ import annotations

from importlib.resources import files

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException

from nnexp.config import register, studies, validate

register()
GROUPS = ("activation", "init", "optimizer", "dataset")


def _options(group: str) -> list[str]:
    return sorted(p.name[:-5] for p in (files("nnexp.conf") / group).iterdir() if p.name.endswith(".yaml"))


CASES = [(g, o) for g in GROUPS for o in _options(g)] + [("experiment", s) for s in sorted(studies())]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes(group, option):
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"{group}={option}"])
    if group == "experiment":
        assert cfg.study == option
    elif option == "csv":  # needs a path to be valid; composing is enough here
        assert cfg.dataset.name == "csv"
        return
    else:
        assert cfg[group].name == option
    validate(cfg)


def test_user_overrides_land_with_their_types():
    overrides = ["activation=tanh", "optimizer.lr=0.05", "init=he_normal", "epochs=200", "dataset=xor",
                 "model.hidden_sizes=[32,32]", "seed=3"]
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert cfg.activation.name == "tanh" and cfg.init.name == "he_normal" and cfg.dataset.name == "xor"
    assert cfg.optimizer.lr == 0.05 and isinstance(cfg.optimizer.lr, float)
    assert cfg.epochs == 200 and cfg.seed == 3 and list(cfg.model.hidden_sizes) == [32, 32]


@pytest.mark.parametrize("override", ["epochs=abc", "optimizer.lr=fast", "model.hidden_sizes=[a]", "seed=1.5"])
def test_a_wrong_type_fails_at_composition(override):
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
        with pytest.raises(ConfigCompositionException):
            compose(config_name="config", overrides=[override])


def test_help_lists_groups_and_cfg_prints_the_job_config(cli, tmp_path):
    out = cli(["--help"], tmp_path)
    assert out.returncode == 0
    for g in (*GROUPS, "experiment"):
        line = next(l for l in out.stdout.splitlines() if l.startswith(f"{g}:"))
        assert set(_options(g) if g != "experiment" else studies()) <= {s.strip() for s in line.split(":", 1)[1].split(",")}
    out = cli(["--cfg", "job", "activation=relu", "optimizer.lr=0.3"], tmp_path)
    assert out.returncode == 0
    assert "name: relu" in out.stdout and "lr: 0.3" in out.stdout
    assert not (tmp_path / "mlflow.db").exists()
