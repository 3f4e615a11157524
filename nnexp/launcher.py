"""Hydra's basic launcher that composes each job's config without reading and composing everything again.

Hydra's basic launcher runs the jobs of a sweep one after another in the sweep's process; before each job it
composes the job's config from scratch (``ConfigLoaderImpl.load_sweep_config``): it copies the config repository,
reads and parses every YAML file of the defaults list again, builds the defaults tree and merges it: about
0.09 s of the sweep's process a job (2 cores), on the sweep's critical path. :class:`ComposingLauncher`
(``hydra/launcher=nnexp_basic``, the default in ``conf/config.yaml``) is that launcher with a faster composer,
:class:`JobConfigs`, which gives each job the same config (its ``hydra`` node included) in two steps, as Hydra
itself composes a config:

1. **The composed part.** Hydra first builds the defaults list from the overrides that choose config-group
   options (``activation=relu``, ``experiment=<study>``, ``+tracking=team``, ``hydra/launcher=joblib``; Hydra's
   own rule: the key names a group and the value is not a dict) and merges its configs. :class:`JobConfigs` does
   that with Hydra's own loader, once per distinct set of such overrides (plus the command line's ``hydra.*``
   overrides), reading each config file once per sweep (:class:`_SourceCache`) instead of once per job.
2. **The values.** Every other override (``seed=1``, ``optimizer.lr=0.1``, ``+new.key=1``, ``~key``,
   ``hydra.sweeper.members=...``) is applied to a copy of that config with the function Hydra applies them with
   (``ConfigLoaderImpl._apply_overrides_to_config``), after which the job's own entries of Hydra's config are set
   as Hydra sets them: ``hydra.overrides.task`` and ``.hydra``, ``hydra.job.override_dirname``, the ``env_copy``
   variables, ``hydra.runtime.cwd``, and the master config's resolver cache (``${now:...}``).

Step 2 is a deep copy and a few assignments (about 5 ms), so a sweep pays step 1 once per distinct group choice,
at about 0.05 s. ``benchmarks/bench_launcher.py`` times both on issue 11's 27-run study: unpacked (27 jobs, 3
group choices) 2.35 s of CPU under Hydra's launcher, 0.37 s here; packed (3 jobs, one per activation, so every
job a new group choice) 0.26 s and 0.20 s.

Anything else falls back to Hydra's ``load_sweep_config`` for that job: a sweep override left in a job, an
override Hydra cannot parse, a config loader that is not Hydra's, or any error while composing (so that the error
raised is Hydra's own). ``tests/test_launcher.py`` checks, for a table of sweeps, that every job receives exactly
the config (and ``hydra`` node, ``.hydra/`` files) Hydra's basic launcher gives it.

What differs: the config files are read once per sweep, so a file edited while a sweep runs does not reach its
later jobs (Hydra's launcher reads the files again for each job).

Before the first job the launcher also takes the objects alive at that moment (the loaded libraries: Hydra,
MLflow, SQLAlchemy, pandas) out of the garbage collector's view (``gc.freeze()``): a full collection during the
jobs then walks only what the jobs made, where it walked every library object (about 0.19 s each on issue 11's
study, one in its jobs and one after them). They stay frozen until the process exits, as
:func:`nnexp.__main__.main` freezes them at exit anyway; :func:`nnexp.sweep`, which a notebook calls many times in
one process, hands them back to the collector after each sweep (``gc.unfreeze()``).
"""

from __future__ import annotations

import copy
import gc
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.config_repository import CachingConfigRepository
from hydra._internal.core_plugins import basic_launcher
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

#: Hydra's basic launcher's logger: the sweep prints the same lines under either launcher.
log = basic_launcher.log

__all__ = ["JobConfigs", "ComposingLauncher", "VALUE_HYDRA_KEYS"]

#: Hydra keys that a sweeper sets per job and that change no composition, applied as values: the members of nnexp's
#: packed jobs. Any other ``hydra.*`` override is part of the composed config's key (the command line's are the same
#: for every job). Not ``hydra.job.env_set.*`` (the search's trial variable): Hydra adds the ``env_copy`` variables
#: after the overrides, so a value added to a copy would come after them in ``env_set`` (the same variables, another
#: order in ``.hydra/hydra.yaml``); each trial's job is composed, still once per job.
VALUE_HYDRA_KEYS = ("hydra.sweeper.members",)


class _SourceCache(CachingConfigRepository):
    """A config repository that reads each config once and hands out a fresh deep copy on every load.

    Hydra gives each composition a new :class:`~hydra._internal.config_repository.CachingConfigRepository` over a
    deep copy of its repository (about 20 ms) and parses each YAML file in it (about 4 ms a file); the composition
    may modify what it loads. This repository is made once per sweep, and each composition still gets its own
    cache over it (:meth:`for_composition`), so a composition sees exactly what reading the files would give it.
    """

    def load_config(self, config_path: str):
        return copy.deepcopy(super().load_config(config_path))

    def for_composition(self) -> CachingConfigRepository:
        """A per-composition cache over this one, as Hydra makes one per composition (without copying the sources)."""
        repo = CachingConfigRepository.__new__(CachingConfigRepository)
        repo.delegate = self
        repo.cache = {}
        return repo


class _CachingLoader(ConfigLoaderImpl):
    """Hydra's config loader, composing from a :class:`_SourceCache` shared by the compositions of one sweep."""

    def __init__(self, loader: ConfigLoaderImpl) -> None:
        self.config_search_path = loader.config_search_path
        self.repository = loader.repository
        self.sources = _SourceCache(loader.repository)

    def _parse_overrides_and_create_caching_repo(self, config_name: Optional[str], overrides: List[str]):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(overrides=overrides)
        repo = self.sources.for_composition()
        # as Hydra: the search path may be extended by hydra.searchpath (re-initialising the shared sources,
        # which every composition of a sweep does alike: the command line and primary config are the same)
        self._process_config_searchpath(config_name, parsed, repo)
        return parsed, repo


class JobConfigs:
    """The config of each job of a sweep, equal to Hydra's ``config_loader.load_sweep_config(master, overrides)``.

    Parameters
    ----------
    config_loader
        The sweep's config loader (``hydra_context.config_loader``).
    master : DictConfig
        The sweep's config (the launcher's ``config``): its ``hydra.overrides.hydra`` are composed into every
        job, its ``hydra.job.config_name`` names the primary config, its resolver cache is copied to every job.

    See the module docstring for how; :attr:`composed` counts the compositions (one per distinct set of
    config-group choices) and :attr:`fallbacks` the jobs left to Hydra's own ``load_sweep_config``.
    """

    def __init__(self, config_loader: Any, master: DictConfig) -> None:
        self.loader = config_loader
        self.master = master
        self.config_name = master.hydra.job.config_name
        self.hydra_lines = list(OmegaConf.to_container(master.hydra.overrides.hydra))
        self.fast = _CachingLoader(config_loader) if isinstance(config_loader, ConfigLoaderImpl) else None
        if self.fast is not None:  # the search path as the compositions see it (hydra.searchpath), for group_exists
            try:
                self.fast._parse_overrides_and_create_caching_repo(self.config_name, self.hydra_lines)
            except Exception:  # every job composed by Hydra, which says what is wrong
                self.fast = None
        self.parser = None
        self.parsed: dict[str, Any] = {}
        self.bases: dict[tuple[str, ...], DictConfig] = {}
        self.composed = 0
        self.fallbacks = 0

    def hydra(self, overrides: Sequence[str]) -> DictConfig:
        """The job's config as Hydra's own loader composes it."""
        self.fallbacks += 1
        return self.loader.load_sweep_config(self.master, list(overrides))

    def _parse(self, lines: list[str]) -> list:
        """Hydra's parse of each override text, once per text (the jobs of a sweep share most of them)."""
        if self.parser is None:
            from hydra.core.override_parser.overrides_parser import OverridesParser

            self.parser = OverridesParser.create()
        for line in lines:
            if line not in self.parsed:
                self.parsed[line] = self.parser.parse_overrides([line])[0]
        return [self.parsed[line] for line in lines]

    def _is_composed(self, o) -> bool:
        # Hydra's rule (hydra._internal.defaults_list.Overrides): a group choice names a config group and is not
        # a dict value; Hydra's own keys go with them, but for the per-job values nnexp's sweeper sets
        if o.is_hydra_override():
            return o.key_or_group not in VALUE_HYDRA_KEYS
        return self.fast.sources.group_exists(o.key_or_group) and not isinstance(o.value(), dict)

    def _base(self, key: tuple[str, ...]) -> DictConfig:
        """The config composed from the overrides ``key`` (group choices and Hydra's keys), once per key."""
        if key not in self.bases:
            self.bases[key] = self.fast.load_configuration(config_name=self.config_name, overrides=list(key),
                                                           run_mode=RunMode.RUN)
            self.composed += 1
        return self.bases[key]

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        """The config of the job with ``overrides`` (its sweep overrides, as the sweeper gives them to the launcher).

        Raises
        ------
        hydra.errors.ConfigCompositionException (or what Hydra's loader raises)
            Whatever Hydra's ``load_sweep_config`` raises for these overrides: a job that fails to compose here
            is composed again by Hydra, which raises its own error.
        """
        if self.fast is None:
            return self.hydra(overrides)
        lines = [*self.hydra_lines, *overrides]  # as load_sweep_config: the command line's Hydra overrides first
        try:
            parsed = self._parse(lines)
            if any(o.is_sweep_override() for o in parsed):  # Hydra refuses these in a job: its own error
                return self.hydra(overrides)
            cfg = copy.deepcopy(self._base(tuple(o.input_line for o in parsed if self._is_composed(o))))
            # the rest, in order, as _load_configuration_impl applies them (root struct, hydra node writable)
            ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if not self._is_composed(o)], cfg)
            self._finish(cfg, parsed)
        except Exception:  # Hydra composes it again and raises its own error (or, if none, gives the config)
            log.debug("composing job %s by Hydra's loader", overrides, exc_info=True)
            return self.hydra(overrides)
        return cfg

    def _finish(self, cfg: DictConfig, parsed: list) -> None:
        """Set the job's own entries of Hydra's config, as ``ConfigLoaderImpl._load_configuration_impl`` sets them."""
        task = [o for o in parsed if not o.is_hydra_override()]
        hc = cfg.hydra
        _replace(hc.overrides.task, [o.input_line for o in task])
        _replace(hc.overrides.hydra, [o.input_line for o in parsed if o.is_hydra_override()])
        with open_dict(hc):
            for key in hc.job.env_copy:
                hc.job.env_set[key] = os.environ[key]
        hc.runtime.cwd = os.getcwd()
        od = hc.job.config.override_dirname
        hc.job.override_dirname = get_overrides_dirname(overrides=task, kv_sep=od.kv_sep, item_sep=od.item_sep,
                                                        exclude_keys=od.exclude_keys)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)  # as load_sweep_config: ${now:} etc. agree


def _replace(node, items: list[str]) -> None:
    """Make list config ``node`` hold ``items`` (in place: the node keeps its type and flags)."""
    del node[:]
    node.extend(items)


class ComposingLauncher(BasicLauncher):
    """Hydra's basic launcher (jobs one after another in this process), composing jobs with :class:`JobConfigs`.

    Configured by ``conf/hydra/launcher/nnexp_basic.yaml`` (the default); registered with Hydra as
    ``hydra_plugins.nnexp_optuna_sweeper.BasicLauncher`` by :func:`nnexp.packing.register_plugin`. Its class
    name ends in ``.BasicLauncher`` as Hydra's does: nnexp treats such a launcher as running the jobs in the
    sweep's process (:func:`nnexp.app.job_paths`, the metric writer in :mod:`nnexp.callbacks`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.jobs: Optional[JobConfigs] = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.jobs = None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run each job in turn, as :meth:`BasicLauncher.launch` does, its config composed by :class:`JobConfigs`."""
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        # the objects of the libraries loaded so far out of the collector's view: a full collection during the jobs
        # then walks only what they made (about 0.2 s each otherwise, with Hydra, MLflow and SQLAlchemy loaded)
        gc.freeze()
        if self.jobs is None:
            self.jobs = JobConfigs(self.hydra_context.config_loader, self.config)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs: List[JobReturn] = []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.jobs(overrides)
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            runs.append(run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                config=sweep_config, job_dir_key="hydra.sweep.dir",
                                job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs
