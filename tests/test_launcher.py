"""nnexp's basic launcher (nnexp/launcher.py) gives every job exactly the config Hydra's basic launcher gives it.

Each sweep of the table runs twice in this process, through nnexp's packing sweeper, from one master config: once
with nnexp's launcher (the default) and once with Hydra's ``BasicLauncher``; a task function records, per job, every
node of the job's config and of Hydra's config as ``HydraConfig.get()`` sees it (value, node type, schema type,
flags), the resolved Hydra config, the working directory and the ``.hydra/`` files Hydra wrote. The records must be
equal. A small command-line sweep then must leave the same runs, params, tags and metrics in the store under
either launcher.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from nnexp import preflight
from nnexp.config import register
from nnexp.packing import register_plugin

STUDY = ["activation=sigmoid,tanh,relu", "optimizer.lr=0.01,0.1,1.0", "seed=0,1,2", "dataset=moons", "epochs=200",
         "model.hidden_sizes=[16]", "batch_size=64", "tracking.progress=false"]

#: (id, command-line overrides, config compositions nnexp's launcher should need: one per distinct group choice)
SWEEPS = [
    ("the 27-run study, packed", STUDY, 3),
    ("seeds unpacked", ["activation=relu,tanh", "seed=0,1", "dataset=xor", "hydra.sweeper.pack=false"], 2),
    ("nulls, auto and a packed group", ["batch_size=null,32", "model.loss=auto,mse", "init=auto,he_normal",
                                        "dataset=xor", "seed=0"], 1),
    ("lists and nested keys", ["model.hidden_sizes=[4],[8,8]", "optimizer=adam", "optimizer.beta1=0.8,0.9",
                               "init.gain=1.0,null", "hydra.sweeper.pack=false", "seed=0"], 1),
    ("dict values and new keys", ["model={hidden_sizes:[3]},{hidden_sizes:[5]}", "+extra.note=a,b",
                                  "dataset=circles,moons", "seed=1"], 2),
    ("a study's own sweep", ["experiment=xor_tutorial", "activation=sigmoid,relu", "seed=0,1"], 2),
    ("groups added and options chosen", ["+tracking=team", "init=normal,orthogonal", "activation=leaky_relu",
                                         "activation.alpha=0.01,0.3", "seed=0"], 1),
    ("Hydra's own keys", ["hydra.job.chdir=true", "hydra.job.env_copy=[HOME]", "+hydra.job.env_set.A=b",
                          "hydra.job.config.override_dirname.exclude_keys=[seed]", "hydra/launcher=nnexp_basic",
                          "tracking.experiment=${activation.name}_study", "activation=elu,gelu", "seed=0,1"], 2),
]


@pytest.fixture
def hydra_app(monkeypatch, tmp_path):
    """Hydra initialised on nnexp's config, in a fresh launch folder; the jobs need not be checked again."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register()
    register_plugin()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(preflight, "CHECKED", [[]])  # the sweeper skips Hydra's composition of every job
    with initialize_config_module(config_module="nnexp.conf", version_base="1.3", job_name="nnexp"):
        yield GlobalHydra.instance().hydra


def _nodes(node, path: str = "") -> list[tuple]:
    """Every node of a config: path, node class, schema type, object type, optional, flags, value (unresolved)."""
    md = node._metadata
    row = (path, type(node).__name__, str(md.ref_type), str(md.object_type), md.optional, dict(md.flags or {}))
    if isinstance(node, (DictConfig, ListConfig)):
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return [(*row, node._value())]
        if isinstance(node, DictConfig):
            children = [(f"{path}.{k}", node._get_node(k)) for k in node._content]
        else:
            children = [(f"{path}[{i}]", node._get_node(i)) for i in range(len(node))]
        out = [(*row, None)]
        for p, child in children:
            out += _nodes(child, p)
        return out
    value = node._value()
    return [(*row, repr(value), type(value).__name__)]


def _sweep(hydra, argv: list[str], launcher: str, master: DictConfig) -> tuple[list, object]:
    """Run the sweep of ``argv`` through nnexp's sweeper with ``launcher`` ('nnexp' or 'hydra'): one record a job."""
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobStatus
    from hydra.types import HydraContext

    records = []

    def task(cfg: DictConfig) -> None:
        hc = HydraConfig.instance().cfg
        out = Path(hc.hydra.runtime.output_dir)
        records.append({"cfg": _nodes(cfg), "hydra": _nodes(hc), "resolved": OmegaConf.to_container(hc, resolve=True),
                        "cwd": os.getcwd(), "env": os.environ.get("A"), "output_dir": str(out)})

    ctx = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks())
    sweeper = Plugins.instance().instantiate_sweeper(config=master, hydra_context=ctx, task_function=task)
    if launcher == "hydra":
        sweeper.launcher = BasicLauncher()
        sweeper.launcher.setup(hydra_context=ctx, task_function=task, config=master)
    used = sweeper.launcher
    returns = [r for batch in sweeper.sweep(arguments=list(master.hydra.overrides.task)) for r in batch]
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * len(returns)
    for r, rec in zip(returns, records):  # the files Hydra writes into each job's folder, and what run_job returns
        files = Path(rec["output_dir"]) / ".hydra"
        rec["files"] = {f.name: f.read_text() for f in sorted(files.iterdir())}
        rec["return"] = (r.overrides, r.working_dir, r.task_name, _nodes(r.cfg), _nodes(r.hydra_cfg))
    return records, used


@pytest.mark.parametrize("argv, compositions", [s[1:] for s in SWEEPS], ids=[s[0] for s in SWEEPS])
def test_every_job_gets_the_config_hydras_launcher_gives_it(hydra_app, argv, compositions):
    from hydra.types import RunMode

    from nnexp.launcher import ComposingLauncher

    master = hydra_app.compose_config("config", argv, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
    assert master.hydra.sweep.dir and master.hydra.run.dir  # ${now:...} fixed in the master, as the sweeper does
    ours, launcher = _sweep(hydra_app, argv, "nnexp", master)
    theirs, _ = _sweep(hydra_app, argv, "hydra", master)
    assert isinstance(launcher, ComposingLauncher)
    assert len(ours) == len(theirs) > 1
    for mine, ref in zip(ours, theirs):
        for key in ref:
            assert mine[key] == ref[key], key
    assert (launcher.jobs.composed, launcher.jobs.fallbacks) == (compositions, 0)


def test_the_job_sees_the_sweep_values_and_hydras_fields(hydra_app):
    """Values checked by hand on the packed study's last job (beyond agreeing with Hydra's launcher)."""
    from hydra.types import RunMode

    master = hydra_app.compose_config("config", STUDY, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
    records, launcher = _sweep(hydra_app, STUDY, "nnexp", master)
    assert len(records) == 3
    last = records[-1]["resolved"]["hydra"]
    assert (last["job"]["num"], str(last["job"]["id"])) == (2, "2")
    assert last["runtime"]["choices"]["activation"] == "relu"
    task = last["overrides"]["task"]
    assert task[:2] == ["seed=0", "activation=relu"] and "dataset=moons" in task
    assert last["job"]["override_dirname"].startswith("activation=relu,batch_size=64,dataset=moons")
    assert last["sweeper"]["members"][-1] == [26, "seed=2", "optimizer.lr=1.0"]
    assert last["runtime"]["output_dir"] == str(Path(last["sweep"]["dir"]).resolve() / "2")
    assert launcher.jobs.composed == 3


def test_jobs_composed_after_the_folder_or_environment_changed(hydra_app, tmp_path, monkeypatch):
    """JobConfigs equals Hydra's load_sweep_config job by job, also when a job changed the working folder or an
    environment variable Hydra copies (hydra.job.env_copy) since the config it starts from was composed."""
    from hydra.types import RunMode

    from nnexp.launcher import JobConfigs

    monkeypatch.setenv("NNEXP_TEST_VAR", "launch")
    master = hydra_app.compose_config("config", ["hydra.job.env_copy=[NNEXP_TEST_VAR]", "seed=0,1"],
                                      run_mode=RunMode.MULTIRUN, with_log_configuration=False)
    jobs = JobConfigs(hydra_app.config_loader, master)
    for i, folder in enumerate(["a", "b", "c"]):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        monkeypatch.setenv("NNEXP_TEST_VAR", folder)
        ours = jobs([f"seed={i}", "activation=relu"])
        theirs = hydra_app.config_loader.load_sweep_config(master, [f"seed={i}", "activation=relu"])
        assert _nodes(ours) == _nodes(theirs)
        assert (ours.hydra.runtime.cwd, ours.hydra.job.env_set.NNEXP_TEST_VAR) == (str(tmp_path / folder), folder)
    assert (jobs.composed, jobs.fallbacks) == (1, 0)


def test_a_search_trials_jobs_equal_hydras(hydra_app, monkeypatch):
    """The Optuna search gives each trial's job its own ``+hydra.job.env_set.NNEXP_TRIAL=...`` (nnexp.search): a
    Hydra key, so each job is composed (the variable must precede the env_copy ones, as Hydra orders them)."""
    from hydra.types import RunMode

    from nnexp.launcher import JobConfigs

    monkeypatch.setenv("NNEXP_TEST_VAR", "x")
    master = hydra_app.compose_config("config", ["dataset=xor", "hydra.job.env_copy=[NNEXP_TEST_VAR]"],
                                      run_mode=RunMode.MULTIRUN, with_log_configuration=False)
    jobs = JobConfigs(hydra_app.config_loader, master)
    for trial, lr in enumerate(["0.1", "0.02", "0.5"]):
        job = ["activation=relu", f"optimizer.lr={lr}", "seed=0", "tracking.resume=false",
               f"+hydra.job.env_set.NNEXP_TRIAL='{{\"trial\": {trial}}}'"]
        ours = jobs(job)
        assert _nodes(ours) == _nodes(hydra_app.config_loader.load_sweep_config(master, job))
        assert list(ours.hydra.job.env_set.items()) == [("NNEXP_TRIAL", f'{{"trial": {trial}}}'),
                                                        ("NNEXP_TEST_VAR", "x")]
    assert (jobs.composed, jobs.fallbacks) == (3, 0)


def test_a_job_hydra_refuses_fails_with_hydras_error(hydra_app):
    """A job whose overrides Hydra cannot apply raises Hydra's own exception under either launcher."""
    from hydra.types import RunMode

    argv = ["epochs=3,many", "+epochs=2,4", "dataset=xor"]  # a value of the wrong type; + on a key that exists
    master = hydra_app.compose_config("config", argv, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
    errors = []
    for launcher in ("nnexp", "hydra"):
        with pytest.raises(Exception) as e:
            _sweep(hydra_app, argv, launcher, master)
        errors.append((type(e.value), str(e.value)))
    assert errors[0] == errors[1] and "Could not append to config" in errors[0][1]
    assert errors[0][0].__name__ == "ConfigCompositionException"


def test_a_study_folder_on_hydras_search_path(hydra_app, tmp_path):
    """hydra.searchpath (as --config-dir gives it): a study of the folder, composed for each job as Hydra does."""
    from hydra.types import RunMode

    folder = tmp_path / "configs" / "experiment"
    folder.mkdir(parents=True)
    (folder / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - override /dataset: xor\nepochs: 7\n")
    argv = [f"hydra.searchpath=[file://{tmp_path / 'configs'}]", "experiment=mine", "activation=relu,tanh", "seed=0"]
    master = hydra_app.compose_config("config", argv, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
    ours, launcher = _sweep(hydra_app, argv, "nnexp", master)
    theirs, _ = _sweep(hydra_app, argv, "hydra", master)
    assert ours == theirs and launcher.jobs.fallbacks == 0
    assert [r["resolved"]["hydra"]["runtime"]["choices"]["dataset"] for r in ours] == ["xor", "xor"]


@pytest.mark.parametrize("overrides, launcher", [
    ([], "hydra_plugins.nnexp_optuna_sweeper.BasicLauncher"),  # Hydra's basic launcher, the default, becomes nnexp's
    (["hydra/launcher=nnexp_basic"], "hydra_plugins.nnexp_optuna_sweeper.BasicLauncher"),
    (["hydra/launcher=joblib"], "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
])
def test_the_default_launcher_runs_jobs_in_the_sweeps_process(hydra_app, overrides, launcher):
    """nnexp treats a launcher whose class is ``*.BasicLauncher`` as running the jobs in this process
    (nnexp.app.job_paths, the metric writer of nnexp.callbacks): the default launcher must be named so; a launcher
    chosen on the command line or in a study file (tests/test_user_experiments.py) stays the one chosen."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode

    master = hydra_app.compose_config("config", ["seed=0", *overrides], run_mode=RunMode.MULTIRUN,
                                      with_log_configuration=False)
    ctx = HydraContext(config_loader=hydra_app.config_loader, callbacks=Callbacks())
    sweeper = Plugins.instance().instantiate_sweeper(config=master, hydra_context=ctx, task_function=lambda cfg: None)
    assert f"{type(sweeper.launcher).__module__}.{type(sweeper.launcher).__name__}" == launcher


#: Tags that differ between two sweeps run one after the other: ids, processes, timings, git commit, paths.
VOLATILE = ("mlflow.parentRunId", "nnexp.pid", "nnexp.pid_start", "nnexp.request_id", "nnexp.output_dir",
            "mlflow.source.git.commit", "nnexp.host")


def _store(folder: Path) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    out = {}
    for r in runs:
        if r.data.tags.get("nnexp.kind") == "sweep":
            continue
        tags = {k: v for k, v in r.data.tags.items() if k not in VOLATILE and not k.startswith("nnexp.seconds.")}
        job = Path(r.data.tags["nnexp.output_dir"]).relative_to(folder).parts[3:]  # multirun/<day>/<time>/<job>...
        metrics = {k: v for k, v in r.data.metrics.items() if not k.endswith("seconds")}  # train_seconds: a timing
        out[r.info.run_name] = (r.info.status, r.data.params, tags, metrics, job)
    return out


@pytest.mark.slow  # two command-line sweeps: about 20 s on 2 loaded cores
def test_the_store_is_the_same_under_either_launcher(cli, tmp_path):
    argv = ["-m", "activation=relu,tanh", "optimizer.lr=0.1,0.5", "seed=0,1", "dataset=xor", "epochs=5",
            "tracking.report=false", "tracking.progress=false", "tracking.log_model=false"]
    stores = []
    for name, launcher in (("nnexp", []), ("hydra", ["hydra/launcher=basic"])):
        folder = tmp_path / name
        folder.mkdir()
        p = cli([*argv, *launcher], folder)
        assert p.returncode == 0, p.stderr
        stores.append(_store(folder))
    assert len(stores[0]) == 8
    assert stores[0].keys() == stores[1].keys()
    for name, ours in stores[0].items():
        for part, mine, ref in zip(("status", "params", "tags", "metrics", "job folder"), ours, stores[1][name]):
            assert mine == ref, (name, part, {k: (mine.get(k), ref.get(k)) for k in set(mine) | set(ref)
                                              if mine.get(k) != ref.get(k)} if isinstance(mine, dict) else None)
