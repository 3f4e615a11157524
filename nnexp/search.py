"""Per-activation learning-rate search: a Hydra sweeper backed by Optuna, with pruning, resumable.

``python -m nnexp -m hydra/sweeper=nnexp_optuna activation=sigmoid,tanh,relu 'optimizer.lr=tag(log, interval(1e-4, 1))'
hydra.sweeper.n_trials=20`` searches the learning rate separately for each listed activation (one Optuna study per
activation, ``n_trials`` trials each), then trains each activation's best setting over ``final_seeds`` seeds; the
sweep's report compares those runs: each activation at its own best learning rate.

Why a sweeper of nnexp's own
----------------------------
- ``hydra-optuna-sweeper`` 1.3.0 (Hydra's plugin) requires ``optuna>=2.10,<3.0``, a 2021 line with none of Optuna
  4/5's samplers, importance evaluators (PED-ANOVA) or storage fixes, and it has no pruning: rejected. Its
  configuration conventions are kept here: the search space in ``hydra.sweeper.params`` or on the command line
  with ``interval(a, b)``, ``tag(log, interval(a, b))``, ``range(...)`` and ``choice(...)`` (a comma list is a
  choice), ``n_trials``, ``n_jobs``, ``sampler``, ``storage``, ``study_name``.
- ``hydra-optuna-mlflow-sweeper`` 0.1.3 (one release, May 2026) accepts Optuna >= 3 and logs an MLflow parent
  run, but has no pruning, no per-activation budget, nests its options under ``optuna_config`` and installs
  itself as ``hydra_plugins.hydra_optuna_sweeper``, the module name of Hydra's plugin, so the two cannot be
  installed side by side: rejected.

How it runs
-----------
Hydra calls :meth:`OptunaSweeper.sweep` once, after :class:`nnexp.callbacks.SweepCallback` opened the sweep's
MLflow parent run ``P``. For each activation ``a`` the sweeper opens (or loads: resume) the Optuna study
:func:`study_name` in the storage :func:`storage_url` (``optuna.db`` beside ``mlflow.db``) and an MLflow run
``search <a>`` nested under ``P``. It then asks trials in batches of ``n_jobs`` (taken round robin from the
activations still short of their budget) and launches each batch through the configured Hydra launcher (basic,
joblib, Ray, SLURM). Each trial is one job, hence one MLflow run nested under ``search <a>`` with the tags
``nnexp.trial_number``, ``nnexp.trial_state`` and ``nnexp.optuna_study``. The job learns it is a trial from the
environment variable :data:`TRIAL_ENV` (set through ``hydra.job.env_set``, which every launcher applies in the
job's process): :func:`job_trial` returns a :class:`TrialHook` whose :meth:`TrialHook.report` the job calls after
each recorded epoch. It reports the validation loss to the study and returns ``"pruned"`` when the pruner says
stop; the trainer (:func:`nnexp.train.fit`) stops on that signal without knowing Optuna, and the run is kept,
curve and all, with ``nnexp.outcome=pruned`` (never averaged into a comparison). After a batch the sweeper reads
each trial's MLflow run and tells the study: ``finished`` -> COMPLETE with the run's final ``val_loss``,
``diverged`` -> COMPLETE with ``+inf`` (a real, worst result the sampler should avoid), ``pruned`` -> PRUNED,
anything else -> FAIL; it then sets ``nnexp.trial_state`` on the run.

The objective is the job's final validation loss (minimised), the value :func:`nnexp.app.run_job` returns.

Resume
------
Rerunning the same command continues each study (its name is a digest of the search: experiment, fixed
overrides, space, sampler, pruner, seed; ``n_trials``, ``final_seeds`` and ``n_jobs`` left out, so a larger
budget extends a study). A trial left RUNNING in the study by a killed search is settled first: if its run
finished, the study is told its result (no trial lost); otherwise it is marked FAIL (its run, if any, was marked
KILLED by the callback) and a new trial is asked in its place. Only COMPLETE and PRUNED trials count towards
``n_trials``. One search per study at a time: a second command running the same search at once would settle
the first one's running trials.

Seeds: trials train at ``seed`` (the command's, default 0); the final comparison at ``seed, seed+1, ...,
seed+final_seeds-1``. The best trial's run has the first of those seeds and the same configuration, so the
final stage reuses it (resume, tagged ``nnexp.reused_by.<parent>``) and trains ``final_seeds - 1`` new runs.

Optuna is imported only when a search runs or an importance is computed (about 0.5 s), never at start-up.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import math
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, config_groups, schema_keys, unknown_key_message

log = logging.getLogger("nnexp")

__all__ = ["OptunaSweeper", "register_plugin", "SearchPlan", "plan_search", "check_search", "storage_url", "study_name",
           "job_trial", "TrialHook", "TRIAL_ENV", "SAMPLERS", "PRUNERS", "make_sampler", "make_pruner"]

#: Environment variable that tells a job it is a trial (set by the sweeper through ``hydra.job.env_set``).
TRIAL_ENV = "NNEXP_TRIAL"

#: Environment variable naming the Optuna storage when tracking goes to a server (else ``hydra.sweeper.storage``).
STORAGE_ENV = "NNEXP_OPTUNA_STORAGE"

#: A trial reports its validation loss (and asks the pruner) at about this many epochs, evenly spaced.
REPORT_POINTS = 10

#: Sampler names -> Optuna class path; options are passed to the class (``hydra.sweeper.sampler.n_startup_trials=5``).
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "qmc": "QMCSampler", "gp": "GPSampler"}

#: Pruner names -> Optuna class path (``none``: never prune).
PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner", "hyperband": "HyperbandPruner",
           "successive_halving": "SuccessiveHalvingPruner", "none": "NopPruner"}


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _options(spec: Any, kind: str, registry: dict) -> tuple[str, dict]:
    spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec or {})
    name = spec.pop("name", None)
    if name not in registry:
        raise ConfigError(f"hydra.sweeper.{kind}.name={name!r} is not an option; choose one of: {', '.join(sorted(registry))}")
    return name, spec


def make_sampler(spec: Any, seed_offset: int = 0):
    """An Optuna sampler from ``{"name": "tpe", "seed": 0, **options}`` (see :data:`SAMPLERS`).

    ``seed_offset`` is added to the seed (the number of trials already in the study, so that a resumed study
    does not draw its first random trials again).

    Raises
    ------
    ConfigError
        If the name is unknown or an option is not one the sampler takes.
    """
    name, opts = _options(spec, "sampler", SAMPLERS)
    if opts.get("seed") is not None:
        opts["seed"] = int(opts["seed"]) + seed_offset
    return _construct(SAMPLERS[name], "sampler", name, opts)


def make_pruner(spec: Any):
    """An Optuna pruner from ``{"name": "median", "warmup_fraction": 0.5, **options}`` (see :data:`PRUNERS`).

    ``warmup_fraction`` is nnexp's, not the pruner's (see :func:`warmup_fraction`).

    Raises
    ------
    ConfigError
        If the name is unknown or an option is not one the pruner takes.
    """
    name, opts = _options(spec, "pruner", PRUNERS)
    opts.pop("warmup_fraction", None)
    return _construct(PRUNERS[name], "pruner", name, opts)


def warmup_fraction(spec: Any) -> float:
    """The share of its epochs a trial trains before any pruner may stop it (``pruner.warmup_fraction``, default 0.5).

    Counted in epochs, so it scales with ``epochs``, whatever the pruner. The default is half: a small network's
    validation loss often sits on a plateau early (on moons, the linear boundary's 0.43 up to epoch 40-60 of 100
    for tanh at a good rate) where trials differ by noise, and a pruner that compares them there stops the rates
    that would have won.

    Raises
    ------
    ConfigError
        If it is not a number in [0, 1).
    """
    spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec or {})
    w = spec.get("warmup_fraction", 0.5)
    if not _number(w) or not 0 <= w < 1:
        raise ConfigError(f"hydra.sweeper.pruner.warmup_fraction={w!r} is not valid: expected a number in [0, 1)")
    return float(w)


def _construct(cls_name: str, kind: str, name: str, opts: dict):
    optuna = _optuna()
    cls = getattr(optuna.samplers if kind == "sampler" else optuna.pruners, cls_name)
    try:
        return cls(**opts)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"hydra.sweeper.{kind}: {name} ({cls.__module__.split('.')[0]}.{cls_name}) refuses "
                          f"{opts}: {str(e).splitlines()[0]}") from None


# ----------------------------------------------------------------------------------------------------------------
# The search space


@dataclasses.dataclass
class SearchPlan:
    """What a search command asks for, parsed and checked.

    ``space`` maps a config key to an Optuna distribution (as JSON, so that parsing needs no Optuna import:
    :func:`optuna.distributions.json_to_distribution` reads it); ``fixed`` holds the overrides every job gets.
    """

    activations: list[str]
    space: dict[str, str]
    fixed: list[str]
    seed: int
    candidates: dict[str, list]  # per key: values that cover the space (its bounds, its choices), for preflight
    hydra: list[str] = dataclasses.field(default_factory=list)  # the command's overrides of Hydra's config

    def digest(self, *extra: Any) -> str:
        """16 hex digits naming the search (fixed overrides, space, seed and ``extra``), activations aside."""
        text = json.dumps([sorted(self.fixed), self.space, self.seed, *extra], sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _distribution(key: str, override) -> tuple[dict, list]:
    """Optuna distribution (JSON-able dict) and covering values of one sweep override; ConfigError if unusable."""
    from hydra.core.override_parser.types import IntervalSweep, Transformer

    value = override.value()
    line = override.input_line
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        lo, hi = value.start, value.end
        if not (_number(lo) and _number(hi)):
            raise ConfigError(f"{line}: interval bounds must be numbers")
        log_scale = "log" in value.tags
        if not lo < hi:
            raise ConfigError(f"{line} is empty: the lower bound must be below the upper bound")
        if log_scale and lo <= 0:
            raise ConfigError(f"{line}: a log scale needs bounds > 0 (got {lo})")
        if isinstance(lo, int) and isinstance(hi, int):
            return {"name": "IntDistribution", "attributes": {"low": lo, "high": hi, "log": log_scale, "step": 1}}, [lo, hi]
        return ({"name": "FloatDistribution", "attributes": {"low": float(lo), "high": float(hi), "log": log_scale,
                                                             "step": None}}, [float(lo), float(hi)])
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    if not values:
        raise ConfigError(f"{line} has no values")
    if override.is_range_sweep() and all(isinstance(v, int) and not isinstance(v, bool) for v in values) \
            and len(values) > 1 and not value.shuffle:
        step = values[1] - values[0]
        return {"name": "IntDistribution", "attributes": {"low": min(values), "high": max(values), "log": False,
                                                         "step": abs(step)}}, [values[0], values[-1]]
    if len(set(map(str, values))) != len(values):
        raise ConfigError(f"{line} lists a value twice")
    return {"name": "CategoricalDistribution", "attributes": {"choices": values}}, values


def plan_search(params: Any, arguments: Sequence[str], base_seed: int, config_loader=None) -> SearchPlan:
    """Parse a search command: ``hydra.sweeper.params`` (``{key: override text}``) then the command's overrides.

    An override on the command line replaces the same key from ``params``. ``activation`` lists the activations
    searched one after another (a comma list, ``choice`` or ``glob``; one value, or none: the config's); every
    other sweep (``interval``, ``tag(log, interval)``, ``range``, ``choice``, a comma list) is a dimension of the
    search; the rest are fixed. ``seed`` in ``params`` (the plain sweep's seeds, ``0,1,2`` in ``conf/config.yaml``)
    is ignored: trials train at ``base_seed``.

    Raises
    ------
    ConfigError
        A key that is not in the schema, an empty or unparsable interval, log on a bound <= 0, a sweep of
        ``seed`` or of Hydra's own config, ``replicas`` other than 1, an empty choice.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(params, resolve=False) if isinstance(params, DictConfig) else dict(params or {})
    params.pop("seed", None)
    lines = [f"{k}={v}" for k, v in params.items()] + list(arguments)
    parser = OverridesParser.create(config_loader=config_loader)
    try:
        parsed = parser.parse_overrides(lines)
    except Exception as e:  # hydra.errors.OverrideParseException
        raise ConfigError(" ".join(str(e).split())[:300]) from None
    by_key = {}
    for o in parsed:  # the last override of a key wins
        by_key[o.get_key_element().lstrip("+~")] = o
    keys, groups = set(schema_keys()), config_groups()
    activations: list[str] = []
    space, fixed, candidates, hydra_overrides = {}, [], {}, []
    seed = int(base_seed)
    for key, o in by_key.items():
        if key.startswith(("hydra.", "hydra/")) or key == "hydra":
            if o.is_sweep_override():
                raise ConfigError(f"{o.input_line}: Hydra cannot sweep its own config; "
                                  f"write the search space as key=interval(...) or in hydra.sweeper.params")
            hydra_overrides.append(o.input_line)  # in the sweep's own config already; preflight composes with them
            continue
        if key not in keys and key not in groups:
            raise ConfigError(unknown_key_message(key))
        if key == "activation":
            if o.is_sweep_override():
                if o.is_interval_sweep():
                    raise ConfigError(f"{o.input_line}: activation takes a list of options, e.g. activation=sigmoid,tanh,relu")
                from hydra.core.override_parser.types import Transformer

                activations = [str(v) for v in o.sweep_iterator(transformer=Transformer.encode)]
                if not activations:
                    raise ConfigError(f"{o.input_line} matches no option of activation; choose from: "
                                      f"{', '.join(groups['activation'])}")
            else:
                activations = [o.get_value_element_as_str()]
            continue
        if key == "seed":
            if o.is_sweep_override():
                raise ConfigError(f"{o.input_line}: a search trains its trials at one seed and compares the best "
                                  "settings over hydra.sweeper.final_seeds seeds; give seed one value")
            seed = int(o.value())
            continue
        if key == "replicas" and not o.is_sweep_override() and str(o.value()) != "1":
            raise ConfigError(f"{o.input_line}: a search trains one seed per trial; leave replicas at 1")
        if o.is_sweep_override():
            if key.startswith("tracking"):
                raise ConfigError(f"{o.input_line}: tracking keys cannot be searched")
            dist, cover = _distribution(key, o)
            space[key] = json.dumps(dist)
            candidates[key] = cover
        else:
            fixed.append(o.input_line)
    if not space:
        raise ConfigError("the search has no space: give a key an interval, e.g. 'optimizer.lr=tag(log, interval(1e-4, 1))'")
    return SearchPlan(activations, space, fixed, seed, candidates, hydra_overrides)


def covering_jobs(plan: SearchPlan, default_activation: str) -> list[list[str]]:
    """Override lists that together use every activation, and every bound and choice of every searched key.

    Preflight composes and validates each (so ``interval(0, 1)`` for ``optimizer.lr`` is refused before anything runs).
    """
    n = max([len(v) for v in plan.candidates.values()] + [1])
    jobs = []
    for a in plan.activations or [default_activation]:
        for i in range(n):
            jobs.append([*plan.hydra, *plan.fixed, f"activation={a}", f"seed={plan.seed}",
                         *(f"{k}={v[i % len(v)]}" for k, v in plan.candidates.items())])
    return jobs


#: The sweeper's own keys (``hydra.sweeper.<key>``).
SWEEPER_KEYS = ("_target_", "n_trials", "final_seeds", "n_jobs", "sampler", "pruner", "storage", "study_name", "params")


def check_settings(sweeper: DictConfig) -> None:
    """Check ``hydra.sweeper``: known keys, ``n_trials >= 1``, ``final_seeds >= 1``, ``n_jobs``, sampler and pruner.

    Raises
    ------
    ConfigError
        One line naming the key and what it accepts.
    """
    for k in sweeper:
        if k not in SWEEPER_KEYS:
            raise ConfigError(f"hydra.sweeper.{k} is not a key of the nnexp_optuna sweeper; its keys: "
                              f"{', '.join(k for k in SWEEPER_KEYS if k != '_target_')}")
    for k in ("n_trials", "final_seeds"):
        v = sweeper.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"hydra.sweeper.{k}={v!r} is not valid: expected an integer >= 1")
    nj = sweeper.get("n_jobs")
    if nj is not None and (not isinstance(nj, int) or nj < 1):
        raise ConfigError(f"hydra.sweeper.n_jobs={nj!r} is not valid: expected an integer >= 1, or null "
                          "(the launcher's n_jobs)")
    make_sampler(sweeper.get("sampler"))
    make_pruner(sweeper.get("pruner"))
    warmup_fraction(sweeper.get("pruner"))


def check_search(base: DictConfig, arguments: Sequence[str], config_loader=None) -> list[list[str]]:
    """Preflight of a search command: settings, space and storage; return the jobs to compose and validate.

    ``base`` is the command's config with its ``hydra`` node (sweep overrides not applied).

    Raises
    ------
    ConfigError
        See :func:`plan_search` and :func:`check_settings`; also a tracking server without an Optuna storage.
    """
    sweeper = base.hydra.sweeper
    check_settings(sweeper)
    plan = plan_search(sweeper.get("params"), arguments, base.seed, config_loader)
    from .tracking import resolve_uri

    storage_url(resolve_uri(base.tracking.uri, Path.cwd()), sweeper.get("storage"))
    return covering_jobs(plan, base.activation.name)


def storage_url(tracking_uri: str, storage: str | None = None) -> str:
    """The Optuna storage of a search: ``storage`` if given, else ``optuna.db`` beside a SQLite ``mlflow.db``,
    else ``$NNEXP_OPTUNA_STORAGE``, else the ``optuna`` database of the team server started from the launch folder
    (``python -m nnexp.team_server start``: same PostgreSQL as the runs, :func:`nnexp.team_server.local_optuna_storage`).

    A tracking server (team mode) has no file beside it: give its PostgreSQL a database of its own for Optuna
    (``postgresql+psycopg2://user@host:port/optuna``: Optuna's tables and MLflow's, both managed with Alembic,
    would clash in one database).

    Raises
    ------
    ConfigError
        If no storage follows from the above.
    """
    if storage:
        return str(storage)
    from .tracking import sqlite_path

    db = sqlite_path(tracking_uri)
    if db is not None:
        return f"sqlite:///{db.parent / 'optuna.db'}"
    if os.environ.get(STORAGE_ENV):
        return os.environ[STORAGE_ENV]
    from .team_server import local_optuna_storage

    team = local_optuna_storage(tracking_uri)  # the team server started from this folder: its own PostgreSQL
    if team:
        return team
    raise ConfigError(f"hydra.sweeper.storage: tracking goes to {tracking_uri}, which has no folder for Optuna's "
                      f"study; set hydra.sweeper.storage=postgresql+psycopg2://<user>@<host>:<port>/optuna (a "
                      f"database of its own) or export {STORAGE_ENV}")


def study_name(experiment: str, activation: str, digest: str, prefix: str | None = None) -> str:
    """``<prefix or "nnexp-" + experiment>-<digest>-<activation>``: one study per activation and search."""
    return f"{prefix or 'nnexp-' + experiment}-{digest}-{activation}"


#: Optuna storages opened in this process, by URL (opening one costs about 0.9 s: schema checks).
_STORAGES: dict = {}


def _storage(url: str, existing: bool = False):
    """An Optuna ``RDBStorage`` for ``url``, opened once per process; ``existing``: its tables exist (a trial's job)."""
    if url in _STORAGES:
        return _STORAGES[url]
    optuna = _optuna()
    kwargs = {}
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(db, timeout=60)
        try:  # readers and one writer at once: parallel trials report while the sweeper reads
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
        kwargs = {"connect_args": {"timeout": 60}}
    _STORAGES[url] = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=existing,
                                                skip_table_creation=existing)
    return _STORAGES[url]


def _redact(url: str) -> str:
    """A storage URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':')[0]}@{host}"
    return url


# ----------------------------------------------------------------------------------------------------------------
# The job's side


@dataclasses.dataclass
class TrialHook:
    """What a trial's job knows of its trial: where the study is, its trial, its MLflow parent, the pruner.

    Built by :func:`job_trial` from :data:`TRIAL_ENV`. :func:`nnexp.app.run_job` nests the run under
    ``parent_id``, adds :meth:`tags`, calls :meth:`started` with the run id and :meth:`report` after each
    recorded epoch.
    """

    storage: str
    study: str
    trial_id: int
    number: int
    parent_id: str
    pruner: dict
    epochs: int
    _trial: Any = dataclasses.field(default=None, repr=False)

    def encode(self) -> str:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()

    @classmethod
    def decode(cls, text: str) -> "TrialHook":
        return cls(**json.loads(base64.urlsafe_b64decode(text.encode())))

    def tags(self) -> dict[str, str]:
        """MLflow tags of the trial's run."""
        return {"nnexp.trial_number": str(self.number), "nnexp.trial_state": "RUNNING", "nnexp.optuna_study": self.study}

    def _get(self):
        if self._trial is None:
            optuna = _optuna()
            study = optuna.load_study(study_name=self.study, storage=_storage(self.storage, existing=True),
                                      sampler=optuna.samplers.RandomSampler(), pruner=make_pruner(self.pruner))
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def started(self, run_id: str) -> None:
        """Record the trial's MLflow run id in the study (user attribute ``mlflow_run_id``)."""
        self._get().set_user_attr("mlflow_run_id", run_id)

    def report(self, epoch: int, values: dict) -> str | None:
        """Report the validation loss at ``epoch``; return ``"pruned"`` if the pruner stops the trial, else None.

        The pruner is asked only from :func:`warmup_fraction` of the epochs on.

        ``values["val_loss"]`` has shape ``(n_replicas,)`` (one replica in a search); a non-finite loss (a
        diverged run, which stops by itself) is not reported. Reports at about :data:`REPORT_POINTS` epochs.
        """
        every = max(1, -(-self.epochs // REPORT_POINTS))
        if epoch % every and epoch != self.epochs:
            return None
        v = [float(x) for x in (values["val_loss"] if hasattr(values["val_loss"], "__len__") else [values["val_loss"]])]
        v = [x for x in v if math.isfinite(x)]
        if not v:
            return None
        trial = self._get()
        trial.report(sum(v) / len(v), epoch)
        if warmup_fraction(self.pruner) * self.epochs <= epoch < self.epochs and trial.should_prune():
            return "pruned"
        return None


def job_trial() -> TrialHook | None:
    """The trial this job runs (from :data:`TRIAL_ENV`), or None outside a search."""
    text = os.environ.get(TRIAL_ENV)
    return TrialHook.decode(text) if text else None


# ----------------------------------------------------------------------------------------------------------------
# The sweeper


def register_plugin() -> None:
    """Register :class:`hydra_plugins.nnexp_optuna_sweeper.NnexpOptunaSweeper` with Hydra (idempotent).

    Hydra finds plugins by listing the ``hydra_plugins`` namespace package, which does not list a module that
    an editable install (``pip install -e .``) maps through its import hook; registering it by hand works for
    every kind of install.
    """
    from hydra.core.plugins import Plugins
    from hydra_plugins.nnexp_optuna_sweeper import NnexpOptunaSweeper

    Plugins.instance().register(NnexpOptunaSweeper)


class OptunaSweeper(Sweeper):
    """Hydra sweeper: per-activation Optuna search with pruning, then the best settings over seeds.

    Configured by ``conf/hydra/sweeper/nnexp_optuna.yaml`` (see the module docstring); registered with Hydra by
    ``hydra_plugins.nnexp_optuna_sweeper``.
    """

    def __init__(self, n_trials: int = 20, final_seeds: int = 5, n_jobs: int | None = None, sampler: Any = None,
                 pruner: Any = None, storage: str | None = None, study_name: str | None = None,
                 params: Any = None) -> None:
        self.settings = OmegaConf.create({"n_trials": n_trials, "final_seeds": final_seeds, "n_jobs": n_jobs,
                                          "sampler": sampler, "pruner": pruner, "storage": storage,
                                          "study_name": study_name})
        self.params = params
        self.job_idx = 0
        self.config = None
        self.launcher = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def _n_jobs(self) -> int:
        if self.settings.n_jobs:
            return int(self.settings.n_jobs)
        nj = self.config.hydra.launcher.get("n_jobs")
        if isinstance(nj, int) and nj == -1:
            return os.cpu_count() or 1
        return int(nj) if isinstance(nj, int) and nj > 0 else 1

    def _launch(self, batch: list[list[str]]):
        returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
        self.job_idx += len(returns)
        return returns

    def sweep(self, arguments: list[str]) -> list:
        from . import tracking
        from .callbacks import LAST_SWEEP

        optuna = _optuna()
        cfg = self.config
        check_settings(OmegaConf.merge(self.settings, {"params": self.params}))
        plan = plan_search(self.params, arguments, cfg.seed, self.hydra_context.config_loader)
        activations = plan.activations or [cfg.activation.name]
        uri = LAST_SWEEP.get("uri") or tracking.resolve_uri(cfg.tracking.uri, Path(cfg.hydra.runtime.cwd))
        url = storage_url(uri, self.settings.storage)
        storage = _storage(url)
        if LAST_SWEEP.get("parent_id"):
            c, exp_id, parent = tracking.client(uri), LAST_SWEEP["experiment_id"], LAST_SWEEP["parent_id"]
        else:  # no SweepCallback configured
            (c, exp_id), parent = tracking.prepare_store(uri, cfg.tracking.experiment), None
        s = self.settings
        digest = plan.digest(OmegaConf.to_container(s.sampler), OmegaConf.to_container(s.pruner), cfg.tracking.experiment)
        pruner_spec = OmegaConf.to_container(s.pruner)
        space = {k: optuna.distributions.json_to_distribution(v) for k, v in plan.space.items()}

        searches = {}
        for a in activations:
            name = study_name(cfg.tracking.experiment, a, digest, s.study_name)
            probe = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
            n_before = len(probe.trials)
            study = optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(pruner_spec),
                                      sampler=make_sampler(s.sampler, seed_offset=n_before))
            run_id = tracking.start_run(c, exp_id, run_name=f"search {a}", parent_id=parent, tags={
                "nnexp.kind": "search", "activation": a, "nnexp.optuna_study": name,
                "nnexp.optuna_storage": _redact(url)})
            settled = self._settle_running(c, study)
            done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
            searches[a] = {"study": study, "run": run_id, "todo": max(0, int(s.n_trials) - done)}
            if parent:  # the summary tells this sweep's trials, reused by its final seeds, from earlier sweeps' runs
                LAST_SWEEP.setdefault("search_parents", []).append(run_id)
            log.info("search %s: study %r in %s, %d trial(s) done, %d to run%s", a, name, _redact(url), done,
                     searches[a]["todo"], f", {settled} left RUNNING settled" if settled else "")

        returns = []
        n_jobs = self._n_jobs()
        while any(v["todo"] for v in searches.values()):
            batch = []
            while len(batch) < n_jobs and any(v["todo"] for v in searches.values()):
                for a, v in searches.items():
                    if v["todo"] and len(batch) < n_jobs:
                        batch.append((a, v["study"].ask(space)))
                        v["todo"] -= 1
            overrides = [self._trial_overrides(a, t, searches[a], plan, url, pruner_spec) for a, t in batch]
            rets = self._launch(overrides)
            returns.append(rets)
            for (a, t), ret in zip(batch, rets):
                self._tell(c, searches[a]["study"], t.number)

        final = []
        for a, v in searches.items():
            study = v["study"]
            states = ["INTERRUPTED" if t.state.name == "FAIL" and t.user_attrs.get(KILLED_ATTR) else t.state.name
                      for t in study.trials]
            counts = {k: states.count(k) for k in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED")}
            complete = [t for t in study.trials if t.state.name == "COMPLETE"]
            best = min(complete, key=lambda t: t.value) if complete else None
            tags = {f"nnexp.trials.{k.lower()}": n for k, n in counts.items()}
            if best is not None:
                tags.update({"nnexp.best_trial": best.number, "nnexp.best_value": f"{best.value:.6g}"})
                tracking.log_params(c, v["run"], {f"best.{k}": val for k, val in best.params.items()})
                for k in range(int(s.final_seeds)):
                    final.append([*plan.fixed, f"activation={a}", *(f"{p}={_text(val)}" for p, val in best.params.items()),
                                  f"seed={plan.seed + k}"])
            tracking.set_tags(c, v["run"], tags)
            tracking.end_orphan_children(c, exp_id, v["run"], "FAILED")
            tracking.end_run(c, v["run"], "FINISHED")
            best_text = (f"best val_loss {best.value:.4g} at " + ", ".join(f"{k}={_text(x)}" for k, x in best.params.items())
                         if best is not None else "no trial completed: nothing to compare")
            stopped = f", {counts['INTERRUPTED']} interrupted (trained again)" if counts["INTERRUPTED"] else ""
            print(f"search {a}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed"
                  f"{stopped}; {best_text} (study {study.study_name})", flush=True)
        OmegaConf.save(OmegaConf.create({"storage": _redact(url), "studies": {
            a: {"study": v["study"].study_name, **({"best_params": v["study"].best_params,
                                                    "best_value": float(v["study"].best_value)}
                                                   if any(t.state.name == "COMPLETE" for t in v["study"].trials) else {})}
            for a, v in searches.items()}}), Path(cfg.hydra.sweep.dir) / "optimization_results.yaml")
        if final:
            returns.append(self._launch(final))
        return returns

    def _trial_overrides(self, activation: str, trial, search: dict, plan: SearchPlan, url: str, pruner: dict) -> list[str]:
        """A trial's job: the fixed overrides, the activation, the sampled values, the seed, no resume (a trial
        always trains, so that it has its own run) and the trial's identity for the job (:data:`TRIAL_ENV`)."""
        epochs = int(trial.params.get("epochs", self.config.epochs))  # the config's, unless epochs is searched
        hook = TrialHook(storage=url, study=search["study"].study_name, trial_id=trial._trial_id, number=trial.number,
                         parent_id=search["run"], pruner=pruner, epochs=epochs)
        fixed = [o for o in plan.fixed if o.split("=", 1)[0].lstrip("+~") != "tracking.resume"]
        return [*fixed, f"activation={activation}", *(f"{k}={_text(v)}" for k, v in trial.params.items()),
                f"seed={plan.seed}", "tracking.resume=false", f"+hydra.job.env_set.{TRIAL_ENV}='{hook.encode()}'"]

    def _tell(self, c, study, number: int) -> str:
        """Tell the study the result of trial ``number`` from its MLflow run; return the state told."""
        from . import tracking

        optuna = _optuna()
        trial = study.trials[number]
        run_id = trial.user_attrs.get("mlflow_run_id")
        run = tracking.retry(c.get_run, run_id) if run_id else None
        outcome = run.data.tags.get("nnexp.outcome") if run is not None and run.info.status == "FINISHED" else None
        state, value = optuna.trial.TrialState.FAIL, None
        if outcome == "finished" and math.isfinite(run.data.metrics.get("val_loss", math.nan)):
            state, value = optuna.trial.TrialState.COMPLETE, run.data.metrics["val_loss"]
        elif outcome == "diverged":
            state, value = optuna.trial.TrialState.COMPLETE, math.inf
        elif outcome == "pruned":
            state = optuna.trial.TrialState.PRUNED
        if state == optuna.trial.TrialState.FAIL and trial.state.name == "RUNNING" and (
                run is None or run.info.status in ("KILLED", "RUNNING")):
            # Ctrl-C, SIGTERM or kill -9 stopped it, not an error of its own: a FAIL to Optuna (trained again), but
            # counted as interrupted in the search's summary (KILLED_ATTR)
            optuna.trial.Trial(study, trial._trial_id).set_user_attr(KILLED_ATTR, True)
        study.tell(number, value, state=state, skip_if_finished=True)
        if run is not None:
            if run.info.status == "RUNNING":  # its job died without closing it
                tracking.set_tags(c, run_id, {"nnexp.outcome": "failed"})
                tracking.end_run(c, run_id, "FAILED")
            tracking.set_tags(c, run_id, {"nnexp.trial_state": state.name})
        return state.name

    def _settle_running(self, c, study) -> int:
        """Settle trials a killed search left RUNNING: told from their finished run, else FAIL; return how many."""
        running = [t.number for t in study.trials if t.state.name == "RUNNING"]
        for number in running:
            log.warning("trial %d of %s was left RUNNING: %s", number, study.study_name, self._tell(c, study, number))
        return len(running)


#: The user attribute of a trial that an interrupt stopped (Ctrl-C, SIGTERM, kill -9): Optuna knows it as FAIL.
KILLED_ATTR = "nnexp_interrupted"


def _text(value: Any) -> str:
    """A value as a Hydra override writes it (floats with every digit, so the trial trains what was sampled)."""
    if isinstance(value, float):
        return repr(value)
    return str(value)
