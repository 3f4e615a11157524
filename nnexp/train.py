"""The training loop: epochs of (mini-)batch gradient descent with per-epoch metrics.

:func:`fit` knows nothing of Hydra or MLflow: it takes a model, a loss, an
optimiser, a schedule and data, and returns a :class:`History` of plain arrays.
Tracking and configuration live in :mod:`nnexp.app` and :mod:`nnexp.tracking`.

Metrics recorded every ``log_every`` epochs (and at the last epoch), each an
``ndarray of shape (n_logged, n_replicas)``:

``train_loss``
    Mean loss over the epoch's batches, each computed before that batch's
    update (as scikit-learn's ``loss_curve_``).
``train_accuracy``
    Accuracy of the same forward passes that give ``train_loss`` (each batch
    before its update), as Keras reports it: no extra pass over the training data.
``val_loss``, ``val_accuracy``
    On the validation part, with the weights at the end of the epoch.
    On a regression dataset (``data.regression``: real-valued targets, loss ``mse``) there are no classes:
    ``train_accuracy`` and ``val_accuracy`` are not recorded; the losses are the fit's measure.
``lr``
    The learning rate used in the epoch.
``layer{l}.grad_norm`` (every layer, ``l`` from 1)
    Root mean square over the epoch's batches of the Frobenius norm of ``dW_l``:
    shows vanishing (tiny in early layers) and exploding gradients.
``layer{l}.act_mean``, ``layer{l}.act_std`` (hidden layers)
    Mean and standard deviation of the activations ``a_l`` over samples and units.
``layer{l}.saturation`` (hidden layers of bounded activations)
    Fraction of activations within 2.5 % of the output range from either
    bound, i.e. ``(a - lo)/(hi - lo) < 0.025`` or ``> 0.975``
    (:data:`SATURATION_MARGIN`); for sigmoid that is ``a < 0.025`` or ``a > 0.975``.
    Computed as ``|a - (lo + hi)/2| > (0.5 - 0.025)(hi - lo)``, the same condition.
``layer{l}.dead_fraction`` (hidden layers of the ReLU family)
    Fraction of units whose pre-activation is ``<= 0`` for every training
    sample in the epoch: units that no longer learn.
``dead_network`` (ReLU family)
    1 if some hidden layer has every unit dead (``dead_fraction == 1``), else 0:
    the network's output is then the same for every training sample, and no
    gradient reaches the layers below. At epoch 1 of full-batch training it is
    measured before any update: the network was *born dead* (Lu et al., 2019).

Distributions (``percentiles_every``, ``histogram_epochs``): per-layer percentiles of the activations and
back-propagated gradients on a fixed probe batch, at epoch 0 (initialisation) and every few epochs, passed to
``on_epoch`` as metrics ``layer{l}.probe.*``; histograms at chosen epochs in :attr:`History.histograms`
(see :mod:`nnexp.distributions`).

Cost: the diagnostics and the validation forward pass run on recorded epochs
only, into buffers allocated once; the other epochs are a forward pass, a
backward pass and an update, and a divergence check on ``n_replicas`` numbers.

Divergence: a replica whose training loss becomes non-finite or exceeds
``divergence_threshold`` times its loss at initialisation (the first batch, before any update) stops: its epoch is
recorded in :attr:`History.diverged_epoch`, its metrics after that are NaN and
its parameters are zeroed, and stay zero (its gradients are zeroed before each
update), so that the other replicas train on unaffected.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import distributions
from .data import Dataset, encode_targets
from .losses import Loss
from .model import MLP, row_blocks
from .optimizers import Optimizer

__all__ = ["History", "fit", "accuracy", "decision_threshold", "SATURATION_MARGIN"]

SATURATION_MARGIN = 0.025
SHUFFLE_COPY_BYTES = 64 * 2**20
"""Up to this size, mini-batch training shuffles each epoch's data into one array at once (one ``np.take``
per epoch instead of two per batch); larger data is gathered batch by batch."""


@dataclass
class History:
    """What :func:`fit` returns.

    Attributes
    ----------
    epochs : ndarray of shape (n_logged,)
        The 1-based epoch numbers at which metrics were recorded.
    metrics : dict of str to ndarray of shape (n_logged, n_replicas)
    diverged_epoch : ndarray of shape (n_replicas,)
        1-based epoch at which each replica diverged, 0 if it did not.
    seconds : float
        Wall-clock time of the training loop, without the time spent in the
        ``on_epoch`` callback (which is in ``info["callback_seconds"]``).
    info : dict
    histograms : dict
        ``{"epochs": [...], "per_epoch": [...]}``: the probe epochs of ``histogram_epochs`` and, for each, the
        arrays of :func:`nnexp.distributions.histograms` (replica first); empty without ``histogram_epochs``.
    """

    epochs: np.ndarray
    metrics: dict[str, np.ndarray]
    diverged_epoch: np.ndarray
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    histograms: dict = field(default_factory=dict)

    def replica(self, k: int) -> dict[str, np.ndarray]:
        """Metrics of replica ``k``, each an ndarray of shape (n_logged,)."""
        return {name: values[:, k] for name, values in self.metrics.items()}


def accuracy(logits: np.ndarray, y: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Classification accuracy per replica.

    Parameters
    ----------
    logits : ndarray of shape (n_replicas, n_samples, n_outputs)
        One output: class 1 where the logit is above ``threshold``; several: the argmax.
    y : ndarray of shape (n_samples,)
    threshold : float, default 0
        Decision threshold for one output: 0 for a sigmoid output (probability
        0.5), 0.5 for an identity output trained on 0/1 targets with MSE
        (see :func:`decision_threshold`).

    Returns
    -------
    ndarray of shape (n_replicas,)
    """
    if logits.shape[-1] == 1:
        pred = logits[..., 0] > threshold
    else:
        pred = logits.argmax(axis=-1)
    return (pred == y).mean(axis=-1)


def decision_threshold(loss: Loss) -> float:
    """The logit threshold between the two classes of a one-output network: 0.5 for ``mse``, else 0."""
    return 0.5 if loss.output == "identity" else 0.0


class _Diagnostics:
    """Accumulates the per-layer diagnostics over one epoch's batches, in buffers allocated once.

    :meth:`reset` at the start of a recorded epoch; after each batch's backward
    pass :meth:`update` (full batch: the statistics of the workspace directly)
    or :meth:`collect` (mini-batches: the batch's activations are copied into
    epoch-sized buffers, one call per layer, and :meth:`finish` computes the
    statistics of the whole epoch at once); :meth:`results` at the end.
    """

    def __init__(self, model: MLP, n_samples: int, batch_size: int):
        self.model = model
        self.n = n_samples
        act = model.activation.spec
        self.bounds = act.bounds
        self.relu_family = act.family == "relu"
        K, H = model.replicas, model.sizes[1:-1]
        self.K, self.hidden = K, H
        if self.bounds is not None:
            lo, hi = self.bounds
            self.mid = 0.5 * (lo + hi)
            self.sat_limit = (0.5 - SATURATION_MARGIN) * (hi - lo)
        self.sum_a = np.zeros((len(H), K))
        self.sum_a2 = np.zeros((len(H), K))
        self.sat = np.zeros((len(H), K))
        self.max_z = [np.full((K, h), -np.inf, model.dtype) for h in H]
        self.grad_sq = np.zeros((model.n_layers, K))
        self.batches = 0
        self._scratch: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.a_all = self.z_all = None
        if batch_size < n_samples:
            self.a_all = [np.empty((K, n_samples, h), model.dtype) for h in H]
            self.z_all = [np.empty((K, n_samples, h), model.dtype) for h in H] if self.relu_family else None

    def names(self) -> list[str]:
        out = [f"layer{l + 1}.grad_norm" for l in range(self.model.n_layers)]
        for l in range(len(self.hidden)):
            out += [f"layer{l + 1}.act_mean", f"layer{l + 1}.act_std"]
            if self.bounds is not None:
                out.append(f"layer{l + 1}.saturation")
            if self.relu_family:
                out.append(f"layer{l + 1}.dead_fraction")
        if self.relu_family and self.hidden:
            out.append("dead_network")
        return out

    def reset(self) -> None:
        for acc in (self.sum_a, self.sum_a2, self.sat, self.grad_sq):
            acc.fill(0)
        for m in self.max_z:
            m.fill(-np.inf)
        self.batches = 0

    def _buffers(self, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
        bufs = self._scratch.get(shape)
        if bufs is None:
            bufs = self._scratch[shape] = (np.empty(shape, self.model.dtype), np.empty(shape, bool))
        return bufs

    def _activation_stats(self, zs, as_) -> None:
        for l, (z, a) in enumerate(zip(zs, as_)):
            self.sum_a[l] += a.sum(axis=(1, 2))
            # NumPy's pairwise sums, as for sum_a: einsum's order of summation depends on K, and BLAS's dot
            # product on the number of BLAS threads
            dist, far = self._buffers(a.shape)
            self.sum_a2[l] += np.multiply(a, a, out=dist).sum(axis=(1, 2))
            if self.bounds is not None:
                if self.mid:
                    np.subtract(a, self.mid, out=dist)
                    np.abs(dist, out=dist)
                else:
                    np.abs(a, out=dist)
                np.greater(dist, self.sat_limit, out=far)
                for k in range(self.K):
                    self.sat[l, k] += np.count_nonzero(far[k])
            if self.relu_family:
                np.maximum(self.max_z[l], z.max(axis=1), out=self.max_z[l])

    def _grad_stats(self) -> None:
        for l, dW in enumerate(self.model.dW):
            self.grad_sq[l] += np.square(dW).sum(axis=(1, 2))
        self.batches += 1

    def update(self, ws) -> None:
        """Full batch: statistics of the workspace's activations and of the gradients."""
        self._activation_stats(ws.z, ws.a)
        self._grad_stats()

    def collect(self, ws, start: int) -> None:
        """Mini-batch: keep the batch's activations (samples ``start:start + m`` of the epoch)."""
        stop = start + ws.a[0].shape[1] if ws.a else start
        for l, a in enumerate(ws.a):
            self.a_all[l][:, start:stop] = a
            if self.z_all is not None:
                self.z_all[l][:, start:stop] = ws.z[l]
        self._grad_stats()

    def finish(self) -> None:
        """Mini-batch: statistics of the whole epoch's activations."""
        if self.a_all is not None:
            self._activation_stats(self.z_all or self.a_all, self.a_all)

    def results(self) -> dict[str, np.ndarray]:
        out = {}
        for l in range(self.model.n_layers):
            out[f"layer{l + 1}.grad_norm"] = np.sqrt(self.grad_sq[l] / self.batches)
        for l, h in enumerate(self.hidden):
            count = self.n * h
            mean = self.sum_a[l] / count
            out[f"layer{l + 1}.act_mean"] = mean
            out[f"layer{l + 1}.act_std"] = np.sqrt(np.maximum(self.sum_a2[l] / count - mean * mean, 0))
            if self.bounds is not None:
                out[f"layer{l + 1}.saturation"] = self.sat[l] / count
            if self.relu_family:
                out[f"layer{l + 1}.dead_fraction"] = (self.max_z[l] <= 0).mean(axis=1)
        if self.relu_family and self.hidden:
            out["dead_network"] = np.any([(m <= 0).all(axis=1) for m in self.max_z], axis=0).astype(np.float64)
        return out


def _n_correct(logits: np.ndarray, y: np.ndarray, threshold: float) -> np.ndarray:
    """Number of correctly classified samples per replica; ``y`` of shape (n,) or (n_replicas, n)."""
    pred = logits[..., 0] > threshold if logits.shape[-1] == 1 else logits.argmax(axis=-1)
    return np.count_nonzero(pred == y, axis=-1)


def _freeze(grads: list[np.ndarray], replicas: np.ndarray) -> None:
    """Zero the gradients of these replicas: with zero parameters and reset state, no optimiser moves them."""
    for g in grads:
        g[replicas] = 0


def _divergence_limit(initial_loss: np.ndarray, threshold: float) -> np.ndarray:
    """Loss above which a replica has diverged: ``threshold`` times its loss at initialisation."""
    first = np.where(np.isfinite(initial_loss), np.abs(initial_loss), 1.0)
    return threshold * np.maximum(first, 1e-12)


@contextmanager
def _block_executor(model: MLP, batch: int, threads: int | None):
    """A thread pool for the row blocks of batches of ``batch`` rows, with BLAS at one thread meanwhile; or None."""
    blocks = len(row_blocks(batch, model.min_block_rows))
    if blocks == 1 or threads == 1:
        yield None
        return
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    if threads is None:
        threads = max([lib.num_threads for lib in controller.select(user_api="blas").lib_controllers] or [1])
    if threads <= 1:
        yield None
        return
    with controller.limit(limits=1, user_api="blas"), ThreadPoolExecutor(min(threads, blocks) - 1) as pool:
        yield pool


def fit(model: MLP, loss: Loss, optimizer: Optimizer, schedule: Callable[[int], float], data: Dataset, *,
        epochs: int, rngs: Sequence[np.random.Generator], batch_size: int | None = None, log_every: int = 1,
        diagnostics: bool = True, divergence_threshold: float = 1e4,
        on_epoch: Callable[[int, dict], None] | None = None, threads: int | None = None,
        percentiles_every: int | None = None, histogram_epochs: Sequence[int] = ()) -> History:
    """Train ``model`` in place and return its history.

    Parameters
    ----------
    model : MLP
        Initialised network with ``n_replicas`` replicas.
    loss : Loss
    optimizer : Optimizer
        Built over ``model.params()``.
    schedule : callable ``epoch -> learning rate`` (epoch counted from 0)
        A float, or an ndarray of shape (n_replicas,) for replicas with their own learning rates.
    data : Dataset
        Features must already have the model's dtype.
    epochs : int >= 1
    rngs : sequence of numpy.random.Generator, one per replica
        Replica ``k`` shuffles its mini-batches with ``rngs[k]`` alone (one
        ``permutation(n_train)`` per epoch), so it trains exactly as it would
        alone. Full-batch training (``batch_size`` None or >= n_train) draws nothing.
    batch_size : int, optional
        Mini-batch size; None means full batch.
    log_every : int >= 1
        Record metrics every this many epochs, and at the last epoch.
    diagnostics : bool
        Record the per-layer diagnostics (see the module docstring).
    divergence_threshold : float
        A replica diverges when its training loss is non-finite or exceeds this
        many times its loss at initialisation (checked every epoch).
    on_epoch : callable ``(epoch, metrics) -> str | None``, optional
        Called after every recorded epoch with that epoch's metrics (shape
        ``(n_replicas,)`` each), e.g. to show progress. A non-empty string
        returned stops training after that epoch (every replica), e.g. a
        search's pruner; it is kept as ``History.info["stopped"]``, with the
        epoch as ``History.info["stopped_epoch"]``.
    threads : int, optional
        Threads for batches large enough to be split into row blocks
        (:meth:`nnexp.model.MLP.gradients`; at least ``2 * ROW_BLOCK`` rows,
        e.g. a full batch of 1078 digits): the blocks run on this many threads,
        with one BLAS thread each, for the length of the call. Default: the
        number of BLAS threads in effect (``threadpoolctl``), so one thread under
        a parallel launcher that limits BLAS to one. Results do not depend on it.
    percentiles_every : int, optional
        Probe the per-layer distributions (:mod:`nnexp.distributions`) at epoch 0, every this many epochs and at
        the last, and pass their ``layer{l}.probe.*`` metrics to ``on_epoch`` (a call of their own, without the
        training metrics; NaN for diverged replicas). None: never.
    histogram_epochs : sequence of int
        Epochs (0 = initialisation) at which to keep per-layer histograms in :attr:`History.histograms`.

    Returns
    -------
    History

    Raises
    ------
    ValueError
        If ``epochs``, ``batch_size`` or ``log_every`` is below 1, or the number
        of generators differs from the number of replicas.
    """
    if epochs < 1 or log_every < 1 or (batch_size is not None and batch_size < 1):
        raise ValueError("epochs, log_every and batch_size must be >= 1")
    K = model.replicas
    if len(rngs) != K:
        raise ValueError(f"need one generator per replica ({K}), got {len(rngs)}")
    dtype = model.dtype
    n_out = model.sizes[-1]
    threshold = decision_threshold(loss)
    X, y = data.X_train, data.y_train
    Y = encode_targets(y, n_out, dtype)
    X_val, y_val = data.X_val, data.y_val
    Y_val = encode_targets(y_val, n_out, dtype)
    n = X.shape[0]
    B = n if batch_size is None or batch_size >= n else int(batch_size)
    starts = list(range(0, n, B))
    batch_bufs = {}  # per-replica batches, filled with np.take
    shuffled = None  # or the whole epoch's shuffled data, taken at once, batches being its slices
    if B < n and K * n * (X.shape[1] + n_out) * dtype.itemsize <= SHUFFLE_COPY_BYTES:
        shuffled = (np.empty((K, n, X.shape[1]), dtype), np.empty((K, n, n_out), dtype))
    elif B < n:
        for s in starts:
            m = min(B, n - s)
            if m not in batch_bufs:
                batch_bufs[m] = (np.empty((K, m, X.shape[1]), dtype), np.empty((K, m, n_out), dtype))
    params, grads = model.params(), model.grads()
    val_grad = np.empty((K, X_val.shape[0], n_out), dtype)
    diag = _Diagnostics(model, n, B) if diagnostics and model.n_layers > 1 else None
    logits_all = np.empty((K, n, n_out), dtype) if B < n else None  # a recorded epoch's logits, batch by batch
    logged = [e for e in range(1, epochs + 1) if e % log_every == 0 or e == epochs]
    classify = not data.regression  # accuracies need class labels
    names = ["train_loss", "val_loss", *(["val_accuracy", "train_accuracy"] if classify else []), "lr",
             *(diag.names() if diag else [])]
    metrics = {name: np.full((len(logged), K), np.nan) for name in names}
    diverged = np.zeros(K, dtype=np.int64)
    limit = None
    frozen = None  # replicas that diverged: their parameters stay zero
    correct = np.zeros(K, dtype=np.int64)
    callback_seconds = 0.0
    info = {}  # why training stopped early (a callback's signal)
    t0 = time.perf_counter()
    row = 0
    pct_epochs, hist_epochs = (distributions.probe_epochs(epochs, percentiles_every, histogram_epochs)
                               if model.n_layers > 1 else ([], []))
    hists: dict = {"epochs": [], "per_epoch": []} if hist_epochs else {}

    def probe(epoch: int) -> float:
        """Probe the distributions if due at ``epoch``; return the seconds spent in ``on_epoch``."""
        if epoch not in pct_epochs and epoch not in hist_epochs:
            return 0.0
        acts, deltas = distributions.probe(model, loss, X, Y)
        if epoch in hist_epochs:
            hists["epochs"].append(epoch)
            hists["per_epoch"].append(distributions.histograms(acts, deltas))
        if epoch not in pct_epochs or on_epoch is None:
            return 0.0
        values = distributions.percentile_metrics(acts, deltas)
        for v in values.values():
            v[diverged > 0] = np.nan
        t_cb = time.perf_counter()
        on_epoch(epoch, values)
        return time.perf_counter() - t_cb

    callback_seconds += probe(0)
    with _block_executor(model, B, threads) as executor, \
            np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for epoch in range(1, epochs + 1):
            lr = schedule(epoch - 1)
            record = epoch == logged[row]
            if record:
                correct.fill(0)
                if diag:
                    diag.reset()
            if B == n:
                epoch_loss = model.gradients(X, Y, loss, executor)
                if record:
                    ws = model.workspace(X)
                    if classify:
                        correct += _n_correct(ws.logits, y, threshold)
                    if diag:
                        diag.update(ws)
                if frozen is not None:
                    _freeze(grads, frozen)
                optimizer.step(grads, lr)
            else:
                epoch_loss = np.zeros(K)
                perms = np.stack([rng.permutation(n) for rng in rngs])
                if shuffled is not None:
                    np.take(X, perms, axis=0, out=shuffled[0])
                    np.take(Y, perms, axis=0, out=shuffled[1])
                for s in starts:
                    idx = perms[:, s:s + B]
                    if shuffled is not None:
                        Xb, Yb = shuffled[0][:, s:s + B], shuffled[1][:, s:s + B]
                    else:
                        Xb, Yb = batch_bufs[idx.shape[1]]
                        np.take(X, idx, axis=0, out=Xb)
                        np.take(Y, idx, axis=0, out=Yb)
                    batch_loss = model.gradients(Xb, Yb, loss, executor)
                    if limit is None and s == 0:  # the loss at initialisation, before any update
                        limit = _divergence_limit(batch_loss, divergence_threshold)
                    epoch_loss += batch_loss * idx.shape[1]
                    if record:  # keep what the statistics need; computed once per epoch below
                        ws = model.workspace(Xb)
                        logits_all[:, s:s + idx.shape[1]] = ws.logits
                        if diag:
                            diag.collect(ws, s)
                    if frozen is not None:
                        _freeze(grads, frozen)
                    optimizer.step(grads, lr)
                epoch_loss /= n
                if record:
                    if classify:
                        correct += _n_correct(logits_all, np.take(y, perms), threshold)
                    if diag:
                        diag.finish()
            if limit is None:  # full batch: the first epoch's loss is the loss at initialisation
                limit = _divergence_limit(epoch_loss, divergence_threshold)
            # one comparison catches NaN, infinities and losses above the limit
            bad = ~(np.abs(epoch_loss) <= limit)
            newly = None
            if bad.any():
                newly = bad & (diverged == 0)
                for k in np.flatnonzero(newly):
                    diverged[k] = epoch
                    for p in params:
                        p[k] = 0
                    optimizer.reset(k)
                frozen = np.flatnonzero(diverged)
            if record:
                val_logits = model.forward(X_val)
                values = {
                    "train_loss": epoch_loss,
                    "val_loss": loss.value_and_grad(val_logits, Y_val, val_grad),
                    "lr": lr,
                }
                if classify:
                    values.update(val_accuracy=accuracy(val_logits, y_val, threshold), train_accuracy=correct / n)
                if diag:
                    values.update(diag.results())
                for name, v in values.items():
                    metrics[name][row] = v
                stopped = diverged > 0
                if stopped.any():
                    for v in metrics.values():
                        v[row][stopped] = np.nan
                    if newly is not None:  # keep the loss that diverged, for the record
                        metrics["train_loss"][row][newly] = epoch_loss[newly]
                if on_epoch is not None:
                    t_cb = time.perf_counter()
                    stop = on_epoch(epoch, {k: v[row] for k, v in metrics.items()})
                    callback_seconds += time.perf_counter() - t_cb
                    if stop:
                        info.update(stopped=str(stop), stopped_epoch=epoch)
                row += 1
            callback_seconds += probe(epoch)
            if "stopped" in info:
                break
            if (diverged > 0).all():
                break
    seconds = time.perf_counter() - t0 - callback_seconds
    epochs_arr = np.asarray(logged)
    return History(epochs_arr[:row], {k: v[:row] for k, v in metrics.items()}, diverged, seconds,
                   info={"callback_seconds": callback_seconds, **info}, histograms=hists)
