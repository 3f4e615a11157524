"""The generated 2-D datasets: shapes, balance, geometry, seeding and config files."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from nnexp.data import DATASETS, GENERATED, circles, gaussian, load, moons, spiral

NAMES = ["moons", "circles", "spiral", "gaussian"]
CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"


@pytest.mark.parametrize("name", NAMES)
def test_registered_split_and_balanced(name):
    assert name in DATASETS and name in GENERATED
    d = load(name, n_samples=300, noise=0.1, split_seed=3)
    assert d.n_features == 2 and d.n_classes == 2
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 300
    assert (len(d.y_val), len(d.y_test)) == (60, 60)
    # stratified split of balanced classes: each part has exactly half of each class
    assert d.y_train.sum() == 90 and d.y_test.sum() == 30
    np.testing.assert_allclose(d.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(d.X_train.std(axis=0), 1, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_by_split_seed(name):
    a = load(name, n_samples=200, noise=0.2, split_seed=0)
    b = load(name, n_samples=200, noise=0.2, split_seed=0)
    c = load(name, n_samples=200, noise=0.2, split_seed=1)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert not np.allclose(a.mean, c.mean)


def test_noise_free_geometry():
    rng = np.random.default_rng(0)
    X, y, _ = circles(rng=rng, n_samples=100, noise=0.0, factor=0.3)
    r = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(r[y == 0], 1.0)
    np.testing.assert_allclose(r[y == 1], 0.3)
    X, y, _ = moons(rng=rng, n_samples=100, noise=0.0)
    np.testing.assert_allclose(np.hypot(X[y == 0, 0], X[y == 0, 1]), 1.0)
    np.testing.assert_allclose(np.hypot(X[y == 1, 0] - 1, X[y == 1, 1] - 0.5), 1.0)
    X, y, _ = spiral(rng=rng, n_samples=100, noise=0.0)
    r = np.hypot(X[:, 0], X[:, 1])
    assert r.max() < 1 and np.allclose(np.sort(r[y == 0]), np.arange(50) / 50)
    # the two arms are the same curve rotated by pi
    np.testing.assert_allclose(np.sort(X[y == 0], axis=0), np.sort(-X[y == 1], axis=0), atol=1e-12)


def test_gaussian_blob_statistics():
    X, y, _ = gaussian(rng=np.random.default_rng(1), n_samples=20000, noise=0.5)
    np.testing.assert_allclose(X[y == 0].mean(axis=0), [-1, -1], atol=0.02)
    np.testing.assert_allclose(X[y == 1].std(axis=0), [0.5, 0.5], atol=0.02)


def test_too_few_samples():
    with pytest.raises(ValueError, match="n_samples"):
        load("moons", n_samples=2)


@pytest.mark.parametrize("name", NAMES)
def test_config_file_every_key_commented(name):
    path = CONF / f"{name}.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert cfg["name"] == name
    lines = [l for l in path.read_text().splitlines() if l and not l.startswith("#")]
    assert {l.split(":")[0] for l in lines} == set(cfg)
    assert all("#" in l for l in lines if not l.startswith("name:"))
    d = load(name, **{k: v for k, v in cfg.items() if k != "name"})
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == cfg["n_samples"]
