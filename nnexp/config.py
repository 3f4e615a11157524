"""The typed configuration schema, registered in Hydra's ConfigStore.

The YAML files in ``conf/`` extend these dataclasses (``conf/config.yaml``
starts from ``base_config``), so a key that does not exist or a value of the
wrong type fails when Hydra composes the config. :func:`validate` then checks
ranges and combinations and raises :class:`ConfigError` with a one-line message
that names the key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

__all__ = ["Config", "ConfigError", "register", "validate", "hidden_sizes", "DEFAULT_HIDDEN", "check_keys",
           "unknown_key_message", "schema_keys", "flatten", "ACCEPTS"]


class ConfigError(ValueError):
    """A user's configuration mistake: reported as one line, without a traceback."""


@dataclass
class ActivationConfig:
    name: str = MISSING  # config name of the hidden-layer activation
    alpha: Optional[float] = None  # leaky_relu slope / elu scale for z < 0
    beta: Optional[float] = None  # silu / softplus sharpness
    approximate: Optional[bool] = None  # gelu: tanh approximation instead of the exact erf form


@dataclass
class InitConfig:
    name: str = MISSING  # weight initialiser, or "auto" for the activation's recommended one
    std: Optional[float] = None  # normal: standard deviation
    limit: Optional[float] = None  # uniform: half-width
    gain: Optional[float] = None  # overrides the activation's recommended gain
    bias: str = "zeros"  # bias initialiser: zeros | constant
    bias_value: float = 0.0  # constant bias value


@dataclass
class OptimizerConfig:
    name: str = MISSING  # sgd | momentum | nesterov | adam
    lr: float = 0.1  # learning rate (step size), > 0
    momentum: Optional[float] = None  # momentum / nesterov coefficient in [0, 1)
    beta1: Optional[float] = None  # adam first-moment decay
    beta2: Optional[float] = None  # adam second-moment decay
    eps: Optional[float] = None  # adam denominator constant
    weight_decay: float = 0.0  # L2 coefficient on the weights (not biases), >= 0
    schedule: str = "constant"  # learning-rate schedule: constant | step | cosine
    step_size: int = 100  # step schedule: epochs between decays
    gamma: float = 0.5  # step schedule: decay factor
    min_lr: float = 0.0  # cosine schedule: final learning rate


@dataclass
class DatasetConfig:
    name: str = MISSING  # dataset name
    val_fraction: float = 0.2  # share of samples for validation
    test_fraction: float = 0.2  # share of samples for test
    split_seed: int = 0  # seed of the split (the same for every training seed)
    standardize: bool = True  # zero mean, unit variance from the training part
    input_variance: Optional[float] = None  # variance of the standardised features (x sqrt(v)); null: 1
    n_samples: Optional[int] = None  # synthetic datasets: number of points
    noise: Optional[float] = None  # synthetic datasets: noise level
    path: Optional[str] = None  # csv: file path
    target: Optional[str] = None  # csv: name of the label column
    n_features: Optional[int] = None  # linear_teacher: input dimension
    n_outputs: Optional[int] = None  # linear_teacher: number of real-valued targets


@dataclass
class ModelConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [64])  # units per hidden layer
    depth: Optional[int] = None  # with width: depth hidden layers of width units, replacing hidden_sizes
    width: Optional[int] = None  # with depth: units of each of the depth hidden layers
    loss: str = "auto"  # auto | mse | sigmoid_mse | binary_cross_entropy | cross_entropy
    dtype: str = "float64"  # float64 | float32


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # MLflow tracking URI; default sqlite:///<launch dir>/mlflow.db
    experiment: str = "activations"  # MLflow experiment (one per study)
    log_every: Optional[int] = None  # record metrics every this many epochs; null = 1 up to 500 epochs, else epochs/500
    diagnostics: bool = True  # per-layer gradient norms, activation statistics, saturation, dead units
    diagnostics_points: Optional[int] = 50  # per-layer diagnostics at about this many recorded epochs (evenly spaced, the last included); null = every one
    percentiles_every: Optional[int] = None  # per-layer activation / back-propagated gradient percentiles every this many epochs (and at 0); null = off
    histogram_epochs: list[int] = field(default_factory=list)  # epochs (0 = initialisation) of per-layer histograms, one histograms.npz per run
    save_weights: bool = True  # log final weights as an .npz artifact
    replica_runs: bool = True  # one run per replica; false: one run for all replicas, metrics their means (nnexp.population)
    log_model: bool = True  # log the network as an MLflow pyfunc model (needs save_weights); see nnexp.mlflow_model
    register_model: Optional[str] = None  # at a sweep's end, register its best run's model under this name, alias "best"
    resume: bool = True  # skip configurations that already have a FINISHED run in the experiment
    report: bool = True  # write the comparison report at the end of a multirun
    report_target: Optional[float] = None  # the report's "epochs to target" on val_loss; null = median final val_loss
    ui_url: Optional[str] = None  # MLflow UI address the report links to; null = $NNEXP_UI_URL or http://127.0.0.1:5000
    progress: bool = True  # show a progress bar while training


@dataclass
class Config:
    activation: ActivationConfig = MISSING
    init: InitConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    dataset: DatasetConfig = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    epochs: int = 100  # passes over the training data, >= 1
    batch_size: Optional[int] = None  # mini-batch size; null = full batch
    seed: int = 0  # seed of initialisation and shuffling
    replicas: int = 1  # train this many seeds (seed, seed+1, ...) as one batch
    divergence_threshold: float = 10000.0  # loss above this multiple of the loss at initialisation: diverged
    study: Optional[str] = None  # name of the study from experiments/, if any
    claims: Optional[Any] = None  # the study's claims, checked by the report (nnexp.report.claims); not a training key
    blas_threads: Optional[int] = None  # BLAS threads per job; null = 1 under a parallel launcher, cores - 1 beside the metric writer, else unlimited


def divide(a, b) -> float:
    """The ``${nnexp.div:a,b}`` resolver: ``a / b`` as a float.

    For a value that scales with another key, e.g. a learning rate that falls as 1/depth when the depth is swept:
    ``optimizer.lr: ${nnexp.div:0.3,${model.depth}}`` (``experiments/saxe2013_deep_linear.yaml``). A run records
    the resolved number.

    Raises
    ------
    ValueError
        If ``b`` is zero or either is not a number (OmegaConf reports it as an interpolation error naming the key).
    """
    try:
        return float(a) / float(b)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"${{nnexp.div:{a},{b}}} needs two numbers, the second not 0") from None


OmegaConf.register_new_resolver("nnexp.div", divide, replace=True)  # at import: wherever a config is composed


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for name, node in studies().items():
        cs.store(group="experiment", name=name, node=node, package="_global_")


def studies() -> dict[str, DictConfig]:
    """The named studies: ``{name: config}``, nnexp's ``experiments/<name>.yaml`` and the launch folder's (see :mod:`nnexp.studies`)."""
    from .studies import study_files

    return {name: OmegaConf.create(f.read_text(encoding="utf-8")) for name, f in study_files().items()}


#: What each numeric key accepts, for messages about a value of the wrong type or range.
ACCEPTS = {
    "epochs": "an integer >= 1",
    "batch_size": "an integer >= 1, or null for full batch",
    "seed": "an integer",
    "replicas": "an integer >= 1",
    "blas_threads": "an integer >= 1, or null (1 under a parallel launcher, cores - 1 beside the metric writer, else unlimited)",
    "divergence_threshold": "a number > 1",
    "optimizer.lr": "a number > 0",
    "optimizer.weight_decay": "a number >= 0",
    "init.gain": "a number > 0, or null for the activation's recommended gain",
    "optimizer.momentum": "a number in [0, 1)",
    "optimizer.step_size": "an integer >= 1",
    "model.hidden_sizes": "a non-empty list of integers >= 1, e.g. [64] or [32,32]",
    "model.depth": "an integer >= 1 together with model.width, or null",
    "model.width": "an integer >= 1 together with model.depth, or null",
    "tracking.log_every": "an integer >= 1 or null",
    "tracking.report_target": "a finite number >= 0 (a val_loss), or null for the median final val_loss",
    "tracking.percentiles_every": "an integer >= 1 or null (off)",
    "tracking.diagnostics_points": "an integer >= 1 or null (every recorded epoch)",
    "tracking.histogram_epochs": "a list of epochs in [0, epochs], e.g. [0,10,30]",
    "dataset.split_seed": "an integer in [0, 2**32 - 1]",
    "tracking.register_model": "a model name (not blank, no '/' or ':', not '.' or starting with '..'), or null",
}

_SAFE_NAME = re.compile(r"^[\w.\- ]+$")  # \w: letters and digits of any script, and _

#: Widest hidden layer, and most weights between hidden layers, that validation accepts.
MAX_UNITS = 100_000
MAX_HIDDEN_WEIGHTS = 50_000_000
#: Tracking URIs nnexp accepts (MLflow's file store is deprecated; a plain path is a mistake).
URI_SCHEMES = ("sqlite:///", "http://", "https://", "postgresql", "mysql", "mssql", "databricks")


def schema_keys(schema: type | None = None, prefix: str = "") -> list[str]:
    """Every key of the schema, dotted (``optimizer.lr``), sections included (``optimizer``)."""
    schema = Config if schema is None else schema
    out = []
    for name, tp in typing.get_type_hints(schema).items():
        out.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            out.extend(schema_keys(tp, f"{prefix}{name}."))
    return out


def config_groups() -> dict[str, list[str]]:
    """The config groups a command line chooses from (``activation=relu``): ``{group: [options]}``.

    The folders of ``conf/`` (Hydra's own ``hydra/`` aside) and ``experiment`` (the files of ``experiments/``).
    """
    from importlib.resources import files

    out = {f.name: sorted(g.name[:-5] for g in f.iterdir() if g.name.endswith(".yaml"))
           for f in files("nnexp.conf").iterdir() if f.is_dir() and f.name not in ("hydra", "__pycache__")}
    out["experiment"] = sorted(studies())
    return dict(sorted(out.items()))


#: The joblib launcher's keys (hydra-joblib-launcher's JoblibLauncherConf): set without ``hydra/launcher=joblib``,
#: Hydra's basic launcher does not have them.
JOBLIB_KEYS = ("n_jobs", "backend", "prefer", "require", "verbose", "timeout", "pre_dispatch", "batch_size",
               "temp_folder", "max_nbytes", "mmap_mode")


def unknown_key_message(key: str, value: Any = None) -> str:
    """One line for a key the schema does not have, with the closest known key or group choice (difflib).

    A config group is suggested in its command-line form, ``activation=relu`` (``value`` when it is
    one of the group's options, else ``activation=<option>``).
    """
    if key.startswith("hydra.launcher.") and key.split(".")[2] in JOBLIB_KEYS:  # with the basic launcher (no keys)
        return (f"{key} is a key of a parallel launcher, not of Hydra's basic one (the default): choose one first, "
                f"e.g. hydra/launcher=joblib {key}=...")
    groups = config_groups()
    candidates = {k: k for k in schema_keys() if not key.startswith(k + ".")}  # model.a: not "model"
    candidates.update({g: g for g in groups if not key.startswith(g + ".")})  # tracking.foo: not "tracking=team"
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    section = key.rsplit(".", 1)[0] if "." in key else ""
    inside = [k for k in schema_keys() if k.startswith(section + ".") and "." not in k[len(section) + 1:]]
    if not close and inside:  # a key of a known section: name the section's keys
        return f"{key} is not a key; {section} has: {', '.join(k[len(section) + 1:] for k in inside)}"
    if not close:
        return f"{key} is not a key; see python -m nnexp --cfg job for the keys and --help for the config groups"
    best = close[0]
    if best in groups:
        option = value if isinstance(value, str) and value in groups[best] else "<option>"
        return f"{key} is not a key; did you mean {best}={option}? ({best}: {', '.join(groups[best])})"
    return f"{key} is not a key; did you mean {best}?"


@functools.cache
def _type_hints(schema: type) -> dict[str, Any]:
    """``typing.get_type_hints(schema)``, once per schema class (it evaluates every annotation: ~0.2 ms a call)."""
    return typing.get_type_hints(schema)


def check_keys(cfg: DictConfig) -> None:
    """Refuse every key of a composed config (``hydra`` aside) that the schema :class:`Config` does not declare.

    Hydra adds keys that ``+key=value`` names without checking them against the schema, so a typo
    (``+activaton=relu``) would otherwise be stored and ignored.

    Raises
    ------
    ConfigError
        Naming the first unknown key (see :func:`unknown_key_message`).
    """

    def walk(node: DictConfig, schema: type, prefix: str) -> None:
        hints = _type_hints(schema)
        for k in node.keys():
            key = f"{prefix}{k}"
            if not prefix and k == "hydra":
                continue
            if k not in hints:
                try:
                    value = None if OmegaConf.is_missing(node, k) else node.get(k)
                except Exception:  # an interpolation that does not resolve: the key is what is wrong
                    value = None
                raise ConfigError(unknown_key_message(key, value))
            if dataclasses.is_dataclass(hints[k]) and not OmegaConf.is_missing(node, k):
                walk(node[k], hints[k], key + ".")

    walk(cfg, Config, "")


from .identity import flatten  # noqa: E402 - one flattening, owned with the run identity that keys on it


#: ``model.hidden_sizes`` when the config does not set it (schema and ``conf/config.yaml``).
DEFAULT_HIDDEN = [64]


def hidden_sizes(cfg: DictConfig) -> list[int]:
    """The hidden layer sizes a config trains: ``[width] * depth`` when ``model.depth`` and ``model.width`` are set,
    else ``model.hidden_sizes``.

    The rule: ``model.depth`` and ``model.width`` go together (both set, or both null), and when set they replace
    ``model.hidden_sizes``, which must then be left at its default ``[64]`` (or equal ``[width] * depth``), so that a
    sweep over ``model.depth`` is one override: ``model.width=64 model.depth=2,10,30``.

    Raises
    ------
    ConfigError
        If only one of depth and width is set, either is below 1, or ``model.hidden_sizes`` was also set to
        something else.
    """
    m = cfg.model
    depth, width = m.get("depth"), m.get("width")
    if depth is None and width is None:
        return [int(h) for h in m.hidden_sizes]
    if depth is None or width is None:
        raise ConfigError(f"model.depth={depth} and model.width={width} go together: set both (e.g. model.depth=30 "
                          "model.width=64) or neither (then model.hidden_sizes gives the layers)")
    if depth < 1 or width < 1:
        raise ConfigError(f"model.depth={depth} and model.width={width} must both be integers >= 1")
    sizes = [int(width)] * int(depth)
    given = [int(h) for h in m.hidden_sizes]
    if given not in (DEFAULT_HIDDEN, sizes):
        raise ConfigError(f"model.hidden_sizes={given} conflicts with model.depth={depth} model.width={width}: "
                          "give the hidden layers one way (drop model.hidden_sizes, or model.depth and model.width)")
    return sizes


#: With ``tracking.log_every=null``, a run records metrics at about this many epochs.
LOG_POINTS = 500


def log_every(cfg: DictConfig) -> int:
    """Epochs between recorded metrics: ``tracking.log_every``, or ``ceil(epochs / 500)`` when it is null.

    Every epoch up to 500 epochs; longer runs keep about 500 points per metric,
    which bounds what a run writes to the store (MLflow costs about 0.1 ms per point).
    """
    if cfg.tracking.log_every is not None:
        return int(cfg.tracking.log_every)
    return max(1, -(-int(cfg.epochs) // LOG_POINTS))


def env_uri_problem(env: str) -> str:
    """The error for a ``$MLFLOW_TRACKING_URI`` nnexp cannot use (MLflow's old default ``./mlruns``, a file store)."""
    return (f"MLFLOW_TRACKING_URI={env!r} (from the environment) is not a tracking URI nnexp can use; set "
            "tracking.uri=sqlite:///<path>/mlflow.db (or http://host:port, postgresql://...) or unset "
            "MLFLOW_TRACKING_URI to use ./mlflow.db")


def validate(cfg: DictConfig) -> None:
    """Check keys, ranges and combinations that the schema's types cannot express.

    Keys added with ``+key=value`` that the schema does not declare (:func:`check_keys`),
    and dataset keys set for a dataset that does not read them (``dataset.path`` without
    ``dataset=csv``), are refused as well.

    Raises
    ------
    ConfigError
        With a one-line message naming the key and what it accepts.
    """
    from .activations import get_activation
    from .data import DATASET_KEYS, DATASETS, loader_keys
    from .initializers import INITIALIZERS, auto_initializer, get_bias_initializer, get_initializer
    from .losses import LOSSES
    from .optimizers import SCHEDULES, make_optimizer

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    c = cfg
    check_keys(c)
    for key, value in flatten(c).items():  # nan and inf pass the type check; nothing trains or is stored with them
        if key.startswith(("hydra.", "claims")):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        need(not any(isinstance(v, float) and not math.isfinite(v) for v in values),
             f"{key}={value} must be a finite number" + (f" ({ACCEPTS[key]})" if key in ACCEPTS else ""))
    need(c.init.gain is None or c.init.gain > 0, f"init.gain={c.init.gain} must be {ACCEPTS['init.gain']}")
    try:
        act = get_activation(c.activation.name, alpha=c.activation.alpha, beta=c.activation.beta,
                             approximate=c.activation.approximate)
        if c.init.name != "auto":
            get_initializer(c.init.name, std=c.init.std, limit=c.init.limit)
        init_name = auto_initializer(act.spec.family) if c.init.name == "auto" else c.init.name
        if c.init.gain is not None and init_name in INITIALIZERS and not INITIALIZERS[init_name].uses_gain:
            raise ValueError(f"init.gain does not apply to init={init_name}"
                             + (" (chosen by init=auto)" if c.init.name == "auto" else "")
                             + "; initialisers that take a gain: "
                             + ", ".join(sorted(k for k, v in INITIALIZERS.items() if v.uses_gain)))
        get_bias_initializer(c.init.bias, c.init.bias_value)
        make_optimizer(c.optimizer.name, [], momentum=c.optimizer.momentum, beta1=c.optimizer.beta1,
                       beta2=c.optimizer.beta2, eps=c.optimizer.eps)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    need(c.init.name == "auto" or c.init.name in INITIALIZERS,
         f"init={c.init.name!r} is not known; choose one of: {', '.join(sorted([*INITIALIZERS, 'auto']))}")
    need(c.optimizer.lr > 0 and math.isfinite(c.optimizer.lr), f"optimizer.lr={c.optimizer.lr} must be a finite number > 0")
    need(c.optimizer.weight_decay >= 0, f"optimizer.weight_decay={c.optimizer.weight_decay} must be >= 0")
    if c.optimizer.momentum is not None:
        need(0 <= c.optimizer.momentum < 1, f"optimizer.momentum={c.optimizer.momentum} must be in [0, 1)")
    need(c.optimizer.schedule in SCHEDULES,
         f"optimizer.schedule={c.optimizer.schedule!r} is not known; choose one of: {', '.join(sorted(SCHEDULES))}")
    need(c.optimizer.step_size >= 1, f"optimizer.step_size={c.optimizer.step_size} must be >= 1")
    need(c.epochs >= 1, f"epochs={c.epochs} must be an integer >= 1")
    need(c.blas_threads is None or c.blas_threads >= 1, f"blas_threads={c.blas_threads} must be {ACCEPTS['blas_threads']}")
    need(c.batch_size is None or c.batch_size >= 1, f"batch_size={c.batch_size} must be >= 1 (or null for full batch)")
    need(c.replicas >= 1, f"replicas={c.replicas} must be >= 1")
    need(c.tracking.log_every is None or c.tracking.log_every >= 1,
         f"tracking.log_every={c.tracking.log_every} must be >= 1 (or null for about 500 points per run)")
    need(c.tracking.get("diagnostics_points") is None or c.tracking.diagnostics_points >= 1,
         f"tracking.diagnostics_points={c.tracking.get('diagnostics_points')} must be "
         f"{ACCEPTS['tracking.diagnostics_points']}")
    need(c.tracking.report_target is None or (math.isfinite(c.tracking.report_target) and c.tracking.report_target >= 0),
         f"tracking.report_target={c.tracking.report_target} must be {ACCEPTS['tracking.report_target']}")
    need(len(c.model.hidden_sizes) >= 1 and all(h >= 1 for h in c.model.hidden_sizes),
         f"model.hidden_sizes={list(c.model.hidden_sizes)} must be a non-empty list of sizes >= 1")
    sizes = hidden_sizes(c)
    need(c.model.loss in {*LOSSES, "auto"},
         f"model.loss={c.model.loss!r} is not known; choose one of: {', '.join(sorted([*LOSSES, 'auto']))}")
    need(c.model.dtype in ("float64", "float32"), f"model.dtype={c.model.dtype!r} is not known; choose one of: float32, float64")
    need(c.dataset.name in DATASETS,
         f"dataset={c.dataset.name!r} is not known; choose one of: {', '.join(sorted(DATASETS))}")
    need(0 < c.dataset.val_fraction < 1 and 0 < c.dataset.test_fraction < 1
         and c.dataset.val_fraction + c.dataset.test_fraction < 1,
         "dataset.val_fraction and dataset.test_fraction must each be in (0, 1) and sum to less than 1")
    v = c.dataset.get("input_variance")
    need(v is None or (0 < v < math.inf and c.dataset.standardize and c.dataset.name != "xor"),
         f"dataset.input_variance={v} must be a number > 0 (the variance of the standardised features), with "
         "dataset.standardize=true and a dataset other than xor")
    need(c.divergence_threshold > 1, f"divergence_threshold={c.divergence_threshold} must be > 1")
    need(c.seed >= 0, f"seed={c.seed} must be an integer >= 0")
    need(c.tracking.percentiles_every is None or c.tracking.percentiles_every >= 1,
         f"tracking.percentiles_every={c.tracking.percentiles_every} must be {ACCEPTS['tracking.percentiles_every']}")
    need(all(0 <= e <= c.epochs for e in c.tracking.histogram_epochs),
         f"tracking.histogram_epochs={list(c.tracking.histogram_epochs)} must be {ACCEPTS['tracking.histogram_epochs']}")
    need(max(sizes) <= MAX_UNITS, f"model.hidden_sizes={sizes}: at most {MAX_UNITS} units per layer")
    need(sum(a * b for a, b in zip(sizes, sizes[1:])) <= MAX_HIDDEN_WEIGHTS,
         f"model.hidden_sizes={sizes} needs more than {MAX_HIDDEN_WEIGHTS:.0e} weights between hidden layers; "
         "nnexp trains small networks in memory")
    for key in ("beta1", "beta2"):
        v = c.optimizer.get(key)
        need(v is None or 0 <= v < 1, f"optimizer.{key}={v} must be in [0, 1)")
    need(c.optimizer.eps is None or c.optimizer.eps > 0, f"optimizer.eps={c.optimizer.eps} must be > 0")
    need(0 <= c.dataset.split_seed < 2**32, f"dataset.split_seed={c.dataset.split_seed} must be {ACCEPTS['dataset.split_seed']}")
    for key in DATASET_KEYS:
        if c.dataset.get(key) is None:
            continue
        readers = sorted(n for n in DATASETS if key in loader_keys(n))
        need(c.dataset.name in readers,
             f"dataset.{key} is read only by " + " / ".join(f"dataset={n}" for n in readers)
             + f", not by dataset={c.dataset.name}; add " + ("dataset=csv" if readers == ["csv"] else "one of them")
             + f" or drop dataset.{key}")
    need(c.dataset.noise is None or c.dataset.noise >= 0, f"dataset.noise={c.dataset.noise} must be >= 0")
    need(c.dataset.n_samples is None or c.dataset.n_samples >= 10,
         f"dataset.n_samples={c.dataset.n_samples} must be >= 10 (enough to split)")
    for key in ("n_features", "n_outputs"):
        need(c.dataset.get(key) is None or c.dataset[key] >= 1, f"dataset.{key}={c.dataset.get(key)} must be >= 1")
    from .data import REGRESSION

    need(c.dataset.name not in REGRESSION or c.model.loss in ("auto", "mse"),
         f"model.loss={c.model.loss} needs class labels, but dataset={c.dataset.name} is a regression task "
         "(real-valued targets); use model.loss=mse or auto")
    uri = c.tracking.uri
    need(uri is None or uri.startswith(URI_SCHEMES),
         f"tracking.uri={uri!r} is not a tracking URI; use sqlite:///<path>/mlflow.db, http://host:port "
         "or a database URI (postgresql://, mysql://)")
    env = os.environ.get("MLFLOW_TRACKING_URI")
    need(uri is not None or not env or env.startswith(URI_SCHEMES), env_uri_problem(env or ""))
    exp = c.tracking.experiment
    need(bool(exp.strip()) and exp == exp.strip() and _SAFE_NAME.match(exp) is not None and ".." not in exp,
         f"tracking.experiment={exp!r} must be a plain name (letters, digits, inner spaces, _ . -; no path "
         "separators or '..', no leading or trailing space)")
    name = c.tracking.get("register_model")
    if name is not None:  # checked now, not at the sweep's end when every run is trained (MLflow's name rules)
        need(isinstance(name, str) and bool(name.strip()) and not set(name) & set("/:") and name != "."
             and not name.startswith(".."), f"tracking.register_model={name!r} must be {ACCEPTS['tracking.register_model']}")
        need(c.tracking.log_model and c.tracking.save_weights,
             f"tracking.register_model={name!r} registers the best run's logged model, so it needs "
             "tracking.log_model=true and tracking.save_weights=true")
