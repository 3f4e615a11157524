"""Pack the jobs of a sweep that differ only in per-replica values into one batched network.

A network of :mod:`nnexp.model` holds replicas side by side, and each replica may have its own seed, initialiser
(and gain), learning rate and weight decay while computing exactly what it computes alone (``tests/test_replicas.py``
checks it bit for bit). So jobs whose override lists differ only in those values (:data:`PACKABLE`) can train as
one job: one process set-up, one data load, one batched matrix product per layer instead of one per job, and still
one MLflow child run per configuration and seed, with the tags, params, run name, metrics, artifacts and resume
behaviour the job alone would give it.

Sweep side: :class:`PackingSweeper` (``hydra/sweeper=nnexp_basic``, the default in ``conf/config.yaml``) is Hydra's
basic sweeper that, after expanding the cartesian product, merges each group of such jobs (:func:`pack_jobs`)
into the group's first job plus the Hydra override ``hydra.sweeper.members=[[<job number>, "<override>", ...], ...]``:
for each member, its job number in the unpacked sweep and its packable overrides. ``hydra.sweeper.pack=false``
turns packing off; it is Hydra's config, so it is no part of a run's identity. The command's preflight still
composes and checks every member's job (:func:`nnexp.preflight.preflight` expands the unpacked sweep).

Job side: :func:`job_members` gives each member's composed config and job paths (its override text, config-group
choices, job number and an output folder of its own), and :func:`nnexp.app.run_job` trains them as replicas of one
network (:func:`nnexp.app.build` with ``members``).

What packing changes: a packed job is one process step, so an exception in it (a bug, memory) fails all its
members' runs together, where unpacked jobs would fail one by one (``hydra.sweeper.pack=false`` keeps them apart);
a diverging member is not a failure and leaves the others as they would train alone. The timing tags
``nnexp.seconds.setup`` and ``nnexp.seconds.train`` of a member's run are its packed job's, as for seed replicas.
Packing applies to Hydra's basic launcher and to parallel ones (joblib, Ray, SLURM) alike; the Optuna search
(``hydra/sweeper=nnexp_optuna``) never packs.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import DictConfig

log = logging.getLogger("nnexp")

__all__ = ["PACKABLE", "PACKABLE_GROUPS", "MEMBERS_KEY", "pack_jobs", "job_members", "check_members",
           "PackingSweeper", "register_plugin"]

#: Config values that may differ between the replicas of one network (per-replica in the trainer).
PACKABLE = ("seed", "optimizer.lr", "optimizer.weight_decay", "init", "init.name", "init.gain", "init.std",
            "init.limit", "init.bias", "init.bias_value")
#: Config groups among them: a member with another option is composed from its own overrides.
PACKABLE_GROUPS = ("init",)
#: The Hydra override that carries a packed job's members.
MEMBERS_KEY = "hydra.sweeper.members"


def _key(override: str) -> str:
    return override.split("=", 1)[0]


def _packable(override: str) -> bool:
    key = _key(override)
    # a value is written into the members' list as a quoted string: refuse what would need escaping
    return key.lstrip("+") in PACKABLE and not key.startswith("~") and not any(ch in override for ch in "\"'\\")


def pack_jobs(jobs: list[list[str]], min_jobs: int = 1) -> tuple[list[list[str]], list[str]]:
    """Merge the jobs that differ only in packable overrides.

    Parameters
    ----------
    jobs : list of list of str
        The override list of every job, as Hydra's basic sweeper expands them (every job sets the same keys in
        the same order).
    min_jobs : int, default 1
        Keep at least this many jobs where the groups allow it (the workers of a parallel launcher): the largest
        group is halved, in order, until there are ``min_jobs`` jobs or every job trains one configuration.

    Returns
    -------
    packed : list of list of str
        One job per group, in the order of each group's first job: that job's overrides, plus, when the group has
        more than one job, ``hydra.sweeper.members=[[<job number>, "<packable override>", ...], ...]``.
    varying : list of str
        The packable keys whose values differ within some group (for the message).
    """
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        common = tuple(o for o in job if not _packable(o))
        groups.setdefault(common, []).append(i)
    chunks = list(groups.values())
    while len(chunks) < min_jobs and max(map(len, chunks)) > 1:  # one per worker: none idle while another trains
        big = max(range(len(chunks)), key=lambda j: len(chunks[j]))
        half = (len(chunks[big]) + 1) // 2
        chunks[big:big + 1] = [chunks[big][:half], chunks[big][half:]]
    packed, varying = [], []
    for members in chunks:
        first = jobs[members[0]]
        if len(members) == 1:
            packed.append(list(first))
            continue
        lists = [[o for o in jobs[i] if _packable(o)] for i in members]
        for column in zip(*lists):
            if len(set(column)) > 1 and _key(column[0]).lstrip("+") not in varying:
                varying.append(_key(column[0]).lstrip("+"))
        text = ",".join("[" + ",".join([str(i), *(f'"{o}"' for o in ov)]) + "]" for i, ov in zip(members, lists))
        packed.append([*first, f"{MEMBERS_KEY}=[{text}]"])
    return packed, varying


class PackingSweeper(BasicSweeper):
    """Hydra's basic sweeper that packs jobs differing only in per-replica values (:func:`pack_jobs`).

    Parameters
    ----------
    max_batch_size, params
        As Hydra's basic sweeper's (``params``: the sweep's values in the config, e.g. ``seed: 0,1,2``).
    pack : bool, default True
        False: launch every job alone, as Hydra's basic sweeper does.
    members : None
        Set per job by the sweeper itself (:data:`MEMBERS_KEY`); never on the command line.
    """

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[dict[str, str]] = None,
                 pack: bool = True, members: Any = None) -> None:
        # BasicSweeper.__init__ names its class through the module's global, which Hydra's plugin scan may have
        # replaced by a reloaded copy: set its attributes here instead
        self.overrides = None
        self.batch_index = 0
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.hydra_context = self.config = self.launcher = None
        self.pack = bool(pack)

    def setup(self, *, hydra_context, task_function, config) -> None:
        """Hydra's basic sweeper's set-up; Hydra's basic launcher, the default, becomes nnexp's
        (:class:`nnexp.launcher.ComposingLauncher`: the same jobs and configs, each composed faster).

        Chosen here rather than in the primary config's defaults list, where it would outrank a launcher that a
        study file chooses (``- override /hydra/launcher: joblib``).
        """
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if type(self.launcher) is BasicLauncher:
            from hydra_plugins.nnexp_optuna_sweeper import BasicLauncher as ComposingLauncher

            self.launcher = ComposingLauncher()
            self.launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def _workers(self) -> int:
        """Jobs the launcher runs at once: ``hydra.launcher.n_jobs`` (joblib's; -1 all cores, -2 all but one), else 1."""
        import os

        n = (self.config.hydra.launcher.get("n_jobs") if self.config is not None else None) or 1
        n = int(n)
        return max(1, n if n > 0 else (os.cpu_count() or 1) + 1 + n)

    def validate_batch_is_legal(self, batch) -> None:
        """Hydra composes every job of a batch before launching it; skipped when :func:`nnexp.preflight.preflight`
        has already composed and validated this command's jobs (0.3 s per job; the jobs compose again at launch)."""
        from . import preflight

        if not preflight.CHECKED:  # Hydra started without nnexp's command line (e.g. a test's own hydra.main)
            super().validate_batch_is_legal(batch)

    def split_arguments(self, overrides, max_batch_size):  # an instance method here: the basic sweeper calls it so
        """The jobs of the sweep, packed (:func:`pack_jobs`) unless ``pack`` is false, in batches of ``max_batch_size``."""
        jobs = BasicSweeper.split_arguments(overrides, None)[0]
        if self.pack:
            packed, varying = pack_jobs(jobs, min_jobs=self._workers())
            if len(packed) < len(jobs) and varying:
                log.info("%d jobs packed into %d (%s %s within a job; hydra.sweeper.pack=false trains each alone)",
                         len(jobs), len(packed), ", ".join(varying), "varies" if len(varying) == 1 else "vary")
            elif len(packed) < len(jobs):  # seed=0,0 or batch_size=null,null: the same job spelled twice
                log.info("%d jobs packed into %d (jobs that spell the same configuration and seed; "
                         "hydra.sweeper.pack=false runs each)", len(jobs), len(packed))
            jobs = packed
        if max_batch_size is None:
            return [jobs]
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))


def register_plugin() -> None:
    """Register :class:`hydra_plugins.nnexp_optuna_sweeper.NnexpBasicSweeper` and nnexp's basic launcher
    (:class:`nnexp.launcher.ComposingLauncher`) with Hydra (idempotent; see :func:`nnexp.search.register_plugin`
    for why by hand)."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.nnexp_optuna_sweeper import BasicLauncher, NnexpBasicSweeper

    Plugins.instance().register(NnexpBasicSweeper)
    Plugins.instance().register(BasicLauncher)


# ----------------------------------------------------------------------------------------------------------------
# The job's side


def _parser():
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    gh = GlobalHydra.instance()
    return OverridesParser.create(config_loader=gh.config_loader() if gh.is_initialized() else None)


#: Hydra's parse of each override text for the running Hydra app, kept across its jobs (about 1 ms a text; the
#: jobs of a sweep share most of theirs): ``[(config loader, {text: override})]``.
_PARSED: list[tuple[Any, dict[str, Any]]] = []


def _parsed_texts() -> dict[str, Any]:
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    loader = gh.config_loader() if gh.is_initialized() else None
    if not (_PARSED and _PARSED[0][0] is loader):
        _PARSED[:] = [(loader, {})]
    return _PARSED[0][1]


#: The :class:`~nnexp.preflight.JobComposer` of the running Hydra app: ``[(config loader, config name, composer)]``.
_COMPOSER: list[tuple[Any, str, Any]] = []


def _composer(config_name: str):
    """A :class:`~nnexp.preflight.JobComposer` for the running Hydra app, kept for its later jobs.

    The jobs of a sweep that packs members with other ``init`` options compose the same few defaults lists
    (about 70 ms each): with one composer per app (its config loader and primary config), each is composed once
    per process, not once per job.
    """
    from hydra.core.global_hydra import GlobalHydra

    from .preflight import JobComposer

    loader = GlobalHydra.instance().config_loader()
    if not (_COMPOSER and _COMPOSER[0][0] is loader and _COMPOSER[0][1] == config_name):
        _COMPOSER[:] = [(loader, config_name, JobComposer(config_name))]
    return _COMPOSER[0][2]


def job_members(cfg: DictConfig, paths: dict) -> list[tuple[DictConfig, dict]]:
    """The configurations a job trains, each with its job paths (:func:`nnexp.app.job_paths`).

    ``[(cfg, paths)]`` for a job the sweeper did not pack. For a packed job, each member's config is the job's
    with the member's packable overrides applied as Hydra applies overrides (a member with another ``init``
    option is composed anew; the member whose values are the job's own is ``cfg`` itself); its paths carry the member's override text (``hydra.job.override_dirname`` of its
    own job), task overrides, config-group choices, job number in the unpacked sweep, and an output folder
    ``<job folder>/<job number>``.
    """
    if not paths.get("multirun"):
        return [(cfg, paths)]
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    members = hc.sweeper.get("members") if "sweeper" in hc else None
    if not members:
        return [(cfg, paths)]
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from omegaconf import open_dict, read_write

    parser = _parser()
    parsed_once = _parsed_texts()

    def parse(lines: list[str]) -> list:  # Hydra's parser takes ~1 ms an override; members share most of theirs
        for line in lines:
            if line not in parsed_once:
                parsed_once[line] = parser.parse_overrides([line])[0]
        return [parsed_once[line] for line in lines]

    task = list(paths["task_overrides"])
    od = hc.job.config.override_dirname
    composer = None
    out = []
    for member in members:
        number, mine = int(member[0]), [str(o) for o in member[1:]]
        by_key = {_key(o): o for o in mine}
        member_task = [by_key.get(_key(o), o) for o in task]
        changed = [o for o in mine if o not in task]
        parsed = parse(changed)
        groups = [o for o in parsed if o.key_or_group in PACKABLE_GROUPS]
        if groups:  # another option of a group: compose the member's config as Hydra would
            composer = composer or _composer(hc.job.config_name)
            m_cfg = composer(member_task)
        elif not changed and not any(m is cfg for m, _ in out):  # the job's own values (its first member): its config
            m_cfg = cfg
        else:
            m_cfg = copy.deepcopy(cfg)
            with read_write(m_cfg), open_dict(m_cfg):
                ConfigLoaderImpl._apply_overrides_to_config(parsed, m_cfg)
        choices = dict(paths["choices"])
        for o in groups:
            choices[o.key_or_group] = o.value()
        override = get_overrides_dirname(parse(member_task), list(od.exclude_keys),
                                         od.item_sep, od.kv_sep)
        out.append((m_cfg, {**paths, "task_overrides": member_task, "override": override, "choices": choices,
                            "job_num": number, "output_dir": paths["output_dir"] / str(number)}))
    check_members([m for m, _ in out])
    return out


def check_members(cfgs: list[DictConfig]) -> None:
    """Refuse members that differ in anything but :data:`PACKABLE` values and must not share a network.

    Raises
    ------
    ValueError
        Naming the first key whose values differ.
    """
    from .config import flatten

    def rest(c):
        return {k: v for k, v in flatten(c).items() if k not in PACKABLE}

    first = rest(cfgs[0])
    for c in cfgs[1:]:
        other = rest(c)
        for k in sorted(set(first) | set(other)):
            if first.get(k) != other.get(k):
                raise ValueError(f"packed jobs differ in {k} ({first.get(k)!r} and {other.get(k)!r}); "
                                 "only per-replica values may differ (nnexp.packing.PACKABLE)")
