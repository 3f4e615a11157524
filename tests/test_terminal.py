"""At a terminal: the progress bar path, which no piped test run otherwise takes, trains and records the run."""

from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
import sys

import pytest


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_run_at_a_terminal_shows_progress_and_finishes(tmp_path):
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    try:
        p = subprocess.run([sys.executable, "-m", "nnexp", "dataset=xor", "model.hidden_sizes=[4]", "batch_size=null",
                            "epochs=30"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL,
                           env=env, timeout=300)
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal's other side is closed: all read
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    shown = b"".join(chunks).decode(errors="replace")
    assert p.returncode == 0, shown[-2000:]
    assert "epoch" in shown  # the progress bar (tqdm) was drawn on the terminal
    con = sqlite3.connect(tmp_path / "mlflow.db")
    try:
        assert con.execute("SELECT status FROM runs").fetchall() == [("FINISHED",)]
    finally:
        con.close()
