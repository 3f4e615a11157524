"""Validate every job of a command before Hydra launches anything.

Hydra reports a bad override with a multi-line message and a hint about
``HYDRA_FULL_ERROR``, and only once jobs are under way; a range error (a
learning rate <= 0) would only surface inside a job, after its MLflow run
exists. :func:`preflight` composes each job's config as Hydra's compose API does
(:class:`JobComposer`), runs :func:`nnexp.config.validate` and the data checks on it, and turns every
problem into one :class:`~nnexp.config.ConfigError` line that names the key.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .config import ACCEPTS, ConfigError, config_groups, unknown_key_message, validate

__all__ = ["preflight", "expand_jobs", "JobComposer"]

#: Compose at most this many jobs one by one; larger sweeps are checked value by value.
FULL_CHECK_LIMIT = 512


def _parse(argv: list[str]):
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(argv)


def _one_line(exc: BaseException, overrides: list[str]) -> str:
    """Turn a Hydra or OmegaConf error into one line naming the key."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        options = ", ".join(sorted(exc.options or []))
        if group:
            return f"{group}={option!r} is not an option; choose one of: {options}"
        return f"config {option!r} not found"
    cause = exc
    while cause.__cause__ is not None and not getattr(cause, "full_key", None):
        cause = cause.__cause__
    text = str(exc)
    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' (?:is not in struct|not in)", text)
    if m:
        key = m.group(1)
        if "not in struct" in str(cause) or "is not in struct" in text or "To append" in text:
            return unknown_key_message(key)
    full_key = getattr(cause, "full_key", None)
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if full_key:
        m = re.match(r"Value '(.*)' (?:of type|is not)", first)  # the value OmegaConf refused, else the last override
        value = m.group(1) if m else next(
            (o.split("=", 1)[1] for o in reversed(overrides) if o.split("=", 1)[0].lstrip("+~") == full_key), None)
        shown = f"={value!r}" if value is not None else ""
        return f"{full_key}{shown} is not valid: expected {_expected(full_key, first)}"
    return first


#: Phrases of OmegaConf's conversion errors, and what they mean for a user.
_TYPE_WORDS = (("to Integer", "an integer"), ("to Float", "a number"), ("valid bool", "true or false"),
               ("ListConfig", "a list, e.g. [64]"), ("DictConfig", "a mapping"))


def _expected(key: str, error: str) -> str:
    """What ``key`` accepts: from :data:`nnexp.config.ACCEPTS`, else from the type in OmegaConf's ``error``."""
    if key in ACCEPTS:
        return ACCEPTS[key]
    for phrase, words in _TYPE_WORDS:
        if phrase in error:
            return words
    return error


#: The only ``_target_`` keys an override may set: Hydra's own launcher and sweeper (better chosen as
#: ``hydra/launcher=<name>``). Anywhere else a ``_target_`` names code to import and call, so it is refused.
ALLOWED_TARGETS = ("hydra.launcher._target_", "hydra.sweeper._target_")


def check_no_targets(overrides: list[str]) -> None:
    """Refuse overrides that set a ``_target_`` (in the key or inside a dict value) outside :data:`ALLOWED_TARGETS`.

    Raises
    ------
    ConfigError
        Naming the override.
    """
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "_target_" in o and key not in ALLOWED_TARGETS:
            raise ConfigError(f"{key}: overrides may not set _target_ (no config value is run as code); "
                              f"pick a launcher or sweeper with hydra/launcher=<name> or hydra/sweeper=<name>")


def _compose(overrides: list[str], with_hydra: bool = False, config_name: str = "config") -> DictConfig:
    from hydra import compose

    return compose(config_name=config_name, overrides=overrides, return_hydra_config=with_hydra)


class JobComposer:
    """Composes the config of each job like Hydra's compose API, composing each distinct defaults list once.

    Hydra composes a config in two steps: the defaults list (the config-group
    choices, ``activation=relu``, ``hydra/launcher=joblib``), then the other
    overrides (``seed=1``, ``optimizer.lr=0.1``) applied to the result. The jobs
    of a sweep mostly differ in such values, so this composes each set of
    group choices once (about 70 ms each) and applies every job's value overrides
    to a copy, with the function Hydra itself applies them with: the configs and
    the errors are Hydra's. Call it inside an initialised Hydra (``initialize_config_module``).
    """

    def __init__(self, config_name: str = "config"):
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.config_name = config_name
        self.repo = GlobalHydra.instance().config_loader().repository
        self.parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        self.composed: dict[tuple[str, ...], DictConfig] = {}

    def _is_group(self, o) -> bool:
        # Hydra's own rule (hydra._internal.defaults_list.Overrides): a group choice names a config group
        # and is not a dict value; everything else is applied to the composed config
        return self.repo.group_exists(o.key_or_group) and not isinstance(o.value(), dict)

    def __call__(self, overrides: list[str]) -> DictConfig:
        """The config of the job with ``overrides``, as ``hydra.compose(config_name, overrides)`` returns it."""
        import copy

        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from omegaconf import open_dict, read_write

        parsed = self.parser.parse_overrides(overrides)
        # the search path decides which group options exist: compose with it (hydra.searchpath, --config-dir)
        groups = tuple(o.input_line for o in parsed if self._is_group(o) or o.get_key_element() == "hydra.searchpath")
        if groups not in self.composed:
            self.composed[groups] = _compose(list(groups), with_hydra=True, config_name=self.config_name)
        cfg = copy.deepcopy(self.composed[groups])
        ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if not self._is_group(o)], cfg)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        return cfg


#: Keys one sweep cannot vary: its parent run, store and report are one.
UNSWEPT = ("tracking.experiment", "tracking.uri", "tracking")


def expand_jobs(argv: list[str]) -> tuple[list[list[str]], bool]:
    """The override list of every job the command would launch, and whether it is a multirun.

    Uses the basic sweeper's expansion (cartesian product of comma-separated
    values, ``hydra.sweeper.params`` included); other sweepers are checked on
    their base config only.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = _parse(argv)
    overrides = list(args.overrides)
    check_no_targets(overrides)
    # with the config loader, glob(*) over a config group expands to its options, as under Hydra itself
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    parsed = parser.parse_overrides(overrides)
    for o in parsed:
        if o.is_sweep_override() and o.is_hydra_override():  # Hydra's own ConfigCompositionException, as one line
            key, value = o.input_line.split("=", 1)
            param = key.lstrip("+~").removeprefix("hydra.sweeper.params.")
            raise ConfigError(f"{o.input_line}: Hydra cannot sweep its own config"
                              + (f"; to set the values of {param} write {param}={value}" if param != key.lstrip("+~")
                                 else "; give it one value"))
    if not args.multirun:
        for o in parsed:
            if o.is_sweep_override():
                raise ConfigError(f"{o.input_line} is a sweep; add -m to run every value")
        return [overrides], False
    for o in parsed:
        key = o.get_key_element().lstrip("+~")
        if o.is_sweep_override() and key in UNSWEPT:
            raise ConfigError(f"{o.get_key_element()} cannot be swept: one sweep records into one store and experiment; "
                              "run one sweep per value")
        if o.is_sweep_override() and not list(o.sweep_string_iterator()):
            groups = config_groups()
            if key in groups:
                raise ConfigError(f"{o.input_line} matches no option of {key}; choose from: {', '.join(groups[key])}")
            raise ConfigError(f"{o.input_line} has no values; glob() selects options of a config group "
                              f"({', '.join(groups)}), e.g. activation='glob(*)'")
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    base = _compose(fixed, with_hydra=True)
    n_jobs = base.hydra.launcher.get("n_jobs")
    if isinstance(n_jobs, int) and (n_jobs == 0 or n_jobs < -1):
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs} must be a number of workers >= 1, or -1 for one per core")
    sweeper = str(base.hydra.sweeper.get("_target_", ""))
    if "BasicSweeper" not in sweeper:
        return [fixed], True
    params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
    jobs = BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), None)[0]
    return [list(j) for j in jobs], True


def _covering(jobs: list[list[str]]) -> list[list[str]]:
    """A subset of jobs in which every override value appears at least once."""
    seen: set[str] = set()
    keep = []
    for j in jobs:
        if any(o not in seen for o in j):
            keep.append(j)
            seen.update(j)
    return keep


def preflight(argv: list[str]) -> int:
    """Compose and validate every job of ``argv``; return the number of jobs.

    Raises
    ------
    ConfigError
        For the first job whose config is invalid, with a one-line message.
    """
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .app import check_data
    from .studies import config_dir_overrides
    from .tracking import check_store, resolve_uri

    argv = config_dir_overrides(argv)  # --config-dir as hydra.searchpath: the compose API reads only the latter
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="nnexp.conf", version_base="1.3"):
            try:
                jobs, multirun = expand_jobs(argv)
            except (HydraException, OmegaConfBaseException) as e:
                raise ConfigError(_one_line(e, _parse(argv).overrides)) from None
            todo = jobs if len(jobs) <= FULL_CHECK_LIMIT else _covering(jobs)
            checked_data: set[str] = set()
            uris: set[str] = set()
            compose_job = JobComposer()
            for job in todo:
                try:
                    cfg = compose_job(job)
                    validate(cfg)
                    key = OmegaConf.to_yaml(cfg.dataset) + cfg.model.loss + cfg.model.dtype
                    if key not in checked_data:
                        check_data(cfg, Path.cwd())
                        checked_data.add(key)
                except (HydraException, OmegaConfBaseException) as e:
                    raise ConfigError(_one_line(e, job)) from None
                uris.add(resolve_uri(cfg.tracking.uri, Path.cwd()))
            for uri in uris:
                check_store(uri)
    finally:
        GlobalHydra.instance().clear()
    return len(jobs)
