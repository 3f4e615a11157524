"""One job of a sweep: config -> data + model + optimiser -> training -> MLflow.

:func:`build` turns a composed config into the plain objects the trainer
needs; :func:`run_job` trains them and records the run. This module is the
glue that knows Hydra's paths and MLflow; :mod:`nnexp.train` knows neither.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import context, identity, mlflow_model, packing, population, search, tracking
from .activations import get_activation
from .config import ConfigError, flatten, hidden_sizes, log_every, validate
from .data import DATASET_KEYS, Dataset, load
from .initializers import auto_initializer, get_bias_initializer, get_initializer
from .losses import Loss, get_loss, resolve_loss_name
from .model import MLP
from .optimizers import Optimizer, make_optimizer, make_schedule
from .train import History, accuracy, decision_threshold, fit

log = logging.getLogger("nnexp")

#: Runs this process created, ids in order: an interrupted command says whether any run existed to mark KILLED.
STARTED_RUNS: list[str] = []

__all__ = ["Setup", "build", "run_job", "job_paths", "save_config"]


@dataclass
class Setup:
    """Everything one training needs, built from a config (or from the configs of packed members).

    ``seeds``, ``init_names`` and ``members`` have one entry per replica: its seed, its resolved initialiser and
    the index of the member configuration it trains (0 without packing).
    """

    data: Dataset
    model: MLP
    loss: Loss
    optimizer: Optimizer
    schedule: object
    rngs: list
    seeds: list
    init_name: str
    init_names: list = None
    members: list = None


def check_data(cfg: DictConfig, base_dir: str | os.PathLike | None = None) -> tuple[Dataset, Loss]:
    """Load the configured dataset and pick its loss.

    A relative ``dataset.path`` is taken from ``base_dir`` (the launch
    directory; default: the current directory).

    Raises
    ------
    ConfigError
        If the dataset cannot be loaded (unknown name, unreadable or unusable
        CSV) or the loss does not fit its task.
    """
    ds = cfg.dataset
    params = {k: ds[k] for k in DATASET_KEYS if ds.get(k) is not None}
    if "path" in params:
        params["path"] = str(Path(base_dir or Path.cwd()) / params["path"])
    try:
        data = load(ds.name, val_fraction=ds.val_fraction, test_fraction=ds.test_fraction,
                    split_seed=ds.split_seed, standardize=ds.standardize, cache=True,
                    input_variance=ds.get("input_variance"), **params)
        loss = get_loss(resolve_loss_name(cfg.model.loss, data.task, data.n_classes))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return data, loss


def build(cfg: DictConfig, base_dir: str | os.PathLike | None = None,
          checked: tuple[Dataset, Loss] | None = None, members: list[DictConfig] | None = None, *,
          validated: bool = False) -> Setup:
    """Build data, model, loss, optimiser, schedule and generators from a composed config.

    Replica ``k`` is seeded with ``cfg.seed + k``. ``checked`` is :func:`check_data`'s result when the caller
    already has it (a job checks the data first, for its run identity).

    ``members`` (a packed job, :mod:`nnexp.packing`): configurations that differ from ``cfg`` only in per-replica
    values (seed, initialiser, learning rate, weight decay); the network then holds ``cfg.replicas`` replicas of
    each member in turn (seeds ``member.seed + r``), each with its member's initialiser, gain, learning rate and
    weight decay, so each trains bit for bit as its member would alone. ``validated``: the caller has passed
    every configuration through :func:`nnexp.config.validate` already (a job does, first thing).

    Raises
    ------
    ConfigError
        If the config is invalid or does not fit the dataset (see :func:`nnexp.config.validate`).
    """
    members = members or [cfg]
    for m in [] if validated else members:
        validate(m)
    dtype = np.dtype(cfg.model.dtype)
    data, loss = checked or check_data(cfg, base_dir)  # a job passes what it checked: the data is read once
    data = data.astype(dtype)
    n_out = 1 if (data.n_classes == 2 and loss.name != "cross_entropy" and not data.regression) else data.n_classes
    act = get_activation(cfg.activation.name, alpha=cfg.activation.alpha, beta=cfg.activation.beta,
                         approximate=cfg.activation.approximate)
    R = int(cfg.replicas)
    seeds, init_names, weight_inits, bias_inits, gains, lrs, decays, index = [], [], [], [], [], [], [], []
    for i, m in enumerate(members):
        name = auto_initializer(act.spec.family) if m.init.name == "auto" else m.init.name
        w_init = get_initializer(name, std=m.init.std, limit=m.init.limit)
        b_init = get_bias_initializer(m.init.bias, m.init.bias_value)
        gain = act.gain if m.init.gain is None else float(m.init.gain)
        for r in range(R):
            seeds.append(int(m.seed) + r)
            init_names.append(name)
            weight_inits.append(w_init)
            bias_inits.append(b_init)
            gains.append(gain)
            lrs.append(float(m.optimizer.lr))
            decays.append(float(m.optimizer.weight_decay))
            index.append(i)
    rngs = [np.random.default_rng(s) for s in seeds]
    model = MLP([data.n_features, *hidden_sizes(cfg), n_out], act, replicas=len(seeds), dtype=dtype)
    one = len(members) == 1  # one configuration: scalars, the code path of a network of one configuration
    model.initialize(weight_inits[0] if one else weight_inits, bias_inits[0] if one else bias_inits, rngs,
                     gain=gains[0] if one else gains)
    o = cfg.optimizer
    optimizer = make_optimizer(o.name, model.params(), weight_decay=decays[0] if one else np.array(decays),
                               decay_mask=[True, False] * model.n_layers, momentum=o.momentum,
                               beta1=o.beta1, beta2=o.beta2, eps=o.eps)
    schedule = make_schedule(o.schedule, lrs[0] if one else np.array(lrs), cfg.epochs, step_size=o.step_size,
                             gamma=o.gamma, min_lr=o.min_lr)
    return Setup(data, model, loss, optimizer, schedule, rngs, seeds, init_names[0], init_names, index)


def job_paths() -> dict:
    """Launch directory, job output directory, sweep directory and mode, from Hydra (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {"launch_dir": Path.cwd(), "output_dir": Path.cwd(), "sweep_dir": None, "multirun": False,
                "choices": {}, "override": "", "task_overrides": [], "job_num": 0, "parallel": False}
    hc = HydraConfig.get()
    launch = Path(hc.runtime.cwd)
    multirun = hc.mode == RunMode.MULTIRUN
    return {
        "launch_dir": launch,
        "output_dir": Path(hc.runtime.output_dir),
        "sweep_dir": (launch / hc.sweep.dir).resolve() if multirun else None,
        "multirun": multirun,
        "choices": dict(hc.runtime.choices),
        "override": hc.job.override_dirname,
        "task_overrides": list(hc.overrides.task),
        "job_num": hc.job.num if multirun else 0,
        # any launcher but Hydra's basic one may run jobs side by side (joblib, ray, submitit, ...)
        "parallel": multirun and not str(hc.launcher.get("_target_", "")).endswith(".BasicLauncher"),
    }


def blas_threads(cfg: DictConfig, parallel: bool, writer: bool = False) -> int | None:
    """BLAS threads for a job: ``cfg.blas_threads`` if set, else 1 under a parallel launcher, else None (no limit).

    With ``writer`` (a metric writer process works beside the job, see
    :class:`nnexp.tracking.MetricWriter`) the job leaves it one core: all cores
    but one. Measured on 2 cores: a mini-batch job trains as fast on one BLAS
    thread as on two, but 20 % slower on two when another process takes a core.
    """
    if cfg.get("blas_threads") is not None:
        return int(cfg.blas_threads)
    if parallel:
        return 1
    return max(1, (os.cpu_count() or 1) - 1) if writer else None


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """This process's ``threadpoolctl.ThreadpoolController`` (made once: it scans the loaded libraries, ~6 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def block_threads(cfg: DictConfig, parallel: bool) -> int:
    """Threads for the row blocks of large batches (:meth:`nnexp.model.MLP.gradients`): ``cfg.blas_threads`` if
    set, else 1 under a parallel launcher, else every core.

    Unlike the BLAS limit this ignores the metric writer: row blocks only serve batches of 1024 rows and more,
    whose epochs outweigh the writer's short bursts (one transaction per batch of points).
    """
    if cfg.get("blas_threads") is not None:
        return int(cfg.blas_threads)
    return 1 if parallel else max(1, os.cpu_count() or 1)


PARENT_FILE = ".nnexp_parent_run"

#: File in the sweep directory with the canonical keys the sweep varies (JSON list), written by the sweep's callback.
SWEPT_FILE = ".nnexp_swept_keys"


def swept_keys(paths: dict, c=None, parent_id: str | None = None) -> list[str]:
    """The canonical keys the running sweep varies (seed aside), for run names and console lines.

    Read from the sweep directory (:data:`SWEPT_FILE`), else from the parent run's ``nnexp.swept`` tag (a
    worker that does not share the sweep directory). For a single run: the keys its command line sets
    (``activation=relu optimizer.lr=0.05`` names the run ``relu-lr0.05-s0``).
    """
    import json

    if not paths["multirun"]:
        keys = (identity.canonical_key(o.split("=", 1)[0]) for o in paths.get("task_overrides", []))
        return list(dict.fromkeys(k for k in keys if k not in (None, "seed", "dataset.digest")))
    f = paths["sweep_dir"] / SWEPT_FILE
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        pass
    if c is not None and parent_id:
        try:
            return json.loads(tracking.retry(c.get_run, parent_id).data.tags.get(f"{tracking.TAG}swept", "[]"))
        except Exception:  # noqa: BLE001 - names only: a run without them is still recorded
            log.debug("no swept keys on parent run %s", parent_id)
    return []


CLAIMS = ".nnexp_claims"


def _claim(sweep_dir: Path, run_key: str) -> bool:
    """Claim a run key for this job of the sweep: True for the first job that asks (it trains), False after.

    An empty file created with ``O_EXCL`` in the sweep folder: atomic on one machine and on the shared file
    systems SLURM jobs use, so two jobs running side by side never both train one configuration and seed.
    """
    folder = sweep_dir / CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(folder / run_key, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def job_identity(cfg: DictConfig, data: Dataset) -> dict:
    """The canonical configuration of a job (:func:`nnexp.identity.canonical`), the data file's digest included."""
    digest = identity.file_digest(cfg.dataset.path) if cfg.dataset.get("path") else None
    return identity.canonical(cfg, task=data.task, n_classes=data.n_classes, digest=digest)


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write ``cfg``, resolved, to ``path`` as YAML: the text ``OmegaConf.save(cfg, path, resolve=True)`` writes.

    OmegaConf's own representers (strings that read as another type quoted), with libyaml's emitter where PyYAML
    was built with it: about 2 ms a config instead of 5 (a packed job writes one per member).
    """
    import yaml

    text = yaml.dump(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), default_flow_style=False,
                     allow_unicode=True, sort_keys=False, Dumper=_yaml_dumper())
    path.write_text(text, encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _yaml_dumper():
    """OmegaConf's YAML dumper, on libyaml's emitter when PyYAML has it (``yaml.CDumper``)."""
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    dumper = get_omega_conf_dumper()
    if not getattr(yaml, "__with_libyaml__", False):
        return dumper

    class CDumper(yaml.CDumper):
        pass

    CDumper.add_representer(str, dumper.str_representer)
    return CDumper


def _save_weights(path: Path, model: MLP, k: int, data: Dataset) -> None:
    arrays = {}
    for l, (W, b) in enumerate(zip(model.W, model.b), start=1):
        arrays[f"W{l}"] = W[k]
        arrays[f"b{l}"] = b[k, 0]
    arrays["feature_mean"] = data.mean
    arrays["feature_scale"] = data.scale
    # plain numeric arrays only (never object arrays, which NumPy would pickle): read with np.load(..., allow_pickle=False)
    assert all(np.asarray(a).dtype.kind in "fiu" for a in arrays.values())
    np.savez(path, **arrays)


def run_job(cfg: DictConfig) -> float:
    """Train one configuration (or a packed job's configurations) and record it in MLflow; return the mean final
    validation loss.

    In a multirun, a job that fails is recorded as FAILED and reported, and the
    sweep goes on (the return value is NaN); in a single run the error propagates.
    Each run is tagged with its identity (:func:`nnexp.identity.tags` of the job's canonical configuration,
    :func:`job_identity`). In a sweep with ``tracking.resume`` true, a seed whose ``nnexp.run_key`` already
    has a FINISHED run in the experiment is not trained again: a run of an earlier sweep is tagged
    ``nnexp.reused_by.<parent>``, one of this sweep (another spelling of the same configuration) is tagged
    ``nnexp.repeat.<parent>.<job>`` with the job's overrides.

    A job the sweeper packed (:mod:`nnexp.packing`) trains its members' configurations as the replicas of one
    network, each member recorded as the job it stands for would record it (its runs, tags, params, run names,
    artifacts, resume and claims); members already FINISHED are skipped, the others are still trained together.
    """
    t_job = time.perf_counter()
    paths = job_paths()
    validate(cfg)
    members = packing.job_members(cfg, paths)
    for m_cfg, _ in members:
        if m_cfg is not cfg:  # a packed job's members (the job's own config is checked above)
            validate(m_cfg)
        if m_cfg.dataset.get("path"):  # absolute: the job reads the file the user named, wherever its working directory
            m_cfg.dataset.path = str((paths["launch_dir"] / m_cfg.dataset.path).resolve())
    if len(members) > 1 and not cfg.tracking.replica_runs:  # one population run per member: one after another
        return _mean_finite([_run_members([m], t_job) for m in members])
    return _run_members(members, t_job)


def _skip_label(override: str | None, seed: int) -> str:
    """How a skipped run is named in the log: its job's overrides, and its seed unless they say it already."""
    label = override or "config"
    return label if re.search(r"(^|,)seed=", label) else f"{label}, seed {seed}"


def _run_members(members: list[tuple[DictConfig, dict]], t_job: float) -> float:
    """:func:`run_job` for the configurations ``members`` (``(cfg, paths)`` each, :func:`nnexp.packing.job_members`)."""
    cfg, paths = members[0]
    uri = tracking.resolve_uri(cfg.tracking.uri, paths["launch_dir"])
    parent_id = None
    if paths["multirun"]:
        parent_file = paths["sweep_dir"] / PARENT_FILE
        parent_id = parent_file.read_text().strip() if parent_file.exists() else None
    if parent_id is None:
        c, exp_id = tracking.prepare_store(uri, cfg.tracking.experiment)
        if paths["multirun"]:  # a worker without the sweep directory (Ray, SLURM): ask the store
            parent_id = tracking.find_sweep_parent(c, exp_id, paths["sweep_dir"])
    else:
        c = tracking.client(uri)
        exp_id = tracking.get_or_create_experiment(c, cfg.tracking.experiment, tracking.artifact_location(uri))

    trial = search.job_trial()  # a trial of an Optuna search (nnexp.search), else None
    parent_id = trial.parent_id if trial else parent_id
    member_seeds = [[int(m.seed) + r for r in range(m.replicas)] for m, _ in members]
    swept = swept_keys(paths, c, parent_id)
    try:
        checked = check_data(cfg, paths["launch_dir"])
        canons = [job_identity(m, checked[0]) for m, _ in members]
    except Exception as exc:  # e.g. a data file that changed or vanished since the sweep was checked
        if not paths["multirun"]:
            raise
        for (m, m_paths), seeds in zip(members, member_seeds):
            _record_failure_before_training(c, exp_id, m, parent_id, seeds, m_paths, exc)
        return math.nan
    if not cfg.tracking.replica_runs:  # one run for the population of replicas (nnexp.population); never packed
        canons[0]["population"] = int(cfg.replicas)
        member_seeds[0] = member_seeds[0][:1]
    # one slot per replica of the packed network: (member, seed), in the order build() stacks them
    slots = [(i, s) for i, seeds in enumerate(member_seeds) for s in seeds]
    id_tags = [identity.tags(canons[i], s) for i, s in slots]
    keys = [t[identity.TAG_RUN_KEY] for t in id_tags]
    # resume is a sweep's: a single run is what the user asked for now, so it always trains
    resume = cfg.tracking.resume and paths["multirun"]
    done = tracking.find_finished_many(c, exp_id, keys) if resume else {}
    reused_here = set()  # runs of earlier sweeps a slot of this job reuses
    for (i, seed), k in zip(slots, keys):
        run, m_paths = done.get(k), members[i][1]
        if run is None:
            continue
        reused_tag = f"{tracking.TAG}reused_by.{parent_id}"
        mine = run.data.tags.get("mlflow.parentRunId") == parent_id
        if parent_id and (mine or run.info.run_id in reused_here or run.data.tags.get(reused_tag)):
            # another job of this sweep spells the same configuration (init=auto and the initialiser it picks), and
            # trained this run or reused it from an earlier sweep: a duplicate job (report.load.duplicate_jobs)
            tracking.set_tags(c, run.info.run_id,
                              {f"{tracking.TAG}repeat.{parent_id}.{m_paths['job_num']}": m_paths["override"] or "-"})
            log.info("skip %s: same configuration and seed as run %s %s", _skip_label(m_paths["override"], seed),
                     run.info.run_id, f"of this sweep ({run.info.run_name})" if mine
                     else "of an earlier sweep, which another job of this sweep reuses")
        elif parent_id:
            tracking.set_tags(c, run.info.run_id, {reused_tag: "1"})
            reused_here.add(run.info.run_id)
            log.info("skip %s: already FINISHED in run %s", _skip_label(m_paths["override"], seed), run.info.run_id)
    repeats_here = []  # (slot, slot it repeats): two members of this job that spell one configuration and seed
    if resume and paths["sweep_dir"] is not None and parent_id and trial is None:
        # jobs running side by side (joblib, Ray) that spell one configuration and seed: the first to claim trains
        first_slot = {}
        for j, ((i, seed), k) in enumerate(zip(slots, keys)):
            if done.get(k) is not None:
                continue
            if k in first_slot:
                repeats_here.append((j, first_slot[k]))
                continue
            first_slot[k] = j
            if not _claim(paths["sweep_dir"], k):
                m_paths = members[i][1]
                run = tracking.find_sweep_run(c, exp_id, k, parent_id)
                log.info("skip %s: same configuration and seed as a job of this sweep running beside it%s",
                         _skip_label(m_paths["override"], seed), f" (run {run.info.run_id})" if run else "")
                if run is not None:
                    tracking.set_tags(c, run.info.run_id, {
                        f"{tracking.TAG}repeat.{parent_id}.{m_paths['job_num']}": m_paths["override"] or "-"})
                done[k] = run or True
    repeated = {j for j, _ in repeats_here}
    # jobs run one after another here (basic launcher): a writer process started by the sweep records the runs
    writer = None if paths["parallel"] else tracking.metric_writer(uri)
    if all(done.get(k) for j, k in enumerate(keys) if j not in repeated):
        done_ids = [r.info.run_id for r in done.values() if r is not True]
        if writer is not None:  # runs of this sweep the writer may not have ended yet
            writer.wait(done_ids)
        return _final_val_loss(c, done_ids)

    # the members with a slot to train, all their replicas (as a job of seed replicas trains every seed)
    todo_members = [i for i in range(len(members))
                    if any(m == i and not done.get(k) and j not in repeated for j, ((m, _), k) in enumerate(zip(slots, keys)))]
    todo_cfgs = [members[i][0] for i in todo_members]
    try:
        setup = build(cfg, paths["launch_dir"], checked, members=todo_cfgs if len(members) > 1 else None,
                      validated=True)  # by run_job
    except Exception as exc:  # e.g. memory
        if not paths["multirun"]:
            raise
        for i in todo_members:
            _record_failure_before_training(c, exp_id, members[i][0], parent_id, member_seeds[i], members[i][1], exc,
                                            canons[i])
        return math.nan
    # replica k of the network is slot slot_of[k]
    slot_of = [j for i in todo_members for j, (m, _) in enumerate(slots) if m == i]
    common_tags = {"activation": cfg.activation.name, "optimizer": cfg.optimizer.name, "dataset": cfg.dataset.name,
                   "loss": setup.loss.name}
    if cfg.study:
        common_tags[f"{tracking.TAG}study"] = cfg.study
    common_tags.update(trial.tags() if trial else {})
    common_tags.update(context.run_context(c, exp_id, cfg, paths))
    runs, run_member = {}, {}  # replica -> run id, replica -> (cfg, paths, canon) of its member
    new_runs = {}  # replica -> its run to create
    for k, j in enumerate(slot_of):
        i, seed = slots[j]
        if done.get(keys[j]) or j in repeated:
            continue
        m_cfg, m_paths = members[i]
        tags = {**common_tags, "init": setup.init_names[k],
                **{f"choice.{g}": v for g, v in m_paths["choices"].items() if v is not None and not g.startswith("hydra")},
                f"{tracking.TAG}overrides": m_paths["override"], f"{tracking.TAG}output_dir": str(m_paths["output_dir"]),
                **id_tags[j]}
        new_runs[k] = tracking.NewRun(identity.run_name(canons[i], swept, seed), tags, _params(cfg, m_cfg, setup, k))
        run_member[k] = (m_cfg, m_paths, canons[i])
    # one transaction for the job's runs and their params on a SQLite store (tracking.start_runs)
    run_ids, params_logged = tracking.start_runs(c, exp_id, list(new_runs.values()), parent_id=parent_id)
    for k, run_id in zip(new_runs, run_ids):
        runs[k] = run_id
        STARTED_RUNS.append(run_id)
        if trial:
            trial.started(run_id)
    for j, first in repeats_here:  # recorded as a job of the sweep that repeats another's run would record it
        k_first = slot_of.index(first)
        m_paths = members[slots[j][0]][1]
        if k_first in runs:
            tracking.set_tags(c, runs[k_first], {
                f"{tracking.TAG}repeat.{parent_id}.{m_paths['job_num']}": m_paths["override"] or "-"})
    defer = writer is not None and trial is None  # an Optuna trial's run is read back as soon as its job returns
    ended = set()  # runs ended, or handed to the writer to end: never marked KILLED or FAILED by this job
    try:
        if not params_logged:  # else they went in with the runs
            for k, run_id in runs.items():
                if not (defer and writer.log_params(run_id, new_runs[k].params)):
                    tracking.log_params(c, run_id, new_runs[k].params)
        n_train = len(setup.data.y_train)
        if cfg.batch_size is not None and cfg.batch_size > n_train:
            log.warning("batch_size=%d is more than the %d training samples: each epoch is one full batch",
                        cfg.batch_size, n_train)
        thin = tracking.diagnostic_steps(int(cfg.epochs), log_every(cfg), cfg.tracking.get("diagnostics_points"))
        buffers = {k: tracking.MetricBuffer(c, run_id, writer=writer, diagnostic_steps=thin) for k, run_id in runs.items()}
        progress = _progress(cfg, paths)

        replica_runs = bool(cfg.tracking.replica_runs)

        def on_epoch(epoch, values):
            names = [m for m in values if m != "lr"]
            if replica_runs:  # each metric of shape (n_replicas,): every replica's Python floats in one conversion
                rows = np.array([values[m] for m in names], dtype=np.float64).T.tolist() if names else None
                for k, buf in buffers.items():
                    buf.add(epoch, dict(zip(names, rows[k])) if names else {})
            else:
                for buf in buffers.values():
                    buf.add(epoch, population.summarise({m: values[m] for m in names}))
            if progress is not None and "train_loss" in values:  # not for the distribution probes' calls
                progress.update(epoch - progress.n)
                progress.set_postfix(loss=f"{_mean_finite(values['train_loss']):.4g}", refresh=False)
            return trial.report(epoch, values) if trial else None  # "pruned" stops training

        setup_seconds = time.perf_counter() - t_job
        with _blas_controller().limit(limits=blas_threads(cfg, paths["parallel"], writer is not None), user_api="blas"):
            hist = fit(setup.model, setup.loss, setup.optimizer, setup.schedule, setup.data, epochs=cfg.epochs,
                       rngs=setup.rngs, batch_size=cfg.batch_size, log_every=log_every(cfg),
                       diagnostics=cfg.tracking.diagnostics, divergence_threshold=cfg.divergence_threshold,
                       on_epoch=on_epoch, threads=block_threads(cfg, paths["parallel"]),
                       percentiles_every=cfg.tracking.percentiles_every,
                       histogram_epochs=list(cfg.tracking.histogram_epochs))
        if progress is not None:
            progress.close()
        hist.info["setup_seconds"] = setup_seconds
        _record(c, exp_id, cfg, setup, hist, runs, buffers, run_member, ended, defer)
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        for run_id in runs.values():
            if run_id in ended:
                continue
            try:
                tracking.fail_run(c, run_id, f"{type(exc).__name__}: {exc}", status)
            except Exception:  # the store itself may be what failed
                log.warning("could not mark run %s %s", run_id, status)
        if paths["multirun"] and status == "FAILED" and not isinstance(exc, ConfigError):
            log.error("job %s failed: %s\n%s", paths["override"], exc, traceback.format_exc())
            return math.nan
        raise
    order = identity.order_keys(["activation", *swept])
    _print_result(cfg, hist, runs, None if paths["multirun"] else uri,
                  {k: identity.describe(run_member[k][2], order) for k in runs}, setup.seeds)
    return _mean_finite(hist.metrics["val_loss"][-1]) if len(hist.epochs) else math.nan


def _params(cfg: DictConfig, m_cfg: DictConfig, setup: Setup, k: int) -> dict:
    """The MLflow params of replica ``k``'s run: its member's config ``m_cfg`` flattened, its seed, what was resolved
    (initialiser, loss), the data's sizes, and the job's ``replicas`` last."""
    params = {**flatten(m_cfg), "seed": setup.seeds[k], "init.resolved": setup.init_names[k],
              "loss.resolved": setup.loss.name,
              "n_features": setup.data.n_features, "n_classes": setup.data.n_classes,
              "n_train": len(setup.data.y_train), "n_val": len(setup.data.y_val),
              "n_test": len(setup.data.y_test)}
    params.pop("replicas", None)
    params["replicas"] = cfg.replicas
    return params


def _print_result(cfg, hist: History, runs: dict, uri: str | None, labels: dict, seeds: list) -> None:
    """One line per run: its swept values (``labels[k]``), how it ended, and (``uri`` given, for a single run) where
    it is recorded."""
    whole = not cfg.tracking.replica_runs  # one run for the population: the means it records, not replica 0's
    for k, run_id in runs.items():
        if whole:
            m = {name: [population.summarise({name: v[-1]})[name]] for name, v in hist.metrics.items()}
            diverged = population.outcome(hist.diverged_epoch)[0]
        else:
            m = hist.replica(k)
            diverged = int(hist.diverged_epoch[k])
        accuracy_text = f", val_accuracy {m['val_accuracy'][-1]:.4g}" if "val_accuracy" in m else ""  # not regression
        outcome = f"diverged at epoch {diverged}" if diverged else f"val_loss {m['val_loss'][-1]:.4g}{accuracy_text}"
        if whole:
            outcome = f"population of {cfg.replicas} networks, means: {outcome}"
        where = f"; experiment {cfg.tracking.experiment!r} in {uri}" if uri else ""
        # runs trained together in one batched network: each its share, as its train_seconds metric says
        took = (f"{hist.seconds / len(runs):.2f} s of training ({len(runs)} runs trained together in "
                f"{hist.seconds:.2f} s)" if len(runs) > 1 else f"{hist.seconds:.2f} s of training")
        print(f"run {run_id} ({labels[k]}, seed {seeds[k]}): {outcome}, {took}{where}", flush=True)


def _record_failure_before_training(c, exp_id, cfg, parent_id, seeds, paths, exc, canon=None) -> None:
    """Record a job of a sweep that failed before its runs existed as FAILED runs, so no job goes unrecorded.

    Without a canonical configuration (the data could not be read), the config as composed stands in for it,
    marked ``unresolved``.
    """
    error = f"{type(exc).__name__}: {exc}"[:500]
    log.error("job %s failed before training: %s\n%s", paths["override"], error, traceback.format_exc())
    if canon is None:
        canon = {**{k: v for k, v in identity.canonical_from_params(
            {k: str(v) for k, v in flatten(cfg).items()}).items() if k != "legacy"}, "unresolved": True}
    for seed in seeds:
        run_id = tracking.start_run(c, exp_id, run_name=f"{cfg.activation.name}-s{seed}-failed",
                                    parent_id=parent_id, tags={
                                        "activation": cfg.activation.name, "optimizer": cfg.optimizer.name,
                                        "dataset": cfg.dataset.name, **identity.tags(canon, seed),
                                        f"{tracking.TAG}overrides": paths["override"],
                                        f"{tracking.TAG}outcome": "failed", f"{tracking.TAG}error": error})
        tracking.end_run(c, run_id, "FAILED")


def _mean_finite(values) -> float:
    """Mean of the finite values (a diverged replica's are NaN), NaN if there are none; never warns."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def _progress(cfg, paths):
    if not cfg.tracking.progress or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.epochs, desc=paths["override"] or "train", unit="epoch", leave=False)


def _record(c, exp_id: str, cfg, setup: Setup, hist: History, runs: dict, buffers: dict, run_member: dict,
            ended: set, defer: bool = False) -> None:
    """Log final test metrics, artifacts, dataset inputs, model and outcome of each replica's run, then end it.

    ``run_member[k]`` is ``(cfg, paths, canonical config)`` of replica ``k``'s member configuration: its
    ``config.yaml``, weights and histograms go to that member's output folder. Each run's end
    (:class:`nnexp.tracking.RunEnd`) follows its last metrics: with ``defer``, through the metric writer (the
    next job starts at once; see :class:`nnexp.tracking.MetricWriter`), else here. Each run's id is added to
    ``ended`` once it is ended or handed over.

    Timing tags (seconds, for ``benchmarks/run.py``): ``nnexp.seconds.setup`` from the job's start to
    training, ``nnexp.seconds.train`` the training loop, ``nnexp.seconds.log`` this process's time on metric
    logging during and after training up to this run's end (written here, or handed to the writer), and
    ``nnexp.seconds.model`` the time its dataset inputs and model took, in whichever process recorded them.
    """
    t_record = time.perf_counter()
    from .data import encode_targets

    Y_test = encode_targets(setup.data.y_test, setup.model.sizes[-1], setup.model.dtype)
    with np.errstate(all="ignore"):  # weights near divergence may overflow; such values are not logged
        test_logits = setup.model.forward(setup.data.X_test)
        test_loss = setup.loss.value_and_grad(test_logits, Y_test, np.empty_like(test_logits))
    test_acc = (np.full(len(test_loss), np.nan) if setup.data.regression  # no classes: no accuracy
                else accuracy(test_logits, setup.data.y_test, decision_threshold(setup.loss)))
    saved = {}  # output folder -> its config.yaml
    inputs = {}  # dataset of a member (name, path) -> its MLflow dataset inputs, made once per job
    for k, run_id in runs.items():
        m_cfg, m_paths, _ = run_member[k]
        out_dir = m_paths["output_dir"]
        if out_dir not in saved:
            out_dir.mkdir(parents=True, exist_ok=True)
            save_config(m_cfg, saved.setdefault(out_dir, out_dir / "config.yaml"))
        cfg_yaml = saved[out_dir]
        buf = buffers[k]
        diverged = int(hist.diverged_epoch[k])
        if not cfg.tracking.replica_runs:  # the population's means (nnexp.population)
            diverged, share = population.outcome(hist.diverged_epoch)
            test_loss, test_acc = [np.full(1, population.summarise({"m": v})["m"]) for v in (test_loss, test_acc)]
            buf.add(int(cfg.epochs), {"diverged_fraction": share})
        final = {"train_seconds": hist.seconds / max(1, len(runs)), "epochs_run": int(hist.epochs[-1]) if len(hist.epochs) else 0}
        if not diverged:
            final.update(test_loss=float(test_loss[k]))
            if not setup.data.regression:
                final.update(test_accuracy=float(test_acc[k]))
        buf.add(int(cfg.epochs), final)
        suffix = f"_s{setup.seeds[k]}" if m_cfg.replicas > 1 else ""
        artifacts = [cfg_yaml]
        wpath = None
        if cfg.tracking.save_weights:
            _save_weights(wpath := out_dir / f"weights{suffix}.npz", setup.model, k, setup.data)
            artifacts.append(wpath)
        if hist.histograms:
            from .distributions import save_histograms

            save_histograms(hpath := out_dir / f"histograms{suffix}.npz", hist.histograms["epochs"],
                            hist.histograms["per_epoch"], k)
            artifacts.append(hpath)
        data_key = (m_cfg.dataset.name, m_cfg.dataset.get("path"))
        if data_key not in inputs:
            inputs[data_key] = mlflow_model.dataset_inputs(setup.data, *data_key)
        tags = {f"{tracking.TAG}outcome": "diverged" if diverged else hist.info.get("stopped", "finished"),
                f"{tracking.TAG}seconds.setup": f"{hist.info.get('setup_seconds', math.nan):.4f}",
                f"{tracking.TAG}seconds.train": f"{hist.seconds:.4f}"}
        if diverged:
            tags[f"{tracking.TAG}diverged_epoch"] = diverged
        ending = tracking.RunEnd(run_id, exp_id, tags, artifacts, inputs[data_key], mlflow_model.model_spec(
            m_cfg, setup.data, cfg_yaml, wpath, final["epochs_run"], bool(diverged)))
        if not defer:
            buf.flush()  # its metrics are in the store: counted in nnexp.seconds.log
        # this process's time on logging up to this run's end, since training started (the job's runs cumulated)
        tags[f"{tracking.TAG}seconds.log"] = (
            f"{hist.info.get('callback_seconds', 0.0) + time.perf_counter() - t_record:.4f}")
        buf.end(ending, wait=not defer)
        ended.add(run_id)


def _final_val_loss(c, run_ids) -> float:
    vals = []
    for rid in run_ids:
        m = tracking.retry(c.get_run, rid).data.metrics
        if "val_loss" in m:
            vals.append(m["val_loss"])
    return float(np.mean(vals)) if vals else math.nan
