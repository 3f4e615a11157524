"""Start-up of ``python -m nnexp``: the jobs are checked in a forked child while the command imports MLflow.

The command line (``main()`` without arguments) checks in a child process (:func:`nnexp.__main__._check_beside`);
``main(argv)`` checks in-process. Both must give the same one line for bad input, create nothing, and a child that
ends without a verdict must not change what the user sees.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from nnexp.__main__ import _names_server, main

BAD = [
    ["-m", "activation=relu,swish", "dataset=xor", "epochs=1"],
    ["-m", "optimizer.lr=0.1,-1", "seed=0,1", "dataset=xor", "epochs=1"],
]


@pytest.mark.parametrize("argv", BAD, ids=["sweep value", "lr in a packed sweep"])
def test_the_checking_child_says_the_in_process_line(argv, cli, tmp_path, capsys, monkeypatch):
    here = tmp_path / "in-process"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(argv) == 2
    want = capsys.readouterr().err
    assert want.startswith("nnexp: error: ") and want.count("\n") == 1

    p = cli(argv, tmp_path)
    assert (p.returncode, p.stderr) == (2, want)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in-process"]  # no store, no multirun folder


def _script(tmp_path, body: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent("""
        import os, sys
        import nnexp.preflight as p
        PARENT = os.getpid()
        real = p.preflight
    """) + textwrap.dedent(body) + textwrap.dedent("""
        from nnexp.__main__ import main
        sys.argv = ["nnexp", "optimizer.lr=-1", "dataset=xor", "epochs=1"]
        sys.exit(main())
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_a_child_without_verdict_is_checked_again_in_the_command(tmp_path):
    p = _script(tmp_path, """
        def flaky(argv):
            if os.getpid() != PARENT:
                raise RuntimeError("the child fails")
            return real(argv)
        p.preflight = flaky
    """)
    assert (p.returncode, p.stderr) == (2, "nnexp: error: optimizer.lr=-1.0 must be a finite number > 0\n")
    assert list(tmp_path.iterdir()) == []


def test_a_program_error_in_the_check_shows_one_traceback(tmp_path):
    p = _script(tmp_path, """
        def broken(argv):
            raise RuntimeError("a bug in the check")
        p.preflight = broken
    """)
    assert p.returncode == 1
    assert p.stderr.count("Traceback") == 1  # the command's own, not the child's too
    assert p.stderr.rstrip().endswith("RuntimeError: a bug in the check")


@pytest.mark.slow  # a whole sweep in a subprocess (every sweep of test_sweeps.py goes through the child too)
def test_a_sweep_checked_beside_runs_every_job(cli, tmp_path):
    p = cli(["-m", "seed=0,1", "activation=relu,tanh", "dataset=xor", "epochs=2", "tracking.report=false",
             "tracking.progress=false"], tmp_path)
    assert p.returncode == 0, p.stderr
    con = sqlite3.connect(tmp_path / "mlflow.db")
    try:
        parents = con.execute("SELECT COUNT(*) FROM tags WHERE key = 'nnexp.kind' AND value = 'sweep'").fetchone()[0]
        children = con.execute("SELECT COUNT(DISTINCT value) FROM tags WHERE key = 'nnexp.run_key'").fetchone()[0]
        statuses = con.execute("SELECT DISTINCT status FROM runs").fetchall()
    finally:
        con.close()
    assert (parents, children) == (1, 4)
    assert statuses == [("FINISHED",)]


@pytest.mark.parametrize("argv, env, server", [
    ([], "", False),
    (["tracking.uri=http://localhost:5000"], "", True),
    (["tracking.uri=https://host"], "sqlite:///x.db", True),
    (["tracking.uri=http://a", "tracking.uri=sqlite:///b.db"], "", False),  # the last override counts
    ([], "http://localhost:5000", True),
    (["+tracking.uri=http://a"], "", True),
])
def test_names_server(argv, env, server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    assert _names_server(argv) is server


#: ``python -m nnexp`` with a SIGINT sent to itself when it starts to import the module named by ``argv[1]``.
INTERRUPT_AT_IMPORT = textwrap.dedent("""
    import importlib.abc, os, runpy, signal, sys
    target = sys.argv[1]
    class Interrupt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target_=None):
            if name == target:
                os.kill(os.getpid(), signal.SIGINT)
            return None
    sys.meta_path.insert(0, Interrupt())
    sys.argv = ["nnexp", "dataset=xor", "epochs=2"]
    runpy.run_module("nnexp", run_name="__main__", alter_sys=True)
""")


@pytest.mark.parametrize("module", ["hydra", "nnexp.config", "omegaconf"])
def test_ctrl_c_while_python_loads_the_command_is_one_line_and_leaves_nothing(tmp_path, module):
    """Ctrl-C in the first second, while ``python -m nnexp`` imports Hydra and its configs (before main() sets up its
    own handling): exit 130 and one line, not the traceback of the import it cut short; nothing created."""
    p = subprocess.run([sys.executable, "-c", INTERRUPT_AT_IMPORT, module], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 130, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == ["nnexp: interrupted before any run started"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a real command interrupted during its start-up
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="finds the checking child through Linux's /proc")
def test_ctrl_c_while_jobs_are_checked_is_one_line_and_leaves_nothing(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) during the job check and MLflow's import:
    exit 130, one line, no store or folder created."""
    import signal
    import time

    p = subprocess.Popen([sys.executable, "-m", "nnexp", "-m", "dataset=xor", "epochs=20", "activation=tanh,relu"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    # Interrupt once the checking child exists: the check and MLflow's import are then under way (a fixed sleep
    # landed in Python's own imports on a loaded machine, before the command's handling begins).
    children = f"/proc/{p.pid}/task/{p.pid}/children"
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        with open(children) as f:
            if f.read().strip():
                break
        time.sleep(0.005)
    assert p.poll() is None, "the command ended before its jobs were checked beside it"
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert err.strip().splitlines() == ["nnexp: interrupted before any run started"]
    assert sorted(x.name for x in tmp_path.iterdir()) == []
