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
    ("target in a key", ["+model._target_=os.system"], ["model._target_", "may not set _target_"]),
    ("target in a callback", ["+hydra.callbacks.x._target_=os.system"], ["hydra.callbacks.x._target_", "_target_"]),
    ("target in a value", ["+extra={_target_:os.system}"], ["extra", "_target_"]),
]

CSV = {
    "holes": "a,b,label\n1,2,0\n3,,1\n",
    "text": "a,b,label\n1,x,0\n3,4,1\n",
    "one": "a,b,label\n1,2,0\n3,4,0\n",
    "good": "a,b,label\n1,2,0\n3,4,1\n",
    "huge": "a,b,label\n" + "".join(f"{(-1) ** i * 1e308},{i},{i % 2}\n" for i in range(12)),
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
