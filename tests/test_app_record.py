"""nnexp.app.save_config writes each run's config.yaml byte for byte as ``OmegaConf.save(cfg, path, resolve=True)``
does, on libyaml's emitter and on PyYAML's own."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from nnexp import app

ODD = {"int_text": "1", "bool_text": "true", "null_text": "null", "float_text": "1e-3", "unicode": "naïve — ü",
       "long": "word " * 40, "empty": [], "nested": [[1, 2], {"a": None}], "colon": "a: b", "hash": "x # y",
       "lines": "line1\nline2", "quote": "it's", "lead": " space", "star": "*x", "tiny": 1e-300, "big": 10**20,
       "inf": float("inf"), "nan": float("nan"), "ref": "${activation.name}-${optimizer.lr}"}


@pytest.fixture(params=["libyaml", "pyyaml"])
def emitter(request, monkeypatch):
    app._yaml_dumper.cache_clear()
    if request.param == "pyyaml":
        monkeypatch.setattr(yaml, "__with_libyaml__", False)
    elif not yaml.__with_libyaml__:
        pytest.skip("PyYAML without libyaml")
    yield request.param
    app._yaml_dumper.cache_clear()


@pytest.mark.parametrize("overrides", [["dataset=moons", "activation=relu"],
                                       ["dataset=xor", "activation=tanh", "model.hidden_sizes=[3,4]", "batch_size=2"],
                                       ["activation=gelu", "init=orthogonal", "optimizer=adam", "+odd=1"]])
def test_config_yaml_is_omegaconfs(compose, tmp_path, emitter, overrides):
    cfg = compose(overrides)
    if "+odd=1" in overrides:
        with open_dict(cfg):
            cfg.odd = ODD
    app.save_config(cfg, tmp_path / "fast.yaml")
    OmegaConf.save(cfg, tmp_path / "reference.yaml", resolve=True)
    text = (tmp_path / "fast.yaml").read_bytes()
    assert text == (tmp_path / "reference.yaml").read_bytes()
    back = OmegaConf.load(tmp_path / "fast.yaml")
    assert back.activation.name == cfg.activation.name
    if "+odd=1" in overrides:
        assert back.odd.int_text == "1" and back.odd.ref == f"gelu-{cfg.optimizer.lr}" and back.odd.empty == []


@pytest.mark.parametrize("override, seed, label", [
    ("activation=tanh,seed=1", 1, "activation=tanh,seed=1"),  # the seed is in the overrides: said once
    ("seed=2,activation=relu", 2, "seed=2,activation=relu"),
    ("activation=tanh,init.seed_scale=3", 0, "activation=tanh,init.seed_scale=3, seed 0"),  # not the seed key
    ("", 4, "config, seed 4"),  # a packed replica's seed, or no override at all
    (None, 0, "config, seed 0"),
])
def test_a_skipped_run_is_named_by_its_overrides_and_its_seed_once(override, seed, label):
    from nnexp.app import _skip_label

    assert _skip_label(override, seed) == label
