"""Bad input: every case ends with a non-zero exit, exactly one line on stderr naming the key and what it accepts,
no traceback, and no MLflow run (the store is not even created).

The table runs in-process through ``nnexp.__main__.main``; two cases run as real subprocesses to prove the exit code
and the absence of a traceback end to end.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import pytest


FAST = ["dataset=xor", "epochs=1"]


def _csv(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return name


#: (id, overrides, words that must all appear in the message). ``{tmp}`` CSV files are written by the test.
CASES = [
    ("activation", ["activation=swish"], ["activation='swish'", "choose one of", "relu", "tanh"]),
    ("init", ["init=glorot"], ["init='glorot'", "xavier_uniform", "he_normal"]),
    ("optimizer", ["optimizer=rmsprop"], ["optimizer='rmsprop'", "adam", "sgd"]),
    ("dataset", ["dataset=mnist"], ["dataset='mnist'", "iris", "csv"]),
    ("experiment", ["experiment=nope"], ["experiment='nope'", "xor_tutorial"]),
    ("sweep value", ["-m", "activation=relu,swish"], ["activation='swish'", "choose one of"]),
    ("lr zero", ["optimizer.lr=0"], ["optimizer.lr=0.0", "> 0"]),
    ("lr negative in a sweep", ["-m", "optimizer.lr=0.1,-1"], ["optimizer.lr=-1.0", "> 0"]),
    ("lr text", ["optimizer.lr=fast"], ["optimizer.lr='fast'", "a number > 0"]),
    # nan and inf pass the float type check: every float key refuses them (they broke the run identity's JSON)
    ("weight decay inf", ["optimizer.weight_decay=inf"], ["optimizer.weight_decay=inf", "finite number", ">= 0"]),
    ("weight decay inf in a sweep", ["-m", "optimizer.weight_decay=0,inf"], ["optimizer.weight_decay=inf", "finite"]),
    ("gain nan", ["init.gain=nan"], ["init.gain=nan", "finite number"]),
    ("gain negative in a sweep", ["-m", "init.gain=1,-2"], ["init.gain=-2.0", "> 0"]),
    ("alpha nan", ["activation=leaky_relu", "activation.alpha=nan"], ["activation.alpha=nan", "finite number"]),
    ("divergence threshold inf", ["divergence_threshold=inf"], ["divergence_threshold=inf", "finite number"]),
    ("no key, a sweep function", ["+=tag(_,0,0)"], ["'+=tag(_,0,0)'", "has no key"]),  # found by the long fuzz
    ("pack not a boolean", ["-m", "hydra.sweeper.pack=maybe"], ["hydra.sweeper.pack='maybe'", "true or false"]),
    ("epochs zero", ["epochs=0"], ["epochs=0", "integer >= 1"]),
    ("epochs text", ["epochs=abc"], ["epochs='abc'", "integer >= 1"]),
    ("epochs float", ["epochs=1.5"], ["epochs='1.5'", "integer >= 1"]),
    ("hidden zero", ["model.hidden_sizes=[0]"], ["model.hidden_sizes=[0]", ">= 1"]),
    ("hidden negative", ["model.hidden_sizes=[4,-2]"], ["model.hidden_sizes=[4, -2]", ">= 1"]),
    ("hidden text", ["model.hidden_sizes=wide"], ["model.hidden_sizes='wide'", "list of integers >= 1"]),
    ("batch zero", ["batch_size=0"], ["batch_size=0", ">= 1"]),
    ("batch float", ["batch_size=2.5"], ["batch_size='2.5'", "integer >= 1"]),
    ("bool", ["tracking.resume=maybe"], ["tracking.resume='maybe'", "true or false"]),
    ("blas threads", ["blas_threads=0"], ["blas_threads=0", ">= 1"]),
    ("gain without use", ["init=lecun_normal", "init.gain=2"], ["init.gain", "init=lecun_normal", "xavier_uniform"]),
    ("gain via auto", ["activation=selu", "init.gain=2"], ["init.gain", "chosen by init=auto"]),
    ("seed negative", ["seed=-1"], ["seed=-1", ">= 0"]),
    ("hidden too wide", ["model.hidden_sizes=[2000000000]"], ["model.hidden_sizes=[2000000000]", "at most"]),
    ("adam beta1", ["optimizer=adam", "optimizer.beta1=1"], ["optimizer.beta1=1.0", "[0, 1)"]),
    ("adam eps", ["optimizer=adam", "optimizer.eps=0"], ["optimizer.eps=0.0", "> 0"]),
    ("noise negative", ["dataset=moons", "dataset.noise=-1"], ["dataset.noise=-1.0", ">= 0"]),
    ("uri scheme", ["tracking.uri=foo://bar"], ["tracking.uri='foo://bar'", "sqlite:///"]),
    ("uri plain path", ["tracking.uri=/plain/path"], ["tracking.uri='/plain/path'", "http://host:port"]),
    ("sweep without -m", ["activation=relu,tanh"], ["activation=relu,tanh", "add -m"]),
    ("experiment swept", ["-m", "tracking.experiment=a,b"], ["tracking.experiment", "cannot be swept"]),
    ("no workers", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"], ["hydra.launcher.n_jobs=0", ">= 1"]),
    ("csv too large to standardise", ["dataset=csv", "dataset.path={huge}", "dataset.target=label"],
     ["'a'", "too large to standardise"]),
    ("unknown key", ["optimizer.lrr=0.1"], ["optimizer.lrr", "did you mean optimizer.lr"]),
    ("csv missing file", ["dataset=csv", "dataset.path=nope.csv", "dataset.target=label"],
     ["dataset.path=", "nope.csv", "does not exist"]),
    ("csv missing value", ["dataset=csv", "dataset.path={holes}", "dataset.target=label"],
     ["dataset.path=", "missing value", "line 3"]),
    ("csv text feature", ["dataset=csv", "dataset.path={text}", "dataset.target=label"],
     ["dataset.path=", "'b'", "not a number"]),
    ("csv one class", ["dataset=csv", "dataset.path={one}", "dataset.target=label"],
     ["dataset.target='label'", "single class", "at least 2"]),
    ("csv no target column", ["dataset=csv", "dataset.path={good}", "dataset.target=y"],
     ["dataset.target='y'", "choose one of: a, b, label"]),
    ("csv without path", ["dataset=csv"], ["dataset.path=", "dataset.target="]),
    ("uri unreachable", ["tracking.uri=http://127.0.0.1:9"], ["tracking.uri='http://127.0.0.1:9'", "cannot be reached"]),
    ("sqlite missing folder", ["tracking.uri=sqlite:///{tmp}/no/such/dir/mlflow.db"],
     ["tracking.uri=", "does not exist"]),
    ("experiment slash", ["tracking.experiment=a/b"], ["tracking.experiment='a/b'", "no path separators"]),
    ("experiment dotdot", ["tracking.experiment=.."], ["tracking.experiment='..'", "'..'"]),
    ("experiment blank", ["tracking.experiment=' '"], ["tracking.experiment=' '", "no leading or trailing space"]),
    ("target in a key", ["+model._target_=os.system"], ["model._target_", "may not set _target_"]),
    ("target in a callback", ["+hydra.callbacks.x._target_=os.system"], ["hydra.callbacks.x._target_", "_target_"]),
    ("target in a value", ["+extra={_target_:os.system}"], ["extra", "_target_"]),
    # keys the schema does not know, added with +: refused, with the closest key (a group in its command-line form)
    ("added group typo", ["+activaton=relu"], ["activaton is not a key; did you mean activation=relu?"]),
    ("added key typo", ["+optimizer.lrr=5"], ["optimizer.lrr is not a key; did you mean optimizer.lr?"]),
    ("added list key typo", ["+model.hiddn=[8]"], ["model.hiddn is not a key; did you mean model.hidden_sizes?"]),
    ("added experiment typo", ["+experimnt=xor_tutorial"], ["experimnt is not a key; did you mean experiment=xor_tutorial?"]),
    ("added group typo, bad option", ["+activaton=swish"], ["did you mean activation=<option>?", "relu"]),
    ("added unknown key", ["+foo=1"], ["foo is not a key; see python -m nnexp --cfg job"]),
    ("added key in a sweep", ["-m", "+optimizer.lrr=1,2"], ["optimizer.lrr is not a key; did you mean optimizer.lr?"]),
    ("joblib key without the joblib launcher", ["-m", "hydra.launcher.n_jobs=2", "activation=relu"],
     ["hydra.launcher.n_jobs is a key of a parallel launcher, not of Hydra's basic one (the default): choose one "
      "first, e.g. hydra/launcher=joblib hydra.launcher.n_jobs=..."]),
    ("a typo in the joblib launcher's key", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobz=2"],
     ["hydra.launcher.n_jobz is not a key"]),
    # keys that only some datasets read
    ("csv keys without dataset=csv", ["dataset.path={good}", "dataset.target=label"],
     ["dataset.path is read only by dataset=csv", "not by dataset=xor", "add dataset=csv"]),
    ("csv keys on digits", ["dataset=digits", "dataset.target=label"], ["dataset.target is read only by dataset=csv"]),
    ("noise on a real dataset", ["dataset=iris", "dataset.noise=0.1"],
     ["dataset.noise is read only by dataset=circles / dataset=gaussian / dataset=linear_teacher / dataset=moons / "
      "dataset=spiral",
      "not by dataset=iris"]),
    ("split seed negative", ["dataset.split_seed=-1"], ["dataset.split_seed=-1 must be an integer in [0, 2**32 - 1]"]),
    ("split seed too large", ["dataset=iris", "dataset.split_seed=4294967296"], ["dataset.split_seed=4294967296"]),
    # a regression target: nnexp trains classifiers, and says so instead of scikit-learn's stratification error
    ("csv continuous target", ["dataset=csv", "dataset.path={reg}", "dataset.target=y"],
     ["dataset.target='y' looks continuous (30 distinct numbers in 30 rows)", "class labels"]),
    ("csv continuous target, mse", ["dataset=csv", "dataset.path={reg}", "dataset.target=y", "model.loss=mse"],
     ["dataset.target='y' looks continuous"]),
    ("csv rare class", ["dataset=csv", "dataset.path={rare}", "dataset.target=label"],
     ["dataset.target='label': class 'c' has 1 row", "at least 3 per class"]),
    ("csv too few rows per part", ["dataset=csv", "dataset.path={few}", "dataset.target=label"],
     ["dataset=csv: 6 rows in 2 classes are too few", "dataset.test_fraction=0.2"]),
    # sweeps Hydra cannot run
    ("sweep of hydra's seeds", ["-m", "hydra.sweeper.params.seed=0,1"],
     ["hydra.sweeper.params.seed=0,1: Hydra cannot sweep its own config; to set the values of seed write seed=0,1"]),
    ("sweep of launchers", ["-m", "hydra/launcher=basic,joblib"], ["hydra/launcher=basic,joblib", "give it one value"]),
    ("glob matching nothing", ["-m", "activation=glob(swi*)"],
     ["activation=glob(swi*) matches no option of activation; choose from: elu"]),
    ("glob over a value", ["-m", "optimizer.lr=glob(*)"], ["optimizer.lr=glob(*) has no values", "config group"]),
    # P15: every override form Hydra accepts (+, ++, ~, with and without a value), in single runs and sweeps
    ("delete a key", ["~model.loss"], ["~model.loss: model.loss cannot be removed", "set a value with model.loss="]),
    ("delete a key in a sweep", ["-m", "~model.loss"], ["~model.loss: model.loss cannot be removed"]),
    ("delete a key with its value", ["~epochs=1"], ["~epochs=1: epochs cannot be removed"]),
    ("delete a null key", ["~tracking.uri"], ["~tracking.uri: tracking.uri cannot be removed"]),
    ("delete a section", ["~model"], ["~model: model cannot be removed", "set its keys one by one, model.<key>="]),
    ("delete the tracking section", ["~tracking"], ["~tracking: tracking cannot be removed", "tracking.<key>="]),
    # an optional group is added with +group=option; it said "did you mean tracking=<option>?", sending the user back
    ("optional group without +", ["tracking=team"], ["tracking=team: tracking is an optional config group",
                                                     "add it with +tracking=team"]),
    ("delete a required group", ["~activation"], ["~activation: every run needs a choice of activation", "relu, selu"]),
    ("delete a group's option", ["~dataset=xor"], ["~dataset=xor: every run needs a choice of dataset", "moons"]),
    ("delete hydra's launcher", ["-m", "~hydra/launcher"], ["~hydra/launcher: Hydra's own config cannot be removed",
                                                          "hydra/launcher=<option> (basic, joblib"]),
    ("delete a hydra key", ["~hydra.job.chdir"], ["~hydra.job.chdir: Hydra's own config cannot be removed"]),
    ("delete an unknown key", ["~optimizer.lrr"], ["optimizer.lrr is not a key; did you mean optimizer.lr?"]),
    ("add a key that exists", ["+epochs=3"], ["+epochs: epochs already has a value; set it without +"]),
    ("add a group already chosen", ["+activation=relu"], ["+activation=relu: activation is already chosen; "
                                                           "write activation=relu"]),
    ("force-add a group", ["++activation=relu"], ["++activation: ++ does not apply to config groups; "
                                                   "write activation=relu"]),
    ("group option deleted by a number", ["~experiment=0"], ["~experiment=0: experiment takes the name of one option"]),
    ("group option deleted by a sweep", ["-m", "~experiment=range(0,1)"], ["~experiment=range(0,1): experiment takes"]),
    ("group set to null", ["activation=null"], ["activation=null: activation takes the name of one option", "relu"]),
    ("group given a list", ["activation=[relu,tanh]"], ["activation=[relu,tanh]", "-m activation=a,b runs each"]),
    ("group sweep with a null", ["-m", "activation=null,elu"], ["activation=null,elu", "name of one option"]),
    ("launcher set to null", ["hydra/launcher=null"], ["hydra/launcher=null", "joblib"]),
    ("no key", ["=3"], ["'=3' has no key before '='"]),
    ("no key before a sweep function", ["=shuffle(choice(null))"], ["'=shuffle(choice(null))' has no key before '='"]),
    ("unreadable override", ["epochs=[1"], ["epochs=[1: not an override Hydra can read", "quoting a value"]),
    ("unknown key inside a dict value", ["model={a:1}"], ["model.a is not a key"]),
    ("section given a number", ["model=3"], ["model='3' is not valid", "its keys set one by one"]),
    ("null for a key that takes a value", ["model.loss=null"], ["model.loss='null' is not valid: expected a value, not null"]),
    ("null inside a list", ["model.hidden_sizes=[4,null]"], ["model.hidden_sizes[1] is not valid: expected an integer"]),
    ("group at another package", ["+activation@foo=relu"], ["+activation@foo=relu: nnexp reads activation at its own place"]),
    ("unset environment variable", ["study=${oc.env:NNEXP_TEST_UNSET}"],
     ["study='${oc.env:NNEXP_TEST_UNSET}'", "Environment variable 'NNEXP_TEST_UNSET' not found"]),
    ("interpolation of no key", ["study=${nope}"], ["study='${nope}'", "Interpolation key 'nope' not found"]),
    # P12: a sweep whose values Hydra would change, or cannot run, is refused with what to write
    ("sort of a range", ["-m", "activation=tanh", "epochs=sort(range(100,301,100),reverse=true)", "seed=0"],
     ["Hydra would run 201, 101, 1, not 300, 200, 100 as written", "write epochs=300,200,100"]),
    ("ascending sort of a descending range", ["-m", "epochs=sort(range(10,0,-3))"], ["write epochs=1,4,7,10"]),
    ("float range", ["-m", "optimizer.lr=range(0.1,0.5,0.1)"],
     ["0.30000000000000004", "write optimizer.lr=0.1,0.2,0.3,0.4"]),
    ("shuffled sort of a range", ["-m", "epochs=shuffle(sort(range(1,10,4),reverse=true))"],
     ["write epochs=shuffle(9,5,1)"]),
    ("interval", ["-m", "optimizer.lr=interval(0.01,0.1)"], ["optimizer.lr=interval(0.01,0.1): interval()",
                                                             "sampling sweeper"]),
    ("tagged interval", ["-m", "optimizer.lr=tag(a,interval(0.01,0.1))"], ["optimizer.lr=tag(a,interval(0.01,0.1))"]),
    ("zero step", ["-m", "epochs=range(1,3,0)"], ["epochs=range(1,3,0): range() arg 3 must not be zero"]),
    ("int of a fractional step", ["-m", "epochs=int(range(0,2,0.5))"], ["epochs=int(range(0,2,0.5))", "zero"]),
    ("str of a range", ["-m", "epochs=str(range(1,3))"], ["epochs=str(range(1,3)): Range can only be cast"]),
    ("choice of a range", ["-m", "epochs=choice(range(1,3))"], ["epochs=choice(range(1,3)): mismatch type"]),
    ("empty range", ["-m", "epochs=range(3,3)"], ["epochs=range(3,3) has no values", "stops before stop"]),
    ("too many values", ["-m", "seed=range(0,1000000)"], ["seed=range(0,1000000)", "at most 100,000"]),
    ("too many jobs", ["-m", "seed=range(0,2000)", "epochs=range(1,1000)"], ["1,998,000 jobs", "at most 1,000,000"]),
    # checked before any run trains: MLflow's own check would only refuse it at the sweep's end (new-user test)
    ("model name with a slash", ["-m", "activation=relu,tanh", "tracking.register_model=bad name/x"],
     ["tracking.register_model='bad name/x' must be a model name", "no '/' or ':'"]),
    ("register without a logged model", ["tracking.register_model=best", "tracking.log_model=false"],
     ["needs tracking.log_model=true and tracking.save_weights=true"]),
]

CSV = {
    "holes": "a,b,label\n1,2,0\n3,,1\n",
    "text": "a,b,label\n1,x,0\n3,4,1\n",
    "one": "a,b,label\n1,2,0\n3,4,0\n",
    "good": "a,b,label\n1,2,0\n3,4,1\n",
    "huge": "a,b,label\n" + "".join(f"{(-1) ** i * 1e308},{i},{i % 2}\n" for i in range(12)),
    "reg": "a,b,y\n" + "".join(f"{i},{i * i % 7},{0.37 * i + 0.01 * (i % 3):.3f}\n" for i in range(30)),
    "rare": "a,b,label\n" + "".join(f"{i},{i % 5},{'ab'[i % 2]}\n" for i in range(20)) + "1,1,c\n",
    "few": "a,b,label\n" + "".join(f"{i},{i % 5},{i % 2}\n" for i in range(6)),
}


def _no_runs(cwd: Path) -> bool:
    db = cwd / "mlflow.db"
    if not db.exists():
        return True
    con = sqlite3.connect(db)
    try:
        return con.execute("select count(*) from runs").fetchone()[0] == 0
    finally:
        con.close()


@pytest.mark.parametrize("overrides,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_key(overrides, words, tmp_path, monkeypatch, capsys):
    from nnexp.__main__ import main

    files = {k: _csv(tmp_path, f"{k}.csv", v) for k, v in CSV.items()}
    subs = {"{tmp}": str(tmp_path), **{"{" + k + "}": v for k, v in files.items()}}
    args = []
    for o in overrides:
        for k, v in subs.items():
            o = o.replace(k, v)
        args.append(o)
    args = ["-m", *FAST, *args[1:]] if args[0] == "-m" else [*FAST, *args]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nnexp"])
    t0 = time.monotonic()
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert time.monotonic() - t0 < 10
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nnexp: error: ")
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert _no_runs(tmp_path) and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "no").exists()  # nothing created for a sqlite URI in a missing folder
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args,key", [(["epochs=abc"], "epochs='abc'"),
                                      (["~model.loss"], "~model.loss: model.loss cannot be removed"),
                                      (["-m", "activation=tanh", "epochs=sort(range(100,301,100),reverse=true)",
                                        "seed=0"], "write epochs=300,200,100"),
                                      (["-m", "tracking.uri=http://127.0.0.1:9", "activation=relu,tanh"],
                                       "tracking.uri='http://127.0.0.1:9'")])
def test_subprocess_exit_code_and_no_traceback(args, key, tmp_path, cli):
    t0 = time.monotonic()
    proc = cli([*args[:1], *FAST, *args[1:]] if args[0] == "-m" else [*FAST, *args], tmp_path)
    assert proc.returncode == 2
    assert time.monotonic() - t0 < 20  # interpreter start and imports included
    assert proc.stderr.count("\n") == 1 and key in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("env", ["./mlruns", "mlruns", "file:///tmp/mlruns", "file:mlruns", "garbage"])
@pytest.mark.parametrize("command", ["sweep", "report"])
def test_a_file_store_in_mlflow_tracking_uri_is_one_line(env, command, tmp_path, monkeypatch, capsys):
    """``$MLFLOW_TRACKING_URI`` set to MLflow's old default (a file store) or nonsense: one line naming the variable
    and what to set, exit 2, nothing created; as ``tracking.uri=./mlruns`` already was (it was MLflow's 75-line
    'filesystem tracking backend is in maintenance mode' traceback; new-user test)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    monkeypatch.setattr(sys, "argv", ["nnexp"])
    if command == "sweep":
        from nnexp.__main__ import main

        rc = main([*FAST])
    else:
        from nnexp.report.__main__ import main

        rc = main(["--experiment", "activations"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"MLFLOW_TRACKING_URI={env!r} (from the environment) is not a tracking URI" in err
    assert list(tmp_path.iterdir()) == []


def test_a_report_folder_that_cannot_be_made_is_one_line_and_the_runs_are_kept(tmp_path, cli):
    """``reports`` is a file (or read-only): the sweep's runs are recorded, the report is not; one line says where it
    could not be written and how to write it elsewhere, exit 1 (it was the report worker's chained tracebacks)."""
    (tmp_path / "reports").write_text("not a folder")
    proc = cli(["-m", *FAST, "activation=relu,tanh", "seed=0,1", "tracking.progress=false"], tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("nnexp: error")]
    sweep = line.split("--sweep ")[1].split()[0]
    assert line == (f"nnexp: error: cannot write the report to {tmp_path / 'reports' / 'activations' / sweep}: Not a "
                    f"directory; the runs are recorded. Write the report elsewhere with: python -m nnexp.report "
                    f"--experiment activations --sweep {sweep} --out DIR")
    con = sqlite3.connect(tmp_path / "mlflow.db")
    try:
        assert con.execute("select status, count(*) from runs group by status").fetchall() == [("FINISHED", 5)]
    finally:
        con.close()


@pytest.mark.parametrize("launcher, extra", [("nnexp_ray", "ray"), ("nnexp_slurm", "slurm")])
def test_a_launcher_whose_plugin_is_missing_names_the_extra_to_install(launcher, extra, tmp_path, monkeypatch, capsys):
    """It said "hydra/launcher='ray' is not an option; choose one of: " (the plugin's name, an empty list)."""
    import importlib.util

    plugin = {"ray": "hydra_plugins.hydra_ray_launcher", "slurm": "hydra_plugins.hydra_submitit_launcher"}[extra]
    try:
        installed = importlib.util.find_spec(plugin) is not None
    except ModuleNotFoundError:
        installed = False
    if installed:
        pytest.skip(f"{plugin} is installed here")
    from nnexp.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nnexp"])
    assert main(["-m", *FAST, f"hydra/launcher={launcher}"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"nnexp: error: hydra/launcher={launcher} needs Hydra's ") and \
        line.endswith(f'which is not installed: pip install -e ".[{extra}]" in nnexp\'s folder')
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("args, words", [(["-m", "--cfg", "job"], "-m/--multirun and --cfg cannot be used together"),
                                         (["--cfg", "job", "--info"], "--cfg and --info cannot be used together")])
def test_two_hydra_modes_are_one_line(args, words, tmp_path, monkeypatch, capsys):
    """Hydra refuses ``-m --cfg job`` with a 16-line ValueError traceback (exit 1); one line and exit 2 here."""
    from nnexp.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nnexp"])
    assert main(args) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"nnexp: error: {words}: Hydra takes one of them per command")
    assert not list(tmp_path.iterdir())
