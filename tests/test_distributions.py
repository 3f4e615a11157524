"""Per-layer distribution probes (nnexp.distributions): the numbers against direct computation, the probe leaves
training unchanged, probe epochs and histogram counts are exact."""

from __future__ import annotations

import numpy as np

from nnexp import distributions as D
from nnexp.activations import get_activation
from nnexp.data import Dataset, encode_targets
from nnexp.initializers import get_bias_initializer, get_initializer
from nnexp.losses import get_loss
from nnexp.model import MLP
from nnexp.optimizers import make_optimizer
from nnexp.train import fit


def _data(n=60, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return Dataset("toy", X, y, X[:10], y[:10], X[:10], y[:10], n_classes=2)


def _model(sizes=(5, 7, 6, 1), seeds=(0, 1), activation="tanh"):
    act = get_activation(activation)
    rngs = [np.random.default_rng(s) for s in seeds]
    m = MLP(list(sizes), act, replicas=len(seeds))
    m.initialize(get_initializer("xavier_uniform"), get_bias_initializer("zeros"), rngs, gain=act.gain)
    return m, rngs


def test_probe_epochs_are_exact():
    assert D.probe_epochs(30, 10, [0, 5, 99]) == ([0, 10, 20, 30], [0, 5])
    assert D.probe_epochs(7, 3) == ([0, 3, 6, 7], [])
    assert D.probe_epochs(7, None, [7]) == ([], [7])


def test_percentiles_match_a_direct_forward_pass_and_deltas_give_the_weight_gradient():
    data, loss = _data(), get_loss("binary_cross_entropy")
    model, _ = _model()
    Y = encode_targets(data.y_train, 1, model.dtype)
    acts, deltas = D.probe(model, loss, data.X_train, Y)
    ws_a = [a.copy() for a in model.workspace(data.X_train).a]
    model.forward(data.X_train)
    for l, a in enumerate(model.workspace(data.X_train).a):
        np.testing.assert_array_equal(acts[l], a)
    m = D.percentile_metrics(acts, deltas)
    for k in range(2):
        np.testing.assert_allclose(m["layer2.probe.act_p99"][k], np.percentile(ws_a[1][k], 99))
        np.testing.assert_allclose(m["layer1.probe.act_std"][k], ws_a[0][k].std())
        np.testing.assert_allclose(m["layer2.probe.act_mean"][k], ws_a[1][k].mean())
    # per-sample deltas: the batch-mean weight gradient of layer l+1 is a_l^T delta_{l+1} / n
    n = data.X_train.shape[0]
    dW2 = np.matmul(acts[0].transpose(0, 2, 1), deltas[1]) / n
    np.testing.assert_allclose(dW2, model.dW[1], rtol=1e-12, atol=1e-15)
    assert len(m) == 2 * 2 * (2 + len(D.PERCENTILES))


def test_probing_leaves_training_bit_identical():
    data, loss = _data(), get_loss("binary_cross_entropy")
    finals, seen = [], []
    for every in (None, 2):
        model, rngs = _model()
        opt = make_optimizer("momentum", model.params(), momentum=0.9)
        hist = fit(model, loss, opt, lambda e: 0.1, data, epochs=5, rngs=rngs, batch_size=16, percentiles_every=every,
                   histogram_epochs=[0, 5] if every else (), on_epoch=lambda e, v: seen.append((e, sorted(v)[0])))
        finals.append([p.copy() for p in model.params()])
    for a, b in zip(*finals):
        np.testing.assert_array_equal(a, b)
    probes = [e for e, first in seen if first.startswith("layer1.probe")]
    assert probes == [0, 2, 4, 5]
    assert hist.histograms["epochs"] == [0, 5]
    counts = hist.histograms["per_epoch"][0]["act_counts"]
    assert counts.shape == (2, 2, D.HIST_BINS)
    np.testing.assert_array_equal(counts.sum(axis=2), [[60 * 7, 60 * 6]] * 2)  # every value in a bin


def test_histograms_file_holds_one_replica(tmp_path):
    data, loss = _data(), get_loss("binary_cross_entropy")
    model, _ = _model()
    Y = encode_targets(data.y_train, 1, model.dtype)
    h = D.histograms(*D.probe(model, loss, data.X_train, Y))
    D.save_histograms(tmp_path / "h.npz", [0], [h], 1)
    z = np.load(tmp_path / "h.npz", allow_pickle=False)
    np.testing.assert_array_equal(z["act_counts"][0], h["act_counts"][1])
    assert z["delta_edges"].shape == (1, 2, D.HIST_BINS + 1)
