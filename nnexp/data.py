"""Datasets: synthetic 2-D problems, real data that ships inside scikit-learn, and a linear teacher.

Every classification loader returns features ``X`` (``ndarray of shape (n_samples, n_features)``)
and integer class labels ``y`` (``ndarray of shape (n_samples,)``). :func:`load`
then splits them into train / validation / test parts (stratified, seeded by
``split_seed``) and standardises the features with the mean and standard
deviation of the *training part only*.

Regression datasets (:data:`REGRESSION`, ``Dataset.task == "regression"``) return real-valued targets
``ndarray of shape (n_samples, n_outputs)`` instead; their split is not stratified and the targets are not
standardised. Only ``linear_teacher`` is one today (Saxe et al., 2013).

Nothing is downloaded: the real datasets (``digits``, ``breast_cancer``,
``iris``, ``wine``) are files inside the installed scikit-learn package.
``load(..., cache=True)`` (what a job uses) keeps the prepared arrays in nnexp's
user cache, so that later jobs skip the import of scikit-learn and the split.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Dataset", "DATASETS", "DATASET_KEYS", "loader_keys", "load", "encode_targets"]


@dataclass
class Dataset:
    """A split, standardised dataset: classification, or regression (``task``).

    Attributes
    ----------
    name : str
    X_train, X_val, X_test : ndarray of shape (n_*, n_features)
    y_train, y_val, y_test : ndarray of shape (n_*,), int class labels in ``[0, n_classes)``
        Regression: ndarray of shape (n_*, n_outputs), float, the real-valued targets.
    n_classes : int
        Classification: the number of classes. Regression: the number of target columns (``n_outputs``): the
        width of the network's output either way.
    feature_names : list of str
    mean, scale : ndarray of shape (n_features,)
        The standardisation fitted on the training part (``X = (X_raw - mean) / scale``).
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    feature_names: list = field(default_factory=list)
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    task: str = "classification"  # "classification" | "regression"

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def regression(self) -> bool:
        """True for real-valued targets (:data:`REGRESSION`): loss mse, no accuracy."""
        return self.task == "regression"

    def astype(self, dtype) -> "Dataset":
        """The same dataset with features cast to ``dtype``."""
        for part in ("X_train", "X_val", "X_test"):
            setattr(self, part, np.ascontiguousarray(getattr(self, part), dtype=dtype))
        return self


def encode_targets(y: np.ndarray, n_outputs: int, dtype=np.float64) -> np.ndarray:
    """Encode labels for the loss: ``(n, 1)`` 0/1 column when ``n_outputs == 1``, else one-hot ``(n, n_outputs)``.

    Real-valued targets of a regression dataset (already ``(n, n_outputs)``) are returned as they are, cast to
    ``dtype``.
    """
    if y.ndim == 2:
        return np.ascontiguousarray(y, dtype=dtype)
    if n_outputs == 1:
        return y.reshape(-1, 1).astype(dtype)
    Y = np.zeros((y.shape[0], n_outputs), dtype=dtype)
    Y[np.arange(y.shape[0]), y] = 1
    return Y


# --- synthetic ------------------------------------------------------------------------------
def xor(**_):
    """The seed tutorial's XOR truth table: 4 points, 2 features, 2 classes (no split)."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([0, 1, 1, 0])
    return X, y


def _two_classes(X0: np.ndarray, X1: np.ndarray, rng: np.random.Generator, noise: float):
    """Stack the two classes, add isotropic Gaussian noise of std ``noise`` and shuffle."""
    X = np.concatenate([X0, X1])
    X = X + noise * rng.standard_normal(X.shape)
    y = np.repeat([0, 1], [len(X0), len(X1)])
    order = rng.permutation(len(y))
    return X[order], y[order], ["x1", "x2"]


def _halves(n_samples: int) -> tuple[int, int]:
    if int(n_samples) < 4:
        raise ValueError(f"dataset.n_samples must be >= 4 for a 2-D dataset, got {n_samples}")
    return int(n_samples) // 2, int(n_samples) - int(n_samples) // 2


def moons(*, rng: np.random.Generator, n_samples: int = 400, noise: float = 0.2, **_):
    """Two interleaving half circles (as ``sklearn.datasets.make_moons``).

    Class 0: ``(cos t, sin t)``, class 1: ``(1 - cos t, 0.5 - sin t)``, ``t`` evenly
    spaced in ``[0, pi]``; then Gaussian noise of standard deviation ``noise``
    (radius units) on both coordinates.
    """
    n0, n1 = _halves(n_samples)
    t0, t1 = np.linspace(0, np.pi, n0), np.linspace(0, np.pi, n1)
    X0 = np.c_[np.cos(t0), np.sin(t0)]
    X1 = np.c_[1 - np.cos(t1), 0.5 - np.sin(t1)]
    return _two_classes(X0, X1, rng, noise)


def circles(*, rng: np.random.Generator, n_samples: int = 400, noise: float = 0.1, factor: float = 0.5, **_):
    """A small circle (class 1, radius ``factor``) inside a large one (class 0, radius 1), as ``make_circles``.

    Angles evenly spaced on each circle, then Gaussian noise of standard deviation ``noise``.
    """
    n0, n1 = _halves(n_samples)
    t0 = np.linspace(0, 2 * np.pi, n0, endpoint=False)
    t1 = np.linspace(0, 2 * np.pi, n1, endpoint=False)
    X0 = np.c_[np.cos(t0), np.sin(t0)]
    X1 = factor * np.c_[np.cos(t1), np.sin(t1)]
    return _two_classes(X0, X1, rng, noise)


def spiral(*, rng: np.random.Generator, n_samples: int = 400, noise: float = 0.05, turns: float = 1.75, **_):
    """Two interleaved spirals (TensorFlow Playground's "spiral").

    Point ``i`` of a class has radius ``r = i / n`` in ``[0, 1)`` and angle
    ``2 pi turns r`` (class 1 rotated by ``pi``); then Gaussian noise of standard
    deviation ``noise`` (radius units).
    """
    parts = []
    for c, n in enumerate(_halves(n_samples)):
        r = np.arange(n) / n
        t = 2 * np.pi * turns * r + c * np.pi
        parts.append(np.c_[r * np.sin(t), r * np.cos(t)])
    return _two_classes(*parts, rng, noise)


def gaussian(*, rng: np.random.Generator, n_samples: int = 400, noise: float = 0.6, **_):
    """Two isotropic Gaussian blobs centred at ``(-1, -1)`` (class 0) and ``(1, 1)`` (class 1), std ``noise``.

    Linearly separable up to the overlap that ``noise`` creates (Playground's "gaussian").
    """
    n0, n1 = _halves(n_samples)
    X0 = np.broadcast_to([-1.0, -1.0], (n0, 2))
    X1 = np.broadcast_to([1.0, 1.0], (n1, 2))
    return _two_classes(X0, X1, rng, noise)


def linear_teacher(*, rng: np.random.Generator, n_samples: int = 1000, n_features: int = 16, n_outputs: int = 16,
                   noise: float = 0.0, **_):
    r"""A linear teacher: Gaussian inputs and targets :math:`y = x W + \varepsilon`, a regression task.

    The teacher's weights :math:`W` (``ndarray of shape (n_features, n_outputs)``, :func:`teacher_weights`) are
    drawn first from ``rng``, then the inputs :math:`x \sim \mathcal N(0, I)` (``(n_samples, n_features)``),
    then the noise :math:`\varepsilon \sim \mathcal N(0, \mathrm{noise}^2 I)`. With
    :math:`W_{ij} \sim \mathcal N(0, 1/n_\text{features})` every target column has variance about 1 (plus
    ``noise**2``). The setting of Saxe, McClelland & Ganguli (2013), "Exact solutions to the nonlinear dynamics
    of learning in deep linear neural networks", arXiv:1312.6120: a (deep) linear network learning the
    input-output map of a linear teacher with (nearly) white inputs.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_outputs)
    feature_names : list of str
    """
    if int(n_samples) < 10 or int(n_features) < 1 or int(n_outputs) < 1:
        raise ValueError(f"dataset=linear_teacher needs dataset.n_samples >= 10, dataset.n_features >= 1 and "
                         f"dataset.n_outputs >= 1, got {n_samples}, {n_features}, {n_outputs}")
    W = teacher_weights(int(n_features), int(n_outputs), rng=rng)
    X = rng.standard_normal((int(n_samples), int(n_features)))
    Y = X @ W
    if noise:
        Y = Y + noise * rng.standard_normal(Y.shape)
    return X, Y, [f"x{i + 1}" for i in range(int(n_features))]


def teacher_weights(n_features: int, n_outputs: int, *, rng: np.random.Generator) -> np.ndarray:
    r"""The linear teacher's weights, :math:`W_{ij} \sim \mathcal N(0, 1/n_\text{features})`: ndarray of shape
    (n_features, n_outputs). ``dataset=linear_teacher`` draws them first from ``default_rng(split_seed)``, so
    ``teacher_weights(n_features, n_outputs, rng=np.random.default_rng(split_seed))`` is the teacher of a run."""
    return rng.standard_normal((n_features, n_outputs)) / np.sqrt(n_features)


def _sklearn_loader(fn_name: str):
    def load_fn(**_):
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, fn_name)()
        return bunch.data.astype(np.float64), bunch.target.astype(np.int64), list(bunch.feature_names)

    load_fn.__doc__ = f"``sklearn.datasets.{fn_name}()``, shipped with scikit-learn."
    return load_fn


def csv(*, path: str | None = None, target: str | None = None, **_):
    """A CSV file with a header row: ``target`` names the label column, every other column is a feature.

    Labels may be numbers or strings (at least two distinct classes); features
    must be numbers, and no cell may be empty or ``NA``/``NaN``. The file is read
    as UTF-8; a byte-order mark (as spreadsheet programs write) is ignored.

    nnexp trains classifiers: a numeric target with more distinct values than
    half its rows (:data:`MAX_CLASSES_SHARE`) is taken for a regression target and
    refused, rather than treated as hundreds of one-row classes.

    Raises
    ------
    ValueError
        Naming ``dataset.path`` or ``dataset.target`` when the file is missing,
        has no such column, a missing or non-numeric value, a single class, or a
        continuous target.
    """
    import csv as csv_module

    if not path or not target:
        raise ValueError("dataset=csv needs dataset.path=<file.csv> and dataset.target=<label column>")
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"dataset.path={path!r} does not exist or is not a file")
    with file.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a byte-order mark is not part of a name
        rows = list(csv_module.reader(f))
    if not rows:
        raise ValueError(f"dataset.path={path!r} is empty; expected a header row and data rows")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if target not in header:
        raise ValueError(f"dataset.target={target!r} is not a column of {path}; choose one of: {', '.join(header)}")
    t = header.index(target)
    features = [h for i, h in enumerate(header) if i != t]
    if not features or not body:
        raise ValueError(f"dataset.path={path!r} needs at least one feature column besides {target!r} and one data row")
    X = np.empty((len(body), len(features)))
    labels = []
    for line, r in enumerate(body, start=2):
        cells = [c.strip() for c in r]
        if len(cells) != len(header) or any(c.lower() in ("", "na", "nan", "null") for c in cells):
            raise ValueError(f"dataset.path={path!r} has a missing value on line {line}; every cell must be filled")
        labels.append(cells[t])
        for j, c in enumerate(cells[:t] + cells[t + 1:]):
            try:
                X[line - 2, j] = float(c)
            except ValueError:
                raise ValueError(f"dataset.path={path!r} line {line}: feature {features[j]!r} = {c!r} is not a number; "
                                 f"features must be numeric") from None
    if not np.isfinite(X).all():
        raise ValueError(f"dataset.path={path!r} has an infinite feature value; features must be finite numbers")
    y = np.asarray(labels)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"dataset.target={target!r} has a single class ({str(y[0])!r}); a classifier needs at least 2")
    if len(classes) > MAX_CLASSES_SHARE * len(y) and _all_numbers(classes):
        raise ValueError(f"dataset.target={target!r} looks continuous ({len(classes)} distinct numbers in {len(y)} rows); "
                         "nnexp trains classifiers: the target must hold class labels (numbers or strings), "
                         "each on several rows; bin a continuous target into classes first")
    return X, y, features


#: A numeric target with more distinct values than this share of its rows is taken for a regression target.
MAX_CLASSES_SHARE = 0.5


def _all_numbers(values) -> bool:
    try:
        [float(v) for v in values]
    except ValueError:
        return False
    return True


#: Loader per dataset name: ``(**params) -> (X, y[, feature_names])``.
DATASETS: dict[str, Callable] = {
    "xor": xor,
    "digits": _sklearn_loader("load_digits"),
    "breast_cancer": _sklearn_loader("load_breast_cancer"),
    "iris": _sklearn_loader("load_iris"),
    "wine": _sklearn_loader("load_wine"),
    "moons": moons,
    "circles": circles,
    "spiral": spiral,
    "gaussian": gaussian,
    "csv": csv,
    "linear_teacher": linear_teacher,
}

#: Keys of ``dataset.*`` that only some loaders read (the others split and standardise every dataset).
DATASET_KEYS = ("n_samples", "noise", "path", "target", "n_features", "n_outputs")


def loader_keys(name: str) -> set[str]:
    """The keys of :data:`DATASET_KEYS` that the loader of dataset ``name`` reads: its keyword parameters."""
    import inspect

    params = inspect.signature(DATASETS[name]).parameters.values()
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY} & set(DATASET_KEYS)


#: Datasets too small to split: train, validation and test are the whole set.
UNSPLIT = {"xor"}

#: Generated datasets: their loader takes ``rng``, a generator seeded with the
#: dataset's ``split_seed``, so the points (like the split) are the same for every
#: training seed of a sweep; change ``dataset.split_seed`` for another draw.
GENERATED = {"moons", "circles", "spiral", "gaussian", "linear_teacher"}

#: Datasets with real-valued targets of shape (n_samples, n_outputs): ``Dataset.task == "regression"``.
REGRESSION = {"linear_teacher"}


def load(name: str, *, val_fraction: float = 0.2, test_fraction: float = 0.2, split_seed: int = 0,
         standardize: bool = True, cache: bool = False, input_variance: float | None = None, **params) -> Dataset:
    """Load, split and standardise a dataset.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    val_fraction, test_fraction : float in (0, 1)
        Shares of the samples held out for validation and test (stratified by class).
    split_seed : int
        Seed of the split, separate from the training seed so that every seed
        of a sweep sees the same split.
    standardize : bool
        Scale features to zero mean and unit variance using training statistics.
    cache : bool
        Reuse the prepared arrays from nnexp's user cache (:mod:`nnexp.cache`), and
        store them there on a miss; see :func:`cache_path` for what the entry is keyed
        by. The arrays are bit for bit those of a fresh load. CSV files are never cached.
    input_variance : float > 0, optional
        The variance of every (non-constant) standardised feature over the training part: the standardised
        features are multiplied by ``sqrt(input_variance)`` (``scale`` divided by it, so that
        ``X = (X_raw - mean) / scale`` still holds). None (default) leaves them at variance 1. Needs
        ``standardize``. Klambauer et al. (2017) start SELU networks from input variances 0.5 and 2 this way.
    **params
        Passed to the loader (for example ``noise`` or ``n_samples``).

    Raises
    ------
    ValueError
        If ``name`` is unknown, the fractions leave no training data, or ``input_variance`` is not a positive
        number or is given without ``standardize``.
    """
    if input_variance is not None:
        if not (standardize and name not in UNSPLIT and 0 < input_variance < float("inf")):
            raise ValueError(f"dataset.input_variance={input_variance} must be a number > 0, with "
                             "dataset.standardize=true (it sets the variance of the standardised features)")
        return _rescaled(load(name, val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed,
                              standardize=standardize, cache=cache, **params), input_variance)
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not known; choose one of: {', '.join(sorted(DATASETS))}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("dataset.val_fraction and dataset.test_fraction must be in (0, 1) and sum to less than 1")
    params = {k: v for k, v in params.items() if v is not None}
    path = None
    if cache and name not in UNCACHED:
        path = cache_path(name, val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed,
                          standardize=standardize, **params)
        data = _read_cached(path)
        if data is not None:
            return data
    data = _prepare(name, val_fraction, test_fraction, split_seed, standardize, params)
    if path is not None:
        _write_cached(path, data)
    return data


def _rescaled(data: Dataset, variance: float) -> Dataset:
    """``data`` with its standardised features multiplied by ``sqrt(variance)`` (see :func:`load`)."""
    r = float(np.sqrt(variance))
    return replace(data, X_train=data.X_train * r, X_val=data.X_val * r, X_test=data.X_test * r,
                   scale=data.scale / r)


#: Datasets read from a user's file, which may change under the same parameters: never cached.
UNCACHED = {"csv"}

#: Arrays of a :class:`Dataset` kept in a cache entry.
_ARRAYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "mean", "scale")


def cache_path(name: str, **settings) -> Path:
    """The cache entry of a prepared dataset: ``<cache>/datasets/<name>-<key>.npz``.

    The key covers ``name`` and ``settings`` (fractions, split seed, standardisation,
    loader parameters), the versions of NumPy and scikit-learn (the split, and the data
    files of the real datasets, come from them) and the source of this module, so that
    any of them changing makes a new entry instead of reusing a stale one.
    """
    from importlib.metadata import version

    from .cache import cache_dir, key_of

    key = key_of({"name": name, **settings, "numpy": np.__version__, "scikit-learn": version("scikit-learn"),
                  "source": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()})
    return cache_dir("datasets") / f"{name}-{key}.npz"


def _read_cached(path: Path) -> Dataset | None:
    """The dataset stored at ``path``, or None if there is none or it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _ARRAYS}
            return Dataset(str(z["name"]), n_classes=int(z["n_classes"]), task=str(z["task"]),
                           feature_names=[str(f) for f in z["feature_names"]], **arrays)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # made again and replaced
        log.debug("unreadable dataset cache entry %s: %s", path, e)
        return None


def _write_cached(path: Path, data: Dataset) -> None:
    """Store ``data`` at ``path`` atomically; a cache that cannot be written is skipped."""
    from .cache import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, name=data.name, n_classes=data.n_classes, task=data.task,
                     feature_names=np.array(data.feature_names, dtype=str),
                     **{k: getattr(data, k) for k in _ARRAYS})

    try:
        atomic_write(path, write)
    except OSError as e:
        log.debug("dataset cache not written (%s)", e)


#: Rows per class that a stratified split into train, validation and test needs.
MIN_CLASS_ROWS = 3


def _check_stratifiable(name: str, classes: np.ndarray, counts: np.ndarray, params: dict) -> None:
    """Refuse a dataset with a class too rare to appear in each of train, validation and test.

    Raises
    ------
    ValueError
        Naming the class (and ``dataset.target`` for a CSV file).
    """
    rare = int(np.argmin(counts))
    if counts[rare] >= MIN_CLASS_ROWS:
        return
    key = f"dataset.target={params['target']!r}" if name == "csv" else f"dataset={name}"
    hint = " (a continuous target? nnexp trains classifiers; bin it into classes first)" if (
        name == "csv" and _all_numbers(classes)) else ""
    raise ValueError(f"{key}: class {str(classes[rare])!r} has {counts[rare]} row{'s' if counts[rare] != 1 else ''}; "
                     f"a stratified split into train, validation and test needs at least {MIN_CLASS_ROWS} per class"
                     + hint)


def _prepare(name: str, val_fraction: float, test_fraction: float, split_seed: int, standardize: bool,
             params: dict) -> Dataset:
    """Load ``name`` with ``params``, split it and standardise it (see :func:`load`)."""
    if name in GENERATED:
        params["rng"] = np.random.default_rng(split_seed)
    out = DATASETS[name](**params)
    X, y = out[0], out[1]
    feature_names = list(out[2]) if len(out) > 2 else [f"x{i}" for i in range(X.shape[1])]
    if name in REGRESSION:
        return _prepare_regression(name, X, y, feature_names, val_fraction, test_fraction, split_seed, standardize)
    classes, y = np.unique(y, return_inverse=True)
    if name in UNSPLIT:
        parts = (X, y, X, y, X, y)
    else:
        from sklearn.model_selection import train_test_split

        _check_stratifiable(name, classes, np.bincount(y, minlength=len(classes)), params)
        try:
            X_rest, X_test, y_rest, y_test = train_test_split(
                X, y, test_size=test_fraction, random_state=split_seed, stratify=y)
            X_train, X_val, y_train, y_val = train_test_split(
                X_rest, y_rest, test_size=val_fraction / (1 - test_fraction), random_state=split_seed,
                stratify=y_rest)
        except ValueError:  # a part smaller than the number of classes
            raise ValueError(f"dataset={name}: {len(y)} rows in {len(classes)} classes are too few for a stratified "
                             f"split with dataset.val_fraction={val_fraction} and dataset.test_fraction={test_fraction}: "
                             "validation and test each need at least one row per class") from None
        parts = (X_train, y_train, X_val, y_val, X_test, y_test)
    X_train, y_train, X_val, y_val, X_test, y_test = parts
    mean = np.zeros(X.shape[1])
    scale = np.ones(X.shape[1])
    if standardize and name not in UNSPLIT:
        with np.errstate(over="ignore", invalid="ignore"):
            mean = X_train.mean(axis=0)
            scale = X_train.std(axis=0)
        bad = ~(np.isfinite(mean) & np.isfinite(scale))
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ValueError(f"dataset feature {feature_names[j]!r} has values too large to standardise "
                             f"(|x| up to {np.abs(X_train[:, j]).max():.3g}); rescale it first")
        scale[scale == 0] = 1.0  # constant features (digits' blank border pixels) stay 0
        X_train, X_val, X_test = ((part - mean) / scale for part in (X_train, X_val, X_test))
    return Dataset(name, X_train, y_train, X_val, y_val, X_test, y_test, n_classes=len(classes),
                   feature_names=feature_names, mean=mean, scale=scale)


def _prepare_regression(name: str, X: np.ndarray, Y: np.ndarray, feature_names: list, val_fraction: float,
                        test_fraction: float, split_seed: int, standardize: bool) -> Dataset:
    """Split a regression dataset (not stratified, seeded by ``split_seed``); standardise the features only.

    Targets stay as they are: ``ndarray of shape (n_*, n_outputs)``; ``n_classes`` is ``n_outputs``.
    """
    from sklearn.model_selection import train_test_split

    Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    X_rest, X_test, Y_rest, Y_test = train_test_split(X, Y, test_size=test_fraction, random_state=split_seed)
    X_train, X_val, Y_train, Y_val = train_test_split(X_rest, Y_rest, test_size=val_fraction / (1 - test_fraction),
                                                      random_state=split_seed)
    mean, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
    if standardize:
        mean, scale = X_train.mean(axis=0), X_train.std(axis=0)
        scale[scale == 0] = 1.0
        X_train, X_val, X_test = ((part - mean) / scale for part in (X_train, X_val, X_test))
    return Dataset(name, X_train, Y_train, X_val, Y_val, X_test, Y_test, n_classes=Y.shape[1],
                   feature_names=feature_names, mean=mean, scale=scale, task="regression")
